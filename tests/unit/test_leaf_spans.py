"""Where a leaf span is used, and what it hands the span processors (``otel.leaf_spans``)."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider, sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, TraceFlags, TraceState

from telemetry_infra.otel.leaf_spans import LeafSpan, LeafSpans

PARENT = SpanContext(
    0x0123456789ABCDEF0123456789ABCDEF,
    0x0123456789ABCDEF,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "value")]),
)


def leaf_spans(**provider_options: Any) -> tuple[LeafSpans, InMemorySpanExporter, TracerProvider]:
    provider = TracerProvider(**provider_options)
    exported = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    leaves = LeafSpans.of(provider.get_tracer("tests.leaf"))
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
        "links": list(span.links),
        "resource": span.resource,
        "scope": span.instrumentation_scope,
    }


def test_a_leaf_span_ends_as_the_live_span_would():
    leaves, exported, provider = leaf_spans()
    leaf = leaves.start("cache.get", {"cache.name": "c"}, PARENT)
    assert isinstance(leaf, LeafSpan) and leaf.is_recording()
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
    leaves, _exported, _provider = leaf_spans(**options)
    assert leaves.start("cache.get", {"cache.name": "c"}, PARENT) is None


def test_a_processor_acting_at_start_leaves_the_span_live():
    leaves, _exported, provider = leaf_spans()
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

    leaves, exported, _provider = leaf_spans(sampler=DropCache())
    span = leaves.start("cache.get", {}, PARENT)
    assert isinstance(span, trace.NonRecordingSpan) and not span.get_span_context().trace_flags.sampled
    span.end()
    assert exported.get_finished_spans() == ()
