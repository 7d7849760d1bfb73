"""SIGKILL in the middle of ``dpa4 screen`` loses nothing and duplicates nothing (issue 15): 40 generated
candidates, the process killed after some chunks, the same command rerun: one record per candidate, every job
done and stored once, and the chunks finished before the kill not run again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "flows"))

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # a fresh interpreter imports torch and the flow stack
@pytest.mark.timeout(180)
def test_sigkill_mid_screen_then_rerun_gives_one_record_per_candidate(tmp_path, capsys):
    from _tiny_model import save_tiny_checkpoint

    from dpa4_core.cli import main as dpa4
    from dpa4_flows.execution.state import ResumeState
    from dpa4_flows.execution.stores import embedded_store
    from dpa4_flows.screen import stored_report
    from dpa4_flows.screen_progress import chunk_sizes, finished_candidates
    from dpa4_flows.structures.decorations import decorations

    model = save_tiny_checkpoint(tmp_path / "tiny.pt", dtype="float32")
    folder = tmp_path / "cands"
    folder.mkdir()
    found = list(decorations("bcc", ["Mo", "W"], 5).items())[:40]
    assert len(found) == 40
    for key, s in found:
        s.to(filename=str(folder / f"{key}.json"))
    out = tmp_path / "out"
    args = ["screen", str(folder), "--out", str(out), "--model", str(model), "--max-steps", "5", "--chunk-size", "2",
            "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "dpa4_core.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file, sizes = out / "work" / "state.sqlite", chunk_sizes(40, 2)
    deadline = time.monotonic() + 120
    while finished_candidates(state_file, sizes) < 6:
        assert proc.poll() is None and time.monotonic() < deadline, "the screening ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    state = ResumeState(state_file)
    before = dict(state.conn.execute("SELECT uuid, attempts FROM jobs WHERE state = 'done'").fetchall())
    state.close()
    assert 3 <= len(before) < 20 + 3  # killed mid-run

    assert dpa4(args) == 0
    capsys.readouterr()
    report = stored_report(out)
    ids = [r.candidate_id for r in report.rows]
    assert sorted(ids) == sorted(k for k, _ in found)  # exactly one record per candidate
    state = ResumeState(state_file)
    rows = state.conn.execute("SELECT uuid, idx, state, attempts FROM jobs").fetchall()
    state.close()
    assert {r[2] for r in rows} == {"done"}
    assert all(dict((r[0], r[3]) for r in rows)[u] == a for u, a in before.items())  # not run again
    store = embedded_store(out / "jobs.sqlite")
    store.connect()
    keys = [(d["uuid"], d["index"]) for d in store.query(properties=["uuid", "index"])]
    assert sorted(keys) == sorted(set(keys)) == sorted((r[0], r[1]) for r in rows)  # every job stored once
