"""torch-sim against dpa4's own batched engine: the same 64 cells relaxed by both, same model, same criteria.

64 rattled Mo-Nb-Ta-W bcc supercells (8-32 atoms, random substitutions on Vegard's-law lattice constants, a 1 %
random strain, 0.03 A rattle) are relaxed with FIRE and a Frechet cell filter (fmax 0.05 eV/A on atoms and cell) by

1. ``ts.optimize(..., optimizer=ts.frechet_cell_fire)`` with :class:`dpa4_core.torchsim.DPA4Model`
   (torch-sim's in-flight batching; convergence checked every 5 steps, its default), and
2. ``dpa4_core.dynamics.relax_batch`` (in-flight batching, convergence checked every step, skin neighbour lists),

and the script prints, per method, the median over ``--repeats`` runs of the CPU time and of relaxations per
CPU-hour, and the largest difference between the two methods' final energies. Model: the shipped starter
checkpoint, float64 for both.

Run with one thread so that CPU time is per core:

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/torchsim_vs_batched.py [--n 64] [--repeats 3]

Measured (torch 2.13 CPU, torch-sim 0.3.0, one thread, on a 2-core machine shared with other jobs: CPU time is
the fair measure, wall time is not): 64/64 converged by both; torch-sim 80.7 CPU s (2855 relaxations/CPU-h),
relax_batch 60.4 CPU s (3812 relaxations/CPU-h); max |dE| 0.31 meV/atom at fmax 0.05 (median 0.045), falling to
0.010 meV/atom at ``--fmax 0.005`` (16 cells): both reach the same minima, the difference is the tolerance.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time

import numpy as np
import torch
from ase.build import bulk

from dpa4_core.dynamics import relax_batch
from dpa4_core.pretrained import starter_checkpoint

LATTICE = {"Mo": 3.147, "Nb": 3.300, "Ta": 3.303, "W": 3.165}  # bcc lattice constants, A
SUPERCELLS = [(2, 2, 1), (2, 2, 2), (3, 2, 2), (2, 2, 4)]  # of the 2-atom cubic cell: 8, 16, 24, 32 atoms


def rattled_bcc_cells(n: int, seed: int = 0) -> list:
    """``n`` Mo-Nb-Ta-W bcc supercells: random 1-4 element substitutions, Vegard lattice, strained, rattled."""
    rng = np.random.default_rng(seed)
    cells = []
    for k in range(n):
        atoms = bulk("W", "bcc", a=1.0, cubic=True).repeat(SUPERCELLS[k % len(SUPERCELLS)])
        elements = rng.choice(sorted(LATTICE), size=int(rng.integers(1, 5)), replace=False)
        atoms.set_chemical_symbols(rng.choice(elements, size=len(atoms)))
        a = float(np.mean([LATTICE[s] for s in atoms.get_chemical_symbols()]))
        strain = np.eye(3) + 0.01 * rng.standard_normal((3, 3))
        atoms.set_cell(atoms.cell.array * a @ strain, scale_atoms=True)
        atoms.positions += 0.03 * rng.standard_normal(atoms.positions.shape)
        cells.append(atoms)
    return cells


def run_torchsim(cells: list, checkpoint, fmax: float, max_steps: int) -> tuple[np.ndarray, int]:
    """Final energies (eV) and how many systems met ``fmax`` (atoms and cell)."""
    import torch_sim as ts

    from dpa4_core.torchsim import DPA4Model

    model = DPA4Model(checkpoint, dtype="float64")
    state = ts.io.atoms_to_state(cells, model.device, model.dtype)
    converged_fn = ts.generate_force_convergence_fn(force_tol=fmax)
    final = ts.optimize(system=state, model=model, optimizer=ts.frechet_cell_fire, convergence_fn=converged_fn,
                        max_steps=max_steps)
    energy = model(final)["energy"].numpy()
    init_fn, _ = ts.frechet_cell_fire(model)  # the filter's forces at the final geometry, for the convergence count
    converged = int(converged_fn(init_fn(final), None).sum())
    return energy, converged


def run_batched(cells: list, checkpoint, fmax: float, max_steps: int) -> tuple[np.ndarray, int]:
    results = relax_batch(cells, checkpoint, fmax=fmax, max_steps=max_steps, dtype="float64", progress=False)
    return np.array([r.energy for r in results]), sum(r.converged for r in results)


def timed(fn, *args) -> tuple[float, float, np.ndarray, int]:
    wall, cpu = time.perf_counter(), time.process_time()
    energy, converged = fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, energy, converged


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64, help="number of cells")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method (medians are reported)")
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--max-steps", type=int, default=1000)
    args = parser.parse_args(argv)
    print("$ OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python " + shlex.join([sys.argv[0], *(argv or sys.argv[1:])]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); model: starter checkpoint, float64")
    cells = rattled_bcc_cells(args.n)
    atoms_total = sum(len(c) for c in cells)
    print(f"{len(cells)} rattled Mo-Nb-Ta-W bcc supercells, {atoms_total} atoms; FIRE + Frechet cell filter, "
          f"fmax {args.fmax} eV/A")
    checkpoint = starter_checkpoint()
    runs: dict[str, list] = {"torch-sim ts.optimize": [], "dpa4 relax_batch": []}
    for _ in range(args.repeats):  # interleaved, so that a busy spell of a shared machine hits both
        runs["torch-sim ts.optimize"].append(timed(run_torchsim, cells, checkpoint, args.fmax, args.max_steps))
        runs["dpa4 relax_batch"].append(timed(run_batched, cells, checkpoint, args.fmax, args.max_steps))
    print(f"{'method':<24}{'wall s':>9}{'CPU s':>9}{'converged':>11}{'relaxations/CPU-h':>20}   (medians of "
          f"{args.repeats})")
    for name, results in runs.items():
        wall = statistics.median(r[0] for r in results)
        cpu = statistics.median(r[1] for r in results)
        converged = min(r[3] for r in results)
        rate = statistics.median(r[3] / (r[1] / 3600) for r in results)
        print(f"{name:<24}{wall:>9.1f}{cpu:>9.1f}{converged:>7}/{len(cells):<3}{rate:>20.0f}")
    e_ts, e_batch = runs["torch-sim ts.optimize"][0][2], runs["dpa4 relax_batch"][0][2]
    per_atom = np.abs(e_ts - e_batch) / np.array([len(c) for c in cells])
    print(f"max |dE| between final energies: {np.abs(e_ts - e_batch).max():.2e} eV "
          f"({1000 * per_atom.max():.3f} meV/atom; median {1000 * np.median(per_atom):.4f} meV/atom)")


if __name__ == "__main__":
    main()
