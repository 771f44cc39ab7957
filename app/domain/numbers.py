"""Reading numbers that people and clients type: every form field, query value and technique
parameter goes through these, so that `inf`, `nan`, `1e400` or a 5,000-digit number is a plain
"must be a number" and never an OverflowError deep in a route."""

from __future__ import annotations

import math
from typing import Any


def finite_float(raw: Any) -> float:
    """A finite float from text or a number; ValueError for anything else (inf, nan, 1e400, a
    bool, an integer too large for a float)."""
    if isinstance(raw, bool):
        raise ValueError("a truth value is not a number")
    try:
        value = float(raw)
    except (TypeError, OverflowError):
        raise ValueError(f"not a finite number: {raw!r:.40}") from None
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {raw!r:.40}")
    return value


def whole_number(raw: Any) -> int:
    """A whole number from text or a number ('3', '3.0', '3e2', 3); ValueError for a fraction or
    anything finite_float refuses."""
    value = finite_float(raw)
    if not value.is_integer():
        raise ValueError(f"not a whole number: {raw!r:.40}")
    return int(value)


# Row ids are PostgreSQL `integer` columns: a larger number is no row, not a database error.
MAX_ID = 2**31 - 1


def record_id(raw: Any) -> int | None:
    """A row id from a path, query or form value (ASCII digits, 1 to MAX_ID), else None."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw if 1 <= raw <= MAX_ID else None
    text = str(raw).strip()
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None
