"""Cache spans are recorded as light spans, without the SDK's live span (issue 25): the same
span must reach the processors and the wire as a live one, field by field, with the Redis
command spans (when on) nested under it as under a live one."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from span_processors import WatchesStarts

import telemetry_infra as ti
from telemetry_infra.cache.errors import CacheSerializationError
from telemetry_infra.testing import free_port

tracer = trace.get_tracer("tests.leaf")


@pytest.fixture(
    params=[(False, False), (True, False), (True, True)],
    ids=["sdk-encoders", "fast-export", "fast-export-redis-command-spans"],
)
def telemetry(otlp_receiver, request):
    fast_export, instrument_redis = request.param
    return ti.configure(
        service_name="leaf-spans-test",
        otlp_endpoint=otlp_receiver.grpc_endpoint,
        instrument_redis=instrument_redis,
        setup_logs=False,
        fast_export=fast_export,
    )


async def workload(redis_url: str, dead_url: str, run: str) -> tuple[trace.Span, list[str]]:
    """Every operation, a miss, a value that cannot be encoded, and an outage served from
    memory, inside one request span; returns it and the operations in order."""
    namespace = f"leaf-{uuid.uuid4().hex[:8]}"
    cache = ti.CacheManager(redis_url=redis_url, namespace=namespace, name="leaf")
    dead = ti.CacheManager(redis_url=dead_url, name="leaf-dead", socket_connect_timeout=0.2)
    memory = ti.CacheManager(redis_url=None, name="leaf-memory")
    async with cache, memory:
        await memory.set("m", {"v": 1})
        with tracer.start_as_current_span(f"request-{run}") as request:
            await cache.set("k", {"v": 1}, ttl=60)
            await cache.get("k")
            await cache.get("absent")
            await cache.exists("k")
            await cache.mset({"a": 1, "b": 2})
            await cache.mget(["a", "b", "c"])
            await cache.delete("a")
            await cache.clear("b*")
            with pytest.raises(CacheSerializationError):
                await cache.set("bad", {1, 2})
            await memory.get("m")
            await dead.get("k")  # Redis unreachable: an outage, memory serves
            await dead.set("k", 1)
        await dead.close()
    return request, [
        "set", "get", "get", "exists", "mset", "mget", "delete", "clear", "set", "get", "get", "set",
    ]  # fmt: skip


def cache_spans(spans: list[ReadableSpan], request: trace.Span) -> list[ReadableSpan]:
    request_id = request.get_span_context().span_id
    found = [span for span in spans if span.parent is not None and span.parent.span_id == request_id]
    return sorted(found, key=lambda span: span.start_time or 0)


def comparable(span: ReadableSpan, request: trace.Span) -> dict[str, Any]:
    """Everything a processor or exporter reads, less what differs between two runs (ids, times)."""
    parent = request.get_span_context()
    assert span.context is not None and span.parent is not None
    assert span.context.trace_id == parent.trace_id and span.parent == parent
    assert span.start_time is not None and span.end_time is not None
    assert span.start_time <= span.end_time
    return {
        "name": span.name,
        "kind": span.kind,
        "flags": span.context.trace_flags,
        "trace_state": span.context.trace_state,
        "remote": span.context.is_remote,
        "attributes": dict(span.attributes or {}),
        "dropped": (span.dropped_attributes, span.dropped_events, span.dropped_links),
        "status": (span.status.status_code, span.status.description),
        "events": [
            (event.name, {k: v for k, v in (event.attributes or {}).items() if k != "exception.stacktrace"})
            for event in span.events
        ],
        "stacktraces": ["exception.stacktrace" in (event.attributes or {}) for event in span.events],
        "links": list(span.links),
        "resource": span.resource.attributes,
        "scope": span.instrumentation_scope,
    }


def commands_under(cache: list[ReadableSpan], finished: list[ReadableSpan]) -> list[list[tuple[Any, ...]]]:
    """For each cache span, the spans under it: name, kind and attributes."""
    under = []
    for span in cache:
        assert span.context is not None
        children = [s for s in finished if s.parent is not None and s.parent.span_id == span.context.span_id]
        for child in children:
            assert child.context is not None and child.context.trace_id == span.context.trace_id
        under.append(sorted((c.name, c.kind.name, sorted((c.attributes or {}).items())) for c in children))
    return under


def wire_fields(span: Any) -> tuple[Any, ...]:
    """A received span's fields, less ids, times and stack traces."""
    events = [
        (name, sorted((k, v) for k, v in attributes.items() if k != "exception.stacktrace"))
        for name, attributes in span.events
    ]
    attributes, resource = sorted(span.attributes.items()), sorted(span.resource.items())
    return (
        span.name,
        span.kind,
        attributes,
        span.status_code,
        span.status_message,
        span.scope,
        resource,
        events,
    )


