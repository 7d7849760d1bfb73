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

Concurrency: WAL journal, a busy timeout, and every write in a ``BEGIN IMMEDIATE``
transaction, so several processes may write to one file (not over NFS).
Datetimes are stored as ``{"$date": iso-string}`` and come back as ``datetime``.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from maggma.core import Sort, Store, StoreError
from monty.json import jsanitize

logger = logging.getLogger(__name__)

#: Keys indexed in every collection: what ``JobStore`` and its additional stores query.
DEFAULT_INDEXES = ("uuid", "index", "blob_uuid", "job_uuid", "job_index")
#: Indexed keys with few distinct values: never the index that drives a combined look-up.
LOW_CARDINALITY = ("index", "job_index")

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class UnsupportedQueryError(ValueError):
    """A query uses a MongoDB operator or value that SQLiteStore does not implement."""


class InvalidStoreNameError(ValueError):
    """A collection name that is not a plain identifier."""


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$date": value.isoformat()}
    raise TypeError(f"object of type {type(value).__name__} is not JSON serialisable")


def _decode_hook(d: dict) -> Any:
    if len(d) == 1 and "$date" in d:
        return datetime.fromisoformat(d["$date"])
    return d


def _loads(text: str) -> dict:
    # The object hook costs ~30%: only pay it when a date is present.
    return json.loads(text, object_hook=_decode_hook) if '"$date"' in text else json.loads(text)


def _json_path(key: str) -> str:
    """MongoDB dotted key -> SQLite JSON path: ``a.b.0`` -> ``$."a"."b"[0]``."""
    parts = []
    for part in key.split("."):
        if part.isdigit():
            parts.append(f"[{part}]")
        elif '"' in part or not part:
            raise UnsupportedQueryError(f"unsupported key {key!r}")
        else:
            parts.append(f'."{part}"')
    return "$" + "".join(parts)


def _extract(key: str) -> str:
    # Exactly the text used in CREATE INDEX, so sqlite's planner matches the index.
    return f"json_extract(doc, '{_json_path(key)}')"


def _type_of(key: str) -> str:
    return f"json_type(doc, '{_json_path(key)}')"


def _date_col(key: str) -> str:
    return f"json_extract(doc, '{_json_path(key)}.\"$date\"')"


