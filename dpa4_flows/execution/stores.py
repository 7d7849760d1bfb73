"""JobStores for dpa4 flows: embedded on disk (default), MongoDB (production), in memory (tests).

Every store built here has the ``data`` additional store that atomate2's force-field jobs
write trajectories to (a hand-built ``JobStore`` lacks it and those jobs fail), and every
path is absolute (FireWorks and ``run_locally(create_folders=True)`` change directory per
job, and a relative path would then point somewhere else).

Moving from a laptop to a cluster changes only the store:

    store = embedded_store("~/screening/jobs.sqlite")      # laptop: one file, no server
    store = mongo_store()                                   # cluster: JOB_STORE of jobflow.yaml

``mongo_store()`` without arguments reads jobflow's own configuration: the YAML file named
by ``JOBFLOW_CONFIG_FILE`` (default ``~/.jobflow.yaml``) with a ``JOB_STORE`` entry, or the
``JOBFLOW_JOB_STORE`` environment variable (see ``examples/jobflow.yaml``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from dpa4_flows.execution.sqlite_store import SQLiteStore

if TYPE_CHECKING:
    from jobflow import JobStore

logger = logging.getLogger(__name__)

#: Name of the additional store atomate2 jobs save trajectories and other large data to.
DATA_STORE = "data"
#: Database file used when ``embedded_store`` is given a directory.
DEFAULT_DB_NAME = "jobs.sqlite"


class StoreConfigError(ValueError):
    """A store is mis-configured (no ``data`` store, not persistent, missing settings)."""


def embedded_store(path: str | os.PathLike, indexes: list[str] | None = None,
                   timeout: float = 120.0, read_only: bool = False) -> JobStore:
    """An on-disk JobStore in one sqlite3 file: no server, indexed, safe for several processes.

    Args:
        path: the database file, or an existing directory (then ``<dir>/jobs.sqlite``);
            ``~`` is expanded and the path made absolute. Parent folders are created.
        indexes: extra document keys to index (dotted, e.g. ``"metadata.candidate_id"``), on
            top of ``uuid``, ``index``, ``name``, ``hosts`` and ``completed_at``.
        timeout: seconds a writer waits for another process's lock before failing.
        read_only: open the file read-only (also chosen when the file or its folder is not
            writable); writes then raise ``ReadOnlyStoreError`` naming the file.

    Returns:
        An ``EmbeddedJobStore`` (a ``jobflow.JobStore`` that writes a job's document and its
        blobs in one transaction) with docs in table ``outputs`` and a ``data`` additional
        store in table ``data`` of the same file. It is MSONable (``as_dict``), so FireWorks
        can serialise it into every Firework.
    """
    from dpa4_flows.execution.sqlite_jobstore import EmbeddedJobStore

    path = Path(path).expanduser().resolve()
    if path.is_dir():
        path = path / DEFAULT_DB_NAME
    doc_indexes = ["uuid", "index", "name", "completed_at", *(indexes or [])]
    docs = SQLiteStore(path, "outputs", indexes=doc_indexes, timeout=timeout, read_only=read_only)
    data = SQLiteStore(path, DATA_STORE, timeout=timeout, read_only=read_only)
    return EmbeddedJobStore(docs, additional_stores={DATA_STORE: data})


def memory_store() -> JobStore:
    """An in-memory JobStore on mongomock (maggma ``MemoryStore``): for tests and tiny runs.

    Not persistent and not shared between processes: do not use with FireWorks or
    ``run_resumable``. Each call gives a fresh, independent store.
    """
    from uuid import uuid4

    from jobflow import JobStore
    from maggma.stores import MemoryStore

    # MemoryStores with equal collection names share data inside mongomock: make them unique.
    tag = uuid4().hex[:8]
    return JobStore(MemoryStore(f"outputs_{tag}"),
                    additional_stores={DATA_STORE: MemoryStore(f"data_{tag}")})


def monty_store(path: str | os.PathLike) -> JobStore:
    """An on-disk JobStore on montydb (maggma ``MontyStore``): embedded but unindexed.

    Kept for comparison (``benchmarks/store_scaling.py``); prefer ``embedded_store``, which
    is indexed. Create it in one process before starting workers (concurrent creation
    of a new montydb database lost writes).
    """
    from jobflow import JobStore
    from maggma.stores import MontyStore

    path = Path(path).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return JobStore(MontyStore("outputs", database_path=str(path)),
                    additional_stores={DATA_STORE: MontyStore(DATA_STORE, database_path=str(path))})


def mongo_store(host: str | None = None, database: str | None = None, port: int = 27017,
                username: str | None = None, password: str | None = None,
                collection_name: str = "outputs", **mongo_kwargs) -> JobStore:
    """A MongoDB JobStore (maggma ``MongoStore``) for production and clusters.

    Args:
        host: MongoDB host, or a ``mongodb://`` / ``mongodb+srv://`` URI. When both ``host``
            and ``database`` are None, the store comes from jobflow's settings instead:
            ``JOB_STORE`` in the file named by ``JOBFLOW_CONFIG_FILE`` (default
            ``~/.jobflow.yaml``) or the ``JOBFLOW_JOB_STORE`` environment variable.
        database: database name (required with ``host``).
        port, username, password: connection settings (ignored for a URI).
        collection_name: collection for job documents; the ``data`` store uses
            ``<collection_name>_data``.
        **mongo_kwargs: passed to ``maggma.stores.MongoStore`` / ``MongoURIStore``.

    Returns:
        A ``jobflow.JobStore`` (not connected: no network access happens here).

    Raises:
        StoreConfigError: a database without host (or the reverse), no JOB_STORE configured,
            or jobflow's configured store lacks the ``data`` additional store.
    """
    from jobflow import JobStore
    from maggma.stores import MongoStore, MongoURIStore

    if host is None and database is None:
        from jobflow.settings import JobflowSettings

        # A fresh settings object, so JOBFLOW_CONFIG_FILE set after import is honoured.
        store = JobflowSettings().JOB_STORE
        if type(store.docs_store).__name__ == "MemoryStore":
            raise StoreConfigError(
                "no JOB_STORE configured (jobflow fell back to an in-memory store): write one in "
                "the file named by JOBFLOW_CONFIG_FILE (default ~/.jobflow.yaml, see "
                "examples/jobflow.yaml), or pass host and database")
        if DATA_STORE not in store.additional_stores:
            raise StoreConfigError(
                "jobflow's configured JOB_STORE has no 'data' additional store, which atomate2 "
                f"jobs need; add one under JOB_STORE.additional_stores (got "
                f"{sorted(store.additional_stores)})")
        return store
    if host is None or database is None:
        raise StoreConfigError(f"mongo_store needs both host and database, got host={host!r}, "
                               f"database={database!r}")
    if host.startswith(("mongodb://", "mongodb+srv://")):
        def make(coll: str):
            return MongoURIStore(uri=host, database=database, collection_name=coll, **mongo_kwargs)
    else:
        def make(coll: str):
            return MongoStore(database=database, collection_name=coll, host=host, port=port,
                              username=username or "", password=password or "", **mongo_kwargs)
    return JobStore(make(collection_name),
                    additional_stores={DATA_STORE: make(f"{collection_name}_data")})


def check_persistent(store: JobStore) -> None:
    """Raise ``StoreConfigError`` unless ``store`` survives the process and has ``data``.

    Used before handing a store to FireWorks or the resumable runner: an in-memory store
    would silently lose every output when the process that wrote it ends.
    """
    from maggma.stores import MemoryStore, MontyStore

    if DATA_STORE not in store.additional_stores:
        raise StoreConfigError(
            f"store {store.name} has no 'data' additional store (atomate2 jobs need one)")
    for sub in [store.docs_store, *store.additional_stores.values()]:
        if isinstance(sub, MemoryStore) and not isinstance(sub, MontyStore):
            raise StoreConfigError(
                f"{type(sub).__name__} {sub.name!r} is in memory and not persistent: use "
                "embedded_store(path) or mongo_store()")
        path = getattr(sub, "database_path", None)
        if path is not None and not os.path.isabs(path):
            raise StoreConfigError(f"store path {path!r} is relative; use an absolute path")
