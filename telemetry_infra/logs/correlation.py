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

_NOTHING_ADDED: tuple[str, ...] = ()


class TraceCorrelationFilter(logging.Filter):
    """Adds ``trace_id``, ``span_id``, ``trace_flags``, ``request_id``, ``user_id``.

    Span fields appear only inside a valid span; ``trace_flags`` is the W3C sampled
    flag (``"01"`` or ``"00"``, other bits such as "random trace id" left out). ``request_id`` is the one set with
    :func:`set_request_context`, else the trace id. Fields the caller passed in
    ``extra`` win. The filter never rejects a record and never raises.
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
        added: list[str] = []
        request = get_request_context()
        span_context = get_current_span().get_span_context()
        trace_id = None
        if span_context.is_valid:
            _, trace_id, span_id, trace_flags = self._hex_ids(span_context)
            for key, value in (("trace_id", trace_id), ("span_id", span_id), ("trace_flags", trace_flags)):
                if key not in fields:
                    fields[key] = value
                    added.append(key)
        for key, value in (("request_id", request.request_id or trace_id), ("user_id", request.user_id)):
            if value is not None and key not in fields:
                fields[key] = value
                added.append(key)
        fields[CORRELATION_MARKER] = tuple(added) if added else _NOTHING_ADDED
        return True
