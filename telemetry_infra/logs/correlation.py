"""The trace-correlation filter: span and request ids onto each record.

It belongs on the console and file handlers (not on loggers), so the OTLP handler,
which exports the native ids, never sees them as attributes too.
"""

from __future__ import annotations

import logging

from opentelemetry.trace import SpanContext, get_current_span

from telemetry_infra.logs.context import get_request_context
from telemetry_infra.logs.records import CORRELATION_MARKER

__all__ = ["TraceCorrelationFilter"]

_SPAN_FIELDS = ("trace_id", "span_id", "trace_flags")


class TraceCorrelationFilter(logging.Filter):
    """Adds ``trace_id``, ``span_id``, ``trace_flags``, ``request_id``, ``user_id``.

    Span fields appear only inside a valid span; ``trace_flags`` is the W3C sampled
    flag, ``"01"`` or ``"00"`` (other bits, such as "random trace id", left out).
    ``request_id`` is the one set with :func:`set_request_context`, else the trace
    id. Fields the caller passed in ``extra`` win. The filter never rejects a record.
    """

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        # Hex ids of the last span seen: consecutive records mostly share a span.
        self._last: tuple[SpanContext | None, str, str, str] = (None, "", "", "")

    def _hex_ids(self, span_context: SpanContext) -> tuple[SpanContext | None, str, str, str]:
        last = self._last
        if last[0] is span_context:
            return last
        last = (
            span_context,
            f"{span_context.trace_id:032x}",
            f"{span_context.span_id:016x}",
            "01" if span_context.trace_flags.sampled else "00",
        )
        self._last = last
        return last

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        if CORRELATION_MARKER in fields:  # already done by another handler's filter
            return True
        added = []
        request = get_request_context()
        request_id = request.request_id
        span_context = get_current_span().get_span_context()
        if span_context.is_valid:
            _, trace_id, span_id, trace_flags = self._hex_ids(span_context)
            if "trace_id" not in fields:
                fields["trace_id"] = trace_id
                fields["span_id"] = span_id
                fields["trace_flags"] = trace_flags
                added += _SPAN_FIELDS
            request_id = request_id or trace_id
        if request_id is not None and "request_id" not in fields:
            fields["request_id"] = request_id
            added.append("request_id")
        if request.user_id is not None and "user_id" not in fields:
            fields["user_id"] = request.user_id
            added.append("user_id")
        fields[CORRELATION_MARKER] = added
        return True
