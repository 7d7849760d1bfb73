"""The dpa4 side of ``speed.py``: the converted deepmd-kit file through ``DPA4Calculator`` and ``relax_batch``.

Runs in dpa4's environment; ``speed.py`` starts it as a subprocess and reads one JSON line from its stdout.

    python benchmarks/deepmd/speed_dpa4.py {energies,single,relax} TASK.json
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_common import median_call_time, read_structures, run_task  # noqa: E402

from dpa4_core.calculator import DPA4Calculator  # noqa: E402


def calculator(task: dict, dtype: str) -> DPA4Calculator:
    # skin 0: the neighbour list is rebuilt on every call, as deepmd-kit's calculator does
    return DPA4Calculator.from_checkpoint(task["model"], dtype=dtype, skin=0.0)


def energies(task: dict) -> dict:
    calc = calculator(task, "float64")
    out = []
    for atoms in read_structures(task["structures"]):
        calc.calculate(atoms, ["energy", "forces"], [])
        out.append({"energy": float(calc.results["energy"]), "forces": calc.results["forces"].tolist()})
    return {"results": out}


def single(task: dict) -> dict:
    calc = calculator(task, task["dtype"])
    torch.set_num_threads(task["threads"])
    return {"results": [median_call_time(calc, atoms, task["warmup"], task["repeats"])
                        for atoms in read_structures(task["structures"])]}


def relax(task: dict) -> dict:
    """All cells at once through ``relax_batch`` (FIRE, FrechetCellFilter if ``relax_cell``), model preloaded."""
    from dpa4_core.dynamics import relax_batch
    from dpa4_core.io.checkpoint import load_checkpoint

    model = load_checkpoint(task["model"])
    torch.set_num_threads(task["threads"])
    structures = read_structures(task["structures"])
    start, cpu_start = time.perf_counter(), time.process_time()
    results = relax_batch(structures, model, fmax=task["fmax"], max_steps=task["max_steps"],
                          relax_cell=task["relax_cell"], dtype=task["dtype"], progress=False)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    records = [{"steps": r.steps, "converged": r.converged, "energy": r.energy, "error": r.error} for r in results]
    return {"wall_s": wall, "cpu_s": cpu, "results": records}


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("energies", "single", "relax"):
        sys.exit(__doc__)
    sys.exit(run_task({"energies": energies, "single": single, "relax": relax}, f"dpa4, torch {torch.__version__}"))
