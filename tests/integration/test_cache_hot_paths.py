"""What a cache hit costs, counted rather than timed (issue 25): the Python calls a hit
answered in place makes, and that none of them enters OpenTelemetry outside a trace.

Speed itself is measured by ``benchmarks/peer_cache.py``; these tests pin the mechanism
(no per-call object, no context look-up or change, no await on a backend) so it cannot
quietly come back. Inside a sampled trace the same hits still make their spans.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from prometheus_client.parser import text_string_to_metric_families
from span_processors import WatchesStarts

import telemetry_infra as ti

VALUE = {"bbl": "1000010001", "score": 7, "open": True}
PACKAGE = str(Path(ti.__file__).parent)


def calls_made(call: Awaitable[Any]) -> tuple[Any, list[str]]:
    """Run ``call`` to completion in one step (a hit awaits nothing) and list the Python
    functions it entered, as ``module-file:function``."""
    entered: list[str] = []

    def profile(frame: Any, event: str, _arg: Any) -> None:
        if event == "call":
            entered.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")

    sys.setprofile(profile)
    try:
        call.send(None)  # type: ignore[attr-defined]
    except StopIteration as done:
        return done.value, entered[1:]  # without the coroutine's own frame
    finally:
        sys.setprofile(None)
    pytest.fail(f"the hit awaited something; it entered {entered}")


def entered_opentelemetry(entered: list[str]) -> list[str]:
    return [name for name in entered if "opentelemetry" in name]


@pytest.fixture
def namespace() -> str:
    return f"hot-{uuid.uuid4().hex[:8]}"


async def test_a_memory_hit_with_telemetry_off_is_a_lookup_and_a_decode():
    cache = ti.CacheManager(redis_url=None, telemetry=False, name="hot-memory-off")
    await cache.set("k", VALUE)
    value, entered = calls_made(cache.get("k"))
    assert value == VALUE
    assert len(entered) <= 1, entered  # the store's look-up; the decode is one call of orjson


async def test_a_memory_hit_outside_a_trace_does_not_enter_opentelemetry():
    cache = ti.CacheManager(redis_url=None, name=f"hot-memory-{uuid.uuid4().hex[:6]}")
    await cache.set("k", VALUE)
    value, entered = calls_made(cache.get("k"))
    assert value == VALUE
    assert entered_opentelemetry(entered) == []
    assert len(entered) <= 8, entered  # look-up, decode, the duration recorded


async def served_near(cache: ti.CacheManager, key: str) -> None:
    """Read ``key`` until the near tier serves it (a fill may be overtaken by our own write's
    invalidation)."""
    for _ in range(100):
        hits = cache.get_stats()["near_hits"]
        await cache.get(key)
        if cache.get_stats()["near_hits"] > hits:
            return
        await asyncio.sleep(0.005)
    pytest.fail("the near tier never served")


async def test_a_near_hit_outside_a_trace_does_not_enter_opentelemetry(redis_server, namespace):
    async with ti.CacheManager(
        redis_url=redis_server.url, namespace=namespace, name=namespace, near_cache=True
    ) as cache:
        await cache.set("k", VALUE)
        await served_near(cache, "k")
        hits = cache.get_stats()["near_hits"]
        value, entered = calls_made(cache.get("k"))
        assert value == VALUE and cache.get_stats()["near_hits"] == hits + 1
        assert entered_opentelemetry(entered) == []
        assert len(entered) <= 8, entered  # the near look-up, the decode, the duration recorded
        first, second = await cache.get("k"), await cache.get("k")
        first["score"] = 0
        assert second == VALUE  # still a fresh copy per hit


async def test_hits_in_a_sampled_trace_keep_their_spans(otlp_receiver, redis_server, namespace):
    telemetry = ti.configure(
        service_name="hot-paths-test", otlp_endpoint=otlp_receiver.grpc_endpoint, setup_logs=False
    )
    near = ti.CacheManager(redis_url=redis_server.url, namespace=namespace, name=namespace, near_cache=True)
    memory = ti.CacheManager(redis_url=None, name=f"{namespace}-memory")
    async with near, memory:
        await near.set("k", VALUE)
        await memory.set("k", VALUE)
        await served_near(near, "k")
        with trace.get_tracer("tests.hot").start_as_current_span("request") as parent:
            assert await near.get("k") == VALUE
            assert await memory.get("k") == VALUE
        telemetry.force_flush()
        spans = otlp_receiver.wait_for_spans(
            lambda s: (
                s.name == "cache.get"
                and s.parent_span_id == format(parent.get_span_context().span_id, "016x")
            ),
            count=2,
        )
    by_tier = {s.attributes["cache.tier"]: s for s in spans}
    near_span, memory_span = by_tier["near"], by_tier["memory"]
    for span in (near_span, memory_span):
        assert span.kind.endswith("INTERNAL")
        assert span.attributes["cache.hit"] is True and span.attributes["cache.key"] == "k"
    assert near_span.attributes["cache.name"] == namespace
    assert near_span.attributes["cache.backend"] == "redis"
    assert near_span.attributes["server.port"] == redis_server.port
    assert memory_span.attributes["cache.backend"] == "memory"
    assert memory_span.attributes["cache.item_size"] > 0
    samples = {
        (sample.labels.get("cache_name"), sample.labels.get("cache_tier", "")): sample.value
        for family in text_string_to_metric_families(telemetry.prometheus_text())
        for sample in family.samples
        if sample.name == "cache_operation_duration_seconds_count"
        and sample.labels["cache_operation"] == "get"
    }
    assert samples[namespace, "near"] == near.get_stats()["near_hits"]
    assert samples[f"{namespace}-memory", ""] == 1.0


@pytest.mark.parametrize("export", ["no endpoint", "fast export", "sdk export"])
async def test_a_sampled_operation_with_nothing_under_it_makes_no_live_sdk_span(export, otlp_receiver):
    """Its span is a leaf span (see test_cache_light_spans: the same span on the wire), with
    or without an endpoint, on either export path."""
    options: dict[str, Any] = {}
    if export != "no endpoint":
        options = {"otlp_endpoint": otlp_receiver.grpc_endpoint, "fast_export": export == "fast export"}
    telemetry = ti.configure(
        service_name="hot-paths-test", instrument_redis=False, setup_logs=False, **options
    )
    cache = ti.CacheManager(redis_url=None, name=f"hot-leaf-{uuid.uuid4().hex[:6]}")
    await cache.set("k", VALUE)
    sdk_start = "opentelemetry/sdk/trace/__init__.py:start_span"

    def started_live(call: Awaitable[Any]) -> bool:
        with trace.get_tracer("tests.hot").start_as_current_span("request"):
            _value, entered = calls_made(call)
        return any(name.endswith(sdk_start) for name in entered)

    assert not started_live(cache.set("k", VALUE)) and not started_live(cache.get("k"))
    telemetry.tracer_provider.add_span_processor(WatchesStarts())
    assert started_live(cache.set("k", VALUE)) and started_live(cache.get("k"))


async def test_a_cache_span_with_redis_command_spans_under_it_is_light(
    otlp_receiver, redis_server, namespace
):
    """With Redis command spans on, the cache span is light too: only the command span is a
    live SDK span, and it nests under the cache span (see test_cache_light_spans)."""
    ti.configure(
        service_name="hot-paths-test",
        instrument_redis=True,
        setup_logs=False,
        otlp_endpoint=otlp_receiver.grpc_endpoint,
    )
    cache = ti.CacheManager(redis_url=redis_server.url, namespace=namespace, name=namespace)
    await cache.set("k", VALUE)
    sdk_start = "opentelemetry/sdk/trace/__init__.py:start_span"
    entered: list[str] = []

    def profile(frame: Any, event: str, _arg: Any) -> None:
        if event == "call":
            entered.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")

    with trace.get_tracer("tests.hot").start_as_current_span("request"):
        sys.setprofile(profile)
        try:
            assert await cache.get("k") == VALUE
        finally:
            sys.setprofile(None)
    await cache.close()
    assert sum(name.endswith(sdk_start) for name in entered) == 1  # the GET's own span
    (cache_span,) = otlp_receiver.wait_for_spans(
        lambda s: s.name == "cache.get" and s.attributes.get("cache.name") == namespace
    )
    under = otlp_receiver.wait_for_spans(lambda s: s.parent_span_id == cache_span.span_id)
    assert [span.name for span in under] == ["GET"]
