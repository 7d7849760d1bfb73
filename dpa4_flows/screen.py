"""Screen candidate crystals for thermodynamic stability with DPA4: what ``dpa4 screen`` and
``workflows/screen_candidates.py`` run.

Builds 41 bcc-derived Mo-Nb-Ta-W candidates (B2, B32, D0_3, L2_1, quaternary Y-type, random 32-atom alloys) or
reads yours (``candidates``: CIF/POSCAR/JSON files or folders), relaxes them in chunks with the DPA4 model
(default the starter model), relaxes bcc/fcc/hcp elemental references with the same model in the same flow (or
uses a ``references`` entries JSON), builds the convex hull, and writes ``screening.csv`` and ``hull.png`` under
``out``. Jobs run resumably in an embedded on-disk store (``<out>/jobs.sqlite``): run the same command again
after an interruption and finished jobs are skipped; ``<out>/run.json`` refuses to mix two different runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

logger = logging.getLogger(__name__)
RUN_FILE = "run.json"
WORK_DIR = "work"  # the runner's workdir inside ``out``
#: Settings of the flow that change how it runs, not what it computes: a resumed run may change them.
RUN_ONLY = ("device", "progress")
REPORT_JOB = "DPA4 screening report"


class ScreenInputError(ValueError):
    """Bad input to a screening: missing or unreadable model, unreadable candidates, unknown elements."""


class RunMismatchError(ScreenInputError):
    """``out`` holds a run made with other candidates, model or options."""


@dataclass(frozen=True)
class ScreenOptions:
    """Inputs of :func:`screen`; the defaults of model, device, dtype and the relaxation come from settings."""

    out: Path = Path("runs/screening")
    model: Path | None = None
    candidates: list[str] | None = None
    references: Path | None = None
    reference_prototypes: tuple[str, ...] = ("bcc",)
    n_random: int = 2
    chunk_size: int | None = None
    fmax: float | None = None  # eV/A
    max_steps: int | None = None
    device: str | None = None
    dtype: str | None = None
    quiet: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ScreenOptions:
        return cls(out=args.out, model=args.model, candidates=args.candidates, references=args.references,
                   reference_prototypes=tuple(args.reference_prototypes), n_random=args.n_random,
                   chunk_size=args.chunk_size, fmax=args.fmax, max_steps=args.max_steps, device=args.device,
                   dtype=args.dtype, quiet=args.quiet)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The screening options, shared by ``dpa4 screen`` and the script; defaults from the ``DPA4_*`` settings."""
    from dpa4_flows.settings import get_settings

    settings = get_settings()
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
    return parser


def model_elements(path: Path) -> list[str] | None:
    """Elements the checkpoint was trained on, if it records them."""
    from dpa4_core.io.checkpoint import read_checkpoint

    elements = read_checkpoint(path).elements
    if not elements:
        return None
    from pymatgen.core import Element

    return sorted(Element.from_Z(e).symbol if isinstance(e, int) else str(e) for e in elements)


def check_run(out: Path, fingerprint: dict) -> None:
    """Record the run's inputs in ``<out>/run.json``; refuse to resume a different run in the same folder.

    Raises:
        RunMismatchError: ``out`` holds a run with other inputs.
        RunFileError: ``run.json`` is unreadable, or missing while ``out`` holds a run (its inputs are unknown).
    """
    from dpa4_core.io.files import atomic_write
    from dpa4_flows.execution.workdir import RunFileError, flow_path

    path = out / RUN_FILE
    if path.exists():
        try:
            previous = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            previous = exc
        if not isinstance(previous, dict):
            raise RunFileError(f"{path} is empty or not a run record ({str(previous)[:100]}): the inputs of the run "
                               f"in {out} are unknown; use a new --out, or delete {out} to start over")
        changed = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
        if changed:
            raise RunMismatchError(
                f"{out} holds a run with different {', '.join(changed)}; use a new --out or delete the folder"
            )
    elif flow_path(out / WORK_DIR).exists():
        raise RunFileError(f"{path} is missing but {out / WORK_DIR} holds a run whose inputs are then unknown; "
                           f"use a new --out, or delete {out} to start over")
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(fingerprint, indent=1))


def exception_line(traceback_text: str | None) -> str:
    """The line of a stored traceback that names the final exception (its message may continue below)."""
    if not traceback_text:
        return "an upstream job failed"
    lines = [line for line in traceback_text.splitlines() if line and not line[0].isspace()
             and not line.startswith(("Traceback", "The above exception", "During handling"))]
    return (lines[-1] if lines else traceback_text.strip().splitlines()[-1])[:400]


def _checked_inputs(options: ScreenOptions, model: Path):
    """The candidates ``{id: Structure}`` after checking that the model loads and knows their elements."""
    from dpa4_core.io.checkpoint import CheckpointError
    from dpa4_flows.jobs.calculators import get_model
    from dpa4_flows.structures.candidates import CandidateFileError, default_candidates, read_candidates

    try:
        candidates = (read_candidates(options.candidates) if options.candidates
                      else default_candidates(n_random=options.n_random))
    except CandidateFileError as exc:
        raise ScreenInputError(str(exc)) from exc
    try:
        get_model(model, options.device, options.dtype)  # fail here, not in every job; the jobs reuse this copy
        known = model_elements(model)
    except CheckpointError as exc:
        raise ScreenInputError(f"cannot load the model: {str(exc).splitlines()[0]}") from exc
    if known:
        foreign = sorted({el.symbol for s in candidates.values() for el in s.composition.elements} - set(known))
        if foreign:
            raise ScreenInputError(f"candidates contain {foreign}, but the model {model.name} knows only {known}")
    return candidates


