"""Inference speed: energy + forces + stress per call, DPA4 (ours) against two peers, side by side in one run.

Systems: Si diamond 64 atoms and NaCl rock salt 216 atoms (rattled), fp32 on CPU, the same thread count for all.
Models:
    ours       DPA4 presets tiny / neo / air, eager and torch.compile'd inference (random weights: speed only)
    deepmd     the authors' reference DPA4 in deepmd-kit 3.2.0 (PyTorch backend, Air defaults, 2.76M parameters,
               random weights; pure-PyTorch path: its compiled op library is built for another torch)
    sevennet   SevenNet-0 (weights shipped in the `sevenn` package)

Against deepmd-kit on the authors' released shapes (Mini and Air, the same converted file on both sides, equality
checked first, and a 64-cell batched relaxation): ``benchmarks/deepmd/speed.py``.

Each (model, system) runs in its own subprocess so that its peak memory (ru_maxrss, resident set high-water mark of
that process: torch's CPU allocator is invisible to tracemalloc) is its own. A call = one structure in, energy,
forces and stress out, neighbour search included for every model; positions are perturbed every call so no cache
can answer. Timings are medians over `--repeats` calls after `--warmup` calls.

Peers are benchmark-only dependencies (`pip install -e ".[peers]"` in a separate environment); the package never
imports them. Run (alone on the machine):

    OPENBLAS_NUM_THREADS=1 .venv-peers/bin/python benchmarks/inference.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np


def build_system(name: str):
    from ase.build import bulk

    if name == "Si64":
        atoms = bulk("Si", "diamond", 5.43, cubic=True) * (2, 2, 2)
    elif name == "NaCl216":
        atoms = bulk("NaCl", "rocksalt", 5.64, cubic=True) * (3, 3, 3)
        atoms = atoms[:216]
    else:
        raise ValueError(f"unknown system {name!r}")
    atoms.rattle(0.03, seed=0)
    return atoms


def ours(preset: str, compiled: bool):
    """Callable(atoms) -> (E, F, S) with our model."""
    import torch

    from dpa4_core import DPA4, DPA4Config
    from dpa4_core.data.batch import AtomsBatch

    torch.manual_seed(0)
    model = DPA4(DPA4Config.preset(preset)).to(torch.float32).eval()
    if compiled:
        from dpa4_core.model.inference import compile_for_inference

        model = compile_for_inference(model)

    def call(atoms):
        batch = AtomsBatch.from_atoms([atoms], cutoff=model.config.cutoff, dtype=torch.float32, validate=False)
        out = model(batch, compute_forces=True, compute_stress=True)
        return float(out["energy"][0]), out["forces"].detach().numpy(), out["stress"].detach().numpy()

    n_params = sum(p.numel() for p in model.parameters())
    return call, n_params


def deepmd_reference():
    """The authors' reference DPA4 (deepmd-kit 3.2.0, PyTorch backend), Air defaults, random weights."""
    import torch
    from deepmd.pt.model.model import get_model
    from deepmd.utils.argcheck import model_args

    torch.manual_seed(0)
    config = {
        "type": "dpa4",
        "type_map": ["Si", "Na", "Cl"],
        "descriptor": {"type": "dpa4", "rcut": 6.0, "sel": 120},
        "fitting_net": {"type": "dpa4_ener"},
    }
    model = get_model(model_args().normalize_value(config, trim_pattern="_*")).float().eval()
    index = {14: 0, 11: 1, 17: 2}

    def call(atoms):
        coord = torch.tensor(atoms.positions[None], dtype=torch.float32)
        atype = torch.tensor([[index[z] for z in atoms.numbers]], dtype=torch.long)
        box = torch.tensor(atoms.cell.array.reshape(1, 9), dtype=torch.float32)
        out = model(coord, atype, box=box)
        return float(out["energy"].sum()), out["force"].detach().numpy(), out["virial"].detach().numpy()

    return call, sum(p.numel() for p in model.parameters())


def sevennet():
    from sevenn.calculator import SevenNetCalculator

    calculator = SevenNetCalculator("7net-0", device="cpu")

    def call(atoms):
        atoms.calc = calculator
        return atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()

    n_params = sum(p.numel() for p in calculator.model.parameters())
    return call, n_params


def worker(model_name: str, system: str, threads: int, warmup: int, repeats: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    if model_name == "deepmd-dpa4-air":
        call, n_params = deepmd_reference()
    elif model_name == "sevennet-0":
        call, n_params = sevennet()
    else:  # ours:<preset>[:compiled]
        _, preset, *mode = model_name.split(":")
        call, n_params = ours(preset, compiled=bool(mode))
    atoms = build_system(system)
    rng = np.random.default_rng(1)
    base = atoms.positions.copy()
    times = []
    for step in range(warmup + repeats):
        atoms.positions = base + rng.normal(scale=0.01, size=base.shape)
        start = time.perf_counter()
        energy, forces, _ = call(atoms)
        elapsed = time.perf_counter() - start
        if not np.isfinite(energy) or not np.isfinite(forces).all():
            raise RuntimeError(f"{model_name} gave non-finite results on {system}")
        if step >= warmup:
            times.append(elapsed)
    median = statistics.median(times)
    return {
        "model": model_name,
        "system": system,
        "n_atoms": len(atoms),
        "parameters": n_params,
        "median_s": median,
        "atom_steps_per_s": len(atoms) / median,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--systems", nargs="+", default=["Si64", "NaCl216"])
    parser.add_argument(
        "--models",
        nargs="+",
        default=[
            "ours:tiny", "ours:neo", "ours:air", "ours:tiny:compiled", "ours:neo:compiled", "ours:air:compiled",
            "deepmd-dpa4-air", "sevennet-0",
        ],
    )
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "SYSTEM"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(*args.worker, args.threads, args.warmup, args.repeats)))
        return

    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    # e3nn/deepmd/sevenn ship pickles that torch>=2.6's weights_only loader refuses; peers only.
    env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    print("command:", "OPENBLAS_NUM_THREADS=1", sys.executable, " ".join(sys.argv))
    results = []
    for system in args.systems:
        for model_name in args.models:
            cmd = [sys.executable, __file__, "--worker", model_name, system, "--threads", str(args.threads),
                   "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            if proc.returncode != 0 or not lines:
                print(f"{model_name:>22} {system:>8}  FAILED: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            result = json.loads(lines[-1])
            results.append(result)
            print(f"{model_name:>22} {system:>8} {result['parameters'] / 1e6:6.2f}M params "
                  f"{result['median_s'] * 1e3:9.1f} ms/call {result['atom_steps_per_s']:9.1f} atom-steps/s "
                  f"peak RSS {result['peak_rss_mb']:7.0f} MB", flush=True)

    print("\nratios (atom-steps/s of ours / peer):")
    for system in args.systems:
        by_name = {r["model"]: r for r in results if r["system"] == system}
        for name, result in by_name.items():
            if not name.startswith("ours"):
                continue
            ratios = [f"{peer}: {result['atom_steps_per_s'] / by_name[peer]['atom_steps_per_s']:.2f}x"
                      for peer in ("deepmd-dpa4-air", "sevennet-0") if peer in by_name]
            print(f"  {system:>8} {name:>20}  " + "  ".join(ratios))


if __name__ == "__main__":
    main()
