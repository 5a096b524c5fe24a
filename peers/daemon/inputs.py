"""Parsing what a request brings (JSON bodies, query parameters) into plain values, or a 400.

Every route reads its input through here, so a malformed request is refused the same
way everywhere: `Refused` (400) with a message that says what was wrong, which the
HTTP layer writes to the audit log. Accepted JSON has at most `MAX_DEPTH` levels of
nesting, only finite numbers (no NaN, Infinity, or a float that overflows) and
integers of at most `MAX_INT_DIGITS` digits, so no later step can overflow,
recurse without bound or write a non-finite number into a signed document.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from fedsilo.peers.errors import Refused

MAX_DEPTH = 32
MAX_INT_DIGITS = 18  # below 2**63: fits SQLite's INTEGER and a float without overflow
_COUNT = re.compile(rf"[0-9]{{1,{MAX_INT_DIGITS}}}")


def parse_json(raw: bytes) -> Any:
    """The JSON value in `raw`; Refused 400 if it is not JSON, nests too deeply, or holds a number out of range."""
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except RecursionError:
        raise Refused(f"the request body nests deeper than {MAX_DEPTH} levels", 400) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(f"the request body is not valid JSON ({exc})", 400) from None
    _check_depth(value)
    return value


def query_count(query: Mapping[str, str], name: str, default: int = 0) -> int:
    """Query parameter `name` as a non-negative integer of at most 18 ASCII digits; Refused 400 otherwise."""
    text = query.get(name)
    if text is None:
        return default
    if not _COUNT.fullmatch(text):
        raise Refused(f"{name} must be a non-negative integer of at most 18 digits, got {text[:40]!r}", 400)
    return int(text)


def finite_number(value: Any, what: str) -> float:
    """`value` as a float if it is a JSON number (not a bool, not a string) and finite; Refused 400 otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Refused(f"{what} must be a number, got {type(value).__name__}", 400)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise Refused(f"{what} must be a finite number (not NaN, infinite or overflowing)", 400)
    return number


def _no_constant(token: str) -> Any:
    raise Refused(f"the request body holds {token}: only finite numbers are accepted", 400)


def _finite_float(token: str) -> float:
    number = float(token)
    if not math.isfinite(number):
        raise Refused(f"the request body holds the number {token[:40]}, which overflows a float", 400)
    return number


def _bounded_int(token: str) -> int:
    if len(token.lstrip("-")) > MAX_INT_DIGITS:
        raise Refused(
            f"the request body holds an integer of {len(token.lstrip('-'))} digits; at most "
            f"{MAX_INT_DIGITS} are accepted",
            400,
        )
    return int(token)


def _check_depth(value: Any) -> None:
    """Refused 400 if containers nest more than MAX_DEPTH levels (iterative: no recursion on hostile input)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                raise Refused(f"the request body nests deeper than {MAX_DEPTH} levels", 400)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
