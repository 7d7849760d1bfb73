"""Speed against deepmd-kit on the authors' released shapes: dpa4 on the converted file vs deepmd-kit 3.2.0.

Models: random-weight float32 deepmd-kit DPA4s of the released shapes with all 118 elements in the type map, built
and saved by deepmd-kit itself (``speed_deepmd.py build``, as ``dp --pt train`` saves): ``mini`` (the published
DPA4-Mini-OMat24 config, 0.65M parameters) and ``air`` (the paper's Air defaults, 2.76M). dpa4 reads the same
file (``DPA4Calculator.from_checkpoint``, ``relax_batch``): a float32 file loads in float64 (exact weights) and
runs in the calculator's dtype; deepmd-kit runs the file in its stored float32.

1. Equality first: deepmd-kit's float64 evaluation of the stored weights and dpa4's float64 run must give the
   same energies (relative difference < 1e-10) on every structure, or the script stops: the timings then
   compare one function.
2. Single point (energy + forces + stress, one structure per call, neighbour search included on both sides,
   positions displaced by 0.01 A every call): deepmd-kit's ASE calculator (``deepmd.calculator.DP``, float32) vs
   ``DPA4Calculator`` (``--dtypes``, float32 by default), median of ``--repeats`` calls after ``--warmup``, at each of
   ``--threads`` (torch.set_num_threads and OMP_NUM_THREADS; OPENBLAS_NUM_THREADS=1) on real structures: a 54-atom
   Ta AIMD frame (data/maml_MoNbTaW), a 128-atom rattled bcc Mo-Nb-Ta-W supercell, LiFePO4 (112 atoms,
   data/pymatgen_vasprun).
3. Relaxation of 64 cells (Mini): 48 rattled 16-atom solid-solution frames and 16 rattled 54-atom AIMD frames
   (data/maml_MoNbTaW), ``relax_batch`` (all in flight) vs ASE ``FIRE`` with deepmd-kit's calculator one cell at
   a time, same ``--fmax`` and ``--max-steps`` (positions only unless ``--relax-cell``), ``--relax-threads``
   threads; wall and CPU time, model loading excluded on both sides. Both follow the same trajectories (same
   step counts: the same function, FIRE on both sides).

Times are wall-clock medians and, next to them, process CPU time (steadier on a shared machine; with one thread the
two agree on a quiet one).

Each side runs in its own subprocess and environment (deepmd-kit never enters dpa4's). Run from the repository
root, alone on the machine (full run < 10 minutes on 2 cores):

    OPENBLAS_NUM_THREADS=1 python benchmarks/deepmd/speed.py --deepmd-python .venv-dp/bin/python

The side env needs ASE and mendeleev's dependencies besides deepmd-kit (README there installs mendeleev with
``--no-deps``): ``.venv-dp/bin/pip install --target runs/deepmd_side --no-deps ase sqlalchemy pandas pint pydantic
pydantic-core annotated-types typing-inspection pyfiglet deprecated wrapt colorama pygments pytz flexcache
flexparser platformdirs`` (found through ``--deepmd-path``, default ``runs/deepmd_side``).

The last line is machine-readable: ``single_min_ratio_float32=.. single_min_cpu_ratio_1thread_float32=..
relax_ratio=.. relax_cpu_ratio=..`` (deepmd-kit's time / dpa4's, the smallest over models, threads and structures;
> 1: dpa4 faster).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from ase.build import bulk

from dpa4_core.data.paths import vendored
from dpa4_core.data.readers import read_pymatgen_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from speed_common import write_structures  # noqa: E402
from speed_report import print_relax, print_single, summary  # noqa: E402

ALLOY = ["Mo", "Nb", "Ta", "W"]


def single_structures() -> dict:
    from ase.io import read

    rng = np.random.default_rng(0)
    aimd = list(read_pymatgen_json(vendored("maml_MoNbTaW", "Ta_AIMD.json.gz")))[100].atoms
    supercell = bulk("Mo", "bcc", a=3.23, cubic=True).repeat((4, 4, 4))
    supercell.set_chemical_symbols(rng.choice(ALLOY, size=len(supercell)))
    supercell.rattle(0.05, seed=1)
    lifepo4 = read(vendored("pymatgen_vasprun", "vasprun.lifepo4.xml.gz"), index=-1, format="vasp-xml")
    return {"Ta54 AIMD": aimd, "MoNbTaW128 bcc": supercell, f"LiFePO4 {len(lifepo4)}": lifepo4}


def relax_cells(n: int = 64, relax_cell: bool = False) -> list:
    """``n`` cells: 3/4 are 16-atom solid-solution frames, 1/4 are 54-atom AIMD frames, all rattled by 0.05 A."""
    rng = np.random.default_rng(2)
    small = [f"{pair}_SS.json.gz" for pair in ("NbMo", "TaW", "MoTa", "NbW", "NbTa", "MoW")]
    large = [f"{element}_AIMD.json.gz" for element in ALLOY]
    frames = {name: list(read_pymatgen_json(vendored("maml_MoNbTaW", name))) for name in small + large}
    cells = []
    for k in range(n):
        names = large if k % 4 == 3 else small
        pool = frames[names[k % len(names)]]
        atoms = pool[int(rng.integers(len(pool)))].atoms.copy()
        if relax_cell:
            atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.01 * rng.standard_normal((3, 3))), scale_atoms=True)
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        cells.append(atoms)
    return cells


def worker_env(threads: int, extra_path: str | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1",
               DP_INTRA_OP_PARALLELISM_THREADS=str(threads), DP_INTER_OP_PARALLELISM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path or str(ROOT), env.get("PYTHONPATH")) if p)
    return env


class Sides:
    """Starts one worker per measurement, each side in its own interpreter; tasks travel as JSON files."""

    def __init__(self, deepmd_python: str, deepmd_path: list[str], work: Path):
        self.deepmd_python, self.work = deepmd_python, work
        self.deepmd_path = os.pathsep.join([str(HERE), *(str(Path(p).resolve()) for p in deepmd_path)])

    def run(self, side: str, mode: str, task: dict) -> dict:
        threads = task.get("threads", 1)
        with tempfile.NamedTemporaryFile("w", suffix=".json", dir=self.work, delete=False) as stream:
            json.dump(task, stream)
        if side == "deepmd":
            cmd = [self.deepmd_python, str(HERE / "speed_deepmd.py"), mode, stream.name]
            env = worker_env(threads, self.deepmd_path)
        else:
            cmd = [sys.executable, str(HERE / "speed_dpa4.py"), mode, stream.name]
            env = worker_env(threads)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"{side} {mode} failed:\n{proc.stderr[-3000:]}")
        return json.loads(lines[-1])


def check_equality(sides: Sides, model: str, structures: Path, names: list[str]) -> float:
    task = {"model": model, "structures": str(structures)}
    theirs = sides.run("deepmd", "energies", task)["results"]
    ours = sides.run("dpa4", "energies", task)["results"]
    worst = 0.0
    for name, a, b in zip(names, theirs, ours):
        rel = abs(a["energy"] - b["energy"]) / abs(a["energy"])
        df = float(np.abs(np.array(a["forces"]) - np.array(b["forces"])).max())
        print(f"  {Path(model).stem:>18} {name:>16}: E deepmd {a['energy']:.10f} dpa4 {b['energy']:.10f} "
              f"rel {rel:.1e}, max |dF| {df:.1e} eV/A")
        worst = max(worst, rel)
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deepmd-python", default=str(ROOT / ".venv-dp" / "bin" / "python"))
    parser.add_argument("--deepmd-path", nargs="*", default=[str(ROOT / "runs" / "deepmd_side")],
                        help="extra PYTHONPATH folders for the side env (ASE and mendeleev's dependencies)")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "deepmd_speed",
                        help="where the model files (~14 MB) and task files go (not committed)")
    parser.add_argument("--models", nargs="+", default=["mini", "air"])
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2], help="none: no single-point timing")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtypes", nargs="+", default=["float32"], help="dpa4's dtypes (deepmd-kit: the file's float32)")
    parser.add_argument("--relax-n", type=int, default=64, help="cells to relax (0: skip the relaxation)")
    parser.add_argument("--relax-threads", type=int, default=2)
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--relax-cell", action="store_true", help="FrechetCellFilter (default: positions only)")
    args = parser.parse_args()
    print("command: OPENBLAS_NUM_THREADS=1", Path(sys.executable).name, " ".join(sys.argv), flush=True)

    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    sides = Sides(args.deepmd_python, args.deepmd_path, work)
    paths = {shape: work / f"deepmd_dpa4_{shape}.pt" for shape in args.models}
    missing = [shape for shape, path in paths.items() if not path.is_file()]
    if missing:
        proc = subprocess.run([args.deepmd_python, str(HERE / "speed_deepmd.py"), "build", str(work), "--models",
                               *missing], capture_output=True, text=True, env=worker_env(1, sides.deepmd_path))
        if proc.returncode != 0:
            raise RuntimeError(f"building the deepmd-kit models failed:\n{proc.stderr[-3000:]}")
    structures = single_structures()
    names = list(structures)
    write_structures(work / "single.json", list(structures.values()))

    print("\nequality (float64, the stored float32 weights on both sides):")
    worst = max(check_equality(sides, str(paths[shape]), work / "single.json", names) for shape in args.models)
    if not worst < 1e-10:
        print(f"energies differ by {worst:.1e} relative (> 1e-10): not the same model, no timing")
        return 1

    single = []
    for shape in args.models:
        for threads in args.threads:
            task = {"model": str(paths[shape]), "structures": str(work / "single.json"), "threads": threads,
                    "warmup": args.warmup, "repeats": args.repeats}
            row = {"model": shape, "threads": threads,
                   "deepmd": sides.run("deepmd", "single", task)["results"]}
            for dtype in args.dtypes:
                row[dtype] = sides.run("dpa4", "single", {**task, "dtype": dtype})["results"]
            single.append(row)
            print(f"  timed {shape} at {threads} thread(s)", flush=True)
    print_single(single, names, args.dtypes)

    relax = None
    if args.relax_n:
        write_structures(work / "relax.json", relax_cells(args.relax_n, args.relax_cell))
        task = {"model": str(paths[args.models[0]]), "structures": str(work / "relax.json"), "fmax": args.fmax,
                "max_steps": args.max_steps, "relax_cell": args.relax_cell, "threads": args.relax_threads,
                "dtype": args.dtypes[0]}
        relax = {"model": args.models[0], "deepmd": sides.run("deepmd", "relax", task),
                 "dpa4": sides.run("dpa4", "relax", task), "task": task}
        print_relax(relax)
    print(summary(single, args.dtypes, relax))
    return 0


if __name__ == "__main__":
    sys.exit(main())
