"""The bookkeeping database of ``run_resumable``: jobs, dependencies and worker claims.

One sqlite file per workdir (``<workdir>/state.sqlite``, WAL mode). Tables:

- ``jobs(seq, uuid, idx, name, job, strict, state, worker, pid, host, lease, attempts, error)``:
  every job of the persisted flow plus every dynamic job (replace, addition, detour) added
  when its parent finished. ``state`` is ``pending | running | done | failed | skipped |
  stopped``; ``job`` is the job's JSON, so every worker can rebuild it.
- ``uuids(uuid, status)``: whether the outputs of a uuid are final. A uuid stays ``pending``
  while a replacement (``Response.replace`` re-uses the uuid at ``index + 1``) is not done.
- ``deps(child, parent)``: child uuid waits for parent uuid. A detour or a replacement adds
  its new jobs as parents of every job that waited on the job that returned it.
- ``meta(key, value)``: ``initialised``, ``fingerprint`` (the flow's ``flow_fingerprint``;
  workdirs made before it have ``signature``, the sorted job names), ``stopped``.

A job is claimed inside a ``BEGIN IMMEDIATE`` transaction (sqlite's write lock), so two
workers never claim the same job. A claim holds a lease the worker renews; a claim whose
lease ran out, or whose process is gone (same host), is taken over; a ``Heartbeat`` thread renews
the lease of the job a worker runs.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from dpa4_flows.execution.sqlite_db import open_sqlite, write_transaction
from dpa4_flows.execution.workdir import FLOW_FILE, RunFileError

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT NOT NULL, idx INTEGER NOT NULL,
    name TEXT, job TEXT NOT NULL, strict INTEGER NOT NULL, state TEXT NOT NULL,
    worker TEXT, pid INTEGER, host TEXT, lease REAL, attempts INTEGER DEFAULT 0, error TEXT,
    UNIQUE (uuid, idx));
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE TABLE IF NOT EXISTS uuids (uuid TEXT PRIMARY KEY, status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deps (child TEXT, parent TEXT, PRIMARY KEY (child, parent));
CREATE INDEX IF NOT EXISTS deps_parent ON deps (parent);
"""

#: uuid statuses that make dependants of that uuid skip (strict) or stop.
FAILED = ("failed", "skipped")
STOPPED = ("stopped", "stop_children")


@dataclass
class Claim:
    """A job claimed by this worker: ``seq`` row id, ``uuid``/``idx`` and its JSON."""

    seq: int
    uuid: str
    idx: int
    name: str
    job: str
    worker: str


