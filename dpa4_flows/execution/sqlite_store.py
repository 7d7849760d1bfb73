"""SQLiteStore: an indexed, embedded, on-disk maggma ``Store`` over sqlite3.

Why: maggma's embedded stores (``MontyStore``, ``MemoryStore`` on mongomock) keep no
indexes, so every upsert and look-up scans the whole collection and a flow with 100k job
documents costs O(N^2) (``benchmarks/store_scaling.py``). Here each collection is one
sqlite table ``(_id INTEGER PRIMARY KEY, doc TEXT)`` holding JSON documents, with
expression indexes ``json_extract(doc, '$.key')`` on the keys jobflow queries (``uuid``,
``index``, ``blob_uuid``, ``job_uuid``, ``job_index``) plus any the user declares.

Query language: the subset of MongoDB that jobflow and maggma use, compiled to SQL:
equality (scalars, ``None`` = missing or null, embedded documents), ``$eq $ne $gt $gte
$lt $lte $in $nin $exists $regex $size $not``, ``$and $or $nor``, dotted keys (``a.b``,
``a.0``), sort, skip, limit, projection, count, distinct, groupby, upsert by key and
``remove_docs``. Equality on an indexed key compares the value itself (fast, indexed);
on any other key it also matches arrays that contain the value, as MongoDB does.

What jobflow 0.4 calls (read from its source): ``JobStore.update`` -> ``update(docs,
key=["uuid", "index"])`` and ``update(blobs, key="blob_uuid")`` on ``data``; references and
``get_output`` -> ``query_one({"uuid": u}, ["index"], sort={"index": -1})`` and
``query({"uuid": u[, "index": i]}, ["output"], sort={"index": +-1}, limit=1)``; blobs ->
``query({"blob_uuid": {"$in": [...]}}, ["blob_uuid", "data"])``; ``remove_docs`` with
``job_uuid``/``job_index``; ``count``, ``ensure_index``, ``distinct``, ``groupby``;
``connect``/``close``; ``maggma.Store.last_updated`` sorts on ``last_updated``.

Concurrency (:mod:`dpa4_flows.execution.sqlite_db`): WAL journal, a busy timeout, and every
write in a ``BEGIN IMMEDIATE`` transaction, so several processes may write to one file (not over NFS).
Datetimes are stored as ``{"$date": iso-string}`` and come back as ``datetime``.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from maggma.core import Sort, Store, StoreError
from monty.json import jsanitize

from dpa4_flows.execution.sqlite_db import open_sqlite, write_transaction
from dpa4_flows.execution.sqlite_query import (CompiledFilter, UnsupportedQueryError, compile_filter, dump_json,
                                               field_sql, get_field, load_json, project, register_functions)

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
        indexes: extra keys (dotted allowed) to index besides ``DEFAULT_INDEXES``.
        timeout: seconds to wait for another process's write lock before failing.
        **kwargs: passed to ``maggma.core.Store`` (``key``, ``last_updated_field``, ...).

    The store is MSONable (``as_dict``/``from_dict``), so FireWorks can carry it.
    """

    def __init__(self, database_path: str | Path, collection_name: str = "outputs",
                 indexes: list[str] | None = None, timeout: float = 120.0, **kwargs):
        if not _NAME_RE.match(collection_name):
            raise InvalidStoreNameError(
                f"collection_name must be a plain identifier, got {collection_name!r}")
        self.database_path = str(Path(database_path).expanduser().resolve())
        self.collection_name = collection_name
        self.indexes = list(indexes or [])
        self.timeout = float(timeout)
        self.kwargs = kwargs
        self._conn: sqlite3.Connection | None = None
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

    def connect(self, force_reset: bool = False) -> None:
        """Open the file (created if missing), enable WAL and create table and indexes."""
        if self._conn is not None and not force_reset:
            return
        if self._conn is not None:
            self.close()
        Path(self.database_path).parent.mkdir(parents=True, exist_ok=True)
        conn = open_sqlite(self.database_path, self.timeout)
        # The default 2 MB page cache thrashes on random uuid look-ups in 100k documents.
        conn.execute("PRAGMA cache_size = -65536")
        conn.execute("PRAGMA mmap_size = 268435456")
        register_functions(conn)
        self._conn = conn
        with self._write():
            conn.execute(f'CREATE TABLE IF NOT EXISTS "{self.collection_name}" '
                         "(_id INTEGER PRIMARY KEY, doc TEXT NOT NULL)")
        for key in dict.fromkeys([*DEFAULT_INDEXES, self.key, *self.indexes]):  # fixed order
            self.ensure_index(key)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return write_transaction(self._collection)

    # -- reads ------------------------------------------------------------------------------
    def _filter(self, criteria: dict | None) -> CompiledFilter:
        return compile_filter(criteria, self._indexed)

    def count(self, criteria: dict | None = None, **kwargs) -> int:
        where = self._filter(criteria)
        sql = f'SELECT COUNT(*) FROM "{self.collection_name}" WHERE {where.sql}'
        return self._collection.execute(sql, where.params).fetchone()[0]

    def query(self, criteria: dict | None = None, properties: dict | list | None = None,
              sort: dict[str, Sort | int] | None = None, skip: int = 0, limit: int = 0,
              **kwargs) -> Iterator[dict]:
        """Yield documents matching ``criteria`` (see the module docstring for the subset)."""
        if isinstance(properties, dict):
            if any(not v for v in properties.values()):
                raise UnsupportedQueryError(f"only inclusion projections are supported: {properties!r}")
            properties = list(properties)
        where = self._filter(criteria)
        order = []
        for key, direction in (sort or {}).items():
            direction = direction.value if isinstance(direction, Sort) else int(direction)
            # With an indexed filter, sort the few hits: "+" stops sqlite from walking the
            # whole sort-key index instead (query_one({"uuid": u}, sort={"index": -1})).
            order.append(f"{'+' if where.uses_index else ''}{field_sql(key)} {'DESC' if direction < 0 else 'ASC'}")
        order.append("_id ASC")  # insertion order breaks ties, as in MongoDB
        sql = (f'SELECT doc FROM "{self.collection_name}" WHERE {where.sql} '
               f"ORDER BY {', '.join(order)} LIMIT ? OFFSET ?")
        cursor = self._collection.execute(sql, [*where.params, limit if limit else -1, skip])
        while rows := cursor.fetchmany(500):
            for (text,) in rows:
                yield project(load_json(text), properties)

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
        with self._write() as conn:
            for search, text in rows:
                where = self._filter(search)
                hit = conn.execute(f'SELECT _id FROM "{table}" WHERE {where.sql} LIMIT 1',
                                   where.params).fetchone()
                if hit is None:
                    conn.execute(f'INSERT INTO "{table}" (doc) VALUES (?)', (text,))
                else:
                    conn.execute(f'UPDATE "{table}" SET doc = ? WHERE _id = ?', (text, hit[0]))

    def remove_docs(self, criteria: dict) -> None:
        where = self._filter(criteria)
        with self._write() as conn:
            conn.execute(f'DELETE FROM "{self.collection_name}" WHERE {where.sql}', where.params)

    def ensure_index(self, key: str, unique: bool = False) -> bool:
        """Create an expression index on ``key`` (dotted allowed); True if it exists."""
        if key in self._indexed:
            return True
        safe = re.sub(r"[^A-Za-z0-9_]", "_", key)
        name = f"ix_{self.collection_name}_{safe}{'_u' if unique else ''}"
        try:
            with self._write() as conn:
                conn.execute(f'CREATE {"UNIQUE " if unique else ""}INDEX IF NOT EXISTS "{name}" '
                             f'ON "{self.collection_name}" ({field_sql(key)})')
        except sqlite3.DatabaseError as err:
            logger.warning("could not index %r in %s: %s", key, self.name, err)
            return False
        self._indexed.add(key)
        return True

    # -- identity ---------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return (isinstance(other, SQLiteStore) and self.database_path == other.database_path
                and self.collection_name == other.collection_name)

    def __hash__(self) -> int:
        return hash((self.database_path, self.collection_name))
