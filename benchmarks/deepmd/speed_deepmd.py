"""The deepmd-kit side of ``speed.py``: build the Mini- and Air-shaped models, time deepmd-kit's ASE calculator.

Runs in the side environment that has deepmd-kit 3.2.0 (``tests/fixtures/deepmd/README.md``), never in dpa4's;
``speed.py`` starts it as a subprocess and reads one JSON line from its stdout.

    .venv-dp/bin/python benchmarks/deepmd/speed_deepmd.py build OUT_DIR [--models mini air]
    .venv-dp/bin/python benchmarks/deepmd/speed_deepmd.py {energies,single,relax} TASK.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("DP_TRITON_INFER", "0")  # deepmd's pure-PyTorch kernels (this CPU has no Triton)

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_common import SYMBOLS, median_call_time, read_structures, relax_record, run_task  # noqa: E402

# The released shapes. Mini: the published config (hsulab/GDPy examples/training/dpa4/dpa4.json, "DPA4-Mini example
# adapted from DeepMD-kit 3.2.0"); with all 118 types it has 654,988 parameters (registry: 655,504). Air: the
# paper's defaults (deepmd-kit 3.2.0's argcheck defaults, rcut 6 A, sel 120): 2,762,885 parameters. The released
# Air-OMat24 file reports 5,148,611: its own config is larger than the paper's Air (the defaults with n_blocks 5,
# mmax 2 give 5,150,215), so "air5" is that guess, for scale only.
MINI = {"rcut": 6.0, "channels": 32, "n_radial": 16, "edge_norm": False, "use_env_seed": True, "lmax": 2,
        "mmax": 1, "n_blocks": 2, "mixing_layers": 3, "radial_so2_mode": "degree_channel", "radial_so2_rank": 1,
        "n_focus": 1, "focus_dim": 0, "n_atten_head": 1, "message_node_so3": True, "ffn_neurons": 0,
        "ffn_so3_grid": True, "grid_mlp": False, "grid_branch": [0, 0, 1], "ffn_blocks": 1, "so3_readout": "mlp",
        "use_amp": False}
SHAPES = {
    "mini": (MINI, {"neuron": [0]}),
    "air": ({"rcut": 6.0, "sel": 120, "use_amp": False}, {}),
    "air5": ({"rcut": 6.0, "sel": 120, "use_amp": False, "n_blocks": 5, "mmax": 2}, {}),
}
# Noise on every parameter: 10% of its mean size, at least FLOOR (zero-initialised ones get FLOOR): chosen so that
# the rattled cells of the relaxation feel forces of 0.1-1 eV/A, as a trained model's would (random weights:
# speed only; with Mini's floor at 0.05 they stay below 0.05 eV/A, at 0.1 they reach 5-15 eV/A).
NOISE, FLOOR = 0.1, {"mini": 0.08, "air": 0.01, "air5": 0.01}


def model_params(shape: str, precision: str = "float32") -> dict:
    """deepmd-kit's normalised model section for ``shape`` with all 118 elements, as ``dp --pt train`` stores it."""
    from deepmd.utils.argcheck import normalize

    descriptor, fitting = SHAPES[shape]
    raw = {"model": {"type": "dpa4", "type_map": SYMBOLS,
                     "descriptor": {"type": "dpa4", **descriptor, "precision": precision, "seed": 1},
                     "fitting_net": {"type": "dpa4_ener", **fitting, "precision": precision, "seed": 2}},
           "learning_rate": {"type": "exp", "start_lr": 1e-3, "stop_lr": 1e-5},
           "loss": {"type": "ener"}, "training": {"training_data": {"systems": ["unused"]}, "numb_steps": 1}}
    return normalize(raw)["model"]


