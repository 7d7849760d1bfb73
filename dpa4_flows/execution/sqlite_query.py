"""MongoDB filter -> SQL over JSON documents, for ``SQLiteStore`` (see its module docstring).

A document is one JSON text column ``doc``; a dotted key ``a.b.0`` is the JSON path
``$."a"."b"[0]`` read with ``json_extract``. The text of ``field_sql(key)`` is exactly the
expression indexed by ``CREATE INDEX``, so sqlite's planner can match the two.

Public API (all ``SQLiteStore`` uses): :func:`compile_filter` -> :class:`CompiledFilter`,
:func:`field_sql`, :func:`register_functions`, :func:`dump_json` / :func:`load_json` (documents
with datetimes), :func:`get_field` and :func:`project` (dotted keys on decoded documents).
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from monty.json import jsanitize

#: Indexed keys with few distinct values: never the index that drives a combined look-up.
LOW_CARDINALITY = ("index", "job_index")


class UnsupportedQueryError(ValueError):
    """A query uses a MongoDB operator or value that SQLiteStore does not implement."""


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$date": value.isoformat()}
    raise TypeError(f"object of type {type(value).__name__} is not JSON serialisable")


def _decode_hook(d: dict) -> Any:
    if len(d) == 1 and "$date" in d:
        return datetime.fromisoformat(d["$date"])
    return d


def dump_json(value: Any, sort_keys: bool = False) -> str:
    """JSON text of a (sanitised) document; datetimes become ``{"$date": iso-string}``."""
    return json.dumps(value, sort_keys=sort_keys, default=_encode)


def load_json(text: str) -> Any:
    """Inverse of :func:`dump_json`: ``{"$date": ...}`` comes back as ``datetime``."""
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


def field_sql(key: str) -> str:
    """SQL expression reading dotted ``key`` of column ``doc``.

    Exactly the text used in CREATE INDEX, so sqlite's planner matches the index."""
    return f"json_extract(doc, '{_json_path(key)}')"


def _type_of(key: str) -> str:
    return f"json_type(doc, '{_json_path(key)}')"


def _date_col(key: str) -> str:
    return f"json_extract(doc, '{_json_path(key)}.\"$date\"')"


@dataclass(frozen=True)
class CompiledFilter:
    """A MongoDB filter as SQL: ``WHERE {sql}`` with ``params`` bound to its ``?`` marks.

    ``uses_index`` says an indexed key narrows the rows (then a sort should not drive the plan).
    """

    sql: str
    params: list[Any]
    uses_index: bool


def compile_filter(criteria: dict | None, indexed: set[str]) -> CompiledFilter:
    """Compile ``criteria`` (the MongoDB subset of ``SQLiteStore``) for a table whose
    ``indexed`` keys carry expression indexes; raises ``UnsupportedQueryError``."""
    comp = _Compiler(indexed)
    sql = comp.compile(criteria)
    return CompiledFilter(sql, comp.params, comp.uses_index)


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
        col = field_sql(key)
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
        col = field_sql(key)
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


def register_functions(conn: sqlite3.Connection) -> None:
    """Add the SQL functions compiled filters call (``regexp`` for ``$regex``) to ``conn``."""
    conn.create_function("regexp", 2, _regexp, deterministic=True)


def get_field(doc: dict, key: str) -> Any:
    """Value at dotted ``key`` (``a.b.0``) of a decoded document; ``KeyError`` if absent."""
    cur: Any = doc
    for part in key.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise KeyError(key)
    return cur


def project(doc: dict, properties: list[str] | None) -> dict:
    """The document cut down to the dotted ``properties`` (nested as in MongoDB); all if None."""
    if properties is None:
        return doc
    out: dict = {}
    for key in properties:
        try:
            value = get_field(doc, key)
        except KeyError:
            continue
        parts = key.split(".")
        cur = out
        for part in parts[:-1]:
            cur = cur.setdefault(part, {})
        cur[parts[-1]] = value
    return out
