"""Bodies of the worker processes that the store and resume tests start with the ``spawn`` context.

``spawn`` (not ``fork``: the test process has imported torch, whose threads a fork would copy
in an unknown state) imports these functions by name in a fresh interpreter, so they live here
and not in the test modules. Each worker waits on a barrier first, so that all start work together
after their slow imports.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path


def resume_worker(db: str, work: str, log: str, sleep: float, barrier: str | None) -> None:
    """``run_resumable(make_flow())`` with every job sleeping ``sleep`` s and logging to ``log``."""
    from _jobs import make_flow

    from dpa4_flows.execution.runner import run_resumable
    from dpa4_flows.execution.stores import embedded_store

    os.environ.update(DPA4_TEST_JOB_LOG=log, DPA4_TEST_JOB_SLEEP=str(sleep))
    if barrier:  # say ready, wait for "go", so that all workers compete from the start
        Path(barrier, str(os.getpid())).touch()
        while not Path(barrier, "go").exists():
            time.sleep(0.01)
    run_resumable(make_flow(), embedded_store(db), work, progress=False, include_outputs=False)


def store_writer(path: str, worker: int, n: int, ready) -> None:
    """Upsert ``n`` documents, half of them under keys every writer shares (the upserts race)."""
    from dpa4_flows.execution.sqlite_store import SQLiteStore

    s = SQLiteStore(path, "outputs", key="uuid", timeout=60)
    s.connect()
    ready.wait()  # a multiprocessing Barrier: all writers connected, now race
    for i in range(n):
        s.update({"uuid": f"shared-{i}" if i % 2 else f"w{worker}-{i}", "index": 1, "by": worker})


def claim_of(state_file: Path, pid: int) -> tuple[int, int] | None:
    """``(seq, done)`` when process ``pid`` holds a running job in the runner's state file:
    that job's row id and how many jobs are done; None if it holds none, or if the file is
    missing or locked (a worker frozen mid-write: the caller lets it go on and asks again)."""
    if not Path(state_file).exists():
        return None
    conn = sqlite3.connect(f"file:{state_file}?mode=ro", uri=True, timeout=0.1)
    try:
        row = conn.execute("SELECT seq FROM jobs WHERE state = 'running' AND pid = ?", (pid,)).fetchone()
        done = conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'done'").fetchone()[0]
    except sqlite3.OperationalError:  # no tables yet, or locked
        return None
    finally:
        conn.close()
    return None if row is None else (row[0], done)
