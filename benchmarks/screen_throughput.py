"""Screening throughput: ``dpa4 screen`` end to end against the batched engine alone, and flow building at scale.

1. N rattled Mo-Nb-Ta-W candidates of 8-32 atoms (``relax_throughput.candidates``: bcc supercells with random
   substitutions plus real DFT cells, strained and rattled) are written to one extxyz file and screened with
   :func:`dpa4_flows.screen.screen` (starter model, one worker): reading, checks, flow, resumable store, chunked
   batched relaxation, references, hull, report, CSV and plot.
2. The same structures relaxed by ``dpa4_core.dynamics.relax_batch`` alone, in the same chunks, same fmax and
   max_steps: the floor the flow's overhead is measured against.
3. The flow for ``--flow-n`` (default 100,000) candidates built by ``ScreeningMaker.make`` and persisted
   (``save_flow``, as the runner does on the first call).

Prints CPU and wall seconds and relaxations per CPU-hour for 1 and 2, and the overhead of 1 over 2.

    OMP_NUM_THREADS=1 python benchmarks/screen_throughput.py [--n 200] [--chunk 16] [--flow-n 100000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from relax_throughput import STARTER, candidates, timed  # noqa: E402


def _screen(atoms: list, folder: Path, args) -> tuple[int, float, float]:
    from ase.io import write

    from dpa4_flows.screen import ScreenOptions, screen

    path = folder / "candidates.extxyz"
    write(path, atoms, format="extxyz")
    options = ScreenOptions(out=folder / "run", model=STARTER, candidates=[str(path)], chunk_size=args.chunk,
                            fmax=args.fmax, max_steps=args.max_steps, dtype=args.dtype, quiet=True)
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the table: not part of the measurement's output
        return timed(lambda: screen(options))


def _engine(atoms: list, args) -> tuple[list, float, float]:
    from dpa4_core.dynamics import relax_batch
    from dpa4_flows.jobs.calculators import get_model

    model = get_model(STARTER, "cpu", args.dtype)

    def run():
        out = []
        for start in range(0, len(atoms), args.chunk):
            out += relax_batch(atoms[start:start + args.chunk], model, fmax=args.fmax, max_steps=args.max_steps,
                               dtype=args.dtype, progress=False)
        return out

    return timed(run)


def _flow(n: int, chunk: int, folder: Path) -> tuple[float, float, int]:
    from pymatgen.core import Lattice, Structure

    from dpa4_flows.execution.workdir import save_flow
    from dpa4_flows.flows.screening import ScreeningMaker
    from dpa4_flows.jobs.batch_relax import BatchRelaxMaker

    cells = [Structure(Lattice.cubic(3.2), ["Mo", "W"][: 1 + i % 2] * (2 - i % 2), [[0, 0, 0], [0.5, 0.5, 0.5]])
             for i in range(200)]
    structures = [cells[i % len(cells)] for i in range(n)]  # shared objects: the timing is the flow's, not pymatgen's
    ids = [f"cand-{i:06d}" for i in range(n)]
    maker = ScreeningMaker(relax_maker=BatchRelaxMaker(calculator_kwargs={"model": str(STARTER)}, progress=False),
                           chunk_size=chunk, output_dir=str(folder / "out"), prototypes=("bcc",))
    wall = time.perf_counter()
    flow = maker.make(structures, ids)
    built = time.perf_counter() - wall
    (folder / "work").mkdir()
    save_flow(folder / "work", flow)
    return built, time.perf_counter() - wall, len(flow.jobs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="candidates screened end to end")
    parser.add_argument("--chunk", type=int, default=16, help="structures per relaxation job")
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--flow-n", type=int, default=100_000, help="candidates of the flow built and persisted")
    parser.add_argument("--skip-engine", action="store_true", help="only the flow (no relaxation)")
    args = parser.parse_args(argv)
    atoms = candidates(args.n)
    sizes = [len(a) for a in atoms]
    print(f"{args.n} candidates, {min(sizes)}-{max(sizes)} atoms (mean {sum(sizes) / len(sizes):.1f}); chunk "
          f"{args.chunk}, fmax {args.fmax} eV/A, max_steps {args.max_steps}, {args.dtype}, model {STARTER.name}")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_engine:
            code, wall, cpu = _screen(atoms, Path(tmp), args)
            print(f"dpa4 screen (exit {code}): wall {wall:.1f} s, CPU {cpu:.1f} s, "
                  f"{3600 * args.n / cpu:.0f} relaxations per CPU-hour")
            results, e_wall, e_cpu = _engine(atoms, args)
            failed = sum(1 for r in results if r.error)
            print(f"relax_batch alone ({failed} failed): wall {e_wall:.1f} s, CPU {e_cpu:.1f} s, "
                  f"{3600 * args.n / e_cpu:.0f} relaxations per CPU-hour")
            print(f"flow overhead: {100 * (cpu / e_cpu - 1):+.1f}% CPU, {100 * (wall / e_wall - 1):+.1f}% wall "
                  f"(includes the elemental references' relaxation, hull, report, CSV and plot)")
        built, total, n_jobs = _flow(args.flow_n, args.chunk, Path(tmp))
        print(f"flow for {args.flow_n} candidates ({n_jobs} jobs): built in {built:.1f} s, built and persisted in "
              f"{total:.1f} s")


if __name__ == "__main__":
    main()
