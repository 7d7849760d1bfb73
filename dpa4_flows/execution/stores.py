"""JobStores for dpa4 flows: embedded on disk (default), MongoDB (production), in memory (tests).

Every store built here has the ``data`` additional store that atomate2's force-field jobs
write trajectories to (a hand-built ``JobStore`` lacks it and those jobs fail), and every
path is absolute (FireWorks and ``run_locally(create_folders=True)`` change directory per
job, and a relative path would then point somewhere else).

Moving from a laptop to a cluster changes only the store:

    store = embedded_store("~/screening/jobs.sqlite")      # laptop: one file, no server
    store = configured_store()                              # cluster: JOB_STORE of jobflow.yaml

``configured_store()`` reads jobflow's own configuration: the YAML file named by
``JOBFLOW_CONFIG_FILE`` (default ``~/.jobflow.yaml``) with a ``JOB_STORE`` entry, or the store
file named by ``JOBFLOW_JOB_STORE`` (see ``examples/jobflow.yaml``, which also shows how to
declare the embedded store there).
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


#: Where jobflow reads its settings when ``JOBFLOW_CONFIG_FILE`` is not set.
DEFAULT_JOBFLOW_CONFIG = "~/.jobflow.yaml"
#: ``JOB_STORE`` spelling to suggest for stores that jobflow's ``type:`` look-up cannot find.
_MODULE_SPELLING = ("'@module': <module>, '@class': <Store class> (e.g. '@module': dpa4_flows.execution.sqlite_store, "
                    "'@class': SQLiteStore; yaml.safe_dump({'JOB_STORE': embedded_store(path).as_dict()}) writes it, "
                    "see examples/jobflow.yaml)")


def _maggma_store_names() -> set[str]:
    """Names of maggma's own Store classes (and its SSHTunnel), the ones jobflow's ``type:`` look-up always finds."""
    import maggma.stores
    from maggma.core import Store

    classes, todo = set(), [Store]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in classes:
                classes.add(sub)
                todo.append(sub)
    names = {c.__name__ for c in classes if c.__module__.startswith("maggma.")}
    return names | {maggma.stores.ssh_tunnel.SSHTunnel.__name__}


def _unresolvable_types(spec: object, key: str) -> list[tuple[str, str]]:
    """``(key path, name)`` of every ``type:`` entry under ``spec`` that jobflow's look-up may not find.

    jobflow resolves ``type: X`` among the subclasses of maggma's ``Store`` imported when jobflow is imported
    (``import jobflow`` builds its settings at once), so only maggma's own stores are found in every process;
    any other store (ours included) makes ``import jobflow`` fail with a ``KeyError`` unless imported first.
    """
    if not isinstance(spec, dict):
        return []
    found = []
    name = spec.get("type")
    if isinstance(name, str) and name not in _maggma_store_names():
        found.append((f"{key}.type", name))
    for sub_key, value in spec.items():
        found += _unresolvable_types(value, f"{key}.{sub_key}")
    return found


def _store_from_config() -> tuple[JobStore, str]:
    """The JobStore of jobflow's configuration and where it came from (for messages); raises StoreConfigError."""
    import yaml
    from jobflow import JobStore

    env_file = os.environ.get("JOBFLOW_JOB_STORE")
    if env_file:  # jobflow documents this variable as a store file; jobflow 0.4 itself rejects a path there
        where = f"JOBFLOW_JOB_STORE={env_file}"
        try:
            return JobStore.from_file(Path(env_file).expanduser()), where
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreConfigError(f"{where}: cannot build a JobStore from it ({type(exc).__name__}: {exc})") from None
    path = Path(os.environ.get("JOBFLOW_CONFIG_FILE") or DEFAULT_JOBFLOW_CONFIG).expanduser()
    hint = f"write a JOB_STORE entry (see examples/jobflow.yaml) in {path} or set JOBFLOW_CONFIG_FILE"
    if not path.is_file():
        raise StoreConfigError(f"no JOB_STORE configured: {path} does not exist; {hint}")
    try:
        settings = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise StoreConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(settings, dict) or "JOB_STORE" not in settings:
        raise StoreConfigError(f"no JOB_STORE configured: {path} has no key JOB_STORE; {hint}")
    spec = settings["JOB_STORE"]
    unresolvable = _unresolvable_types(spec, "JOB_STORE") if isinstance(spec, dict) and "@class" not in spec else []
    if unresolvable:
        key, name = unresolvable[0]
        raise StoreConfigError(
            f"{path}: {key} = {name!r} is not one of maggma's stores, which is all that jobflow's 'type:' "
            f"look-up is sure to find (for any other, 'import jobflow' fails with KeyError {name!r}); "
            f"spell the store as {_MODULE_SPELLING}")
    from jobflow.settings import JobflowSettings

    try:  # a fresh settings object, so JOBFLOW_CONFIG_FILE set after import is honoured
        store = JobflowSettings(CONFIG_FILE=str(path)).JOB_STORE
    except (ValueError, KeyError, TypeError, ImportError, AttributeError) as exc:
        raise StoreConfigError(f"{path}: JOB_STORE does not build a JobStore ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:300]})") from None
    return store, str(path)


