#!/usr/bin/env python
"""Screen Mo-Nb-Ta-W candidate crystals for thermodynamic stability with DPA4 (the project's main demo).

    python workflows/screen_candidates.py --out runs/screening

Builds 41 bcc-derived candidates (B2, B32, D0_3, L2_1, quaternary Y-type, random 32-atom alloys) or reads
yours (``--candidates`` CIF/POSCAR/JSON files or folders), relaxes them in chunks with the DPA4 model
(``--model``, default the starter model), relaxes bcc/fcc/hcp elemental references with the same model in the
same flow (or uses ``--references entries.json``), builds the convex hull, and writes ``screening.csv`` and
``hull.png`` under ``--out``. Jobs run resumably in an embedded on-disk store (``<out>/jobs.sqlite``): run the
same command again after an interruption and finished jobs are skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

try:
    import dpa4_flows  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpa4_flows.structures.candidates import CandidateFileError, default_candidates, read_candidates
from dpa4_flows.flows.screening import ScreeningMaker
from dpa4_flows.jobs.batch_relax import BatchRelaxMaker
from dpa4_flows.jobs.calculators import ModelFileError, checkpoint_path, file_sha256, get_model
from dpa4_flows.analysis.report import format_table, results_dataframe, summary
from dpa4_flows.execution.runner import run_resumable
from dpa4_flows.execution.workdir import flow_path, load_flow
from dpa4_flows.schemas import ScreeningReport
from dpa4_flows.settings import get_settings
from dpa4_flows.execution.stores import embedded_store

logger = logging.getLogger("screen_candidates")
RUN_FILE = "run.json"


class RunMismatchError(ValueError):
    """--out holds a run made with other candidates, model or options."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/screening"), help="output folder (made absolute)")
    parser.add_argument("--model", type=Path, default=settings.model, help="DPA4 checkpoint (.pt)")
    parser.add_argument("--candidates", nargs="+", help="CIF/POSCAR/JSON files or folders (default: built-in set)")
    parser.add_argument("--references", type=Path, help="entries JSON with elemental references from the same model")
    parser.add_argument(
        "--reference-prototypes", nargs="+", default=["bcc"], choices=["bcc", "fcc", "hcp"],
        help="elemental reference structures relaxed with the model; the lowest per element is the reference "
             "(default bcc: the DFT ground state of Mo, Nb, Ta and W, and the only phase the starter model was "
             "trained on, which wrongly puts fcc/hcp Mo below bcc)",
    )
    parser.add_argument("--n-random", type=int, default=2, help="random 32-atom alloys in the built-in set")
    parser.add_argument("--chunk-size", type=int, default=settings.chunk_size, help="structures per relax job")
    parser.add_argument("--fmax", type=float, default=settings.fmax, help="force criterion, eV/A")
    parser.add_argument("--max-steps", type=int, default=settings.max_steps, help="optimiser steps per structure")
    parser.add_argument("--device", default=settings.device, help="torch device")
    parser.add_argument("--dtype", default=settings.dtype, choices=["float32", "float64"])
    parser.add_argument("--quiet", action="store_true", help="only warnings and the final table")
    return parser.parse_args(argv)


def model_elements(path: Path) -> list[str] | None:
    """Elements the checkpoint was trained on, if it records them."""
    from dpa4_core.io.checkpoint import read_checkpoint

    elements = read_checkpoint(path).elements
    if not elements:
        return None
    from pymatgen.core import Element

    return sorted(Element.from_Z(e).symbol if isinstance(e, int) else str(e) for e in elements)


def check_run(out: Path, fingerprint: dict) -> None:
    """Record the run's inputs in ``<out>/run.json``; refuse to resume a different run in the same folder."""
    path = out / RUN_FILE
    if path.exists():
        previous = json.loads(path.read_text())
        changed = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
        if changed:
            raise RunMismatchError(
                f"{out} holds a run with different {', '.join(changed)}; use a new --out or delete the folder"
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(fingerprint, indent=1))


