"""MongoDB value semantics on decoded documents: dotted paths, equality, type order, sort keys.

- :func:`leaves` follows a dotted key like MongoDB: through objects, into arrays (each object
  element, or element ``i`` for a numeric part), one array level per path step.
- :func:`hkey` is a hashable identity with MongoDB's equality: numbers compare by value across
  int/float (``1 == 1.0``) but never equal booleans, ``NaN`` equals ``NaN``, objects compare field
  by field *in order*, arrays element by element.
- :func:`sort_key` orders values as MongoDB does across types: missing/null < numbers < strings
  < objects < arrays < booleans < dates (an empty array sorts before null, arrays by their
  smallest element ascending and largest descending); ``NaN`` is the smallest number.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

MISSING = object()

NULL, NUMBER, STRING, OBJECT, ARRAY, BOOL, DATE = 1, 2, 3, 4, 5, 8, 9


def rank(value: Any) -> int:
    """MongoDB's type bracket of a value (BSON comparison order)."""
    if value is None or value is MISSING:
        return NULL
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, (int, float)):
        return NUMBER
    if isinstance(value, str):
        return STRING
    if isinstance(value, dict):
        return OBJECT
    if isinstance(value, (list, tuple)):
        return ARRAY
    if isinstance(value, datetime):
        return DATE
    raise TypeError(f"no MongoDB type for {type(value).__name__}")


def utc(value: datetime) -> datetime:
    """Naive UTC datetime (MongoDB stores UTC; makes aware and naive values comparable)."""
    return value if value.tzinfo is None else value.astimezone(timezone.utc).replace(tzinfo=None)


def hkey(value: Any) -> Any:
    """Hashable key: ``hkey(a) == hkey(b)`` exactly when MongoDB's ``$eq`` says ``a == b``."""
    kind = type(value)
    if kind is str:  # the common cases first: a $in of 100,000 strings hashes them all
        return (STRING, value)
    if kind is int:
        return (NUMBER, value)
    if isinstance(value, bool):
        return (BOOL, value)
    if isinstance(value, float) and math.isnan(value):
        return (NUMBER, "nan")
    if isinstance(value, (int, float)):
        return (NUMBER, value)
    if isinstance(value, dict):
        return (OBJECT, tuple((k, hkey(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (ARRAY, tuple(hkey(v) for v in value))
    if isinstance(value, datetime):
        return (DATE, utc(value))
    if value is None:
        return (NULL,)
    return (rank(value), value)


def leaves(value: Any, parts: list[str], i: int = 0) -> list[Any]:
    """Values a dotted key reaches in ``value``; ``MISSING`` where an object lacks the field.

    A numeric part indexes an array; any other part looks into each object element of an
    array (not into nested arrays); a scalar on the way yields nothing (mongomock's reading:
    ``{"a.b": None}`` does not match ``{"a": 1}``).
    """
    if i == len(parts):
        return [value]
    part = parts[i]
    if isinstance(value, dict):
        return leaves(value[part], parts, i + 1) if part in value else [MISSING]
    if isinstance(value, list):
        if part.isdigit():
            index = int(part)
            return leaves(value[index], parts, i + 1) if index < len(value) else []
        out: list[Any] = []
        for element in value:
            if isinstance(element, dict):
                out.extend(leaves(element, parts, i))
        return out
    return []


def _scalar_key(value: Any) -> tuple:
    r = rank(value)
    if r == NUMBER:
        return (r, 0, 0) if math.isnan(value) else (r, 1, value)
    if r == NULL:
        return (r,)
    if r == OBJECT:
        return (r, tuple((rank(v), k, _scalar_key(v)) for k, v in value.items()))
    if r == ARRAY:
        return (r, tuple(_scalar_key(v) for v in value))
    if r == DATE:
        return (r, utc(value))
    return (r, value)


def sort_key(doc: dict, parts: list[str], descending: bool) -> tuple:
    """Key of ``doc`` for sorting on a dotted field (``reverse=descending`` by the caller)."""
    keys = []
    for leaf in leaves(doc, parts):
        if isinstance(leaf, list):
            if not leaf:
                keys.append((0,))  # an empty array sorts before null and missing
            keys.extend(_scalar_key(v) for v in leaf)
        else:
            keys.append(_scalar_key(leaf))
    if not keys:
        keys.append((NULL,))
    return max(keys) if descending else min(keys)
