"""Our OTLP encoders against the SDK's: for arbitrary spans and log records, the same message.

Each case encodes with ours and with opentelemetry-exporter-otlp-proto-common's
``encode_spans``/``encode_logs``, decodes our bytes with opentelemetry-proto and
compares canonical serializations (exact, NaN included; a wrong field number or
wire type would survive as an unknown field and differ).
"""

from __future__ import annotations

import logging

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs as sdk_encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from telemetry_infra.otel.otlp_wire.logs import encode_log_record, encode_logs
from telemetry_infra.otel.otlp_wire.protobuf import varint
from telemetry_infra.otel.otlp_wire.spans import encode_spans

# The SDK's encoder logs an exception for each attribute it leaves out; so do we, once.
logging.getLogger("opentelemetry.exporter.otlp.proto.common").setLevel(logging.CRITICAL)
logging.getLogger("telemetry_infra.otel.otlp_wire").setLevel(logging.CRITICAL)
logging.getLogger("opentelemetry.attributes").setLevel(logging.CRITICAL)  # the BoundedAttributes we build

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)  # protobuf refuses lone surrogates
keys = st.one_of(st.sampled_from(["http.route", "cache.key", "k", ""]), text)
primitives = st.one_of(
    text,
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-(2**70), max_value=2**70),  # beyond int64: left out by both encoders
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=8),
)
any_values = st.recursive(
    st.one_of(st.none(), primitives),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.tuples(children, children),
        st.dictionaries(keys, children, max_size=3),
    ),
    max_leaves=8,
)
attribute_maps = st.dictionaries(keys, any_values, max_size=5)


@st.composite
def attributes(draw: st.DrawFn) -> object:
    """A plain dict, or the SDK's BoundedAttributes (perhaps with some dropped)."""
    values = draw(attribute_maps)
    if draw(st.booleans()):
        return values
    maxlen = draw(st.integers(min_value=0, max_value=6))
    return BoundedAttributes(maxlen, values, immutable=False, extended_attributes=True)


trace_ids = st.integers(min_value=1, max_value=2**128 - 1)
span_ids = st.integers(min_value=1, max_value=2**64 - 1)
times = st.one_of(st.none(), st.integers(min_value=0, max_value=2**64 - 1))
trace_states = st.lists(
    st.tuples(
        st.from_regex(r"[a-z][a-z0-9_]{0,4}", fullmatch=True), st.from_regex(r"[a-z0-9]{1,4}", fullmatch=True)
    ),
    max_size=3,
    unique_by=lambda pair: pair[0],
).map(TraceState)


@st.composite
def span_contexts(draw: st.DrawFn) -> SpanContext:
    return SpanContext(
        draw(trace_ids),
        draw(span_ids),
        is_remote=draw(st.booleans()),
        trace_flags=TraceFlags(draw(st.sampled_from([0, 1]))),
        trace_state=draw(trace_states),
    )


# A few resources and scopes, built anew per use: equal objects that are not the same
# object must share one block, as they do in the SDK's dictionaries.
resource_specs = st.sampled_from(
    [
        ({"service.name": "a"}, None),
        ({"service.name": "a"}, None),
        ({"service.name": "b"}, "https://s/1"),
        ({}, ""),
    ]
)
scope_specs = st.sampled_from(
    [
        None,
        ("app", None, None, None),
        ("app", "1.0", "https://s/2", {"lib": "x", "n": 3}),
        ("app", "1.0", "https://s/2", {"lib": "y"}),  # equal but for attributes: another scope
        ("cache", "", "", None),
    ]
)


def _resource(spec: tuple) -> Resource:
    attributes_, schema_url = spec
    return Resource(attributes_, schema_url)


def _scope(spec: tuple | None) -> InstrumentationScope | None:
    return None if spec is None else InstrumentationScope(*spec)


def maybe_bounded(draw: st.DrawFn, items: list) -> object:
    """``items`` as a list, or in the SDK's BoundedList (perhaps with some dropped)."""
    if draw(st.booleans()):
        return items
    bounded = BoundedList(draw(st.integers(min_value=0, max_value=3)))
    bounded.extend(items)
    return bounded


@st.composite
def events(draw: st.DrawFn) -> object:
    items = draw(
        st.lists(
            st.builds(
                Event,
                name=text,
                attributes=st.one_of(st.none(), attribute_maps),
                timestamp=st.integers(min_value=0, max_value=2**64 - 1),
            ),
            max_size=3,
        )
    )
    return maybe_bounded(draw, items)


@st.composite
def links(draw: st.DrawFn) -> object:
    items = draw(
        st.lists(
            st.builds(Link, context=span_contexts(), attributes=st.one_of(st.none(), attribute_maps)),
            max_size=2,
        )
    )
    return maybe_bounded(draw, items)


@st.composite
def statuses(draw: st.DrawFn) -> Status:
    code = draw(st.sampled_from(list(StatusCode)))
    description = draw(st.one_of(st.none(), text)) if code is StatusCode.ERROR else None
    return Status(code, description)