class _Compiler:
    """Compile a MongoDB filter into an SQL expression with ``?`` parameters."""

    def __init__(self, indexed: set[str]):
        self.indexed = indexed
        self.params: list[Any] = []
        self.no_index: set[str] = set()  # keys compared without their index (see compile)
        self.uses_index = False

    def compile(self, criteria: dict | None) -> str:
        if not criteria:
            return "1"
        if not isinstance(criteria, dict):
            raise UnsupportedQueryError(f"criteria must be a dict, got {criteria!r}")
        # Without statistics sqlite may drive {"uuid": u, "index": 1} through the "index"
        # index, where every document has 1: O(N) per look-up. Let only the most selective
        # indexed equality use its index; low-cardinality keys go last.
        eq = [k for k, v in criteria.items() if k in self.indexed and isinstance(v, (str, int, float))
              and not isinstance(v, bool)]
        if eq:
            self.uses_index = True
            best = min(eq, key=lambda k: (k in LOW_CARDINALITY, eq.index(k)))
            self.no_index = set(eq) - {best}
        clauses = [self._top(k, v) for k, v in criteria.items()]
        self.no_index = set()
        return " AND ".join(f"({c})" for c in clauses)

    def _top(self, key: str, value: Any) -> str:
        if key in ("$and", "$or", "$nor"):
            if not isinstance(value, list) or not value:
                raise UnsupportedQueryError(f"{key} needs a non-empty list, got {value!r}")
            parts = [f"({self.compile(v)})" for v in value]
            if key == "$and":
                return " AND ".join(parts)
            joined = " OR ".join(f"COALESCE({p}, 0)" for p in parts)
            return joined if key == "$or" else f"NOT ({joined})"
        if key.startswith("$"):
            raise UnsupportedQueryError(f"unsupported top-level operator {key!r}")
        if isinstance(value, dict) and value and all(k.startswith("$") for k in value):
            return " AND ".join(f"({self._op(key, op, v)})" for op, v in value.items())
        return self._eq(key, value)

    def _negate(self, sql: str) -> str:
        return f"NOT COALESCE(({sql}), 0)"

    def _eq(self, key: str, value: Any) -> str:
        col = _extract(key)
        if value is None:
            return f"{col} IS NULL"
        if isinstance(value, bool):
            return f"{_type_of(key)} = '{'true' if value else 'false'}'"
        if isinstance(value, (dict, list)):
            self.params.append(json.dumps(jsanitize(value), default=_encode))
            return f"{col} = json(?)"
        if isinstance(value, datetime):
            col, value = _date_col(key), value.isoformat()
        elif not isinstance(value, (str, int, float)):
            raise UnsupportedQueryError(f"cannot compare {key!r} with {type(value).__name__}")
        if key in self.indexed:
            self.params.append(value)
            # Unary + keeps the value but stops sqlite from using this key's index.
            return f"+{col} = ?" if key in self.no_index else f"{col} = ?"
        # MongoDB semantics: a scalar also matches an array that contains it.
        self.params.extend([value, value])
        path = _json_path(key)
        return (f"{col} = ? OR ({_type_of(key)} = 'array' AND EXISTS "
                f"(SELECT 1 FROM json_each(doc, '{path}') AS e WHERE e.value = ?))")

    def _op(self, key: str, op: str, value: Any) -> str:
        col = _extract(key)
        if op == "$eq":
            return self._eq(key, value)
        if op == "$ne":
            return self._negate(self._eq(key, value))
        if op in ("$in", "$nin"):
            if not isinstance(value, (list, tuple, set)):
                raise UnsupportedQueryError(f"{op} on {key!r} needs a list, got {value!r}")
            value = list(value)
            plain = all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value)
            if key in self.indexed and plain:
                # One JSON-array parameter: no limit on the number of values, index used.
                self.uses_index = self.uses_index or op == "$in"
                self.params.append(json.dumps(value))
                sql = f"{col} IN (SELECT value FROM json_each(?))"
            elif value:
                sql = " OR ".join(f"COALESCE(({self._eq(key, v)}), 0)" for v in value)
            else:
                sql = "0"
            return sql if op == "$in" else self._negate(sql)
        if op in ("$gt", "$gte", "$lt", "$lte"):
            sym = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}[op]
            if isinstance(value, bool) or not isinstance(value, (int, float, str, datetime)):
                raise UnsupportedQueryError(f"{op} on {key!r} with {value!r}")
            if isinstance(value, datetime):
                self.params.append(value.isoformat())
                return f"{_date_col(key)} {sym} ?"
            types = "('text')" if isinstance(value, str) else "('integer', 'real')"
            self.params.append(value)
            # Compare within one type bracket only, as MongoDB does.
            return f"{_type_of(key)} IN {types} AND {col} {sym} ?"
        if op == "$exists":
            return f"{_type_of(key)} IS {'NOT ' if value else ''}NULL"
        if op == "$regex":
            self.params.append(value)
            return f"{_type_of(key)} = 'text' AND regexp(?, {col})"
        if op == "$size":
            self.params.append(int(value))
            return f"{_type_of(key)} = 'array' AND json_array_length(doc, '{_json_path(key)}') = ?"
        if op == "$not":
            if not isinstance(value, dict):
                raise UnsupportedQueryError(f"$not on {key!r} needs an operator dict, got {value!r}")
            return self._negate(" AND ".join(f"({self._op(key, o, v)})" for o, v in value.items()))
        raise UnsupportedQueryError(f"unsupported operator {op!r} on key {key!r}")


def _regexp(pattern: str, text: str | None) -> bool:
    return text is not None and re.search(pattern, text) is not None


def _get(doc: dict, key: str) -> Any:
    cur: Any = doc
    for part in key.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise KeyError(key)
    return cur


