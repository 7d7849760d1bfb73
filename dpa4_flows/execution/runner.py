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
A failed job is recorded with its traceback; jobs that do not need its output go on.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import traceback
import json
import uuid as uuidlib
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from dpa4_flows.execution.fingerprint import flow_fingerprint
from dpa4_flows.execution.state import ResumeState
from dpa4_flows.execution.stores import check_persistent
from dpa4_flows.execution.workdir import STATE_FILE, save_flow

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


def _initialise(state: ResumeState, flow: Flow | Job | None, workdir: Path) -> None:
    """Persist ``flow`` and register its jobs, unless the workdir already holds one."""
    from jobflow.core.flow import get_flow

    with state.tx() as c:
        done = state.get_meta("initialised")
        if flow is None:
            if not done:
                raise FlowMismatchError(f"no flow persisted in {workdir}: pass the flow")
            return
        flow = get_flow(flow, allow_external_references=True)
        jobs = [j for j, _ in flow.iterflow()]
        fingerprint = flow_fingerprint(flow)
        if done:
            stored = state.get_meta("fingerprint")
            if stored is None:  # a workdir made before fingerprints: compare job names, as then
                same, what = state.get_meta("signature") == _job_names(jobs), "job names differ"
            else:
                same, what = stored == fingerprint, "jobs, functions or inputs differ"
            if not same:
                raise FlowMismatchError(
                    f"{workdir} holds a different flow ({what}); use a new workdir "
                    "or pass flow=None to resume the persisted one")
            return
        save_flow(workdir, flow)
        state.add_jobs(c, jobs)
        state.set_meta(c, "fingerprint", fingerprint)
        state.set_meta(c, "initialised", "1")
        logger.info("persisted flow %s (%d jobs) in %s", flow.uuid, len(jobs), workdir)


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
            f"{len(missing)} job(s) recorded done in the workdir have no output in store "
            f"{store.name}, e.g. uuid {missing[0][0]} index {missing[0][1]}: resume with the "
            "store the flow started with")


class _Heartbeat:
    """Renews this worker's lease on its current job from a thread, while the job runs."""

    def __init__(self, path: Path, worker: str, lease_s: float):
        self.path, self.worker, self.lease_s = path, worker, lease_s
        self.seq: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        state = ResumeState(self.path)
        try:
            while not self._stop.wait(self.lease_s / 4):
                if self.seq is not None:
                    try:
                        state.renew(self.seq, self.worker, self.lease_s)
                    except sqlite3.OperationalError as err:  # busy for > timeout: retry later
                        logger.warning("could not renew the lease on job row %s: %s", self.seq, err)
        finally:
            state.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


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
        _initialise(state, flow, workdir)
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


def _work(state: ResumeState, store: JobStore, workdir: Path, run_dir: Path, worker: str,
          lease_s: float, poll_s: float, create_folders: bool, progress: bool,
          max_jobs: int | None) -> int:
    """The worker loop: claim, run, record; returns the number of jobs this worker ran."""
    from contextlib import chdir

    from monty.json import MontyDecoder

    heartbeat = _Heartbeat(workdir / STATE_FILE, worker, lease_s)
    counts = state.counts()
    bar = tqdm(total=sum(counts.values()), initial=sum(counts.values()) - counts.get("pending", 0)
               - counts.get("running", 0), desc="jobs", unit="job",
               disable=None if progress else True)
    n_run, last_refresh = 0, time.monotonic()
    try:
        while max_jobs is None or n_run < max_jobs:
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
            job = MontyDecoder().decode(claim.job)
            job_dir = run_dir
            if create_folders:
                job_dir = run_dir / f"{claim.name}-{claim.uuid}-{claim.idx}"
                job_dir.mkdir(parents=True, exist_ok=True)
            try:
                with chdir(job_dir):
                    response = job.run(store=store, job_dir=job_dir)
            except Exception:
                error = traceback.format_exc()
                logger.error("job %s (%s, index %d) failed:\n%s", claim.name, claim.uuid,
                             claim.idx, error)
                recorded = state.fail(claim, error)
            else:
                recorded = state.finish(claim, response)
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
        heartbeat.stop()
        bar.close()
    return n_run