def exception_line(traceback_text: str | None) -> str:
    """The line of a stored traceback that names the final exception (its message may continue below)."""
    if not traceback_text:
        return "an upstream job failed"
    lines = [line for line in traceback_text.splitlines() if line and not line[0].isspace()
             and not line.startswith(("Traceback", "The above exception", "During handling"))]
    return (lines[-1] if lines else traceback_text.strip().splitlines()[-1])[:400]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("jobflow", "dpa4_flows.jobs.batch_relax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    out = args.out.expanduser().resolve()
    try:
        model = checkpoint_path(args.model)
    except ModelFileError:
        print(f"error: model file {args.model} not found. Train the starter model (see README) or pass "
              "--model PATH/TO/checkpoint.pt", file=sys.stderr)
        return 2
    try:
        candidates = read_candidates(args.candidates) if args.candidates else default_candidates(n_random=args.n_random)
    except CandidateFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from dpa4_core.io.checkpoint import CheckpointError

    try:
        get_model(model, args.device, args.dtype)  # fail here, not in every job; the jobs reuse this copy
        known = model_elements(model)
    except CheckpointError as exc:
        print(f"error: cannot load the model: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    if known:
        foreign = sorted({el.symbol for s in candidates.values() for el in s.composition.elements} - set(known))
        if foreign:
            print(f"error: candidates contain {foreign}, but the model {model.name} knows only {known}",
                  file=sys.stderr)
            return 2

    ids = list(candidates)
    structures = [candidates[i] for i in ids]
    digest = hashlib.sha256(json.dumps([[i, s.as_dict()] for i, s in zip(ids, structures)], sort_keys=True,
                                       default=str).encode()).hexdigest()
    fingerprint = {
        "candidates_sha256": digest,
        "model_sha256": file_sha256(model),
        "options": {"chunk_size": args.chunk_size, "fmax": args.fmax, "max_steps": args.max_steps,
                    "dtype": args.dtype, "reference_prototypes": args.reference_prototypes,
                    "references": str(args.references.resolve()) if args.references else None},
    }
    try:
        check_run(out, fingerprint)
    except RunMismatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    relax = BatchRelaxMaker(
        calculator_kwargs={"model": str(model), "device": args.device, "dtype": args.dtype},
        fmax=args.fmax, max_steps=args.max_steps, progress=not args.quiet,
    )
    maker = ScreeningMaker(relax_maker=relax, chunk_size=args.chunk_size, output_dir=str(out),
                           reference_entries=str(args.references) if args.references else None,
                           prototypes=tuple(args.reference_prototypes))
    flow = maker.make(structures, ids)
    logger.info("%d candidates, %d jobs, model %s (sha256 %s...), output %s",
                len(ids), len(flow.jobs), model, fingerprint["model_sha256"][:12], out)

    start = time.perf_counter()
    store = embedded_store(out / "jobs.sqlite")
    work = out / "work"
    if flow_path(work).exists():
        # check_run vouched for the inputs that matter; the runner's flow fingerprint would also refuse a
        # new --device or --quiet, so resume the persisted flow, as the run has always done.
        flow = load_flow(work)
    result = run_resumable(flow, store, work, progress=not args.quiet)
    failed = {u: s for u, s in result.items() if s["state"] != "done"}
    if failed:
        for state in failed.values():
            print(f"error: job {state['name']} {state['state']}: {exception_line(state['error'])}", file=sys.stderr)
        print("rerun the same command to retry the failed jobs", file=sys.stderr)
        return 1
    report = ScreeningReport(**next(s["output"] for s in result.values() if s["name"] == "DPA4 screening report"))
    print(format_table(results_dataframe(report)))
    print(summary(report))
    print(f"table: {report.csv_path}\nhull plot: {report.plot_path}\n"
          f"({time.perf_counter() - start:.1f} s; store {out / 'jobs.sqlite'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
