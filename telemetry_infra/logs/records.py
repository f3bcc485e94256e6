"""What a :class:`logging.LogRecord` holds: the standard attributes versus the caller's fields.

Every output (JSON, console, OTLP) and :class:`StructuredLogger` use these sets, so
"which attributes are the caller's ``extra``" is decided in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "COLLISION_PREFIX",
    "CORRELATION_FIELDS",
    "CORRELATION_MARKER",
    "STANDARD_ATTRIBUTES",
    "as_text",
    "collision_safe",
    "extra_items",
    "message_of",
    "one_line",
    "prefixed",
]

STANDARD_ATTRIBUTES = frozenset(
    {
        *logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__,
        "message",
        "asctime",
        "taskName",
    }
)
"""Attributes every LogRecord has; an ``extra`` key among them would overwrite one."""

CORRELATION_FIELDS = ("request_id", "user_id", "trace_id", "span_id", "trace_flags")
"""Fields the correlation filter adds; outputs place them at fixed positions."""

CORRELATION_MARKER = "_telemetry_infra_correlated"
"""Record attribute listing the correlation fields the filter itself added."""

COLLISION_PREFIX = "extra_"
"""Prefix keeping an ``extra`` key that would collide with a record or output field."""


def prefixed(key: str) -> str:
    """The name a colliding ``extra`` key is kept under."""
    return COLLISION_PREFIX + key


def collision_safe(extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` with keys that would overwrite a LogRecord attribute prefixed."""
    return {prefixed(key) if key in STANDARD_ATTRIBUTES else key: value for key, value in extra.items()}


def extra_items(record: logging.LogRecord) -> Iterator[tuple[str, Any]]:
    """The caller's ``extra`` fields of ``record`` (correlation fields excluded)."""
    for key, value in record.__dict__.items():
        if key in STANDARD_ATTRIBUTES or key in CORRELATION_FIELDS or key[:1] == "_":
            continue
        yield key, value


# Everything str.splitlines() breaks on, escaped: a value can never start a line of its
# own, so a log line cannot be forged.
_LINE_BREAKS = str.maketrans(
    {char: f"\\u{ord(char):04x}" for char in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}
)


def one_line(text: str) -> str:
    """``text`` with every line-break character escaped."""
    return text.translate(_LINE_BREAKS)


def message_of(record: logging.LogRecord) -> str:
    """``record.getMessage()``, or a readable stand-in when the arguments do not fit."""
    try:
        return record.getMessage()
    except Exception:  # a bad format string is the caller's bug; the record must survive
        return f"{as_text(record.msg)} (arguments not formatted: {as_text(record.args)})"


def as_text(value: Any) -> str:
    """``str(value)``, or a placeholder when its ``__str__`` is broken."""
    try:
        return str(value)
    except Exception:  # a broken __str__ must not lose the record
        return f"<unprintable {type(value).__name__}>"