@st.composite
def spans(draw: st.DrawFn) -> ReadableSpan:
    return ReadableSpan(
        name=draw(text),
        context=draw(span_contexts()),
        parent=draw(st.one_of(st.none(), span_contexts())),
        resource=_resource(draw(resource_specs)),
        attributes=draw(st.one_of(st.none(), attributes())),
        events=draw(events()),
        links=draw(links()),
        kind=draw(st.sampled_from(list(SpanKind))),
        status=draw(statuses()),
        start_time=draw(times),
        end_time=draw(times),
        instrumentation_scope=_scope(draw(scope_specs)),
    )


def _same_trace_request(ours: bytes, expected: ExportTraceServiceRequest) -> None:
    decoded = ExportTraceServiceRequest.FromString(ours)
    assert decoded.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)


class PublicOnly:
    """A span that is not a ReadableSpan: ours reads it through the public properties only."""

    def __init__(self, span: ReadableSpan) -> None:
        self._span = span

    def __getattr__(self, name: str) -> object:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._span, name)


@PROPERTY
@given(st.lists(spans(), min_size=1, max_size=6))
def test_spans_decode_to_the_sdk_encoders_message(batch: list[ReadableSpan]) -> None:
    expected = sdk_encode_spans(batch)
    _same_trace_request(encode_spans(batch), expected)
    _same_trace_request(encode_spans([PublicOnly(span) for span in batch]), expected)  # other span classes


@st.composite
def log_records(draw: st.DrawFn) -> ReadableLogRecord:
    traced = draw(st.booleans())
    severity = draw(st.one_of(st.none(), st.sampled_from(list(SeverityNumber))))
    record = LogRecord(
        timestamp=draw(times),
        observed_timestamp=draw(st.integers(min_value=1, max_value=2**64 - 1)),
        trace_id=draw(trace_ids) if traced else 0,
        span_id=draw(span_ids) if traced else 0,
        trace_flags=TraceFlags(draw(st.sampled_from([0, 1]))) if traced else None,
        severity_text=draw(st.one_of(st.none(), text)),
        severity_number=severity,
        body=draw(any_values.filter(lambda v: not isinstance(v, int) or -(2**63) <= v < 2**63)),
        attributes=draw(st.one_of(st.none(), attributes())),
        event_name=draw(st.one_of(st.none(), text)),
    )
    return ReadableLogRecord(record, _resource(draw(resource_specs)), _scope(draw(scope_specs)))


def _encodable_body(record: ReadableLogRecord) -> bool:
    try:
        sdk_encode_logs([record])
    except Exception:  # a body the SDK cannot encode at all: covered below
        return False
    return True


@PROPERTY
@given(st.lists(log_records(), min_size=1, max_size=6))
def test_log_records_decode_to_the_sdk_encoders_message(batch: list[ReadableLogRecord]) -> None:
    batch = [record for record in batch if _encodable_body(record)]
    decoded = ExportLogsServiceRequest.FromString(encode_logs(batch))
    expected = sdk_encode_logs(batch)
    assert decoded.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)


def test_a_body_the_sdk_cannot_encode_fails_ours_too() -> None:
    """A whole-batch failure is reported by the exporter, not hidden by a wrong encoding."""
    record = ReadableLogRecord(LogRecord(body=2**64), Resource({}))
    for encode in (encode_logs, lambda batch: sdk_encode_logs(batch).SerializeToString()):
        try:
            encode([record])
        except (ValueError, TypeError):
            continue
        raise AssertionError(f"{encode} encoded an int_value beyond int64")


def test_the_handlers_plain_values_encode_like_an_sdk_record() -> None:
    """The OTLP log handler encodes plain values, without an SDK record: the same LogRecord message."""
    resource = Resource({"service.name": "svc"})
    scope = InstrumentationScope("app.api")
    sdk_record = LogRecord(
        timestamp=1_700_000_000_123_456_789,
        observed_timestamp=1_700_000_000_223_456_789,
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        trace_flags=TraceFlags(1),
        severity_text="WARN",
        severity_number=SeverityNumber.WARN,
        body="cache miss for user 42",
        attributes={"code.line.number": 42, "request_id": "r-1", "duration": 0.5, "tags": ("a", "b")},
    )
    ours = encode_log_record(
        1_700_000_000_123_456_789,
        1_700_000_000_223_456_789,
        13,
        "WARN",
        "cache miss for user 42",
        {"code.line.number": 42, "request_id": "r-1", "duration": 0.5, "tags": ("a", "b")},
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        1,
    )
    expected = sdk_encode_logs([ReadableLogRecord(sdk_record, resource, scope)])
    # the record field of a one-record request is the request's last bytes
    assert expected.SerializeToString().endswith(ours)


def test_varints_match_protobufs() -> None:
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope as PB2Scope

    for number in (0, 1, 127, 128, 300, 16_383, 16_384, 2**32, 2**63, 2**64 - 1):
        # uint32 dropped_attributes_count=4: tag 0x20 and the varint
        if number < 2**32:
            assert PB2Scope(dropped_attributes_count=number).SerializeToString() == (
                b"\x20" + varint(number) if number else b""
            )
        assert int.from_bytes(bytes(b & 0x7F for b in varint(number))[::-1], "big") >= 0
        decoded = sum((b & 0x7F) << (7 * i) for i, b in enumerate(varint(number)))
        assert decoded == number
