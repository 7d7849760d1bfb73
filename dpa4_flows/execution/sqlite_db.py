"""sqlite3 connections shared by several processes: the one way to open a file and to write to it.

Both the job store (:mod:`dpa4_flows.execution.sqlite_store`) and the runner's bookkeeping
(:mod:`dpa4_flows.execution.state`) open their files with :func:`open_sqlite` and write only
inside :func:`write_transaction`.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

#: sqlite result codes that mean the file itself is unusable (not a lock or a query problem).
FILE_ERRORS = ("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_FULL",
               "SQLITE_PERM", "SQLITE_READONLY")


class StoreFileError(RuntimeError):
    """A store file that cannot be used (corrupt, truncated, not sqlite, a directory, unreadable)."""


class ReadOnlyStoreError(StoreFileError, PermissionError):
    """A write to a store opened read-only (its file or folder is not writable, or by request)."""


def is_file_error(err: sqlite3.Error) -> bool:
    name = getattr(err, "sqlite_errorname", "") or ""
    return any(name.startswith(code) for code in FILE_ERRORS)


def file_error(path: str | Path, err: BaseException) -> StoreFileError:
    """One clear error naming ``path`` and what to do, for an unusable sqlite file."""
    return StoreFileError(
        f"store file {path} cannot be used ({err}): if it is a copy or was truncated, restore it "
        "from a backup; otherwise move it away and rerun to start a new store")


def _not_writable(path: Path) -> bool:
    return not os.access(path, os.W_OK) or not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


def path_is_read_only(path: str | Path) -> bool:
    """True if an existing store file, or its folder, is not writable (``chmod -w``, even as root)."""
    path = Path(path)
    return path.exists() and (_not_writable(path) or _not_writable(path.parent))


def open_sqlite(path: str | Path, timeout: float, read_only: bool = False) -> sqlite3.Connection:
    """Autocommit connection in WAL mode with a busy timeout, safe for several processes.

    Args:
        path: the database file (created if missing, unless ``read_only``).
        timeout: seconds to wait for another process's lock before failing.
        read_only: open with sqlite's ``mode=ro`` URI (the file must exist; writes fail).

    Switching to WAL needs an exclusive lock and, while other processes create the same new
    file, fails with "database is locked" without waiting: retried until ``timeout``.
    """
    if read_only:
        uri = f"file:{quote(str(path))}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        conn.execute("PRAGMA schema_version").fetchone()  # fails here if the file is unusable
        return conn
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
    exception, ``KeyboardInterrupt`` included. Inside an open transaction it nests as a
    savepoint (so a ``JobStore`` writes a document and its blobs in one transaction).
    """
    if conn.in_transaction:
        conn.execute("SAVEPOINT nested")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK TO nested")
            conn.execute("RELEASE nested")
            raise
        conn.execute("RELEASE nested")
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
