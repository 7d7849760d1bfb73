"""run_resumable: a flow killed with SIGKILL resumes without losing or repeating work.

The flow (``_jobs.make_flow``) has references, a ``data``-store blob, a replace, a detour and
an addition. Its reference result comes from jobflow's own ``run_locally``. Runs happen in
worker processes (``spawn``ed, bodies in ``_workers``) that a test kills with SIGKILL while they hold a job: the
test freezes a worker (SIGSTOP), reads the state file and kills only when the worker holds a claim, so every kill
lands inside a job. Every job appends to a log file each time it really runs, so the tests can count executions.
"""

from __future__ import annotations

import collections
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from jobflow import Flow, run_locally
from monty.json import MontyDecoder

from _jobs import add, describe, fail_if, make_flow, stop_here
from _workers import claim_of, resume_worker
from dpa4_flows.execution.runner import FlowFailedError, FlowMismatchError, StoreMismatchError, run_resumable
from dpa4_flows.execution.state import ResumeState
from dpa4_flows.execution.stores import StoreConfigError, embedded_store, memory_store
from dpa4_flows.execution.workdir import load_flow

N_DOCS = 16  # job documents of make_flow(): 11 static jobs + replacement, detour, 3 adds + gather

@pytest.fixture(scope="module")
def reference() -> dict:
    """Final output and document count of an uninterrupted run_locally."""
    flow = make_flow()
    store = memory_store()
    run_locally(flow, store=store, log=False, ensure_success=True)
    return {"final": store.get_output(flow.output.uuid), "n_docs": store.count()}


def _start(db: Path, work: Path, log: Path, sleep: float, barrier: Path | None = None):
    proc = mp.get_context("spawn").Process(
        target=resume_worker, args=(str(db), str(work), str(log), sleep, barrier and str(barrier)))
    proc.start()
    return proc


