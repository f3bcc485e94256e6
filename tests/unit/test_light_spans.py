"""Where a leaf span is used, and what it hands the span processors (``otel.light_spans``)."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider, sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, TraceFlags, TraceState

from telemetry_infra.otel.light_spans import LightSpan, LightSpans

PARENT = SpanContext(
    0x0123456789ABCDEF0123456789ABCDEF,
    0x0123456789ABCDEF,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "value")]),
)


def light_spans(**provider_options: Any) -> tuple[LightSpans, InMemorySpanExporter, TracerProvider]:
    provider = TracerProvider(**provider_options)
    exported = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    leaves = LightSpans.of(provider.get_tracer("tests.leaf"))
    assert leaves is not None
    return leaves, exported, provider


def use(span: trace.Span) -> None:
    """What the cache does to its span, and what others may do to the current span."""
    span.add_event("cache.fallback.opened", {"cache.name": "c"})
    span.record_exception(ValueError("boom"))
    span.set_status(trace.Status(trace.StatusCode.ERROR, "boom"))
    span.set_status(trace.StatusCode.UNSET)  # ignored
    span.set_attribute("odd", object())  # made valid as the SDK makes it (with its warning)
    span.set_attributes({"cache.hit": False})


def fields(span: ReadableSpan) -> dict[str, Any]:
    assert span.start_time <= span.end_time
    return {
        "name": span.name,
        "kind": span.kind,
        "parent": span.parent,
        "trace": (span.context.trace_id, span.context.trace_flags, span.context.trace_state),
        "attributes": dict(span.attributes),
        "dropped": (span.dropped_attributes, span.dropped_events, span.dropped_links),
        "events": [
            (event.name, {k: v for k, v in event.attributes.items() if k != "exception.stacktrace"})
            for event in span.events
        ],
        "status": (span.status.status_code, span.status.description),
        "links": [(link.context, dict(link.attributes or {})) for link in span.links],
        "resource": span.resource,
        "scope": span.instrumentation_scope,
    }


def test_a_leaf_span_ends_as_the_live_span_would():
    leaves, exported, provider = light_spans()
    leaf = leaves.start("cache.get", {"cache.name": "c"}, PARENT)
    assert isinstance(leaf, LightSpan) and leaf.is_recording()
    use(leaf)
    leaf.end()
    assert not leaf.is_recording()
    live = provider.get_tracer("tests.leaf").start_span(
        "cache.get", trace.set_span_in_context(trace.NonRecordingSpan(PARENT)), attributes={"cache.name": "c"}
    )
    use(live)
    live.end()
    leaf_done, live_done = exported.get_finished_spans()
    assert fields(leaf_done) == fields(live_done)
    assert leaf_done.context.span_id != live_done.context.span_id


@pytest.mark.parametrize(
    "options",
    [
        {"span_limits": SpanLimits(max_span_attribute_length=8)},  # a live span would cut values
        {"span_limits": SpanLimits(max_span_attributes=4)},
    ],
)
def test_limits_that_would_cut_leave_the_span_live(options):
    leaves, _exported, _provider = light_spans(**options)
    assert leaves.start("cache.get", {"cache.name": "c"}, PARENT) is None


def test_a_processor_acting_at_start_leaves_the_span_live():
    leaves, _exported, provider = light_spans()
    assert leaves.start("cache.get", {}, PARENT) is not None

    class AtStart(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            return None

    provider.add_span_processor(AtStart())
    assert leaves.start("cache.get", {}, PARENT) is None


def test_the_sampler_decides():
    class DropCache(sampling.Sampler):
        def should_sample(self, parent_context, trace_id, name, *args: Any, **kwargs: Any):
            decision = (
                sampling.Decision.DROP if name.startswith("cache.") else sampling.Decision.RECORD_AND_SAMPLE
            )
            return sampling.SamplingResult(decision)

        def get_description(self) -> str:
            return "DropCache"

    leaves, exported, _provider = light_spans(sampler=DropCache())
    span = leaves.start("cache.get", {}, PARENT)
    assert isinstance(span, trace.NonRecordingSpan) and not span.get_span_context().trace_flags.sampled
    span.end()
    assert exported.get_finished_spans() == ()


def server_use(span: trace.Span) -> None:
    use(span)
    span.add_link(PARENT, {"link.reason": "batch"})
    span.add_link(trace.INVALID_SPAN_CONTEXT)  # ignored, as by the SDK
    span.update_name("GET /items/{id}")


@pytest.mark.parametrize("parent", [None, PARENT], ids=["new trace", "remote parent"])
def test_a_server_span_ends_as_the_live_one_would(parent):
    leaves, exported, provider = light_spans()
    context = None if parent is None else trace.set_span_in_context(trace.NonRecordingSpan(parent))
    attributes = {"http.request.method": "GET", "url.path": "/items/7"}
    light = leaves.start_in("GET", trace.SpanKind.SERVER, dict(attributes), context)
    assert isinstance(light, LightSpan)
    server_use(light)
    light.end()
    live = provider.get_tracer("tests.leaf").start_span(
        "GET", context, kind=trace.SpanKind.SERVER, attributes=attributes
    )
    server_use(live)
    live.end()
    light_done, live_done = (fields(span) for span in exported.get_finished_spans())
    if parent is None:  # each a trace of its own: the same flags and state, another id
        assert light_done["trace"][0] != live_done["trace"][0]
        light_done["trace"], live_done["trace"] = light_done["trace"][1:], live_done["trace"][1:]
        assert light_done["trace"][0] == TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)
    assert light_done == live_done
    assert light_done["kind"] is trace.SpanKind.SERVER and len(light_done["links"]) == 1


@pytest.mark.parametrize(
    ("sampler", "recording", "sampled"),
    [
        (sampling.ALWAYS_OFF, False, False),
        (sampling.TraceIdRatioBased(0.0), False, False),
        (sampling.ParentBased(sampling.ALWAYS_ON), True, True),
    ],
)
def test_the_sampler_decides_a_new_trace(sampler, recording, sampled):
    leaves, exported, _provider = light_spans(sampler=sampler)
    span = leaves.start_in("GET", trace.SpanKind.SERVER, {}, None)
    assert span is not None and span.is_recording() is recording
    assert span.get_span_context().trace_flags.sampled is sampled
    span.end()
    assert len(exported.get_finished_spans()) == int(sampled)


def test_a_record_only_decision_records_and_is_not_sampled():
    class RecordOnly(sampling.Sampler):
        def should_sample(self, *args: Any, **kwargs: Any) -> sampling.SamplingResult:
            return sampling.SamplingResult(sampling.Decision.RECORD_ONLY, {"sampler.said": "record"})

        def get_description(self) -> str:
            return "RecordOnly"

    leaves, _exported, provider = light_spans(sampler=RecordOnly())
    seen: list[ReadableSpan] = []

    class Keeps(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            seen.append(span)

    provider.add_span_processor(Keeps())
    span = leaves.start_in("GET", trace.SpanKind.SERVER, {"http.request.method": "GET"}, None)
    assert isinstance(span, LightSpan) and not span.get_span_context().trace_flags.sampled
    span.end()
    # the sampler's attributes, as the SDK's span takes them
    assert [dict(s.attributes or {}) for s in seen] == [{"sampler.said": "record"}]


def test_past_the_attribute_limit_the_oldest_go_as_from_the_sdks_span():
    leaves, exported, provider = light_spans(span_limits=SpanLimits(max_span_attributes=64))
    many = {f"app.attribute.{n}": n for n in range(70)}
    light = leaves.start_in("GET", trace.SpanKind.SERVER, {"http.request.method": "GET"}, None)
    live = provider.get_tracer("tests.leaf").start_span(
        "GET", kind=trace.SpanKind.SERVER, attributes={"http.request.method": "GET"}
    )
    assert isinstance(light, LightSpan)
    for span in (light, live):
        span.set_attributes(dict(list(many.items())[:40]))
        for key, value in list(many.items())[40:]:
            span.set_attribute(key, value)
        span.end()
    light_done, live_done = (fields(span) for span in exported.get_finished_spans())
    assert light_done["dropped"] == live_done["dropped"] == (7, 0, 0)
    assert light_done["attributes"] == live_done["attributes"] and len(light_done["attributes"]) == 64