def configured_store() -> JobStore:
    """The JobStore that jobflow's configuration declares, whatever its kind (MongoDB, the embedded sqlite store,
    MemoryStore, ...): ``JOB_STORE`` in the file named by ``JOBFLOW_CONFIG_FILE`` (default ``~/.jobflow.yaml``), or
    the store file named by ``JOBFLOW_JOB_STORE``. See ``examples/jobflow.yaml`` for both spellings jobflow reads:
    ``type: MongoStore`` entries for maggma's stores, ``'@module'``/``'@class'`` for any other (the embedded store).

    Raises:
        StoreConfigError: naming the file (or variable) and the key: nothing configured (jobflow would silently
            fall back to an in-memory store), invalid YAML, a ``type:`` jobflow cannot resolve, a store that does
            not build, or no ``data`` additional store (atomate2 jobs need it).
    """
    store, where = _store_from_config()
    if DATA_STORE not in store.additional_stores:
        raise StoreConfigError(
            f"{where}: JOB_STORE.additional_stores.{DATA_STORE} is missing; atomate2 jobs save trajectories there "
            f"(got additional stores {sorted(store.additional_stores)})")
    return store


def mongo_store(host: str | None = None, database: str | None = None, port: int = 27017,
                username: str | None = None, password: str | None = None,
                collection_name: str = "outputs", **mongo_kwargs) -> JobStore:
    """A MongoDB JobStore (maggma ``MongoStore``) for production and clusters.

    Args:
        host: MongoDB host, or a ``mongodb://`` / ``mongodb+srv://`` URI. When both ``host``
            and ``database`` are None (deprecated: use :func:`configured_store`), the store that
            jobflow's configuration declares, which must then be a MongoDB store.
        database: database name (required with ``host``).
        port, username, password: connection settings (ignored for a URI).
        collection_name: collection for job documents; the ``data`` store uses
            ``<collection_name>_data``.
        **mongo_kwargs: passed to ``maggma.stores.MongoStore`` / ``MongoURIStore``.

    Returns:
        A ``jobflow.JobStore`` (not connected: no network access happens here).

    Raises:
        StoreConfigError: a database without host (or the reverse); without both, whatever
            :func:`configured_store` raises, or a configured store that is not MongoDB.
    """
    from jobflow import JobStore
    from maggma.stores import MemoryStore, MongoStore, MongoURIStore

    if host is None and database is None:
        import warnings

        warnings.warn("mongo_store() without host and database is deprecated: use configured_store(), which returns "
                      "the store jobflow's configuration declares, whatever its kind", DeprecationWarning,
                      stacklevel=2)
        store = configured_store()
        kind = type(store.docs_store).__name__
        # MongoURIStore is a MongoStore; so are maggma's MemoryStore and MontyStore, which are not MongoDB.
        if not isinstance(store.docs_store, MongoStore) or isinstance(store.docs_store, MemoryStore):
            raise StoreConfigError(f"mongo_store(): the configured JOB_STORE is a {kind}, not MongoDB; use "
                                   "configured_store() to get it whatever its kind")
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
