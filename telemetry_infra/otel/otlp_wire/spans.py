"""Spans straight to OTLP bytes: an ExportTraceServiceRequest, without protobuf objects.

Decodes to the same message as the SDK's ``encode_spans(spans)`` (property-tested),
at a fraction of its cost: the resource and scope blocks are encoded once and
reused, attribute keys (and repeating string attributes) are cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanKind

from telemetry_infra.otel.otlp_wire.grouping import ResourceGroups, encode_request
from telemetry_infra.otel.otlp_wire.invalid_text import count_sanitized, sanitized_span, valid_items
from telemetry_infra.otel.otlp_wire.protobuf import (
    attributes_field,
    fixed64_field,
    pack_fixed32,
    pack_fixed64,
    string_field,
    varint,
    varint_field,
)

__all__ = ["SpanBatch", "encode_span", "encode_spans", "encoded_span", "with_valid_text"]

_KIND = {  # Span.kind=6, the proto enum's values
    SpanKind.INTERNAL: b"\x30\x01",
    SpanKind.SERVER: b"\x30\x02",
    SpanKind.CLIENT: b"\x30\x03",
    SpanKind.PRODUCER: b"\x30\x04",
    SpanKind.CONSUMER: b"\x30\x05",
}
# Span.flags=16 (fixed32): SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE (0x100), | IS_REMOTE (0x200) for a remote parent
_LOCAL_FLAGS = b"\x85\x01" + pack_fixed32(0x100)
_REMOTE_FLAGS = b"\x85\x01" + pack_fixed32(0x300)
# Span.Link.flags=6 (fixed32)
_LINK_LOCAL_FLAGS = b"\x35" + pack_fixed32(0x100)
_LINK_REMOTE_FLAGS = b"\x35" + pack_fixed32(0x300)
_KIND_BY_VALUE = {kind._value_: field for kind, field in _KIND.items()}  # no Python-level Enum hash
_trace_states: dict[int, tuple[Any, bytes]] = {}
_names: dict[str, bytes] = {}


def _name(name: str) -> bytes:
    """Span.name=5; cached: a service's span names repeat (routes, not paths)."""
    field = _names.get(name)
    if field is None:
        field = string_field(b"\x2a", name)
        if name.__class__ is str and len(name) <= 256:
            if len(_names) >= 4096:
                _names.clear()
            _names[name] = field
    return field


def _trace_state(trace_state: Any) -> bytes:
    """Span.trace_state=3, as the SDK writes it (``k=v,k2=v2``); cached per object, shared by a trace."""
    if not trace_state:
        return b""
    cached = _trace_states.get(id(trace_state))
    if cached is not None and cached[0] is trace_state:
        return cached[1]
    field = string_field(b"\x1a", ",".join(f"{key}={value}" for key, value in trace_state.items()))
    if len(_trace_states) >= 1024:
        _trace_states.clear()
    _trace_states[id(trace_state)] = (trace_state, field)  # holds it: its id cannot be reused meanwhile
    return field


def _event(event: Any) -> bytes:
    # Span.Event: time_unix_nano=1 (fixed64) name=2 attributes=3 dropped_attributes_count=4
    body = b"".join(
        (
            b"\x09" + pack_fixed64(event.timestamp) if event.timestamp else b"",
            string_field(b"\x12", event.name),
            attributes_field(b"\x1a", event.attributes),
            varint_field(b"\x20", event.dropped_attributes),
        )
    )
    return b"\x5a" + varint(len(body)) + body  # Span.events=11


def _link(link: Any) -> bytes:
    # Span.Link: trace_id=1 span_id=2 attributes=4 dropped_attributes_count=5 flags=6
    context = link.context
    body = b"".join(
        (
            b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
            b"\x12\x08" + context.span_id.to_bytes(8, "big"),
            attributes_field(b"\x22", link.attributes),
            varint_field(b"\x28", link.dropped_attributes),
            _LINK_REMOTE_FLAGS if context.is_remote else _LINK_LOCAL_FLAGS,
        )
    )
    return b"\x6a" + varint(len(body)) + body  # Span.links=13


_statuses: dict[tuple[Any, Any], bytes] = {}


def _status(status: Any) -> bytes:
    # Status: message=2 code=3; Span.status=15, written whenever the span has one
    if status is None:
        return b""
    key = (status.status_code._value_, status.description)  # the value: no Python-level Enum hash
    field = _statuses.get(key)
    if field is None:
        body = string_field(b"\x12", status.description) + varint_field(b"\x18", status.status_code.value)
        field = b"\x7a" + varint(len(body)) + body
        if len(_statuses) >= 1024:
            _statuses.clear()
        _statuses[key] = field
    return field


def _dropped(field_tag: bytes, bounded: Any) -> bytes:
    """A dropped_*_count field from a BoundedAttributes/BoundedList (0, and so nothing, otherwise)."""
    dropped = getattr(bounded, "dropped", 0)
    return field_tag + varint(dropped) if dropped else b""


def _has_items(bounded: Any) -> bool:
    """``bool(bounded)`` without BoundedList's Python-level ``__len__`` (most spans have no events)."""
    if bounded.__class__ is BoundedList:
        return bool(getattr(bounded, "_dq", bounded))
    return bool(bounded)


