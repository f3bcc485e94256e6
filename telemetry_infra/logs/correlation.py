"""The trace-correlation filter: span and request ids onto each record.

It belongs on the console and file handlers (not on loggers), so the OTLP handler,
which exports the native ids, never sees them as attributes too.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import get_current_span

from telemetry_infra.logs.context import RequestContext
from telemetry_infra.logs.context import _current as _request_context_variable
from telemetry_infra.logs.records import CALLER_IDS_MARKER, CORRELATION_FIELDS, CORRELATION_MARKER
from telemetry_infra.otel.current_context import current_context

__all__ = ["TraceCorrelationFilter"]


def correlation_fields(otel_context: Context, request: RequestContext) -> dict[str, Any]:
    """The correlation fields of a record made under these contexts, in output order."""
    fields: dict[str, Any] = {}
    request_id = request.request_id
    span_context = get_current_span(otel_context).get_span_context()
    trace_id = f"{span_context.trace_id:032x}" if span_context.is_valid else None
    request_id = request_id or trace_id
    if request_id is not None:
        fields["request_id"] = request_id
    if request.user_id is not None:
        fields["user_id"] = request.user_id
    if trace_id is not None:
        fields["trace_id"] = trace_id
        fields["span_id"] = f"{span_context.span_id:016x}"
        fields["trace_flags"] = "01" if span_context.trace_flags.sampled else "00"
    return fields


_current_request_context = _request_context_variable.get


class TraceCorrelationFilter(logging.Filter):
    """Adds ``trace_id``, ``span_id``, ``trace_flags``, ``request_id``, ``user_id``.

    Span fields appear only inside a valid span; ``trace_flags`` is the W3C sampled
    flag, ``"01"`` or ``"00"`` (other bits, such as "random trace id", left out).
    ``request_id`` is the one set with :func:`set_request_context`, else the trace
    id. Fields the caller passed in ``extra`` win. The filter never rejects a record.
    """

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        # Consecutive records mostly share their contexts (both are immutable): what to
        # add is worked out once per pair and kept, with the pair, until it changes.
        self._last: tuple[Context | None, RequestContext | None, dict[str, Any]] = (None, None, {})

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        if CORRELATION_MARKER in fields:  # already done by another handler's filter
            return True
        otel_context, request = current_context(), _current_request_context()
        last = self._last
        if last[0] is not otel_context or last[1] is not request:
            correlated = correlation_fields(otel_context, request)
            last = self._last = (otel_context, request, {**correlated, CORRELATION_MARKER: correlated})
        # Five lookups: faster than any set operation on the record's keys.
        if (
            "request_id" in fields
            or "user_id" in fields
            or "trace_id" in fields
            or "span_id" in fields
            or "trace_flags" in fields
        ):
            fields.update(_keeping_callers(last[2][CORRELATION_MARKER], fields))
        else:
            fields.update(last[2])
        return True


def _keeping_callers(correlated: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """What to add when the caller passed some correlation fields in ``extra``: theirs win.

    A caller's ``trace_id`` keeps all three span fields (ours would not match it).
    """
    callers = tuple(key for key in CORRELATION_FIELDS if key in fields)
    ours = {key: value for key, value in correlated.items() if key not in fields}
    if "trace_id" in fields:
        ours.pop("span_id", None)
        ours.pop("trace_flags", None)
    merged = {key: fields.get(key, ours.get(key)) for key in CORRELATION_FIELDS}
    in_order = {key: value for key, value in merged.items() if value is not None}
    return {**ours, CORRELATION_MARKER: in_order, CALLER_IDS_MARKER: callers}
