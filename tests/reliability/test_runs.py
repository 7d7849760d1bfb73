"""Reliability of the resumable runner, its run files and its messages (issue 16, area F).

A workdir answers only for its own flow; a lost state file is rebuilt from ``flow.json`` and the store without
rerunning or duplicating anything (or refused when it cannot be); a job whose code cannot be decoded fails once
with its reason; every broken run file is one line that names it; Ctrl-C ends with one line and exit code 130,
and the rerun finishes the work with every job run once.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from jobflow import Flow, job

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "flows"))  # the shared test jobs and workers

from _jobs import add, make_flow  # noqa: E402
from _workers import claim_of  # noqa: E402

from dpa4_flows.execution.results import flow_uuid  # noqa: E402
from dpa4_flows.execution.runner import FlowMismatchError, StoreMismatchError, run_resumable  # noqa: E402
from dpa4_flows.execution.state import ResumeState  # noqa: E402
from dpa4_flows.execution.stores import embedded_store  # noqa: E402
from dpa4_flows.execution.workdir import RunFileError, load_flow  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
INTERRUPTED = "interrupted: finished jobs are stored; run the same command to resume"


def _static_flow() -> Flow:
    """Five jobs known up front (no dynamic ones), two of them chained."""
    a = add(1, 2, tag="a")
    b = add(a.output, 10, tag="b")
    return Flow([a, b, add(3, 4, tag="c"), add(5, 6, tag="d"), add(b.output, 1, tag="e")], name="static")


def _drop_state(work: Path) -> None:
    for name in ("state.sqlite", "state.sqlite-wal", "state.sqlite-shm"):
        (work / name).unlink(missing_ok=True)


def _count(store) -> int:
    store.connect()
    return store.count()


def _runs(log: Path) -> collections.Counter:
    return collections.Counter(log.read_text().split() if log.exists() else [])


# ------------------------------------------------------------------------------------ a workdir of another flow
def test_a_workdir_never_answers_for_another_flow(tmp_path):
    store, work = embedded_store(tmp_path / "db.sqlite"), tmp_path / "w"
    first = Flow([add(1, 2)])
    run_resumable(first, store, work, progress=False)
    other = Flow([add(1, 3)])
    with pytest.raises(FlowMismatchError, match="different flow"):
        run_resumable(other, store, work, progress=False)
    # flow=None resumes the persisted flow: its own uuid and answer, nothing else.
    (again,) = run_resumable(None, store, work, progress=False).items()
    assert again[0] == first.jobs[0].uuid and again[1]["output"] == 3
    # Without its state file the workdir still belongs to the first flow (flow.json): refused, not rerun.
    _drop_state(work)
    with pytest.raises(FlowMismatchError, match=r"flow.json holds a different flow"):
        run_resumable(other, store, work, progress=False)
    assert load_flow(work).jobs[0].uuid == first.jobs[0].uuid and _count(store) == 1


# ---------------------------------------------------------------------------------------- a lost state file
def test_lost_state_file_is_rebuilt_from_the_store(tmp_path, monkeypatch):
    log = tmp_path / "runs.log"
    monkeypatch.setenv("DPA4_TEST_JOB_LOG", str(log))
    store, work = embedded_store(tmp_path / "db.sqlite"), tmp_path / "w"
    done = run_resumable(_static_flow(), store, work, progress=False, ensure_success=True)
    n_docs = _count(store)
    _drop_state(work)
    # A rebuilt flow (new random uuids, same work) reruns nothing and stores nothing twice.
    again = run_resumable(_static_flow(), store, work, progress=False, ensure_success=True)
    assert {u: s["output"] for u, s in again.items()} == {u: s["output"] for u, s in done.items()}
    assert _count(store) == n_docs == 5
    assert set(_runs(log).values()) == {1} and len(_runs(log)) == 5


def test_lost_state_file_mid_run_runs_only_the_rest(tmp_path, monkeypatch):
    log = tmp_path / "runs.log"
    monkeypatch.setenv("DPA4_TEST_JOB_LOG", str(log))
    store, work = embedded_store(tmp_path / "db.sqlite"), tmp_path / "w"
    run_resumable(_static_flow(), store, work, progress=False, max_jobs=2)
    _drop_state(work)
    result = run_resumable(None, store, work, progress=False, ensure_success=True)
    assert result[load_flow(work).jobs[-1].uuid]["output"] == 14
    assert _count(store) == 5 and set(_runs(log).values()) == {1} and len(_runs(log)) == 5


def test_lost_state_file_of_a_flow_with_dynamic_jobs_is_refused(tmp_path):
    store, work = embedded_store(tmp_path / "db.sqlite"), tmp_path / "w"
    run_resumable(make_flow(), store, work, progress=False, ensure_success=True)
    n_docs = _count(store)
    _drop_state(work)
    with pytest.raises(RunFileError, match=r"state.sqlite is missing .* made dynamic jobs .* restore it"):
        run_resumable(make_flow(), store, work, progress=False)
    assert _count(store) == n_docs


# --------------------------------------------------------------------------------------- undecodable jobs
def test_undecodable_job_fails_with_its_reason_and_the_rest_runs(tmp_path):
    moved, broken = add(1, 2), add(7, 7)
    child, other = add(moved.output, 1), add(5, 5)
    store, work = embedded_store(tmp_path / "db.sqlite"), tmp_path / "w"
    run_resumable(Flow([moved, child, broken, other]), store, work, progress=False, max_jobs=0)
    state = ResumeState(work / "state.sqlite")
    state.conn.execute("UPDATE jobs SET job = replace(job, '\"_jobs\"', '\"_jobs_gone\"') WHERE uuid = ?",
                       (moved.uuid,))
    state.conn.execute("UPDATE jobs SET job = '{\"@module\": ' WHERE uuid = ?", (broken.uuid,))
    state.close()
    result = run_resumable(None, store, work, progress=False)
    assert result[other.uuid]["state"] == "done" and result[other.uuid]["output"] == 10
    assert result[child.uuid]["state"] == "skipped"
    for uuid in (moved.uuid, broken.uuid):
        assert result[uuid]["state"] == "failed" and result[uuid]["attempts"] == 1
        assert "JobDecodeError: cannot rebuild job 'add'" in result[uuid]["error"]
    assert "No module named '_jobs_gone'" in result[moved.uuid]["error"]
    # Retried only by a later call, once per call, like any failed job.
    assert run_resumable(None, store, work, progress=False, retry_failed=False)[moved.uuid]["attempts"] == 1
    assert run_resumable(None, store, work, progress=False)[moved.uuid]["attempts"] == 2


# -------------------------------------------------------------------------------------------- run files
def test_garbage_state_file_is_one_clear_error_then_rebuilt(tmp_path):
    store, work = embedded_store(tmp_path / "db.sqlite"), tmp_path / "w"
    run_resumable(_static_flow(), store, work, progress=False)
    _drop_state(work)
    (work / "state.sqlite").write_bytes(b"not a database " * 100)
    with pytest.raises(RunFileError, match=r"state.sqlite is not a readable run state database .* delete it"):
        run_resumable(None, store, work, progress=False)
    (work / "state.sqlite").unlink()
    assert all(s["attempts"] == 0 for s in run_resumable(None, store, work, progress=False).values())
    assert _count(store) == 5


def test_garbage_flow_file_is_one_clear_error(tmp_path):
    store, work = embedded_store(tmp_path / "db.sqlite"), tmp_path / "w"
    run_resumable(_static_flow(), store, work, progress=False)
    for garbage in ("", "{not json", "[1, 2]"):
        (work / "flow.json").write_text(garbage)
        with pytest.raises(RunFileError, match=r"flow.json is not a readable persisted flow"):
            load_flow(work)
        with pytest.raises(RunFileError, match="flow.json"):
            flow_uuid(work)
    _drop_state(work)
    with pytest.raises(RunFileError, match=r"flow.json is not a readable persisted flow .* new workdir"):
        run_resumable(None, store, work, progress=False)


def test_deleted_store_says_which_files_and_what_to_do(tmp_path):
    work = tmp_path / "w"
    run_resumable(_static_flow(), embedded_store(tmp_path / "db.sqlite"), work, progress=False)
    (tmp_path / "db.sqlite").unlink()
    with pytest.raises(StoreMismatchError, match=r"5 job\(s\) recorded done in .*state.sqlite have no output in "
                       r"store .*db.sqlite.* delete .*state.sqlite to recompute"):
        run_resumable(None, embedded_store(tmp_path / "db.sqlite"), work, progress=False)


def test_run_record_is_written_atomically(tmp_path, monkeypatch):
    from dpa4_flows.screen import check_run

    def no_disk(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", no_disk)
    with pytest.raises(OSError, match="disk full"):
        check_run(tmp_path, {"options": {"fmax": 0.05}})
    assert list(tmp_path.iterdir()) == []  # no run.json, no half of one, no temporary file


# ----------------------------------------------------------------------------------------------- Ctrl-C
@job
def swallow_ctrl_c(x: int) -> int:
    """Ctrl-C pressed while library code with a bare ``except`` runs (CPython's copyreg has one): lost there."""
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the KeyboardInterrupt is raised here, and swallowed
    except KeyboardInterrupt:
        pass
    return x


def test_ctrl_c_swallowed_inside_a_job_still_stops_the_run(tmp_path):
    first, second = swallow_ctrl_c(1), add(2, 3)
    store, work = embedded_store(tmp_path / "db.sqlite"), tmp_path / "w"
    with pytest.raises(KeyboardInterrupt):
        run_resumable(Flow([first, second]), store, work, progress=False)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the runner's handler is gone
    state = ResumeState(work / "state.sqlite")
    assert dict(state.conn.execute("SELECT uuid, state FROM jobs")) == {first.uuid: "done", second.uuid: "pending"}
    state.close()
    assert run_resumable(None, store, work, progress=False)[second.uuid]["output"] == 5


# ---------------------------------------------------------------------------- dpa4 screen and the script
@pytest.fixture(scope="module")
def screen_inputs(tmp_path_factory):
    """A tiny checkpoint and one Mo-W candidate: a 4-job screening that runs in about a second."""
    from _tiny_model import save_tiny_checkpoint

    from dpa4_flows.structures.candidates import bcc_orderings

    tmp = tmp_path_factory.mktemp("screen")
    model = save_tiny_checkpoint(tmp / "tiny.pt", dtype="float32")
    folder = tmp / "cands"
    folder.mkdir()
    bcc_orderings(["Mo", "W"])["MoW-B2"].to(filename=str(folder / "MoW-B2.cif"))
    return ["--model", str(model), "--candidates", str(folder), "--max-steps", "3", "--chunk-size", "1"]


@pytest.fixture(scope="module")
def finished(screen_inputs, tmp_path_factory):
    """The output folder of a finished screening, and a pristine copy of it."""
    from dpa4_core.cli import main as dpa4

    out = tmp_path_factory.mktemp("done") / "out"
    assert dpa4(["screen", "--out", str(out), *screen_inputs, "--quiet"]) == 0
    shutil.copytree(out, out.with_name("pristine"))
    return out


@pytest.fixture
def screened(finished):
    """The finished screening, restored in place (its flow names its own folder: a copy elsewhere is another
    run)."""
    shutil.rmtree(finished)
    shutil.copytree(finished.with_name("pristine"), finished)
    return finished


def _script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("screen_candidates", ROOT / "workflows" / "screen_candidates.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _damage(out: Path, what: str) -> str:
    """Break one run file of a finished screening in ``out``; returns the file name the message must name."""
    files = {"empty run.json": "run.json", "garbage run.json": "run.json", "no run.json": "run.json",
             "garbage flow.json": "flow.json", "garbage state.sqlite": "state.sqlite",
             "deleted store": "state.sqlite"}
    if what == "empty run.json":
        (out / "run.json").write_text("")
    elif what == "garbage run.json":
        (out / "run.json").write_bytes(b"\x00\xff[")
    elif what == "no run.json":
        (out / "run.json").unlink()
    elif what == "garbage flow.json":
        (out / "work" / "flow.json").write_text("{")
    elif what == "garbage state.sqlite":
        _drop_state(out / "work")
        (out / "work" / "state.sqlite").write_bytes(b"garbage" * 200)
    elif what == "deleted store":
        (out / "jobs.sqlite").unlink()
    return files[what]


@pytest.mark.parametrize("what", ["empty run.json", "garbage run.json", "no run.json", "garbage flow.json",
                                  "garbage state.sqlite", "deleted store"])
def test_screen_broken_run_file_is_one_line_exit_2(screened, screen_inputs, capsys, what):
    from dpa4_core.cli import main as dpa4

    out = screened
    name = _damage(out, what)
    args = ["--out", str(out), *screen_inputs, "--quiet"]
    assert dpa4(["screen", *args]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert name in line and ("delete" in line or "restore" in line or "new --out" in line), line
    assert _script().main(args) == 2
    assert capsys.readouterr().err.strip().splitlines() == [line]


def test_screen_refuses_a_work_folder_of_another_run(screened, screen_inputs, capsys, caplog):
    import logging

    from dpa4_core.cli import main as dpa4

    out = screened
    # run.json says fmax 0.2 (as a copied or hand-edited folder might), work/ holds the fmax 0.05 flow.
    record = json.loads((out / "run.json").read_text())
    record["options"]["fmax"] = 0.2
    (out / "run.json").write_text(json.dumps(record))
    assert dpa4(["screen", "--out", str(out), *screen_inputs, "--fmax", "0.2", "--quiet"]) == 2
    assert "holds the flow of another run" in capsys.readouterr().err
    # A copy of the run elsewhere is another run too: its flow writes the report into the original folder.
    copy = out.with_name("copy")
    shutil.copytree(out, copy)
    (copy / "run.json").write_text(json.dumps({**record, "options": {**record["options"], "fmax": 0.05}}))
    assert dpa4(["screen", "--out", str(copy), *screen_inputs, "--quiet"]) == 2
    assert "holds the flow of another run" in capsys.readouterr().err
    # A change of how it runs only (the progress bar, i.e. no --quiet) resumes: nothing is rerun.
    (out / "run.json").write_text(json.dumps({**record, "options": {**record["options"], "fmax": 0.05}}))
    caplog.set_level(logging.INFO, logger="dpa4_flows.execution.runner")
    assert dpa4(["screen", "--out", str(out), *screen_inputs]) == 0
    assert "ran 0 job(s)" in caplog.text


def _done_jobs(work: Path) -> dict[str, int]:
    state = ResumeState(work / "state.sqlite")
    try:
        return dict(state.conn.execute("SELECT uuid, attempts FROM jobs WHERE state = 'done'").fetchall())
    finally:
        state.close()


def _check_resumed(out: Path, before: dict[str, int]) -> None:
    """Every job done, stored once, and the jobs done before the interrupt not run again."""
    state = ResumeState(out / "work" / "state.sqlite")
    rows = state.conn.execute("SELECT uuid, idx, state, attempts FROM jobs").fetchall()
    state.close()
    assert {r[2] for r in rows} == {"done"}
    assert all(dict((r[0], r[3]) for r in rows)[u] == a for u, a in before.items())
    store = embedded_store(out / "jobs.sqlite")
    store.connect()
    keys = [(d["uuid"], d["index"]) for d in store.query(properties=["uuid", "index"])]
    assert sorted(keys) == sorted(set(keys)) == sorted((r[0], r[1]) for r in rows)


@pytest.mark.slow  # about 15 s: a fresh interpreter imports torch and the flow stack
@pytest.mark.timeout(120)
def test_ctrl_c_during_dpa4_screen_is_one_line_then_resumes(screen_inputs, tmp_path, capsys):
    from dpa4_core.cli import main as dpa4

    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "dpa4_core.cli", "screen", "--out", str(out), *screen_inputs,
                             "--quiet"], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 100
    while True:  # freeze it at a moment it holds a job after the first, then interrupt it there
        assert proc.poll() is None and time.monotonic() < deadline, "screening ended before it could be interrupted"
        proc.send_signal(signal.SIGSTOP)
        held = claim_of(out / "work" / "state.sqlite", proc.pid)
        if held is not None and held[1] >= 1:
            break
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [INTERRUPTED]
    before = _done_jobs(out / "work")
    assert dpa4(["screen", "--out", str(out), *screen_inputs, "--quiet"]) == 0
    assert "MoW-B2" in capsys.readouterr().out
    _check_resumed(out, before)


@pytest.mark.timeout(120)
def test_ctrl_c_during_the_script_is_one_line_then_resumes(screen_inputs, tmp_path, capsys):
    out, main_pid = tmp_path / "out", os.getpid()
    state_file = out / "work" / "state.sqlite"

    def interrupt_in_a_job():
        deadline = time.monotonic() + 100
        while (claim_of(state_file, main_pid) or (0, 0))[1] < 1 and time.monotonic() < deadline:
            time.sleep(0.002)  # until the second job is held
        os.kill(main_pid, signal.SIGINT)  # KeyboardInterrupt in the main thread, inside the job

    watcher = threading.Thread(target=interrupt_in_a_job, daemon=True)
    watcher.start()
    args = ["--out", str(out), *screen_inputs, "--quiet"]
    assert _script().main(args) == 130
    watcher.join()
    assert capsys.readouterr().err.strip().splitlines() == [INTERRUPTED]
    state = ResumeState(state_file)
    assert state.counts().get("running") is None  # the interrupted job was given back, not left held
    state.close()
    before = _done_jobs(out / "work")
    start = time.monotonic()
    assert _script().main(args) == 0  # same process: no wait for the interrupted claim's lease
    assert time.monotonic() - start < 60
    _check_resumed(out, before)


def test_ctrl_c_in_any_dpa4_command_is_one_line_exit_130(tmp_path, monkeypatch, capsys):
    from dpa4_core.cli import main as dpa4
    from dpa4_flows import screen

    def interrupted(path):
        os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, while the command reads its store
        time.sleep(1)

    monkeypatch.setattr(screen, "stored_report", interrupted)
    assert dpa4(["results", "--store", str(tmp_path)]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["dpa4 results: interrupted"]
