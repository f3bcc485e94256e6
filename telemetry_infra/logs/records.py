"""What a :class:`logging.LogRecord` holds: the standard attributes versus the caller's fields.

Every output (JSON, console, OTLP) and :class:`StructuredLogger` use these sets, so
"which attributes are the caller's ``extra``" is decided in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from itertools import islice
from typing import Any, TypeVar

from telemetry_infra.logs.redaction import REDACTED, Redactor, get_redactor

__all__ = [
    "CALLER_IDS_MARKER",
    "COLLISION_PREFIX",
    "CORRELATION_FIELDS",
    "CORRELATION_MARKER",
    "STANDARD_ATTRIBUTES",
    "ExtraFields",
    "as_text",
    "collision_safe",
    "formatted_once",
    "message_of",
    "one_line",
    "prefixed",
    "valid_text",
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
"""Record attribute set by the filter: the record's correlation fields, in output order."""

CALLER_IDS_MARKER = "_telemetry_infra_caller_ids"
"""Record attribute naming the correlation fields the caller passed in ``extra`` (if any)."""

COLLISION_PREFIX = "extra_"
"""Prefix keeping an ``extra`` key that would collide with a record or output field."""


def prefixed(key: str) -> str:
    """The name a colliding ``extra`` key is kept under."""
    return COLLISION_PREFIX + key


def collision_safe(extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` with keys that would overwrite a LogRecord attribute prefixed."""
    return {prefixed(key) if key in STANDARD_ATTRIBUTES else key: value for key, value in extra.items()}


# LogRecord.__init__ sets the same attributes, in the same order, on every record;
# makeRecord adds the caller's extra after them. Reading from here on skips the ~20
# standard ones without looking at them: this runs for every record.
_FIRST_EXTRA_POSITION = len(logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__)
_NOT_EXTRA = STANDARD_ATTRIBUTES | frozenset(CORRELATION_FIELDS)
_SCALARS = frozenset({str, int, float, bool, type(None)})
_UNDECIDED: Any = object()
_MAX_PLANS = 4096


class ExtraFields:
    """The caller's ``extra`` fields of a record, as one output writes them.

    Skips the correlation fields, renames keys colliding with the output's own
    ``reserved`` names (``extra_<key>``) and redacts secrets. What to do with a key
    is decided once and remembered: field names repeat endlessly in logs.
    """

    def __init__(self, reserved: frozenset[str] = frozenset()) -> None:
        self._reserved = reserved
        self._plans: dict[str, tuple[str, bool] | None] = {}
        self._shapes: dict[tuple[str, ...], list[tuple[str, str, bool]]] = {}
        self._by_size: dict[int, tuple[frozenset[str], list[tuple[str, str, bool]]]] = {}
        self._redactor: Redactor = get_redactor()

    def _plan(self, key: str) -> tuple[str, bool] | None:
        """``(output name, is secret)``, or ``None`` when ``key`` is not an extra field."""
        if key in _NOT_EXTRA or key[:1] == "_":
            return None
        return (prefixed(key) if key in self._reserved else key), self._redactor.is_secret(key)

    def into(self, target: dict[str, Any], record: logging.LogRecord) -> dict[str, Any]:
        """Write the record's extra fields into ``target`` (and return it)."""
        redactor = get_redactor()
        if redactor is not self._redactor:  # the secret list changed: decide again
            self._redactor, self._plans, self._shapes, self._by_size = redactor, {}, {}, {}
        fields = record.__dict__
        for key, name, secret in self._shape_of(fields):
            value = fields[key]
            if secret:
                value = REDACTED
            elif type(value) not in _SCALARS:
                value = redactor.value(key, value)
            target[name] = value
        return target

    def _shape_of(self, fields: dict[str, Any]) -> list[tuple[str, str, bool]]:
        # Records of one call site carry the same keys in the same order: plan them once.
        # Every record has all the standard attributes, so one with as many fields as a
        # known shape and all of that shape's keys has exactly its keys: cheaper to check
        # than building the tuple of keys again (~0.3 µs a record).
        size = len(fields)
        known = self._by_size.get(size)
        if known is not None and fields.keys() >= known[0]:
            return known[1]
        keys = tuple(islice(fields, _FIRST_EXTRA_POSITION, None))
        shape = self._shapes.get(keys)
        if shape is None:
            shape = self._shape(keys)
        if len(self._by_size) < _MAX_PLANS:
            self._by_size[size] = (frozenset(keys), shape)
        return shape

    def _shape(self, keys: tuple[str, ...]) -> list[tuple[str, str, bool]]:
        plans = self._plans
        shape = []
        for key in keys:
            plan = plans.get(key, _UNDECIDED)
            if plan is _UNDECIDED:
                plan = self._plan(key)
                if len(plans) < _MAX_PLANS:  # past the bound, decided afresh each time
                    plans[key] = plan
            if plan is not None:
                shape.append((key, *plan))
        if len(self._shapes) < _MAX_PLANS:
            self._shapes[keys] = shape
        return shape


_Line = TypeVar("_Line", str, bytes)

_LastLine = tuple[logging.LogRecord, Any, Any, str, int, Any]
"""``(record, msg, args, levelname, number of attributes, line)``: the last line of a format."""

_last_lines: dict[object, _LastLine] = {}


def formatted_once(
    record: logging.LogRecord, key: object, make_line: Callable[[logging.LogRecord], _Line]
) -> _Line:
    """``make_line(record)``, or the line a formatter with the same ``key`` just made for it.

    A record goes through every handler of its logger and its ancestors (``app.log``,
    ``api.log``, the console...) one after the other; handlers whose formatters have
    equal keys would write the same line, so the last line of each key is kept beside
    the record (never on it: handlers that export a record's attributes must not see
    it). It is not reused once the record changed in a way a formatter sees: another
    ``msg``, ``args`` or level (a filter rewrote it), or an attribute added or removed
    (a filter added a field). A ``key`` of ``None`` shares nothing, nor does a record
    carrying an exception: the last record of a format is kept until the next one,
    and a traceback would keep every frame's locals alive with it.
    """
    entry = _last_lines.get(key)
    if (
        entry is not None
        and entry[0] is record
        and entry[1] is record.msg
        and entry[2] is record.args
        and entry[3] is record.levelname
        and entry[4] == len(record.__dict__)
    ):
        shared: _Line = entry[5]
        return shared
    line = make_line(record)
    if key is not None and record.exc_info is None:
        _last_lines[key] = (record, record.msg, record.args, record.levelname, len(record.__dict__), line)
    return line


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
    """``str(value)`` as valid UTF-8, or a placeholder when its ``__str__`` is broken."""
    try:
        return valid_text(str(value))
    except Exception:  # a broken __str__ (or one too deep to print) must not lose the record
        return f"<unprintable {type(value).__name__}>"


def valid_text(text: str) -> str:
    """``text`` with lone surrogates escaped (``\\udcff``): no encoder can write them."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