async def test_light_spans_equal_live_spans_field_by_field(telemetry, otlp_receiver, redis_server):
    exported = InMemorySpanExporter()
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exported))  # silent until on_end
    dead_url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    leaf_request, operations = await workload(redis_server.url, dead_url, "leaf")
    light_finished = list(exported.get_finished_spans())
    light_spans = cache_spans(light_finished, leaf_request)

    watcher = WatchesStarts()
    telemetry.tracer_provider.add_span_processor(watcher)  # now every cache span is live
    exported.clear()
    live_request, _ = await workload(redis_server.url, dead_url, "live")
    live_finished = list(exported.get_finished_spans())
    live_spans = cache_spans(live_finished, live_request)

    assert [span.name for span in light_spans] == [f"cache.{op}" for op in operations]
    assert watcher.started.count("cache.get") == operations.count("get")  # the second run was live
    for leaf, live in zip(light_spans, live_spans, strict=True):
        assert comparable(leaf, leaf_request) == comparable(live, live_request)
    # what nests under each cache span (Redis command spans, when on): the same in both runs
    under = commands_under(light_spans, light_finished)
    assert under == commands_under(live_spans, live_finished)
    assert any(under) is telemetry.settings.instrument_redis  # command spans nested, when on
    failed = light_spans[8]
    assert failed.status.status_code.name == "ERROR" and failed.events[0].name == "exception"
    outage_events = {event.name for span in light_spans[10:] for event in span.events}
    assert outage_events >= {"exception", "cache.fallback.opened"}

    telemetry.force_flush()
    on_the_wire = {}
    for run, request in (("leaf", leaf_request), ("live", live_request)):
        parent_id = format(request.get_span_context().span_id, "016x")
        received = otlp_receiver.wait_for_spans(
            lambda s, p=parent_id: s.parent_span_id == p, count=len(operations)
        )
        on_the_wire[run] = sorted(wire_fields(span) for span in received)
    assert on_the_wire["leaf"] == on_the_wire["live"]


async def test_a_log_record_made_during_an_operation_carries_the_leaf_span_ids(telemetry):
    """The leaf span is the current span while its operation runs: log records made then
    carry its ids (what the correlation filter reads), as they did the live span's."""
    ended: list[trace.SpanContext] = []
    current_at_log: list[trace.SpanContext] = []

    class Spy(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            if span.name == "cache.get" and span.context is not None:
                ended.append(span.context)

    class CurrentSpan(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "serving from memory" in record.getMessage():
                current_at_log.append(trace.get_current_span().get_span_context())

    telemetry.tracer_provider.add_span_processor(Spy())
    handler = CurrentSpan()
    logging.getLogger("telemetry_infra.cache").addHandler(handler)
    try:
        dead = ti.CacheManager(
            redis_url=f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2, failure_threshold=1
        )
        with tracer.start_as_current_span("request"):
            await dead.get("k")  # logs that memory serves now
        await dead.close()
    finally:
        logging.getLogger("telemetry_infra.cache").removeHandler(handler)
    assert len(ended) == 1 and current_at_log == ended
