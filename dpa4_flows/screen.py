"""Screen candidate crystals for thermodynamic stability with DPA4: what ``dpa4 screen`` and
``workflows/screen_candidates.py`` run.

Candidates come from files, folders and globs (CIF, POSCAR, extxyz, pymatgen JSON, ASE db; default the 41 built-in
bcc-derived Mo-Nb-Ta-W cells). Every candidate gets exactly one row: ranked (formation energy, energy above the
hull), flagged (its relaxation left the physical regime), unconverged, failed, or rejected before relaxation
(unreadable, overlapping atoms, elements outside the model's trained set); a bad candidate never affects another.
Candidates are relaxed in chunks with the DPA4 model (default the starter model) next to the elemental references
and ``--competing-phases`` in the same flow, so the hull is the model's own; ``screening.csv``, ``hull.png`` and
``screen.log`` (one line per chunk) go to the run folder. Jobs run resumably in an embedded on-disk store
(``<out>/jobs.sqlite``): rerun the same command after an interruption and finished jobs are skipped;
``<out>/run.json`` refuses to mix two different runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

from dpa4_flows.screen_args import ScreenOptions, add_arguments  # noqa: F401 - the public names of `dpa4 screen`

logger = logging.getLogger(__name__)
RUN_FILE = "run.json"
WORK_DIR = "work"  # the runner's workdir inside ``out``
LOG_FILE = "screen.log"  # one line per finished chunk (rate, ETA), warnings of the run
#: Settings of the flow that change how it runs, not what it computes: a resumed run may change them.
RUN_ONLY = ("device", "progress")
REPORT_JOB = "DPA4 screening report"


class ScreenInputError(ValueError):
    """Bad input to a screening: missing or unreadable model, unreadable candidates, unknown elements."""


class RunMismatchError(ScreenInputError):
    """``out`` holds a run made with other candidates, model or options."""


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
    """(candidates, competing phases): candidates as a ``CandidateSet`` whose unscreenable members (unreadable,
    overlapping atoms, elements the model was not trained on) are moved to ``rejected`` with their reasons."""
    from dpa4_core.io.checkpoint import CheckpointError
    from dpa4_flows.jobs.calculators import get_model
    from dpa4_flows.structures.candidates import default_candidates
    from dpa4_flows.structures.checks import rejection_reason
    from dpa4_flows.structures.files import CandidateFileError, CandidateSet, read_candidate_files

    try:
        candidates = (read_candidate_files(options.candidates) if options.candidates
                      else CandidateSet(structures=default_candidates(n_random=options.n_random)))
        phases = read_candidate_files(options.competing_phases) if options.competing_phases else CandidateSet()
    except CandidateFileError as exc:
        raise ScreenInputError(str(exc)) from exc
    if not candidates.structures:
        reasons = "; ".join(f"{k}: {v}" for k, v in list(candidates.rejected.items())[:3])
        raise ScreenInputError(f"no candidate can be read ({reasons})")
    try:
        get_model(model, options.device, options.dtype)  # fail here, not in every job; the jobs reuse this copy
        known = model_elements(model)
    except CheckpointError as exc:
        raise ScreenInputError(f"cannot load the model: {str(exc).splitlines()[0]}") from exc
    if phases.rejected:
        raise ScreenInputError("competing phases must all be readable: " + "; ".join(
            f"{k}: {v}" for k, v in list(phases.rejected.items())[:3]))
    for key, structure in list(candidates.structures.items()):
        reason = rejection_reason(structure, known)
        if reason:
            candidates.rejected[key] = reason
            candidates.formulas[key] = structure.composition.reduced_formula
            del candidates.structures[key]
    bad_phases = {k: r for k, s in phases.structures.items() if (r := rejection_reason(s, known))}
    if bad_phases:
        raise ScreenInputError("competing phases cannot be screened: " + "; ".join(
            f"{k}: {v}" for k, v in list(bad_phases.items())[:3]))
    if not candidates.structures:
        reasons = "; ".join(f"{k}: {v}" for k, v in list(candidates.rejected.items())[:3])
        raise ScreenInputError(f"no candidate can be screened ({reasons})")
    for key, reason in candidates.rejected.items():
        logger.warning("not screened: %s: %s", key, reason)
    return candidates, phases


def _digest(items) -> str:
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()


def screen(options: ScreenOptions) -> int:
    """Run (or resume) a screening; prints the table and summary to stdout, errors to stderr.

    Returns:
        The exit status: 0 done, 1 some jobs failed (rerun to retry them), 2 bad input or run files,
        130 interrupted (Ctrl-C; rerun to resume).
    """
    from dpa4_flows.analysis.report import format_table, results_dataframe, summary
    from dpa4_flows.execution.workdir import RunFileError
    from dpa4_flows.jobs.calculators import ModelFileError, checkpoint_path, file_sha256
    from dpa4_flows.schemas import ScreeningReport
    from dpa4_flows.settings import get_settings

    settings = get_settings()
    unset = [k for k in ("model", "chunk_size", "fmax", "max_steps", "device", "dtype") if getattr(options, k) is None]
    options = replace(options, **{k: getattr(settings, k) for k in unset})
    out = options.out.expanduser().resolve()
    try:
        model = checkpoint_path(options.model)  # a path or a shipped model's name
    except ModelFileError as exc:
        print(f"error: {exc}; pass --model PATH/TO/checkpoint.pt or a name from `dpa4 models`", file=sys.stderr)
        return 2
    try:
        if options.workers < 1:
            raise ScreenInputError(f"--workers {options.workers} must be >= 1")
        candidates, phases = _checked_inputs(options, model)
        fingerprint = {
            "candidates_sha256": _digest([[i, s.as_dict()] for i, s in candidates.structures.items()]),
            "model_sha256": file_sha256(model),
            "options": {"chunk_size": options.chunk_size, "fmax": options.fmax, "max_steps": options.max_steps,
                        "dtype": options.dtype, "reference_prototypes": list(options.reference_prototypes),
                        "references": str(options.references.resolve()) if options.references else None},
        }
        if options.checks():  # older runs: unchanged
            fingerprint["checks"] = options.checks()
        if candidates.rejected or phases.structures or options.max_volume_change != 0.30:  # older runs: unchanged
            fingerprint["screen"] = {"rejected": _digest(candidates.rejected),
                                     "phases": _digest([[i, s.as_dict()] for i, s in phases.structures.items()]),
                                     "max_volume_change": options.max_volume_change}
        check_run(out, fingerprint)
    except (ScreenInputError, RunFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    flow = _flow(options, model, out, candidates, phases)
    logger.info("%d candidates (%d not screened), %d competing phases, %d jobs, model %s (sha256 %s...), output %s",
                len(candidates), len(candidates.rejected), len(phases.structures), len(flow.jobs), model,
                fingerprint["model_sha256"][:12], out)

    start = time.perf_counter()
    try:
        from dpa4_flows.screen_progress import CandidateProgress

        bar = CandidateProgress(out / WORK_DIR / "state.sqlite", len(candidates.structures), options.chunk_size,
                                enabled=not options.quiet)  # the one bar: over candidates, not jobs or steps
        with _progress_log(out / LOG_FILE), bar:
            result = _run(flow, out, progress=False, workers=options.workers)
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
    print(f"table: {report.csv_path}\nhull plot: {report.plot_path}\nlog: {out / LOG_FILE}\n"
          f"({time.perf_counter() - start:.1f} s; store {out / 'jobs.sqlite'})")
    return 0


def _flow(options: ScreenOptions, model: Path, out: Path, candidates, phases):
    from dpa4_flows.flows.screening import ScreeningMaker
    from dpa4_flows.jobs.batch_relax import BatchRelaxMaker

    regime = {} if options.max_volume_change == 0.30 else {"max_volume_change": options.max_volume_change}
    relax = BatchRelaxMaker(
        calculator_kwargs={"model": str(model), "device": options.device, "dtype": options.dtype},
        fmax=options.fmax, max_steps=options.max_steps, progress=False, regime=regime,
    )
    maker = ScreeningMaker(relax_maker=relax, chunk_size=options.chunk_size, output_dir=str(out),
                           reference_entries=str(options.references) if options.references else None,
                           prototypes=tuple(options.reference_prototypes), **options.checks())
    return maker.make(list(candidates.structures.values()), list(candidates.structures),
                      rejected=candidates.rejected, labels=candidates.labels, formulas=candidates.formulas,
                      phases=phases.structures or None)


@contextlib.contextmanager
def _progress_log(path: Path):
    """Append the chunks' progress lines (and warnings) of this process to ``path`` while the run lasts."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    progress = logging.getLogger("dpa4_flows.progress")
    level = progress.level
    progress.setLevel(logging.INFO)
    progress.addHandler(handler)
    try:
        yield
    finally:
        progress.removeHandler(handler)
        progress.setLevel(level)
        handler.close()