def _freeze_in_job(proc, state_file: Path, min_done: int = 0, timeout: float = 120) -> int:
    """Stop ``proc`` (SIGSTOP) at a moment it holds a job and ``min_done`` jobs are done;
    returns that job's row id. The frozen worker cannot finish the job before it is killed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.is_alive(), f"worker ended early with exit code {proc.exitcode}"
        os.kill(proc.pid, signal.SIGSTOP)
        held = claim_of(state_file, proc.pid)
        if held is not None and held[1] >= min_done:
            return held[0]
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError(f"worker {proc.pid} held no job with {min_done} done within {timeout} s")


def _lines(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def _final(store, work: Path):
    flow = load_flow(work)
    return store.get_output(flow.output.uuid)


def _assert_stored_once(store) -> None:
    store.connect()
    keys = [(d["uuid"], d["index"]) for d in store.query(properties=["uuid", "index"])]
    assert len(keys) == len(set(keys)) == N_DOCS


def test_uninterrupted_matches_run_locally(tmp_path, reference):
    store = embedded_store(tmp_path / "db.sqlite")
    result = run_resumable(make_flow(), store, tmp_path / "work", progress=False)
    assert reference["n_docs"] == N_DOCS
    _assert_stored_once(store)
    assert _final(store, tmp_path / "work") == reference["final"]
    assert all(s["state"] == "done" for s in result.values())
    names = collections.Counter(s["name"] for s in result.values())
    assert names["gather"] == 2 and names["detour_then"] == 1 and names["fan_out"] == 1
    # The replaced uuid ends at index 2 with the replacement's (an add job's) output.
    (rep,) = [s for s in result.values() if s["index"] == 2]
    assert rep["name"] == "add" and rep["output"] == 102 + 100
    # A second call runs nothing and returns the same outputs.
    again = run_resumable(make_flow(), store, tmp_path / "work", progress=False)
    assert {u: s["output"] for u, s in again.items()} == {u: s["output"] for u, s in result.items()}
    assert all(s["attempts"] == 1 for s in again.values())


def test_sigkill_at_several_points_then_resume(tmp_path, reference, monkeypatch):
    db, work, log = tmp_path / "db.sqlite", tmp_path / "work", tmp_path / "runs.log"
    embedded_store(db).connect()  # create the database before any worker
    kills = 0
    for kill_after in (1, 4, 7, 10, 13):
        proc = _start(db, work, log, sleep=0.15)
        _freeze_in_job(proc, work / "state.sqlite", min_done=kill_after)
        proc.kill()  # SIGKILL: no cleanup, no atexit, open transactions abandoned
        proc.join()
        assert proc.exitcode == -9
        kills += 1
    monkeypatch.setenv("DPA4_TEST_JOB_LOG", str(log))
    store = embedded_store(db)
    result = run_resumable(None, store, work, progress=False, ensure_success=True)
    assert len(result) == 15
    _assert_stored_once(store)
    assert _final(store, work) == reference["final"]
    runs = collections.Counter(_lines(log))
    assert len(runs) == N_DOCS  # every job ran ...
    # ... and at most the job being recorded at each kill ran a second time.
    assert sum(runs.values()) - N_DOCS <= kills


def test_parallel_workers_never_run_a_job_twice(tmp_path, reference):
    db, work, log = tmp_path / "db.sqlite", tmp_path / "work", tmp_path / "runs.log"
    embedded_store(db).connect()
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [_start(db, work, log, sleep=0.25, barrier=barrier) for _ in range(3)]
    deadline = time.time() + 120
    while len(list(barrier.iterdir())) < 3 and time.time() < deadline:
        time.sleep(0.02)
    (barrier / "go").touch()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    runs = collections.Counter(_lines(log))
    assert len(runs) == N_DOCS and set(runs.values()) == {1}
    # The work really was shared (otherwise this test would prove nothing).
    state = ResumeState(work / "state.sqlite")
    workers = {w for (w,) in state.conn.execute("SELECT worker FROM jobs")}
    assert len(workers) >= 2
    store = embedded_store(db)
    _assert_stored_once(store)
    assert _final(store, work) == reference["final"]


def test_killed_worker_job_taken_over_at_once(tmp_path, reference):
    """Two workers; one is SIGKILLed mid-job. The other takes its job over through the dead
    pid, long before the 120 s lease would run out."""
    db, work, log = tmp_path / "db.sqlite", tmp_path / "work", tmp_path / "runs.log"
    embedded_store(db).connect()
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    victim, survivor = (_start(db, work, log, sleep=0.2, barrier=barrier) for _ in range(2))
    deadline = time.monotonic() + 120
    while len(list(barrier.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    (barrier / "go").touch()
    t0 = time.time()
    seq = _freeze_in_job(victim, work / "state.sqlite", min_done=2)
    victim.kill()
    victim.join()
    survivor.join(100)
    assert survivor.exitcode == 0 and time.time() - t0 < 100
    # The survivor ran the dead worker's job a second time, instead of waiting out its lease.
    state = ResumeState(work / "state.sqlite")
    row = state.conn.execute("SELECT state, attempts, pid FROM jobs WHERE seq = ?", (seq,)).fetchone()
    assert row == ("done", 2, survivor.pid)
    store = embedded_store(db)
    _assert_stored_once(store)
    assert _final(store, work) == reference["final"]
    runs = collections.Counter(_lines(log))
    assert len(runs) == N_DOCS and sum(runs.values()) <= N_DOCS + 1


def test_crash_between_storing_and_recording_reruns_that_job_once(tmp_path, reference):
    store, work = embedded_store(tmp_path / "db.sqlite"), tmp_path / "w"
    run_resumable(make_flow(), store, work, progress=False, max_jobs=0)  # persist only
    state = ResumeState(work / "state.sqlite")
    claim = state.claim("doomed-worker", lease_s=600)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # a pid that no longer runs
    dead.wait()
    state.conn.execute("UPDATE jobs SET pid = ? WHERE seq = ?", (dead.pid, claim.seq))
    store.connect()
    MontyDecoder().decode(claim.job).run(store)  # output stored ... then the "kill"
    result = run_resumable(None, store, work, progress=False, ensure_success=True)
    assert result[claim.uuid]["attempts"] == 2
    _assert_stored_once(store)
    assert _final(store, work) == reference["final"]


def test_worker_that_lost_its_claim_records_nothing(tmp_path):
    from jobflow import Response

    state = ResumeState(tmp_path / "state.sqlite")
    job = add(1, 2)
    with state.tx() as c:
        state.add_jobs(c, [job])
    claim = state.claim("slow-worker", lease_s=60)
    state.conn.execute("UPDATE jobs SET worker = 'new-owner'")  # taken over after a lost lease
    assert state.finish(claim, Response(output=3, addition=add(5, 5))) is False
    assert state.fail(claim, "boom") is False
    assert state.conn.execute("SELECT COUNT(*), MAX(state) FROM jobs").fetchone() == (1, "running")


def test_stale_claim_of_dead_worker_elsewhere_is_reclaimed(tmp_path):
    state = ResumeState(tmp_path / "state.sqlite")
    job = add(1, 2)
    with state.tx() as c:
        state.add_jobs(c, [job])
    claim = state.claim("worker-a", lease_s=60)
    assert claim is not None and claim.uuid == job.uuid
    # Pretend worker-a runs on another host: its live lease blocks everyone else ...
    state.conn.execute("UPDATE jobs SET host = 'elsewhere', pid = 1")
    assert state.claim("worker-b", lease_s=60) is None
    # ... until the lease runs out without renewal.
    state.conn.execute("UPDATE jobs SET lease = ?", (time.time() - 1,))
    again = state.claim("worker-b", lease_s=60)
    assert again is not None and again.uuid == job.uuid
    assert state.conn.execute("SELECT attempts, worker FROM jobs").fetchone() == (2, "worker-b")


def test_failure_recorded_without_losing_other_work(tmp_path):
    bad = fail_if(5, 1)
    child = add(bad.output, 1)
    unrelated = add(2, 2)
    flow = Flow([bad, child, unrelated])
    store = embedded_store(tmp_path / "db.sqlite")
    result = run_resumable(flow, store, tmp_path / "w", progress=False)
    assert result[bad.uuid]["state"] == "failed"
    assert "x=5 above threshold 1" in result[bad.uuid]["error"]
    assert result[child.uuid]["state"] == "skipped"
    assert result[unrelated.uuid]["state"] == "done" and result[unrelated.uuid]["output"] == 4
    with pytest.raises(FlowFailedError, match=r"fail_if \(failed\): RuntimeError: x=5 above"):
        run_resumable(None, store, tmp_path / "w", progress=False, ensure_success=True)
    # The retry ran the failed job again, not the done one.
    final = run_resumable(None, store, tmp_path / "w", progress=False, retry_failed=False)
    assert final[unrelated.uuid]["attempts"] == 1 and final[bad.uuid]["attempts"] == 2


def test_stop_children_and_lenient_children_of_a_failure(tmp_path):
    from jobflow.core.reference import OnMissing

    bad = fail_if(5, 1)
    lenient = describe(bad.output)
    lenient.config.on_missing_references = OnMissing.NONE  # runs with None for the output
    stop = stop_here(1)
    stopped = add(stop.output, 1)
    grandchild = add(stopped.output, 1)
    flow = Flow([bad, lenient, stop, stopped, grandchild])
    store = embedded_store(tmp_path / "db.sqlite")
    result = run_resumable(flow, store, tmp_path / "w", progress=False)
    assert result[bad.uuid]["state"] == "failed"
    assert result[lenient.uuid]["state"] == "done" and result[lenient.uuid]["output"] == "None"
    assert result[stop.uuid]["state"] == "done" and result[stop.uuid]["output"] == 1
    assert result[stopped.uuid]["state"] == result[grandchild.uuid]["state"] == "stopped"
    # Same verdicts as jobflow's own run_locally.
    responses = run_locally(flow, store=memory_store(), log=False)
    assert lenient.uuid in responses and stopped.uuid not in responses


def test_bad_inputs_are_refused(tmp_path):
    with pytest.raises(StoreConfigError, match="not persistent"):
        run_resumable(make_flow(), memory_store(), tmp_path / "w")
    store = embedded_store(tmp_path / "db.sqlite")
    run_resumable(Flow([add(1, 2)]), store, tmp_path / "w", progress=False)
    with pytest.raises(FlowMismatchError, match="different flow"):
        run_resumable(Flow([add(1, 2), add(3, 4, tag="x"), fail_if(1, 2)]), store,
                      tmp_path / "w", progress=False)
    with pytest.raises(StoreMismatchError, match="no output"):
        run_resumable(None, embedded_store(tmp_path / "other.sqlite"), tmp_path / "w",
                      progress=False)
    with pytest.raises(FlowMismatchError, match="no flow persisted"):
        run_resumable(None, store, tmp_path / "empty", progress=False)
