"""sqlite3 connections shared by several processes: the one way to open a file and to write to it.

Both the job store (:mod:`dpa4_flows.execution.sqlite_store`) and the runner's bookkeeping
(:mod:`dpa4_flows.execution.state`) open their files with :func:`open_sqlite` and write only
inside :func:`write_transaction`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def open_sqlite(path: str | Path, timeout: float) -> sqlite3.Connection:
    """Autocommit connection in WAL mode with a busy timeout, safe for several processes.

    Args:
        path: the database file (created if missing).
        timeout: seconds to wait for another process's lock before failing.

    Switching to WAL needs an exclusive lock and, while other processes create the same new
    file, fails with "database is locked" without waiting: retried until ``timeout``.
    """
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    deadline = time.monotonic() + timeout
    while conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        try:
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across process kills
    return conn


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A ``BEGIN IMMEDIATE`` transaction on an autocommit connection (:func:`open_sqlite`).

    It takes sqlite's write lock up front, so two writers never deadlock upgrading read
    locks (and a read-then-write, such as claiming a job, is atomic); rolled back on any
    exception, ``KeyboardInterrupt`` included.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