def _worker(out: str, log: str) -> None:
    """Body of an extra ``--workers`` process (spawned): run jobs of the persisted flow until none is left."""
    from dpa4_flows.execution.runner import run_resumable
    from dpa4_flows.execution.stores import embedded_store

    import torch

    torch.set_num_threads(1)  # N workers on N cores: one thread each (the small models are dispatch-bound)
    with _progress_log(Path(log)):
        run_resumable(None, embedded_store(Path(out) / "jobs.sqlite"), Path(out) / WORK_DIR, progress=False,
                      include_outputs=False)


def _run(flow, out: Path, progress: bool, workers: int = 1) -> dict:
    """Run ``flow`` resumably in ``<out>/work`` (with ``workers`` processes), resuming the persisted flow there if
    it is the same work."""
    import multiprocessing

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
    store = embedded_store(out / "jobs.sqlite")
    if workers == 1:
        return run_resumable(flow, store, work, progress=progress)
    run_resumable(flow, store, work, progress=False, include_outputs=False, max_jobs=0)  # persist the flow
    context = multiprocessing.get_context("spawn")  # never fork a process that holds torch threads
    procs = [context.Process(target=_worker, args=(str(out), str(out / LOG_FILE)), daemon=True)
             for _ in range(workers - 1)]
    for proc in procs:
        proc.start()
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_resumable(None, store, work, progress=progress)
    except BaseException:  # Ctrl-C or a failure: stop the workers too (a killed worker loses nothing)
        for proc in procs:
            proc.terminate()
        raise
    finally:
        torch.set_num_threads(threads)
        for proc in procs:
            proc.join()
    return result


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