def build(out_dir: Path, shapes: list[str]) -> dict:
    """Random-weight float32 models (noise on every parameter, nonzero per-type energy offsets), saved as
    ``{"model": ModelWrapper.state_dict()}`` like ``dp --pt train``."""
    from deepmd.pt.model.model import get_model
    from deepmd.pt.train.wrapper import ModelWrapper

    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for index, shape in enumerate(shapes):
        torch.manual_seed(index)
        params = model_params(shape)
        model = get_model(params)
        generator = torch.Generator().manual_seed(100 + index)
        with torch.no_grad():
            for parameter in model.parameters():
                scale = max(NOISE * float(parameter.abs().mean()), FLOOR[shape])
                parameter.add_(scale * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
            for name, buffer in model.named_buffers():
                if name.endswith(("out_bias", "bias_atom_e")):
                    buffer.copy_(torch.randn(buffer.shape, generator=generator, dtype=buffer.dtype) - 5.0)
        wrapper = ModelWrapper(model, model_params=params)
        path = out_dir / f"deepmd_dpa4_{shape}.pt"
        torch.save({"model": wrapper.state_dict()}, path)
        written[shape] = {"path": str(path), "parameters": sum(p.numel() for p in model.parameters())}
    return written


def float64_model(path: str):
    """The stored float32 weights in a float64 deepmd-kit model (the exact function the file holds)."""
    from deepmd.pt.model.model import get_model

    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    params = json.loads(json.dumps(state["_extra_state"]["model_params"]))
    params["descriptor"]["precision"] = params["fitting_net"]["precision"] = "float64"
    model = get_model(params).to(torch.float64)
    stored = {k.removeprefix("model.Default."): v for k, v in state.items() if k.startswith("model.Default.")}
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if name in stored and (name in dict(model.named_parameters())
                                   or name.endswith(("out_bias", "bias_atom_e", "out_std"))):
                tensor.copy_(stored[name].to(torch.float64))
    return model.eval(), params["type_map"]


def energies(task: dict) -> dict:
    """deepmd-kit's float64 energies and forces of the stored weights on the task's structures."""
    model, type_map = float64_model(task["model"])
    out = []
    for atoms in read_structures(task["structures"]):
        coord = torch.tensor(atoms.positions, dtype=torch.float64).reshape(1, -1, 3)
        atype = torch.tensor([[type_map.index(s) for s in atoms.get_chemical_symbols()]])
        box = torch.tensor(atoms.cell.array, dtype=torch.float64).reshape(1, 9)
        result = model(coord, atype, box=box)
        out.append({"energy": float(result["energy"].reshape(())),
                    "forces": result["force"].detach().reshape(-1, 3).tolist()})
    return {"results": out}


def calculator(task: dict):
    from deepmd.calculator import DP

    return DP(task["model"])


def single(task: dict) -> dict:
    calc = calculator(task)
    torch.set_num_threads(task["threads"])
    return {"results": [median_call_time(calc, atoms, task["warmup"], task["repeats"])
                        for atoms in read_structures(task["structures"])]}


def relax(task: dict) -> dict:
    """Each cell in turn: ASE FIRE (on FrechetCellFilter if ``relax_cell``) with deepmd-kit's calculator."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    calc = calculator(task)
    torch.set_num_threads(task["threads"])
    records = []
    start, cpu_start = time.perf_counter(), time.process_time()
    for atoms in read_structures(task["structures"]):
        atoms.calc = calc
        optimizer = FIRE(FrechetCellFilter(atoms) if task["relax_cell"] else atoms, logfile=None)
        converged = optimizer.run(fmax=task["fmax"], steps=task["max_steps"])
        records.append(relax_record(atoms, optimizer.nsteps, converged))
    return {"wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu_start, "results": records}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["build", "energies", "single", "relax"])
    parser.add_argument("target", help="build: output folder; otherwise a task JSON file written by speed.py")
    parser.add_argument("--models", nargs="+", default=["mini", "air"], choices=sorted(SHAPES))
    args = parser.parse_args()
    if args.mode != "build":
        import deepmd

        version = f"deepmd-kit {deepmd.__version__}, torch {torch.__version__}"
        return run_task({"energies": energies, "single": single, "relax": relax}, version, [args.mode, args.target])
    print(json.dumps(build(Path(args.target), args.models)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
