"""OTLPLogHandler: stdlib records into OpenTelemetry log records.

Trace and span ids travel in the OTLP record's own fields (taken from the active
context), so they are not repeated as attributes. The handler must never feed
itself: records of the exporter's own loggers are dropped, and a thread already
inside ``emit`` (an export failure that logs) drops what it logs meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import traceback
from collections.abc import Sequence
from time import time_ns
from typing import Any

from opentelemetry._logs import LoggerProvider, SeverityNumber
from opentelemetry.context import get_current

from telemetry_infra.logs.context import get_request_context
from telemetry_infra.logs.records import CORRELATION_MARKER, as_text, extra_items, message_of
from telemetry_infra.logs.redaction import get_redactor

__all__ = ["EXPORTER_LOGGERS", "OTLPLogHandler"]

EXPORTER_LOGGERS = ("opentelemetry", "grpc", "urllib3", "requests", "httpx", "httpcore")
"""Loggers of the export path: their records would loop back into the exporter."""

_SEVERITY_TEXT = {"WARNING": "WARN", "CRITICAL": "FATAL"}
_SEVERITY_BASE = {10: 5, 20: 9, 30: 13, 40: 17, 50: 21}  # DEBUG INFO WARN ERROR FATAL
_PRIMITIVES = (str, bool, int, float)


def severity_number(levelno: int) -> SeverityNumber:
    """The OTel severity of a stdlib level (``INFO`` -> 9, ``INFO+1`` -> 10, ...)."""
    if levelno < logging.DEBUG:
        return SeverityNumber.UNSPECIFIED
    if levelno >= logging.CRITICAL + 4:
        return SeverityNumber.FATAL4
    band, step = divmod(levelno, 10)
    return SeverityNumber(_SEVERITY_BASE[band * 10] + min(step, 3))


def attribute_value(value: Any) -> Any:
    """``value`` as a valid OTel attribute: a primitive or a homogeneous primitive sequence."""
    if isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        kinds = {type(item) for item in value}
        if len(kinds) <= 1 and kinds <= set(_PRIMITIVES):
            return tuple(value)
    return as_text(value)


def _exception_attributes(exc_info: Any) -> dict[str, str]:
    exc_type, exc, tb = exc_info
    if exc_type is None:
        return {}
    module = exc_type.__module__
    qualname = exc_type.__qualname__
    return {
        "exception.type": qualname if module == "builtins" else f"{module}.{qualname}",
        "exception.message": as_text(exc),
        "exception.stacktrace": "".join(traceback.format_exception(exc_type, exc, tb)),
    }


class OTLPLogHandler(logging.Handler):
    """Emits each record through ``logger_provider.get_logger(record.name)``.

    Body is the formatted message, ``extra`` fields become attributes (secrets
    redacted, other values coerced to attribute types), exceptions become
    ``exception.type``/``exception.message``/``exception.stacktrace`` and
    ``code.*`` attributes say where the record was made. Never raises.
    """

    def __init__(self, logger_provider: LoggerProvider, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self._provider = logger_provider
        self._emitting = threading.local()

    def handle(self, record: logging.LogRecord) -> bool:
        # The OTel pipeline is thread-safe; skipping the handler lock keeps
        # logging threads from queueing behind each other.
        if record.name.startswith(EXPORTER_LOGGERS) or getattr(self._emitting, "active", False):
            return False
        if not self.filter(record):
            return False
        self._emitting.active = True
        try:
            self.emit(record)
        finally:
            self._emitting.active = False
        return True

    def emit(self, record: logging.LogRecord) -> None:
        # Exporting is best effort: failures never reach the caller and are not logged.
        with contextlib.suppress(Exception):
            self._provider.get_logger(record.name).emit(
                timestamp=int(record.created * 1e9),
                observed_timestamp=time_ns(),
                context=get_current(),
                severity_number=severity_number(record.levelno),
                severity_text=_SEVERITY_TEXT.get(record.levelname, record.levelname),
                body=message_of(record),
                attributes=self._attributes(record),
            )

    @staticmethod
    def _attributes(record: logging.LogRecord) -> dict[str, Any]:
        redactor = get_redactor()
        added_by_filter = record.__dict__.get(CORRELATION_MARKER, ())
        attributes: dict[str, Any] = {
            "code.file.path": record.pathname,
            "code.function.name": record.funcName,
            "code.line.number": record.lineno,
        }
        request = get_request_context()
        if request.request_id is not None:
            attributes["request_id"] = request.request_id
        if request.user_id is not None:
            attributes["user_id"] = request.user_id
        for key in ("request_id", "user_id"):  # the caller's own, passed in ``extra``
            value = record.__dict__.get(key)
            if value is not None and key not in added_by_filter:
                attributes[key] = attribute_value(value)
        for key, value in extra_items(record):
            value = redactor.value(key, value)
            attributes[key] = attribute_value(value)
        if record.exc_info:
            attributes.update(_exception_attributes(record.exc_info))
        return attributes

    def flush(self) -> None:
        """Nothing to flush here: the LoggerProvider's processor owns the buffer."""
