"""MongoDB filters evaluated in Python: the one place the embedded store's query semantics live.

``compile_query(criteria)`` validates a filter and returns a predicate over decoded documents.
Supported (checked against mongomock by ``tests/flows/test_store_differential.py``): implicit and
explicit ``$eq``, ``$ne``, ``$gt $gte $lt $lte`` (numbers, strings, dates; within one type as
MongoDB does), ``$in $nin`` (any number of values: hashed), ``$exists``, ``$size``, ``$regex``
(+``$options``, bounded: :mod:`mongo_regex`), ``$not``, ``$elemMatch``, ``$and $or $nor``;
dotted keys through objects and arrays (``output.results.converged`` matches an array of
objects), numeric parts (``a.0``), ``None`` meaning null or missing.

Refused with ``UnsupportedQueryError`` (a ``ValueError``): other operators, keys with empty
parts or ``$`` parts, integers outside int64, nesting deeper than ``MAX_DEPTH`` (also
``QueryTooDeepError``), unsafe or slow regular expressions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from dpa4_flows.execution.mongo_json import INT64, MAX_DEPTH
from dpa4_flows.execution.mongo_regex import UnsupportedQueryError, compile_regex
from dpa4_flows.execution.mongo_values import MISSING, NUMBER, hkey, leaves, rank, utc

Leaves = list[Any]
Cond = Callable[[Leaves], bool]
Predicate = Callable[[dict], bool]

_RANGE = {"$gt": lambda a, b: a > b, "$gte": lambda a, b: a >= b,
          "$lt": lambda a, b: a < b, "$lte": lambda a, b: a <= b}
_LOGICAL = ("$and", "$or", "$nor")
_PATTERN_TYPES = (re.Pattern,)


class QueryTooDeepError(UnsupportedQueryError):
    """A filter nested deeper than ``MAX_DEPTH`` levels (MongoDB's own limit is 100)."""


def check_values(criteria: Any) -> None:
    """Refuse nesting deeper than ``MAX_DEPTH`` and integers outside int64 (no recursion)."""
    containers = (dict, list, tuple, set, frozenset)
    stack = [(criteria, 0)]
    while stack:
        value, depth = stack.pop()
        if depth >= MAX_DEPTH:
            raise QueryTooDeepError(f"query nested deeper than {MAX_DEPTH} levels")
        for v in value.values() if isinstance(value, dict) else value:
            kind = type(v)
            if kind is str or kind is float:
                continue
            if isinstance(v, containers):
                stack.append((v, depth + 1))
            elif kind is int and not INT64[0] <= v <= INT64[1]:
                raise UnsupportedQueryError(f"query integer {v} does not fit in 64 bits")


def compile_query(criteria: dict | None) -> Predicate:
    """Validate ``criteria`` and return ``doc -> bool`` with MongoDB's semantics (module docstring)."""
    if not criteria:
        if criteria is not None and not isinstance(criteria, dict):
            raise UnsupportedQueryError(f"criteria must be a dict, got {criteria!r}")
        return lambda doc: True
    check_values(criteria)
    return _doc_pred(criteria)


def _doc_pred(criteria: Any) -> Predicate:
    if not isinstance(criteria, dict):
        raise UnsupportedQueryError(f"a filter must be a dict, got {criteria!r}")
    preds = [_top(k, v) for k, v in criteria.items()]
    if len(preds) == 1:
        return preds[0]
    return lambda doc: all(p(doc) for p in preds)


def split_key(key: Any) -> list[str]:
    """Dotted key -> parts; refuses non-strings, empty parts and ``$`` parts."""
    if not isinstance(key, str):
        raise UnsupportedQueryError(f"field names must be strings, got {key!r}")
    parts = key.split(".")
    if any(not p or p.startswith("$") for p in parts):
        raise UnsupportedQueryError(f"unsupported field name {key!r} (empty or '$' part)")
    return parts


def _top(key: str, value: Any) -> Predicate:
    if key in _LOGICAL:
        if not isinstance(value, (list, tuple)) or not value:
            raise UnsupportedQueryError(f"{key} needs a non-empty list, got {value!r}")
        subs = [_doc_pred(v) for v in value]
        if key == "$and":
            return lambda doc: all(p(doc) for p in subs)
        if key == "$or":
            return lambda doc: any(p(doc) for p in subs)
        return lambda doc: not any(p(doc) for p in subs)
    if isinstance(key, str) and key.startswith("$"):
        raise UnsupportedQueryError(f"unsupported top-level operator {key!r}")
    parts = split_key(key)
    cond = _value_cond(key, value)
    return lambda doc: cond(leaves(doc, parts))


def _is_ops(value: Any) -> bool:
    if not isinstance(value, dict) or not value:
        return False
    ops = [isinstance(k, str) and k.startswith("$") for k in value]
    if any(ops) and not all(ops):
        raise UnsupportedQueryError(f"cannot mix operators and fields in {value!r}")
    return all(ops)


def _value_cond(key: str, value: Any) -> Cond:
    if isinstance(value, _PATTERN_TYPES):
        return _regex(key, value.pattern, _options(value))
    if _is_ops(value):
        return _ops(key, value)
    return _eq(value)


def _options(pattern: re.Pattern) -> str:
    return "".join(o for o, f in (("i", re.I), ("m", re.M), ("s", re.S), ("x", re.X)) if pattern.flags & f)


def _ops(key: str, ops: dict) -> Cond:
    conds = []
    for op, arg in ops.items():
        if op == "$options":
            if "$regex" not in ops:
                raise UnsupportedQueryError(f"$options without $regex on {key!r}")
            continue
        if op == "$regex":
            pattern = arg.pattern if isinstance(arg, _PATTERN_TYPES) else arg
            conds.append(_regex(key, pattern, ops.get("$options", "")))
        else:
            conds.append(_op(key, op, arg))
    if len(conds) == 1:
        return conds[0]
    return lambda lv: all(c(lv) for c in conds)


def _each(lv: Leaves, test: Callable[[Any], bool]) -> bool:
    """True if ``test`` holds for a leaf or, for array leaves, one of its elements."""
    for leaf in lv:
        if test(leaf):
            return True
        if isinstance(leaf, list) and any(test(e) for e in leaf):
            return True
    return False


def _eq(q: Any) -> Cond:
    if q is None:
        return lambda lv: _each(lv, lambda v: v is None or v is MISSING)
    if isinstance(q, _PATTERN_TYPES):
        raise UnsupportedQueryError("a regular expression is only supported as $regex or a field value")
    h = hkey(q)
    return lambda lv: _each(lv, lambda v: v is not MISSING and hkey(v) == h)


def _in(key: str, op: str, values: Any) -> Cond:
    if not isinstance(values, (list, tuple, set, frozenset)):
        raise UnsupportedQueryError(f"{op} on {key!r} needs a list, got {values!r}")
    if any(isinstance(v, _PATTERN_TYPES) for v in values):
        raise UnsupportedQueryError(f"regular expressions in {op} are not supported ({key!r})")
    keys = {hkey(v) for v in values}
    null = (1,) in keys
    return lambda lv: _each(lv, lambda v: (null and v is MISSING) or (v is not MISSING and hkey(v) in keys))


def _range(key: str, op: str, q: Any) -> Cond:
    if isinstance(q, bool) or not isinstance(q, (int, float, str, datetime)):
        raise UnsupportedQueryError(f"{op} on {key!r} supports numbers, strings and dates, got {q!r}")
    cmp, r = _RANGE[op], rank(q)
    if isinstance(q, datetime):
        q = utc(q)
    if r == NUMBER and math.isnan(q):
        # NaN equals only NaN and is below every number: $gte/$lte NaN match NaN, $gt/$lt nothing.
        ok = op in ("$gte", "$lte")
        return lambda lv: ok and _each(lv, lambda v: isinstance(v, float) and math.isnan(v))

    def test(v: Any) -> bool:
        if v is MISSING or isinstance(v, (list, dict)) or rank(v) != r:
            return False
        if r == NUMBER and math.isnan(v):
            return False
        return cmp(utc(v) if isinstance(v, datetime) else v, q)

    return lambda lv: _each(lv, test)


def _regex(key: str, pattern: Any, options: str) -> Cond:
    search = compile_regex(pattern, options)
    return lambda lv: _each(lv, lambda v: isinstance(v, str) and search(v))


def _elem_match(key: str, spec: Any) -> Cond:
    if not isinstance(spec, dict) or not spec:
        raise UnsupportedQueryError(f"$elemMatch on {key!r} needs a non-empty dict, got {spec!r}")
    if all(isinstance(k, str) and k.startswith("$") and k not in _LOGICAL for k in spec):
        cond = _ops(key, spec)

        def element(e: Any) -> bool:
            return cond([e])
    else:
        pred = _doc_pred(spec)

        def element(e: Any) -> bool:
            return isinstance(e, dict) and pred(e)

    return lambda lv: any(isinstance(leaf, list) and any(element(e) for e in leaf) for leaf in lv)


def _op(key: str, op: str, arg: Any) -> Cond:
    if op == "$eq":
        return _eq(arg)
    if op == "$ne":
        cond = _eq(arg)
        return lambda lv: not cond(lv)
    if op in ("$in", "$nin"):
        cond = _in(key, op, arg)
        return cond if op == "$in" else (lambda lv: not cond(lv))
    if op in _RANGE:
        return _range(key, op, arg)
    if op == "$exists":
        want = bool(arg)
        return lambda lv: any(v is not MISSING for v in lv) == want
    if op == "$size":
        if isinstance(arg, bool) or not isinstance(arg, int):
            raise UnsupportedQueryError(f"$size on {key!r} needs an integer, got {arg!r}")
        return lambda lv: any(isinstance(v, list) and len(v) == arg for v in lv)
    if op == "$not":
        if isinstance(arg, _PATTERN_TYPES):
            cond = _regex(key, arg.pattern, _options(arg))
        elif _is_ops(arg):
            cond = _ops(key, arg)
        else:
            raise UnsupportedQueryError(f"$not on {key!r} needs an operator dict or a regex, got {arg!r}")
        return lambda lv: not cond(lv)
    if op == "$elemMatch":
        return _elem_match(key, arg)
    raise UnsupportedQueryError(f"unsupported operator {op!r} on key {key!r}")