def _held(pid: int | None, host: str | None, lease: float | None, now: float, here: str) -> bool:
    """A running job's claim still stands: its lease is live and, on this host ``here``,
    its worker process exists (a dead worker's job is taken over at once)."""
    return (lease or 0) > now and not (host == here and not _pid_alive(pid))


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ResumeState:
    """Connection to ``<workdir>/state.sqlite``; one per worker (and one per heartbeat thread)."""

    def __init__(self, path: Path, timeout: float = 120.0):
        self.path = Path(path)
        try:
            self.conn = open_sqlite(self.path, timeout)
            with self.tx() as c:
                for stmt in SCHEMA.split(";"):
                    if stmt.strip():
                        c.execute(stmt)
        except sqlite3.DatabaseError as err:
            if isinstance(err, sqlite3.OperationalError) and "locked" in str(err):
                raise  # busy, not broken
            raise RunFileError(
                f"{self.path} is not a readable run state database ({err}); delete it (the next run "
                f"rebuilds it from {FLOW_FILE} and the store, without rerunning stored jobs)") from err

    def close(self) -> None:
        self.conn.close()

    def tx(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction holding sqlite's lock from the start (no lock upgrade races)."""
        return write_transaction(self.conn)

    # -- meta -------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    @staticmethod
    def set_meta(c: sqlite3.Connection, key: str, value: str) -> None:
        c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- adding jobs ------------------------------------------------------------------------
    @staticmethod
    def add_jobs(c: sqlite3.Connection, jobs: list) -> list[str]:
        """Insert jobs (in topological order) with their dependencies; returns their uuids."""
        from jobflow.core.reference import OnMissing

        uuids = []
        for job in jobs:
            strict = int(job.config.on_missing_references == OnMissing.ERROR)
            c.execute("INSERT OR IGNORE INTO jobs (uuid, idx, name, job, strict, state) "
                      "VALUES (?, ?, ?, ?, ?, 'pending')",
                      (job.uuid, job.index, job.name, job.to_json(), strict))
            c.execute("INSERT OR REPLACE INTO uuids (uuid, status) VALUES (?, 'pending')",
                      (job.uuid,))
            c.executemany("INSERT OR IGNORE INTO deps (child, parent) VALUES (?, ?)",
                          [(job.uuid, p) for p in job.input_uuids if p != job.uuid])
            uuids.append(job.uuid)
        return uuids

    @staticmethod
    def block_dependants(c: sqlite3.Connection, parent: str, new_uuids: list[str]) -> None:
        """Make every job waiting on ``parent`` also wait on ``new_uuids`` (detour/replace)."""
        new = set(new_uuids)
        children = [r[0] for r in c.execute("SELECT child FROM deps WHERE parent = ?", (parent,))]
        c.executemany("INSERT OR IGNORE INTO deps (child, parent) VALUES (?, ?)",
                      [(ch, n) for ch in children if ch not in new for n in new if n != ch])

    # -- claiming ---------------------------------------------------------------------------
    def claim(self, worker: str, lease_s: float) -> Claim | None:
        """Atomically take the first job whose parents are final; None if none is ready.

        Jobs whose parents failed (and which need their outputs) are marked ``skipped``, and
        children of a ``stop_children`` response ``stopped``, on the way.
        """
        now, here = time.time(), socket.gethostname()
        with self.tx() as c:
            changed = True
            while changed:  # a job marked skipped/stopped makes its children ready: look again
                changed = False
                for seq, uuid, idx, name, strict, state, pid, host, lease in self._ready(c):
                    if state == "running" and _held(pid, host, lease, now, here):
                        continue  # a live worker holds it
                    parents = {r[0] for r in c.execute(
                        "SELECT u.status FROM deps d JOIN uuids u ON u.uuid = d.parent "
                        "WHERE d.child = ?", (uuid,))}
                    verdict = ("stopped" if parents & set(STOPPED)
                               else "skipped" if strict and parents & set(FAILED) else None)
                    if verdict:
                        c.execute("UPDATE jobs SET state = ? WHERE seq = ?", (verdict, seq))
                        c.execute("UPDATE uuids SET status = ? WHERE uuid = ?", (verdict, uuid))
                        changed = True
                        continue
                    c.execute("UPDATE jobs SET state = 'running', worker = ?, pid = ?, host = ?, "
                              "lease = ?, attempts = attempts + 1 WHERE seq = ?",
                              (worker, os.getpid(), here, now + lease_s, seq))
                    job = c.execute("SELECT job FROM jobs WHERE seq = ?", (seq,)).fetchone()[0]
                    return Claim(seq, uuid, idx, name, job, worker)
        return None

    @staticmethod
    def _ready(c: sqlite3.Connection):
        """Jobs whose parents are all final: running ones first (few; maybe stale), then
        pending ones lazily in flow order (the (state, seq) index: no sort, no full scan)."""
        for state in ("running", "pending"):
            yield from c.execute(
                "SELECT seq, uuid, idx, name, strict, state, pid, host, lease FROM jobs j "
                "WHERE state = ? AND NOT EXISTS ("
                "  SELECT 1 FROM deps d JOIN uuids u ON u.uuid = d.parent "
                "  WHERE d.child = j.uuid AND u.status = 'pending') ORDER BY seq", (state,))

    def renew(self, seq: int, worker: str, lease_s: float) -> None:
        with self.tx() as c:
            c.execute("UPDATE jobs SET lease = ? WHERE seq = ? AND worker = ? AND state = 'running'",
                      (time.time() + lease_s, seq, worker))

    # -- finishing --------------------------------------------------------------------------
    @staticmethod
    def _release(c: sqlite3.Connection, claim: Claim, state: str, error: str | None) -> bool:
        """Set the final state if this worker still holds the claim (not taken over after a
        lost lease); False otherwise, and then the caller records nothing else."""
        n = c.execute("UPDATE jobs SET state = ?, error = ? WHERE seq = ? AND worker = ? "
                      "AND state = 'running'", (state, error, claim.seq, claim.worker)).rowcount
        return n == 1

    def finish(self, claim: Claim, response) -> bool:
        """Record a job's success and its dynamic jobs in one transaction; False if the
        claim was lost (another worker took the job over and records it instead)."""
        from jobflow import Flow

        def jobs_of(flow):
            return [j for j, _ in flow.iterflow()] if isinstance(flow, Flow) else [flow]

        with self.tx() as c:
            if not self._release(c, claim, "done", None):
                return False
            status = "stop_children" if response.stop_children else "done"
            if response.replace is not None:
                new = self.add_jobs(c, jobs_of(response.replace))
                self.block_dependants(c, claim.uuid, new)
                status = "pending"  # final only once the replacement (same uuid) is done
            if response.detour is not None:
                self.block_dependants(c, claim.uuid, self.add_jobs(c, jobs_of(response.detour)))
            if response.addition is not None:
                self.add_jobs(c, jobs_of(response.addition))
            c.execute("UPDATE uuids SET status = ? WHERE uuid = ?", (status, claim.uuid))
            if response.stop_jobflow:
                self.set_meta(c, "stopped", "1")
        return True

    def fail(self, claim: Claim, error: str) -> bool:
        """Record a failure with its traceback; False if the claim was lost."""
        with self.tx() as c:
            if not self._release(c, claim, "failed", error):
                return False
            c.execute("UPDATE uuids SET status = 'failed' WHERE uuid = ?", (claim.uuid,))
        return True

    def unclaim(self, claim: Claim) -> None:
        """Give an interrupted job back (pending), so the next call runs it at once."""
        with self.tx() as c:
            c.execute("UPDATE jobs SET state = 'pending' WHERE seq = ? AND worker = ? AND state = 'running'",
                      (claim.seq, claim.worker))

    @staticmethod
    def mark_done(c: sqlite3.Connection, keys: set[tuple[str, int]]) -> None:
        """Record jobs ``(uuid, index)`` as done without running them (their output is stored)."""
        c.executemany("UPDATE jobs SET state = 'done' WHERE uuid = ? AND idx = ?", sorted(keys))
        c.executemany("UPDATE uuids SET status = 'done' WHERE uuid = ?", sorted({(u,) for u, _ in keys}))

    def reset_failed(self) -> int:
        """Put failed and skipped jobs back to pending (a new attempt); returns how many."""
        with self.tx() as c:
            rows = c.execute("SELECT uuid FROM jobs WHERE state IN ('failed', 'skipped')").fetchall()
            c.execute("UPDATE jobs SET state = 'pending' WHERE state IN ('failed', 'skipped')")
            c.executemany("UPDATE uuids SET status = 'pending' WHERE uuid = ?", rows)
        return len(rows)

    # -- reading ----------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())

    def live_running(self) -> int:
        """Jobs held by a worker that still looks alive."""
        now, here = time.time(), socket.gethostname()
        rows = self.conn.execute("SELECT pid, host, lease FROM jobs WHERE state = 'running'")
        return sum(1 for pid, host, lease in rows if _held(pid, host, lease, now, here))

    def block_orphans(self) -> int:
        """Skip pending jobs that can never become ready; 0 if anything can still move.

        Checked in one transaction: a job another worker finished a moment ago may just have
        made its children ready, and a running job may still produce dynamic jobs.
        """
        with self.tx() as c:
            if c.execute("SELECT 1 FROM jobs WHERE state = 'running' LIMIT 1").fetchone():
                return 0
            if next(self._ready(c), None) is not None:
                return 0
            n = c.execute("UPDATE jobs SET state = 'skipped', error = 'unresolvable dependency' "
                          "WHERE state = 'pending'").rowcount
        return n

    def summary(self) -> dict[str, dict]:
        """``{uuid: {name, index, state, error, attempts}}`` for the highest index of each uuid."""
        out: dict[str, dict] = {}
        for uuid, idx, name, state, error, attempts in self.conn.execute(
                "SELECT uuid, idx, name, state, error, attempts FROM jobs ORDER BY uuid, idx"):
            out[uuid] = {"name": name, "index": idx, "state": state, "error": error,
                         "attempts": attempts}
        return out

    def done_keys(self) -> list[tuple[str, int]]:
        return self.conn.execute("SELECT uuid, idx FROM jobs WHERE state = 'done'").fetchall()


class Heartbeat:
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
