"""SQLiteStore: an indexed, embedded, on-disk maggma ``Store`` over sqlite3.

Why: maggma's embedded stores (``MontyStore``, ``MemoryStore`` on mongomock) keep no
indexes, so every upsert and look-up scans the whole collection and a flow with 100k job
documents costs O(N^2) (``benchmarks/store_scaling.py``). Here each collection is one
sqlite table ``(_id INTEGER PRIMARY KEY, doc TEXT)`` holding JSON documents
(:mod:`~dpa4_flows.execution.mongo_json`: UTF-8, NaN/inf, dates, tag-like objects round-trip),
with expression indexes ``json_extract(doc, '$."key"')`` on the keys jobflow queries
(``uuid``, ``index``, ``blob_uuid``, ``job_uuid``, ``job_index``) plus any the user declares.

Queries: filters are evaluated in Python by :mod:`~dpa4_flows.execution.mongo_match` (MongoDB's
semantics on arrays, ``$elemMatch``, unicode, NaN, dates, NULs; checked against mongomock), after
an indexed SQL prefilter on one declared key (:mod:`~dpa4_flows.execution.sqlite_query`); no key
or value is ever pasted into SQL. Sort (MongoDB's cross-type order), skip, limit, projection,
count, distinct, groupby, upsert by key and ``remove_docs`` are done on those matches.

What jobflow 0.4 calls (read from its source): ``JobStore.update`` -> ``update(docs,
key=["uuid", "index"])`` and ``update(blobs, key="blob_uuid")`` on ``data``; references and
``get_output`` -> ``query_one({"uuid": u}, ["index"], sort={"index": -1})`` and
``query({"uuid": u[, "index": i]}, ["output"], sort={"index": +-1}, limit=1)``; blobs ->
``query({"blob_uuid": {"$in": [...]}}, ["blob_uuid", "data"])``; ``remove_docs`` with
``job_uuid``/``job_index``; ``count``, ``ensure_index``, ``distinct``, ``groupby``;
``connect``/``close``; ``maggma.Store.last_updated`` sorts on ``last_updated``.

Concurrency (:mod:`dpa4_flows.execution.sqlite_db`): WAL journal, a busy timeout, and every
write in a ``BEGIN IMMEDIATE`` transaction, so several processes may write to one file (not over NFS).
Files: a store whose file or folder is not writable (or ``read_only=True``) opens read-only and
refuses writes with ``ReadOnlyStoreError``; an unusable file raises one ``StoreFileError`` naming it.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from maggma.core import Sort, Store, StoreError
from monty.json import jsanitize

from dpa4_flows.execution.mongo_match import compile_query, split_key
from dpa4_flows.execution.mongo_values import sort_key
from dpa4_flows.execution.sqlite_db import (ReadOnlyStoreError, StoreFileError, file_error, is_file_error,
                                            open_sqlite, path_is_read_only, write_transaction)
from dpa4_flows.execution.sqlite_query import (UnsupportedQueryError, check_index_key, dump_json, field_sql,
                                               get_field, load_json, prefilter, prefixes, project)

logger = logging.getLogger(__name__)

#: Keys indexed in every collection: what ``JobStore`` and its additional stores query.
DEFAULT_INDEXES = ("uuid", "index", "blob_uuid", "job_uuid", "job_index")

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class InvalidStoreNameError(ValueError):
    """A collection name that is not a plain identifier."""


class SQLiteStore(Store):
    """An indexed maggma Store in one sqlite3 file (one table per collection).

    Args:
        database_path: the sqlite file; made absolute at construction, because FireWorks and
            ``run_locally(create_folders=True)`` change directory per job.
        collection_name: table name (a plain identifier).
        indexes: extra keys (dotted allowed: identifiers joined by dots) to index besides
            ``DEFAULT_INDEXES``.
        timeout: seconds to wait for another process's write lock before failing.
        read_only: open with sqlite's ``mode=ro`` (also chosen when the file or folder is not
            writable); writes raise ``ReadOnlyStoreError``.
        **kwargs: passed to ``maggma.core.Store`` (``key``, ``last_updated_field``, ...).

    The store is MSONable (``as_dict``/``from_dict``), so FireWorks can carry it.
    """

    def __init__(self, database_path: str | Path, collection_name: str = "outputs",
                 indexes: list[str] | None = None, timeout: float = 120.0, read_only: bool = False,
                 **kwargs):
        if not _NAME_RE.fullmatch(collection_name):
            raise InvalidStoreNameError(
                f"collection_name must be a plain identifier, got {collection_name!r}")
        self.database_path = str(Path(database_path).expanduser().resolve())
        self.collection_name = collection_name
        self.indexes = [check_index_key(k) for k in indexes or []]
        self.timeout = float(timeout)
        self.read_only = bool(read_only)
        self.kwargs = kwargs
        self._conn: sqlite3.Connection | None = None
        self._owns_conn = True
        self._ro = self.read_only
        self._indexed: set[str] = set()
        super().__init__(**kwargs)

    # -- connection -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return f"sqlite://{self.database_path}/{self.collection_name}"

    @property
    def _collection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("Must connect SQLiteStore before attempting to use it")
        return self._conn

    @contextmanager
    def _file_errors(self) -> Iterator[None]:
        """Turn sqlite's file-level failures into one ``StoreFileError`` naming the file."""
        try:
            yield
        except sqlite3.Error as err:
            if not is_file_error(err):
                raise
            if getattr(err, "sqlite_errorname", "") == "SQLITE_READONLY":
                raise self._read_only_error() from None
            raise file_error(self.database_path, err) from None

    def _read_only_error(self) -> ReadOnlyStoreError:
        return ReadOnlyStoreError(f"store file {self.database_path} is open read-only (the file or its "
                                  "folder is not writable, or read_only=True): writes are refused; "
                                  "make it writable or write to another store")

    def connect(self, force_reset: bool = False) -> None:
        """Open the file (created if missing, unless read-only) and create table and indexes."""
        if self._conn is not None and not force_reset:
            return
        if self._conn is not None:
            self.close()
        path = Path(self.database_path)
        if path.is_dir():
            raise file_error(path, IsADirectoryError("a directory is in the place of the store file"))
        self._ro = self.read_only or path_is_read_only(path)
        if self._ro and not path.exists():
            raise StoreFileError(f"store file {path} does not exist and a read-only store cannot create it")
        with self._file_errors():
            if not self._ro:
                path.parent.mkdir(parents=True, exist_ok=True)
            conn = open_sqlite(path, self.timeout, read_only=self._ro)
            # The default 2 MB page cache thrashes on random uuid look-ups in 100k documents.
            conn.execute("PRAGMA cache_size = -65536")
            conn.execute("PRAGMA mmap_size = 268435456")
            self.attach(conn)
        try:
            self._prepare()
        except BaseException:
            self.close()
            raise

    def connect_shared(self, other: SQLiteStore) -> None:
        """Use ``other``'s connection (same file), so both stores write in one transaction."""
        if other.database_path != self.database_path:
            raise StoreError(f"{self.name} cannot share the connection of {other.name}")
        self.close()
        self._ro = other._ro
        self.attach(other._collection, owner=False)
        self._prepare()

    def _prepare(self) -> None:
        """Create the table and indexes (read-only: check the table exists)."""
        conn, path = self._collection, self.database_path
        with self._file_errors():
            if not self._ro:
                with self._write():
                    conn.execute(f'CREATE TABLE IF NOT EXISTS "{self.collection_name}" '
                                 "(_id INTEGER PRIMARY KEY, doc TEXT NOT NULL)")
            elif not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                  (self.collection_name,)).fetchone():
                raise StoreFileError(f"store file {path} has no collection {self.collection_name!r}: "
                                     "is it a dpa4 store?")
        for key in dict.fromkeys([*DEFAULT_INDEXES, self.key, *self.indexes]):  # fixed order
            self.ensure_index(key)

    def attach(self, conn: sqlite3.Connection, owner: bool = True) -> None:
        """Use ``conn`` (an :func:`open_sqlite` connection to this file); not closed unless ``owner``."""
        self._conn, self._owns_conn = conn, owner

    def close(self) -> None:
        if self._conn is not None:
            if self._owns_conn:
                self._conn.close()
            self._conn = None

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        if self._ro:
            raise self._read_only_error()
        return write_transaction(self._collection)

    # -- reads ------------------------------------------------------------------------------
    def _rows(self, criteria: dict | None) -> Iterator[tuple[int, dict]]:
        """(_id, document) of every match in insertion order: indexed prefilter, Python filter."""
        match = compile_query(criteria)
        table = self.collection_name
        pre = prefilter(criteria, table, self._indexed)
        if pre is None:
            sql, params = f'SELECT _id, doc FROM "{table}" ORDER BY _id', []
        else:
            sql, params = f'SELECT _id, doc FROM "{table}" WHERE _id IN ({pre.sql}) ORDER BY _id', pre.params
        with self._file_errors():
            cursor = self._collection.execute(sql, params)
            while rows := cursor.fetchmany(500):
                for ident, text in rows:
                    doc = load_json(text)
                    if match(doc):
                        yield ident, doc

    def count(self, criteria: dict | None = None, **kwargs) -> int:
        if not criteria:
            with self._file_errors():
                return self._collection.execute(f'SELECT COUNT(*) FROM "{self.collection_name}"').fetchone()[0]
        return sum(1 for _ in self._rows(criteria))

    def query(self, criteria: dict | None = None, properties: dict | list | None = None,
              sort: dict[str, Sort | int] | None = None, skip: int = 0, limit: int = 0,
              **kwargs) -> Iterator[dict]:
        """Yield documents matching ``criteria`` (see the module docstring for the subset)."""
        if isinstance(properties, dict):
            if any(not v for v in properties.values()):
                raise UnsupportedQueryError(f"only inclusion projections are supported: {properties!r}")
            properties = list(properties)
        order = []
        for key, direction in (sort or {}).items():
            direction = direction.value if isinstance(direction, Sort) else int(direction)
            order.append((split_key(key), direction < 0))
        skip, limit = int(skip or 0), int(limit or 0)
        if skip < 0 or limit < 0:
            raise UnsupportedQueryError(f"skip and limit must be >= 0, got {skip}, {limit}")
        rows = (doc for _, doc in self._rows(criteria))
        if order:
            docs = list(rows)
            for parts, descending in reversed(order):  # stable passes: ties keep insertion order
                docs.sort(key=lambda d: sort_key(d, parts, descending), reverse=descending)
            rows = iter(docs)
        for i, doc in enumerate(rows):
            if i < skip:
                continue
            if limit and i >= skip + limit:
                return
            yield project(doc, properties)

    def distinct(self, field: str, criteria: dict | None = None, all_exist: bool = False) -> list:
        """Distinct values of ``field``; list values are unwound, as in MongoDB."""
        seen: dict[str, Any] = {}
        for doc in self.query(criteria, properties=[field]):
            try:
                value = get_field(doc, field)
            except KeyError:
                continue
            for v in value if isinstance(value, list) else [value]:
                seen.setdefault(dump_json(v, sort_keys=True), v)
        return list(seen.values())

    def groupby(self, keys: list[str] | str, criteria: dict | None = None,
                properties: dict | list | None = None, sort: dict | None = None,
                skip: int = 0, limit: int = 0) -> Iterator[tuple[dict, list[dict]]]:
        """Group documents by the values of ``keys`` (done in Python after the query)."""
        keys = [keys] if isinstance(keys, str) else list(keys)
        if properties is not None:
            properties = list({*properties, *keys})
        groups: dict[str, tuple[dict, list[dict]]] = {}
        for doc in self.query(criteria, properties, sort, skip, limit):
            ident = {}
            for k in keys:
                try:
                    ident[k] = get_field(doc, k)
                except KeyError:
                    ident[k] = None
            tag = dump_json(ident, sort_keys=True)
            groups.setdefault(tag, (ident, []))[1].append(doc)
        for ident, docs in groups.values():
            nested: dict = {}
            for k, v in ident.items():
                cur = nested
                *head, last = k.split(".")
                for part in head:
                    cur = cur.setdefault(part, {})
                cur[last] = v
            yield nested, docs

    # -- writes -----------------------------------------------------------------------------
    def update(self, docs: list[dict] | dict, key: list | str | None = None) -> None:
        """Upsert documents: replace the first one with the same ``key`` values, else insert."""
        docs = docs if isinstance(docs, list) else [docs]
        key = key or self.key
        keys = key if isinstance(key, list) else [key]
        table = self.collection_name
        rows = []
        for d in docs:
            d = jsanitize(d, allow_bson=True, recursive_msonable=True)
            if self.validator is not None and not self.validator.is_valid(d):
                if self.validator.strict:
                    raise ValueError(self.validator.validation_errors(d))
                logger.error(self.validator.validation_errors(d))
                continue
            d.pop("_id", None)
            missing = [k for k in keys if k not in d]
            if missing:
                raise KeyError(f"document lacks the key field(s) {missing} needed for the upsert")
            rows.append(({k: d[k] for k in keys}, dump_json(d)))
        if not rows:
            return
        with self._write() as conn, self._file_errors():
            for search, text in rows:
                found = self._rows(search)
                hit = next(found, None)
                found.close()
                if hit is None:
                    conn.execute(f'INSERT INTO "{table}" (doc) VALUES (?)', (text,))
                else:
                    conn.execute(f'UPDATE "{table}" SET doc = ? WHERE _id = ?', (text, hit[0]))

    def remove_docs(self, criteria: dict) -> None:
        with self._write() as conn, self._file_errors():
            ids = [ident for ident, _ in self._rows(criteria)]
            conn.execute(f'DELETE FROM "{self.collection_name}" WHERE _id IN '
                         "(SELECT value FROM json_each(?))", (dump_json(ids),))

    def ensure_index(self, key: str, unique: bool = False) -> bool:
        """Index ``key`` (identifiers joined by dots) and its dotted prefixes; True if it exists.

        Read-only stores use the indexes the file has (queries are right either way)."""
        if key in self._indexed:
            return True
        check_index_key(key)
        if not self._ro:
            for part in prefixes(key):
                self._create_index(part, unique and part == key)
        self._indexed.add(key)
        return True

    def _create_index(self, key: str, unique: bool) -> None:
        name = f"ix_{self.collection_name}_{key.replace('.', '_')}{'_u' if unique else ''}"
        try:
            with self._write() as conn:
                conn.execute(f'CREATE {"UNIQUE " if unique else ""}INDEX IF NOT EXISTS "{name}" '
                             f'ON "{self.collection_name}" ({field_sql(key)})')
        except sqlite3.DatabaseError as err:
            logger.warning("could not index %r in %s: %s", key, self.name, err)

    # -- identity ---------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return (isinstance(other, SQLiteStore) and self.database_path == other.database_path
                and self.collection_name == other.collection_name)

    def __hash__(self) -> int:
        return hash((self.database_path, self.collection_name))