def screen(options: ScreenOptions) -> int:
    """Run (or resume) a screening; prints the table and summary to stdout, errors to stderr.

    Returns:
        The exit status: 0 done, 1 some jobs failed (rerun to retry them), 2 bad input or run files,
        130 interrupted (Ctrl-C; rerun to resume).
    """
    from dpa4_flows.analysis.report import format_table, results_dataframe, summary
    from dpa4_flows.execution.workdir import RunFileError
    from dpa4_flows.flows.screening import ScreeningMaker
    from dpa4_flows.jobs.batch_relax import BatchRelaxMaker
    from dpa4_flows.jobs.calculators import ModelFileError, checkpoint_path, file_sha256
    from dpa4_flows.schemas import ScreeningReport
    from dpa4_flows.settings import get_settings

    settings = get_settings()
    unset = [k for k in ("model", "chunk_size", "fmax", "max_steps", "device", "dtype") if getattr(options, k) is None]
    options = replace(options, **{k: getattr(settings, k) for k in unset})
    out = options.out.expanduser().resolve()
    try:
        model = checkpoint_path(options.model)
    except ModelFileError:
        print(f"error: model file {options.model} not found. Train the starter model (see README) or pass "
              "--model PATH/TO/checkpoint.pt", file=sys.stderr)
        return 2
    try:
        candidates = _checked_inputs(options, model)
        ids = list(candidates)
        structures = [candidates[i] for i in ids]
        digest = hashlib.sha256(json.dumps([[i, s.as_dict()] for i, s in zip(ids, structures)], sort_keys=True,
                                           default=str).encode()).hexdigest()
        fingerprint = {
            "candidates_sha256": digest,
            "model_sha256": file_sha256(model),
            "options": {"chunk_size": options.chunk_size, "fmax": options.fmax, "max_steps": options.max_steps,
                        "dtype": options.dtype, "reference_prototypes": list(options.reference_prototypes),
                        "references": str(options.references.resolve()) if options.references else None},
        }
        check_run(out, fingerprint)
    except (ScreenInputError, RunFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    relax = BatchRelaxMaker(
        calculator_kwargs={"model": str(model), "device": options.device, "dtype": options.dtype},
        fmax=options.fmax, max_steps=options.max_steps, progress=not options.quiet,
    )
    maker = ScreeningMaker(relax_maker=relax, chunk_size=options.chunk_size, output_dir=str(out),
                           reference_entries=str(options.references) if options.references else None,
                           prototypes=tuple(options.reference_prototypes))
    flow = maker.make(structures, ids)
    logger.info("%d candidates, %d jobs, model %s (sha256 %s...), output %s",
                len(ids), len(flow.jobs), model, fingerprint["model_sha256"][:12], out)

    start = time.perf_counter()
    try:
        result = _run(flow, out, progress=not options.quiet)
    except ValueError as exc:  # an unreadable run file or store, a workdir of another run: one line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished jobs are stored; run the same command to resume", file=sys.stderr)
        return 130
    failed = {u: s for u, s in result.items() if s["state"] != "done"}
    if failed:
        for state in failed.values():
            print(f"error: job {state['name']} {state['state']}: {exception_line(state['error'])}", file=sys.stderr)
        print("rerun the same command to retry the failed jobs", file=sys.stderr)
        return 1
    report = ScreeningReport(**next(s["output"] for s in result.values() if s["name"] == REPORT_JOB))
    print(format_table(results_dataframe(report)))
    print(summary(report))
    print(f"table: {report.csv_path}\nhull plot: {report.plot_path}\n"
          f"({time.perf_counter() - start:.1f} s; store {out / 'jobs.sqlite'})")
    return 0


def _run(flow, out: Path, progress: bool) -> dict:
    """Run ``flow`` resumably in ``<out>/work``, resuming the persisted flow there if it is the same work."""
    from dpa4_flows.execution.fingerprint import flow_fingerprint
    from dpa4_flows.execution.runner import run_resumable
    from dpa4_flows.execution.stores import embedded_store
    from dpa4_flows.execution.workdir import flow_path, load_flow

    work = out / WORK_DIR
    if flow_path(work).exists():
        # Resume the persisted flow (its uuids), which may differ from this one only in RUN_ONLY settings.
        persisted = load_flow(work)
        if flow_fingerprint(persisted, ignore=RUN_ONLY) != flow_fingerprint(flow, ignore=RUN_ONLY):
            raise RunMismatchError(f"{work} holds the flow of another run (jobs or inputs differ); "
                                   f"use a new --out, or delete {out} to start over")
        flow = persisted
    return run_resumable(flow, embedded_store(out / "jobs.sqlite"), work, progress=progress)


def stored_report(store_path: str | Path):
    """The latest screening report in an embedded store (a ``jobs.sqlite`` file or the folder holding it).

    Raises:
        ScreenInputError: no such store, or it holds no finished screening report.
    """
    from dpa4_flows.execution.stores import embedded_store
    from dpa4_flows.schemas import ScreeningReport

    path = Path(store_path).expanduser().resolve()
    if path.is_dir():
        path = path / "jobs.sqlite"
    if not path.is_file():
        raise ScreenInputError(f"no job store at {path}")
    store = embedded_store(path)
    store.connect()
    docs = [d for d in store.query({"name": REPORT_JOB}, properties=["output", "completed_at"], load=True)
            if isinstance(d.get("output"), dict)]
    if not docs:
        raise ScreenInputError(f"the store {path} holds no finished screening report")
    latest = max(docs, key=lambda d: str(d.get("completed_at") or ""))
    return ScreeningReport(**latest["output"])
