"""Resumable, multi-worker execution of a jobflow Flow over a persistent JobStore.

jobflow's ``run_locally`` never looks in the store for finished jobs, and a flow rebuilt
in a new process gets new random uuids, so a flow killed half way restarts from zero.
``run_resumable`` fixes both:

1. The first call with a workdir persists the flow (``<workdir>/flow.json``, written
   atomically) and registers its jobs in ``<workdir>/state.sqlite``; uuids are now fixed.
   Later calls compare the flow they are given with the persisted one by
   :func:`~dpa4_flows.execution.fingerprint.flow_fingerprint` and refuse a different flow.
2. Every call then runs the jobs that are not done, in dependency order, skipping every
   job recorded done (its output is in the store). Dynamic responses (``replace``,
   ``detour``, ``addition``) are recorded in the same transaction that marks their parent
   done, so a kill can never lose them.
3. Several processes may call it on the same workdir and store at once: each job is
   claimed atomically and runs in one worker only; a dead worker's claim is taken over
   (at once on the same host, after its lease elsewhere).

A kill between "output stored" and "marked done" re-runs that one job on resume; its
output document is replaced (upsert by uuid and index), so it is still stored once.
A failed job is recorded with its traceback; jobs that do not need its output go on. A job
whose stored JSON cannot be decoded fails the same way (``JobDecodeError``), and, like every
failed job, is retried only by a later call. A job interrupted by Ctrl-C is given back.
A lost ``state.sqlite`` is rebuilt from ``flow.json`` and the store (a job whose output is
stored is done), unless the flow made dynamic jobs, which only that file recorded.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback
import json
import uuid as uuidlib
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from dpa4_flows.execution.fingerprint import flow_fingerprint
from dpa4_flows.execution.state import Claim, Heartbeat, ResumeState
from dpa4_flows.execution.stores import check_persistent
from dpa4_flows.execution.workdir import (DYNAMIC_FILE, FLOW_FILE, STATE_FILE, RunFileError, flow_path, load_flow,
                                          mark_dynamic, save_flow)

if TYPE_CHECKING:
    from jobflow import Flow, Job, JobStore

logger = logging.getLogger(__name__)

class FlowMismatchError(ValueError):
    """The flow given does not match the one persisted in the workdir."""


class StoreMismatchError(ValueError):
    """Jobs recorded done in the workdir have no output in the given store."""


class FlowFailedError(RuntimeError):
    """``ensure_success=True`` and some jobs failed or were skipped."""


def _job_names(jobs: list) -> str:
    """What workdirs made before flow fingerprints recorded (meta ``signature``) to compare flows."""
    return json.dumps(sorted(j.name for j in jobs))


def _initialise(state: ResumeState, flow: Flow | Job | None, workdir: Path, store: JobStore) -> None:
    """Persist ``flow`` and register its jobs, unless the workdir already holds one."""
    from jobflow.core.flow import get_flow

    with state.tx() as c:
        done = state.get_meta("initialised")
        if flow is None and not done and not flow_path(workdir).exists():
            raise FlowMismatchError(f"no flow persisted in {workdir}: pass the flow")
        if flow is None and done:
            return
        if flow is not None:
            flow = get_flow(flow, allow_external_references=True)
        if done:
            jobs = [j for j, _ in flow.iterflow()]
            stored = state.get_meta("fingerprint")
            if stored is None:  # a workdir made before fingerprints: compare job names, as then
                same, what = state.get_meta("signature") == _job_names(jobs), "job names differ"
            else:
                same, what = stored == flow_fingerprint(flow), "jobs, functions or inputs differ"
            if not same:
                raise FlowMismatchError(
                    f"{workdir} holds a different flow ({what}); use a new workdir "
                    "or pass flow=None to resume the persisted one")
            return
        if flow_path(workdir).exists():  # the state file was lost: rebuild it
            flow = _recover(state, c, flow, workdir, store)
        else:
            save_flow(workdir, flow)
            state.add_jobs(c, [j for j, _ in flow.iterflow()])
        state.set_meta(c, "fingerprint", flow_fingerprint(flow))
        state.set_meta(c, "initialised", "1")
        logger.info("persisted flow %s (%d jobs) in %s", flow.uuid, len(flow.jobs), workdir)


def _recover(state: ResumeState, c, flow: Flow | None, workdir: Path, store: JobStore) -> Flow:
    """Register the persisted flow again after its state file was lost; jobs whose output is in
    ``store`` are done. Refused if the flow made dynamic jobs (recorded only in the lost file)."""
    persisted = load_flow(workdir)
    if flow is not None and flow_fingerprint(flow) != flow_fingerprint(persisted):
        raise FlowMismatchError(f"{flow_path(workdir)} holds a different flow (jobs, functions or inputs "
                                "differ); use a new workdir or pass flow=None to resume the persisted one")
    jobs = [j for j, _ in persisted.iterflow()]
    static = {(j.uuid, j.index) for j in jobs}
    stored = {(d["uuid"], d["index"]) for d in store.query({"hosts": persisted.uuid}, properties=["uuid", "index"])}
    if (workdir / DYNAMIC_FILE).exists() or stored - static:
        raise RunFileError(
            f"{workdir / STATE_FILE} is missing and the flow in {workdir} made dynamic jobs that only that file "
            "recorded: restore it, or start over in a new workdir (the outputs already in the store are kept)")
    state.add_jobs(c, jobs)
    state.mark_done(c, stored & static)
    logger.warning("%s was missing: rebuilt from %s and the store (%d of %d jobs already done)",
                   workdir / STATE_FILE, FLOW_FILE, len(stored & static), len(jobs))
    return persisted


def _check_store(state: ResumeState, store: JobStore) -> None:
    """Every job recorded done must have its output in ``store`` (same store as before)."""
    done = state.done_keys()
    if not done:
        return
    found: set[tuple[str, int]] = set()
    uuids = sorted({u for u, _ in done})
    for i in range(0, len(uuids), 5000):
        for doc in store.query({"uuid": {"$in": uuids[i:i + 5000]}}, properties=["uuid", "index"]):
            found.add((doc["uuid"], doc["index"]))
    missing = [k for k in done if tuple(k) not in found]
    if missing:
        raise StoreMismatchError(
            f"{len(missing)} job(s) recorded done in {state.path} have no output in store {store.name} "
            f"(e.g. uuid {missing[0][0]} index {missing[0][1]}); the store was deleted or is another one: "
            f"resume with the store the flow started with, or delete {state.path} to recompute what is missing")


class _CtrlC:
    """Ctrl-C raises ``KeyboardInterrupt`` as usual and is also remembered, so that library code that swallows
    it (CPython's ``copyreg`` has a bare ``except``) cannot make the worker go on to the next job. Only in the
    main thread, and only over Python's default handler."""

    def __init__(self):
        self.seen = False
        self.active = (threading.current_thread() is threading.main_thread()
                       and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        if self.active:
            signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt

    def close(self) -> None:
        if self.active:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _outputs(store: JobStore, summary: dict[str, dict]) -> None:
    """Add the stored output of the final index to each done entry of ``summary``."""
    keys = {(u, s["index"]) for u, s in summary.items() if s["state"] == "done"}
    uuids = sorted({u for u, _ in keys})
    for i in range(0, len(uuids), 5000):
        for doc in store.query({"uuid": {"$in": uuids[i:i + 5000]}},
                               properties=["uuid", "index", "output"]):
            if (doc["uuid"], doc["index"]) in keys:
                summary[doc["uuid"]]["output"] = doc.get("output")


def run_resumable(flow: Flow | Job | None, store: JobStore, workdir: str | os.PathLike, *,
                  retry_failed: bool = True, lease_s: float = 120.0, poll_s: float = 0.5,
                  create_folders: bool = False, progress: bool = True,
                  include_outputs: bool = True, ensure_success: bool = False,
                  max_jobs: int | None = None) -> dict[str, dict]:
    """Run ``flow`` so that a later call with the same ``workdir`` resumes it.

    Args:
        flow: the flow (or job). Used on the first call only; later calls check it is the
            same flow (``flow_fingerprint``: names, functions, inputs) and run the persisted
            copy. ``None`` resumes the persisted flow.
        store: a persistent JobStore with a ``data`` store (``embedded_store`` or
            ``mongo_store``); the same one on every call.
        workdir: folder for ``flow.json``, ``state.sqlite`` and the jobs' working
            directories (``jobs/``, or ``jobs/<name>-<uuid>-<index>/`` with
            ``create_folders``). Several workers may share it on one file system (not NFS).
        retry_failed: run failed (and thereby skipped) jobs again.
        lease_s: how long a claim stays valid without renewal (renewed every lease_s/4);
            after that another host's worker may take the job over.
        poll_s: wait between checks while other workers hold the only ready jobs.
        create_folders: give each job its own working directory.
        progress: show a tqdm bar (hidden off a terminal).
        include_outputs: add each done job's stored output to the result.
        ensure_success: raise ``FlowFailedError`` if any job failed or was skipped.
        max_jobs: stop this worker after running that many jobs (for tests and batching).

    Returns:
        ``{uuid: {"name", "index", "state", "error", "attempts", "output"}}`` for every uuid
        of the flow and its dynamic jobs, ``index`` being the last one (replacements), and
        ``state`` one of done, failed, skipped, stopped, pending or running (still pending
        or held by another worker).

    Raises:
        StoreConfigError: ``store`` is in memory or lacks a ``data`` store.
        FlowMismatchError, StoreMismatchError: the workdir belongs to another flow/store.
    """
    check_persistent(store)
    workdir = Path(workdir).expanduser().resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    run_dir = workdir / "jobs"
    run_dir.mkdir(exist_ok=True)
    state = ResumeState(workdir / STATE_FILE)
    worker = f"{os.uname().nodename}:{os.getpid()}:{uuidlib.uuid4().hex[:8]}"
    store.connect()
    try:
        _initialise(state, flow, workdir, store)
        _check_store(state, store)
        if retry_failed and (n := state.reset_failed()):
            logger.info("retrying %d failed or skipped job(s)", n)
        n_run = _work(state, store, workdir, run_dir, worker, lease_s, poll_s,
                      create_folders, progress, max_jobs)
        summary = state.summary()
    finally:
        state.close()
    if include_outputs:
        _outputs(store, summary)
    bad = {u: s for u, s in sorted(summary.items(), key=lambda kv: kv[1]["state"] != "failed")
           if s["state"] in ("failed", "skipped")}
    logger.info("worker %s ran %d job(s); %d failed or skipped", worker, n_run, len(bad))
    if ensure_success and bad:
        first = next(iter(bad.values()))  # a failed one if any (skipped ones have no error)
        reason = (first["error"] or "").strip().splitlines()[-1:] or ["skipped"]
        raise FlowFailedError(f"{len(bad)} job(s) failed or were skipped; first: "
                              f"{first['name']} ({first['state']}): {reason[0]}")
    return summary


class JobDecodeError(ValueError):
    """A job's stored JSON cannot be turned back into a job (broken JSON, or its code moved)."""


def _run_claim(state: ResumeState, store: JobStore, claim: Claim, run_dir: Path, workdir: Path,
               create_folders: bool) -> bool:
    """Rebuild, run and record one claimed job; a failure (decoding included) is recorded, not raised.
    Returns False if the claim was lost meanwhile."""
    from contextlib import chdir

    from jobflow import Job
    from monty.json import MontyDecoder

    try:
        try:
            job = MontyDecoder().decode(claim.job)
        except Exception as err:
            job = err
        if not isinstance(job, Job):
            raise JobDecodeError(f"cannot rebuild job {claim.name!r} (uuid {claim.uuid}) from its stored JSON "
                                 f"({type(job).__name__}: {str(job)[:200]}): was its function moved or renamed? "
                                 "Restore the code, or start over in a new workdir")
        job_dir = run_dir
        if create_folders:
            job_dir = run_dir / f"{claim.name}-{claim.uuid}-{claim.idx}"
            job_dir.mkdir(parents=True, exist_ok=True)
        with chdir(job_dir):
            response = job.run(store=store, job_dir=job_dir)
    except Exception:
        error = traceback.format_exc()
        logger.error("job %s (%s, index %d) failed:\n%s", claim.name, claim.uuid, claim.idx, error)
        return state.fail(claim, error)
    if response.replace is not None or response.detour is not None or response.addition is not None:
        mark_dynamic(workdir)  # before the state records them: see workdir.DYNAMIC_FILE
    return state.finish(claim, response)


def _work(state: ResumeState, store: JobStore, workdir: Path, run_dir: Path, worker: str,
          lease_s: float, poll_s: float, create_folders: bool, progress: bool,
          max_jobs: int | None) -> int:
    """The worker loop: claim, run, record; returns the number of jobs this worker ran."""
    heartbeat = Heartbeat(workdir / STATE_FILE, worker, lease_s)
    counts = state.counts()
    bar = tqdm(total=sum(counts.values()), initial=sum(counts.values()) - counts.get("pending", 0)
               - counts.get("running", 0), desc="jobs", unit="job",
               disable=None if progress else True)
    n_run, last_refresh, ctrl_c = 0, time.monotonic(), _CtrlC()
    try:
        while max_jobs is None or n_run < max_jobs:
            if ctrl_c.seen:
                raise KeyboardInterrupt  # a Ctrl-C that the last job swallowed
            if state.get_meta("stopped"):
                logger.info("a job asked to stop the flow (stop_jobflow)")
                break
            claim = state.claim(worker, lease_s)
            if claim is None:
                counts = state.counts()
                if not counts.get("pending") and not counts.get("running"):
                    break
                if state.live_running():
                    time.sleep(poll_s)  # other workers hold what is left
                    continue
                if not counts.get("pending"):
                    continue  # a dead worker's claim: claim() takes it over next round
                n = state.block_orphans()
                if n == 0:
                    continue  # something became ready meanwhile
                logger.error("%d job(s) wait on outputs nothing will produce: skipped", n)
                break
            heartbeat.seq = claim.seq
            try:
                recorded = _run_claim(state, store, claim, run_dir, workdir, create_folders)
            except BaseException:  # Ctrl-C, SystemExit: give the job back for the next call
                state.unclaim(claim)
                raise
            if not recorded:
                logger.warning("lost the claim on %s (%s): its lease ran out and another worker "
                               "took it over; that worker records it", claim.name, claim.uuid)
            heartbeat.seq = None
            n_run += 1
            if time.monotonic() - last_refresh > 0.5:  # counting is O(jobs): not after each job
                last_refresh = time.monotonic()
                counts = state.counts()
                bar.total = sum(counts.values())
                bar.n = bar.total - counts.get("pending", 0) - counts.get("running", 0)
                bar.refresh()
    finally:
        ctrl_c.close()
        heartbeat.stop()
        bar.close()
    return n_run
