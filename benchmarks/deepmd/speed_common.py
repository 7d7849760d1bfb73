"""What both sides of ``speed.py`` share: the structures file, one timed calculator call, a relaxation record.

Imports ASE and numpy only, so that it runs in dpa4's environment and in deepmd-kit's side environment alike.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import all_changes
from ase.data import chemical_symbols

SYMBOLS = chemical_symbols[1:119]  # the released files' type map: every element H-Og, in atomic-number order
PROPERTIES = ["energy", "forces", "stress"]


def write_structures(path: Path, structures: list[Atoms]) -> None:
    path.write_text(json.dumps([{"numbers": a.numbers.tolist(), "positions": a.positions.tolist(),
                                 "cell": a.cell.array.tolist(), "pbc": a.pbc.tolist()} for a in structures]))


def read_structures(path: str | Path) -> list[Atoms]:
    return [Atoms(numbers=d["numbers"], positions=d["positions"], cell=d["cell"], pbc=d["pbc"])
            for d in json.loads(Path(path).read_text())]


def median_call_time(calc, atoms: Atoms, warmup: int, repeats: int, seed: int = 1) -> dict:
    """Median wall time of one energy + forces + stress call on ``atoms`` with fresh positions every call (displaced
    by 0.01 A, so no cache can answer; the calculator's own neighbour search included), and the median CPU time of
    the process over the call (all threads; on a shared machine the 1-thread CPU time is the steadier figure)."""
    rng = np.random.default_rng(seed)
    times, cpu_times = [], []
    for step in range(warmup + repeats):
        trial = atoms.copy()
        trial.positions = atoms.positions + rng.normal(scale=0.01, size=atoms.positions.shape)
        start, cpu_start = time.perf_counter(), time.process_time()
        calc.calculate(trial, PROPERTIES, all_changes)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        if not np.isfinite(calc.results["energy"]) or not np.isfinite(calc.results["forces"]).all():
            raise RuntimeError(f"non-finite result on {atoms.get_chemical_formula()}")
        if step >= warmup:
            times.append(elapsed)
            cpu_times.append(cpu)
    return {"n_atoms": len(atoms), "median_s": statistics.median(times), "min_s": min(times),
            "cpu_s": statistics.median(cpu_times)}


def relax_record(atoms: Atoms, steps: int, converged: bool) -> dict:
    return {"steps": int(steps), "converged": bool(converged), "energy": float(atoms.get_potential_energy())}


def run_task(modes: dict, version: str, argv: list[str] | None = None) -> int:
    """A worker's command line ``MODE TASK.json``: run ``modes[MODE](task)``, print the result as one JSON line."""
    mode, path = (argv if argv is not None else sys.argv[1:])[:2]
    result = modes[mode](json.loads(Path(path).read_text()))
    result["version"] = version
    print(json.dumps(result))
    return 0
