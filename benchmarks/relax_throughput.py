"""Relaxation throughput: the batched engine against ASE one structure at a time, same model and criteria.

64 candidate Mo-Nb-Ta-W structures of 8-32 atoms (bcc supercells with random substitutions on Vegard's-law
lattice constants, strained and rattled, plus real DFT solid-solution cells from data/maml_MoNbTaW, rattled)
are relaxed (FIRE, FrechetCellFilter, fmax and max_steps equal for both) with

1. ``dpa4_core.dynamics.relax_batch`` (all structures in flight, one model call per step), and
2. ASE: ``FIRE(FrechetCellFilter(atoms))`` with ``DPA4Calculator`` on each structure in turn,

and the script prints relaxations per hour (wall clock and CPU time) for both, the ratio, and how closely the two
agree (energy per atom, steps). Model: ``dpa4_core/pretrained/dpa4-starter.pt`` if it exists, else the DPA4
"tiny" preset with seeded random weights (the output says which).

Run (quiet machine; one thread so the comparison is per core):

    OMP_NUM_THREADS=1 python benchmarks/relax_throughput.py [--n 64] [--dtype float32] [--ase-count 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE, LBFGS

from dpa4_core.dynamics import relax_batch
from dpa4_core.calculator import DPA4Calculator
from dpa4_core.data.paths import vendored
from dpa4_core.data.readers import read_pymatgen_json

LATTICE = {"Mo": 3.147, "Nb": 3.300, "Ta": 3.303, "W": 3.165}  # bcc lattice constants, A
REPEATS = [(2, 2, 1), (2, 2, 2), (3, 2, 2), (2, 2, 4)]  # 8, 16, 24, 32 atoms (cubic 2-atom cell)
STARTER = Path(__file__).resolve().parents[1] / "dpa4_core" / "pretrained" / "dpa4-starter.pt"


def candidates(n: int, seed: int = 0) -> list:
    """``n`` Mo-Nb-Ta-W structures of 8-32 atoms: 3/4 built, 1/4 real DFT cells (all perturbed)."""
    rng = np.random.default_rng(seed)
    real = []
    for name in ("NbMo_SS.json.gz", "TaW_SS.json.gz", "MoTa_SS.json.gz", "NbW_SS.json.gz"):
        frames = list(read_pymatgen_json(vendored("maml_MoNbTaW", name)))
        real += [frames[i].atoms for i in rng.choice(len(frames), size=4, replace=False)]
    out = []
    for k in range(n):
        if k % 4 == 3 and real:
            atoms = real.pop()
        else:
            elements = rng.choice(list(LATTICE), size=rng.integers(1, 5), replace=False)
            repeat = REPEATS[(k + k // 4) % len(REPEATS)]  # all four sizes, also on the k % 4 == 3 slots
            atoms = bulk("Mo", "bcc", a=1.0, cubic=True).repeat(repeat)
            symbols = rng.choice(elements, size=len(atoms))
            atoms.set_chemical_symbols(symbols)
            a = np.mean([LATTICE[s] for s in symbols])
            atoms.set_cell(atoms.cell.array * a, scale_atoms=True)
        strain = np.eye(3) + 0.01 * rng.standard_normal((3, 3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        atoms.rattle(0.03, seed=int(rng.integers(1 << 30)))
        out.append(atoms)
    return out


def load_model(seed: int = 0):
    from dpa4_core import DPA4, DPA4Config

    from dpa4_core.io.checkpoint import CheckpointError, load_checkpoint

    why = "no starter checkpoint yet"
    if STARTER.is_file():
        try:
            return load_checkpoint(STARTER, map_location="cpu"), f"starter checkpoint {STARTER.name}"
        except CheckpointError as exc:  # e.g. written by an older model version
            why = f"starter checkpoint unreadable ({str(exc).splitlines()[0][:120]})"
    torch.manual_seed(seed)
    return DPA4(DPA4Config.preset("tiny")), f"DPA4 'tiny' preset, random weights (seed {seed}): {why}"


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None, model_and_name: tuple | None = None) -> None:
    """Run the benchmark; ``model_and_name`` = (model, description) overrides the default model choice."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64, help="number of candidate structures")
    parser.add_argument("--ase-count", type=int, default=None, help="relax only the first k with ASE (default all)")
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--max-atoms", type=int, default=4096, help="atom budget of the batched engine")
    parser.add_argument("--compile", action="store_true", help="batched engine with torch.compile")
    parser.add_argument("--optimizer", default="fire", choices=["fire", "lbfgs"], help="same on both sides")
    args = parser.parse_args(argv)

    structures = candidates(args.n)
    sizes = [len(a) for a in structures]
    model, which = model_and_name if model_and_name is not None else load_model()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"model: {which}; dtype {args.dtype}; torch threads {torch.get_num_threads()}")
    print(f"structures: {len(structures)} ({min(sizes)}-{max(sizes)} atoms, {sum(sizes)} in all); "
          f"{args.optimizer.upper()} + FrechetCellFilter, fmax {args.fmax} eV/A, max {args.max_steps} steps")

    batched, b_wall, b_cpu = timed(lambda: relax_batch(
        structures, model, fmax=args.fmax, max_steps=args.max_steps, dtype=args.dtype, max_atoms=args.max_atoms,
        compile=args.compile, optimizer=args.optimizer, progress=False))

    k = len(structures) if args.ase_count is None else min(args.ase_count, len(structures))

    def ase_all():
        calculator = DPA4Calculator(model=model, dtype=args.dtype)
        out = []
        for atoms in structures[:k]:
            atoms = atoms.copy()
            atoms.calc = calculator
            opt = {"fire": FIRE, "lbfgs": LBFGS}[args.optimizer](FrechetCellFilter(atoms), logfile=None)
            converged = opt.run(fmax=args.fmax, steps=args.max_steps)
            out.append((atoms.get_potential_energy(), opt.nsteps, bool(converged), atoms.cell.array.copy()))
        return out

    reference, a_wall, a_cpu = timed(ase_all)

    b_rate = len(structures) / b_wall * 3600
    b_rate_cpu = len(structures) / b_cpu * 3600
    a_rate = k / a_wall * 3600
    a_rate_cpu = k / a_cpu * 3600
    print(f"batched: {len(structures)} relaxations in {b_wall:.1f} s wall / {b_cpu:.1f} s CPU -> "
          f"{b_rate:,.0f} relaxations/hour (wall), {b_rate_cpu:,.0f} per CPU-hour; "
          f"{sum(r.converged for r in batched)} converged, {sum(r.steps for r in batched)} steps in all")
    print(f"ASE one at a time: {k} relaxations in {a_wall:.1f} s wall / {a_cpu:.1f} s CPU -> "
          f"{a_rate:,.0f} relaxations/hour (wall), {a_rate_cpu:,.0f} per CPU-hour; "
          f"{sum(r[2] for r in reference)} converged, {sum(r[1] for r in reference)} steps in all")
    print(f"speed-up (batched / ASE): {b_rate / a_rate:.2f}x wall, {b_rate_cpu / a_rate_cpu:.2f}x CPU")
    de = [abs(r.energy - e) / len(s) for r, (e, _, _, _), s in zip(batched, reference, structures)]
    dc = [np.abs(r.structure.cell.array - c).max() for r, (_, _, _, c) in zip(batched, reference)]
    same_steps = sum(r.steps == s for r, (_, s, _, _) in zip(batched, reference))
    print(f"agreement on {k}: max |dE| {max(de):.2e} eV/atom, max |d cell| {max(dc):.2e} A, "
          f"same step count {same_steps}/{k}")


if __name__ == "__main__":
    main()