def _encode_span(span: Any) -> bytes:
    """One span as a ScopeSpans.spans field (tag 2, length, Span message).

    Reads ReadableSpan's own fields: its public properties copy the event and link
    lists under a lock, which alone would cost more than encoding a plain span.
    """
    context = span._context
    parent = span._parent
    start, end = span._start_time, span._end_time
    attributes, events, links = span._attributes, span._events, span._links
    trace_state = context.trace_state
    name = span._name
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),  # trace_id=1
        b"\x12\x08" + context.span_id.to_bytes(8, "big"),  # span_id=2
        _trace_state(trace_state) if trace_state else b"",  # trace_state=3
        b"\x22\x08" + parent.span_id.to_bytes(8, "big") if parent else b"",  # parent_span_id=4
        _name(name),  # name=5
        _KIND_BY_VALUE[span._kind._value_],  # kind=6
        b"\x39" + pack_fixed64(start) if start else b"",  # start_time_unix_nano=7
        b"\x41" + pack_fixed64(end) if end else b"",  # end_time_unix_nano=8
        attributes_field(b"\x4a", attributes),  # attributes=9
        _dropped(b"\x50", attributes),  # dropped_attributes_count=10
    ]
    if _has_items(events):
        parts.extend([_event(event) for event in events])  # events=11
    parts.append(_dropped(b"\x60", events))  # dropped_events_count=12 (also when all were dropped)
    if _has_items(links):
        parts.extend([_link(link) for link in links])  # links=13
    parts.append(_dropped(b"\x70", links))  # dropped_links_count=14
    parts.append(_status(span._status))  # status=15
    parts.append(_REMOTE_FLAGS if parent is not None and parent.is_remote else _LOCAL_FLAGS)  # flags=16
    body = b"".join(parts)
    return b"\x12" + varint(len(body)) + body


def _encode_span_public(span: ReadableSpan) -> bytes:
    """The same through ReadableSpan's public properties: for other span classes."""
    context = span.context
    parent = span.parent
    events, links = span.events, span.links
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + context.span_id.to_bytes(8, "big"),
        _trace_state(context.trace_state),
        b"\x22\x08" + parent.span_id.to_bytes(8, "big") if parent else b"",
        string_field(b"\x2a", span.name),
        _KIND[span.kind],
        fixed64_field(b"\x39", span.start_time),
        fixed64_field(b"\x41", span.end_time),
        attributes_field(b"\x4a", span.attributes),
        varint_field(b"\x50", span.dropped_attributes),
        *[_event(event) for event in events],
        varint_field(b"\x60", span.dropped_events),
        *[_link(link) for link in links],
        varint_field(b"\x70", span.dropped_links),
        _status(span.status),
        _REMOTE_FLAGS if parent is not None and parent.is_remote else _LOCAL_FLAGS,
    ]
    body = b"".join(parts)
    return b"\x12" + varint(len(body)) + body


_OWN_FIELDS: tuple[str, ...] = (
    "_context",
    "_parent",
    "_start_time",
    "_end_time",
    "_attributes",
    "_events",
    "_links",
)
_OWN_FIELDS += ("_name", "_kind", "_status", "_resource", "_instrumentation_scope")


def _reads_own_fields() -> bool:
    """Whether this SDK's ReadableSpan keeps its data where :func:`_encode_span` reads it."""
    probe = ReadableSpan("probe", attributes={"a": 1}, start_time=1, end_time=2)
    return all(hasattr(probe, name) for name in _OWN_FIELDS) and probe._attributes == probe.attributes


_READS_OWN_FIELDS = _reads_own_fields()
encode_span = _encode_span if _READS_OWN_FIELDS else _encode_span_public


def encoded_span(span: ReadableSpan) -> tuple[Any, Any, bytes]:
    """``span`` as a ScopeSpans.spans field, with the resource and scope it is grouped under.

    Text that is not valid Unicode is replaced (and counted): one bad string must not
    cost the batch.
    """
    own_fields = _READS_OWN_FIELDS and isinstance(span, ReadableSpan)
    try:
        encoded = encode_span(span) if own_fields else _encode_span_public(span)
    except UnicodeEncodeError as error:
        encoded = _encode_sanitized(span, error)
    if own_fields:
        return span._resource, span._instrumentation_scope, encoded
    return span.resource, span.instrumentation_scope, encoded


class SpanBatch:
    """Encoded spans nested by resource and scope: the spans themselves can go."""

    __slots__ = ("_groups", "count")

    def __init__(self) -> None:
        self._groups = ResourceGroups()
        self.count = 0

    def add(self, span: ReadableSpan) -> None:
        self.add_encoded(*encoded_span(span))

    def add_encoded(self, resource: Any, scope: Any, encoded: bytes) -> None:
        """A span :func:`encoded_span` encoded."""
        self._groups.add(resource, scope, encoded)
        self.count += 1

    def encode(self) -> bytes:
        """The ExportTraceServiceRequest, serialized."""
        return encode_request(self._groups)


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """An ExportTraceServiceRequest for ``spans``, serialized."""
    batch = SpanBatch()
    for span in spans:
        batch.add(span)
    return batch.encode()


def _encode_sanitized(span: ReadableSpan, error: UnicodeEncodeError) -> bytes:
    """``span`` encoded with its invalid text replaced, and counted (see :mod:`.invalid_text`)."""
    count_sanitized("span", error)
    return _encode_span_public(sanitized_span(span))


def with_valid_text(spans: Sequence[ReadableSpan]) -> tuple[list[ReadableSpan], int]:
    """``spans`` with invalid text replaced, for the SDK's encoder (see :func:`.valid_items`)."""
    return valid_items(spans, "span", _encode_span_public, sanitized_span)
