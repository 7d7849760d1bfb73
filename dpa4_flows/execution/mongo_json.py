"""Documents <-> JSON text for the embedded store, losslessly for what MongoDB can hold.

Plain JSON cannot hold everything a MongoDB document can, so three values are written as
one-key tag objects (MongoDB Extended JSON's names):

- ``datetime`` -> ``{"$date": iso-string}`` (the layout files written before this module used too);
- ``nan``, ``inf``, ``-inf`` -> ``{"$numberDouble": "NaN" | "Infinity" | "-Infinity"}``;
- a *user* object that looks like a tag (one key among ``TAGS``) -> ``{"$literal": object}``, so
  ``{"$date": 5}`` in a document comes back as ``{"$date": 5}``, never as a date or an error.

Text is UTF-8 (``ensure_ascii=False``), so sqlite's ``json_extract`` sees the same characters as
Python; NUL and other control characters stay escaped (``\\u0000``) and round-trip. Refused with
``DocumentValueError`` (like MongoDB refuses them): integers outside int64, strings that are not
valid Unicode (lone surrogates), non-string keys, nesting deeper than ``MAX_DEPTH``.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

#: MongoDB's BSON nesting limit: deeper documents and queries are refused.
MAX_DEPTH = 100
INT64 = (-(2**63), 2**63 - 1)
TAGS = ("$date", "$numberDouble", "$literal")
_SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_LONG_NUMBER = re.compile(r"\d{19}")


class DocumentValueError(ValueError):
    """A document holds a value the store cannot keep exactly (see the module docstring)."""


def _tag_float(x: float) -> dict:
    return {"$numberDouble": "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")}


def _check_int(x: int, where: str) -> None:
    if not INT64[0] <= x <= INT64[1]:
        raise DocumentValueError(f"integer {x} at {where!r} does not fit in 64 bits (MongoDB's "
                                 "limit too): store it as a string or a float")


def encode(value: Any, where: str = "", depth: int = 0) -> Any:
    """The JSON-ready form of ``value`` with tags (the slow, exact path of :func:`dump_json`)."""
    if depth > MAX_DEPTH:
        raise DocumentValueError(f"document nested deeper than {MAX_DEPTH} levels at {where!r}")
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise DocumentValueError(f"key {k!r} at {where!r} is not a string")
            out[k] = encode(v, f"{where}.{k}" if where else k, depth + 1)
        return {"$literal": out} if len(out) == 1 and next(iter(out)) in TAGS else out
    if isinstance(value, (list, tuple)):
        return [encode(v, f"{where}.{i}", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        _check_int(value, where)
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _tag_float(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise DocumentValueError(f"string at {where!r} is not valid Unicode: {err}") from None
        return value
    if isinstance(value, datetime):
        return {"$date": value.isoformat()}
    raise DocumentValueError(f"cannot store {type(value).__name__} at {where!r}")


def dump_json(value: Any, sort_keys: bool = False) -> str:
    """JSON text of a (sanitised) document; raises ``DocumentValueError`` (module docstring)."""
    try:
        text = json.dumps(value, sort_keys=sort_keys, ensure_ascii=False, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        text = None  # NaN, datetime, a non-string key or deep nesting: the exact path decides
    else:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = None
    if text is None or '"$' in text or _LONG_NUMBER.search(text):
        try:
            text = json.dumps(encode(value), sort_keys=sort_keys, ensure_ascii=False, allow_nan=False)
        except RecursionError:
            raise DocumentValueError(f"document nested deeper than {MAX_DEPTH} levels") from None
    return text


def decode(value: Any) -> Any:
    """Inverse of :func:`encode` on parsed JSON."""
    if isinstance(value, dict):
        if len(value) == 1:
            (k, v), = value.items()
            if k == "$literal" and isinstance(v, dict):
                return {kk: decode(vv) for kk, vv in v.items()}
            if k == "$date" and isinstance(v, str):
                return datetime.fromisoformat(v)
            if k == "$numberDouble" and v in _SPECIAL:
                return _SPECIAL[v]
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def load_json(text: str) -> Any:
    """Inverse of :func:`dump_json` (also reads files written before tags existed)."""
    value = json.loads(text)
    # Decoding walks the whole document: only pay for it when a tag may be present.
    return decode(value) if '"$' in text else value
