"""``$regex`` for the embedded store, bounded: no pattern can hang a query.

Two guards, because a backtracking engine can take exponential time (``(a+)+$`` took 19 s on 29
characters before this module existed):

1. Patterns with a quantified group that itself holds a quantifier (``(a+)+``, ``(\\w*)*``,
   ``(a{2,})+``: the classic catastrophic shapes) are refused up front with ``UnsafeRegexError``.
2. Every other pattern runs under a time budget of ``REGEX_BUDGET_S`` seconds of matching per
   query (the ``regex`` package's ``timeout``), so the remaining slow shapes (overlapping
   alternation like ``(a|aa)+$``, backreferences) end with ``RegexTimeoutError`` instead of hanging.

Options: MongoDB's ``i``, ``m``, ``s``, ``x``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import regex

#: Seconds of regular-expression matching one query may spend (all documents together).
REGEX_BUDGET_S = 1.0
_FLAGS = {"i": regex.IGNORECASE, "m": regex.MULTILINE, "s": regex.DOTALL, "x": regex.VERBOSE}


class UnsupportedQueryError(ValueError):
    """A query the embedded store refuses (unsupported operator or value, or over a bound)."""


class UnsafeRegexError(UnsupportedQueryError):
    """A ``$regex`` pattern whose shape can backtrack exponentially."""


class RegexTimeoutError(UnsupportedQueryError):
    """A ``$regex`` used up its matching time budget."""


def _quantifier_at(pattern: str, i: int) -> tuple[bool, int]:
    """(unbounded-or-repeating quantifier?, index after it) for the text at ``pattern[i]``."""
    if i < len(pattern) and pattern[i] in "*+?":
        repeating = pattern[i] != "?"
        i += 1
    elif i < len(pattern) and pattern[i] == "{":
        end = pattern.find("}", i)
        body = pattern[i + 1:end] if end > 0 else ""
        if not body or not all(c.isdigit() or c == "," for c in body):
            return False, i  # a literal brace
        hi = body.split(",")[-1]
        repeating = "," in body and (hi == "" or int(hi) > 1) or ("," not in body and int(body) > 1)
        i = end + 1
    else:
        return False, i
    if i < len(pattern) and pattern[i] in "?+":  # lazy or possessive form
        i += 1
    return repeating, i


def check_pattern(pattern: str) -> None:
    """Raise ``UnsafeRegexError`` if a repeated group contains a repeated element."""
    stack = [False]  # per open group: does it contain a repeating quantifier?
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            repeating, i = _quantifier_at(pattern, i)
            stack[-1] |= repeating
            continue
        if c == "[":
            j = i + 1 + (pattern[i + 1:i + 2] == "^")
            j += pattern[j:j + 1] == "]"
            while j < len(pattern) and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            i = j + 1
        elif c == "(":
            stack.append(False)
            i += 1
            continue
        elif c == ")" and len(stack) > 1:
            inner = stack.pop()
            repeating, i = _quantifier_at(pattern, i + 1)
            if repeating and inner:
                raise UnsafeRegexError(
                    f"$regex {pattern!r} repeats a group that itself repeats (nested quantifier), "
                    "which can take exponential time: rewrite it without the nesting")
            stack[-1] |= repeating or inner
            continue
        else:
            i += 1
        repeating, i = _quantifier_at(pattern, i)
        stack[-1] |= repeating


def compile_regex(pattern: str, options: str = "") -> Callable[[str], bool]:
    """A bounded ``search`` predicate for ``pattern`` (see the module docstring)."""
    if not isinstance(pattern, str):
        raise UnsupportedQueryError(f"$regex needs a string pattern, got {pattern!r}")
    flags = 0
    for o in options or "":
        if o not in _FLAGS:
            raise UnsupportedQueryError(f"unsupported $options {o!r} (supported: i, m, s, x)")
        flags |= _FLAGS[o]
    check_pattern(pattern)
    try:
        compiled = regex.compile(pattern, flags)
    except regex.error as err:
        raise UnsupportedQueryError(f"invalid $regex {pattern!r}: {err}") from None
    spent = [0.0]

    def search(text: str) -> bool:
        left = REGEX_BUDGET_S - spent[0]
        t0 = time.perf_counter()
        try:
            return compiled.search(text, timeout=max(left, 1e-3)) is not None
        except TimeoutError:
            raise RegexTimeoutError(
                f"$regex {pattern!r} used up its {REGEX_BUDGET_S} s matching budget: simplify the "
                "pattern (avoid overlapping alternatives and backreferences)") from None
        finally:
            spent[0] += time.perf_counter() - t0

    return search
