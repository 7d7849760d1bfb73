"""SQL for ``SQLiteStore``: only what is safe and indexable; MongoDB semantics live in Python.

Filters are evaluated by :mod:`dpa4_flows.execution.mongo_match` on decoded documents. SQL only
narrows the rows to read (a *prefilter*, always a superset of the answer) through the expression
indexes ``json_extract(doc, '$."key"')`` on declared keys. No user text ever reaches SQL text:

- a key appears in SQL only if it is a declared index key matching ``KEY_RE`` (letters, digits,
  ``_``, dot-separated), checked again here, so quoting it cannot break out;
- values are always bound parameters (``?``); a long ``$in`` is one JSON-array parameter.

Prefilter for ``{key: v}`` / ``{key: {"$eq": v}}`` / ``{key: {"$in": [...]}}`` with plain values
(strings without NUL, integers in int64, integral floats): rows whose indexed value equals ``v``,
plus rows where ``key`` or one of its dotted prefixes holds an array (``json_extract`` returns
array text, which starts with ``[``), because MongoDB also matches elements of arrays there.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from dpa4_flows.execution.mongo_json import INT64, dump_json, load_json  # noqa: F401 (re-exported)
from dpa4_flows.execution.mongo_regex import UnsupportedQueryError

#: Declared index keys: plain identifiers joined by dots (the only keys written into SQL text).
KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
#: Indexed keys with few distinct values: never the index that drives a combined look-up.
LOW_CARDINALITY = ("index", "job_index")


class InvalidIndexKeyError(UnsupportedQueryError):
    """An index key outside ``KEY_RE``."""


def check_index_key(key: str) -> str:
    if not isinstance(key, str) or not KEY_RE.fullmatch(key):
        raise InvalidIndexKeyError(
            f"cannot index {key!r}: index keys are letters, digits and '_' joined by dots")
    return key


def field_sql(key: str) -> str:
    """``json_extract`` of a declared key: exactly the text of its ``CREATE INDEX``."""
    path = "$" + "".join(f'."{part}"' for part in check_index_key(key).split("."))
    return f"json_extract(doc, '{path}')"


def prefixes(key: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b", "a.b.c"]`` (paths where an array makes MongoDB look inside)."""
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@dataclass(frozen=True)
class Prefilter:
    """``_id IN ({sql})`` with ``params`` bound to its ``?`` marks; None where no index helps."""

    sql: str
    params: list[Any]


def _plain(value: Any) -> Any:
    """The SQL-comparable form of a plain query value, or None if it is not one."""
    if isinstance(value, str):
        return value if "\0" not in value else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if INT64[0] <= value <= INT64[1] else None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return None


def _candidate(value: Any) -> tuple[str, list] | None:
    if isinstance(value, dict) and len(value) == 1:
        (op, arg), = value.items()
        if op == "$eq":
            value = arg
        elif op == "$in" and isinstance(arg, (list, tuple)) and arg:
            plain = [_plain(v) for v in arg]
            return None if any(p is None for p in plain) else ("in", plain)
        else:
            return None
    plain = _plain(value)
    return None if plain is None else ("eq", [plain])


def prefilter(criteria: dict | None, table: str, indexed: set[str]) -> Prefilter | None:
    """Indexed superset of the rows matching ``criteria`` (module docstring), or None."""
    if not criteria or not isinstance(criteria, dict):
        return None
    found = {}
    for key, value in criteria.items():
        if key in indexed and isinstance(key, str) and KEY_RE.fullmatch(key):
            cand = _candidate(value)
            if cand is not None:
                found[key] = cand
    if not found:
        return None
    order = list(found)
    key = min(order, key=lambda k: (found[k][0] != "eq", k in LOW_CARDINALITY, order.index(k)))
    kind, values = found[key]
    col = field_sql(key)
    if kind == "eq":
        parts, params = [f'SELECT _id FROM "{table}" WHERE {col} = ?'], values
    else:
        parts = [f'SELECT _id FROM "{table}" WHERE {col} IN (SELECT value FROM json_each(?))']
        params = [json.dumps(values)]
    for prefix in prefixes(key):
        arr = field_sql(prefix)
        parts.append(f"SELECT _id FROM \"{table}\" WHERE {arr} >= '[' AND {arr} < '\\'")
    return Prefilter(" UNION ALL ".join(parts), params)


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