def _project(doc: dict, properties: list[str] | None) -> dict:
    if properties is None:
        return doc
    out: dict = {}
    for key in properties:
        try:
            value = _get(doc, key)
        except KeyError:
            continue
        parts = key.split(".")
        cur = out
        for part in parts[:-1]:
            cur = cur.setdefault(part, {})
        cur[parts[-1]] = value
    return out


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
        conn = sqlite3.connect(self.database_path, timeout=self.timeout,
                               isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across process kills
        # The default 2 MB page cache thrashes on random uuid look-ups in 100k documents.
        conn.execute("PRAGMA cache_size = -65536")
        conn.execute("PRAGMA mmap_size = 268435456")
        conn.create_function("regexp", 2, _regexp, deterministic=True)
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

    def _write(self):
        """A ``BEGIN IMMEDIATE`` transaction: takes the write lock up front (no deadlock)."""
        conn = self._collection

        class _Tx:
            def __enter__(self_inner):
                conn.execute("BEGIN IMMEDIATE")
                return conn

            def __exit__(self_inner, exc_type, exc, tb):
                conn.execute("ROLLBACK" if exc_type else "COMMIT")
                return False

        return _Tx()

    # -- reads ------------------------------------------------------------------------------
    def _where(self, criteria: dict | None) -> tuple[str, list]:
        return self._compile(criteria)[:2]

    def _compile(self, criteria: dict | None) -> tuple[str, list, bool]:
        comp = _Compiler(self._indexed)
        return comp.compile(criteria), comp.params, comp.uses_index

    def count(self, criteria: dict | None = None, **kwargs) -> int:
        where, params = self._where(criteria)
        sql = f'SELECT COUNT(*) FROM "{self.collection_name}" WHERE {where}'
        return self._collection.execute(sql, params).fetchone()[0]

    def query(self, criteria: dict | None = None, properties: dict | list | None = None,
              sort: dict[str, Sort | int] | None = None, skip: int = 0, limit: int = 0,
              **kwargs) -> Iterator[dict]:
        """Yield documents matching ``criteria`` (see the module docstring for the subset)."""
        if isinstance(properties, dict):
            if any(not v for v in properties.values()):
                raise UnsupportedQueryError(f"only inclusion projections are supported: {properties!r}")
            properties = list(properties)
        where, params, filtered = self._compile(criteria)
        order = []
        for key, direction in (sort or {}).items():
            direction = direction.value if isinstance(direction, Sort) else int(direction)
            # With an indexed filter, sort the few hits: "+" stops sqlite from walking the
            # whole sort-key index instead (query_one({"uuid": u}, sort={"index": -1})).
            order.append(f"{'+' if filtered else ''}{_extract(key)} {'DESC' if direction < 0 else 'ASC'}")
        order.append("_id ASC")  # insertion order breaks ties, as in MongoDB
        sql = (f'SELECT doc FROM "{self.collection_name}" WHERE {where} '
               f"ORDER BY {', '.join(order)} LIMIT ? OFFSET ?")
        cursor = self._collection.execute(sql, [*params, limit if limit else -1, skip])
        while rows := cursor.fetchmany(500):
            for (text,) in rows:
                yield _project(_loads(text), properties)

    def distinct(self, field: str, criteria: dict | None = None, all_exist: bool = False) -> list:
        """Distinct values of ``field``; list values are unwound, as in MongoDB."""
        seen: dict[str, Any] = {}
        for doc in self.query(criteria, properties=[field]):
            try:
                value = _get(doc, field)
            except KeyError:
                continue
            for v in value if isinstance(value, list) else [value]:
                seen.setdefault(json.dumps(v, sort_keys=True, default=_encode), v)
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
                    ident[k] = _get(doc, k)
                except KeyError:
                    ident[k] = None
            tag = json.dumps(ident, sort_keys=True, default=_encode)
            groups.setdefault(tag, (_project(ident, None), []))[1].append(doc)
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
            rows.append(({k: d[k] for k in keys}, json.dumps(d, default=_encode)))
        if not rows:
            return
        with self._write() as conn:
            for search, text in rows:
                where, params = self._where(search)
                hit = conn.execute(f'SELECT _id FROM "{table}" WHERE {where} LIMIT 1',
                                   params).fetchone()
                if hit is None:
                    conn.execute(f'INSERT INTO "{table}" (doc) VALUES (?)', (text,))
                else:
                    conn.execute(f'UPDATE "{table}" SET doc = ? WHERE _id = ?', (text, hit[0]))

    def remove_docs(self, criteria: dict) -> None:
        where, params = self._where(criteria)
        with self._write() as conn:
            conn.execute(f'DELETE FROM "{self.collection_name}" WHERE {where}', params)

    def ensure_index(self, key: str, unique: bool = False) -> bool:
        """Create an expression index on ``key`` (dotted allowed); True if it exists."""
        if key in self._indexed:
            return True
        safe = re.sub(r"[^A-Za-z0-9_]", "_", key)
        name = f"ix_{self.collection_name}_{safe}{'_u' if unique else ''}"
        try:
            with self._write() as conn:
                conn.execute(f'CREATE {"UNIQUE " if unique else ""}INDEX IF NOT EXISTS "{name}" '
                             f'ON "{self.collection_name}" ({_extract(key)})')
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
