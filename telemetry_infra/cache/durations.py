"""Durations users give the cache (TTLs, timeouts): seconds as ``int``, ``float`` or ``timedelta``."""

from __future__ import annotations

from datetime import timedelta

__all__ = ["MAX_SECONDS", "seconds"]

#: The longest duration accepted (100 years): Redis stores expiries as milliseconds in 64 bits.
MAX_SECONDS = 100 * 365 * 24 * 3600.0


def seconds(value: float | int | timedelta, name: str, *, zero_allowed: bool = False) -> float:
    """``value`` in seconds; ``TypeError``/``ValueError`` naming ``name`` when it is not a
    positive duration (zero or more with ``zero_allowed``) below ``MAX_SECONDS``."""
    if isinstance(value, timedelta):
        result = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        result = float(value)
    else:
        raise TypeError(f"{name} must be seconds (int/float) or a timedelta, got {type(value).__qualname__}")
    too_small = result < 0 if zero_allowed else result <= 0
    if too_small or not result < MAX_SECONDS:  # NaN is not below MAX_SECONDS
        bound = "zero or more" if zero_allowed else "positive"
        raise ValueError(f"{name} must be {bound} and below {MAX_SECONDS:.0f} s (100 years), got {value!r}")
    return result
