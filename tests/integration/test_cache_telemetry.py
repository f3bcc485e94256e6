"""Cache spans and metrics, checked on the wire (OTLP) and in the Prometheus exposition."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid

import design_contracts
import pytest
from opentelemetry import trace
from prometheus_client.parser import text_string_to_metric_families

import telemetry_infra as ti
from telemetry_infra.otel.setup import SECONDS_BUCKETS

tracer = trace.get_tracer("tests.cache")
SCOPE = {"otel_scope_name", "otel_scope_version", "otel_scope_schema_url"}


@pytest.fixture
def telemetry(otlp_receiver):
    return ti.configure(
        service_name="cache-telemetry-test",
        otlp_endpoint=otlp_receiver.grpc_endpoint,
        instrument_redis=True,
        setup_logs=False,
    )


def prometheus_samples(telemetry, name: str, cache_name: str) -> dict[tuple, float]:
    """``{sorted labels without cache_name: value}`` of one sample name for one cache."""
    found = {}
    for family in text_string_to_metric_families(telemetry.prometheus_text()):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("cache_name") == cache_name:
                labels = tuple(
                    sorted((k, v) for k, v in sample.labels.items() if k != "cache_name" and k not in SCOPE)
                )
                found[labels] = sample.value
    return found


def otlp_sums(points, name: str, cache_name: str) -> dict[tuple, float]:
    """Latest value per attribute set of one metric for one cache, as exported over OTLP."""
    latest = {}
    for point in points:
        if point.name == name and point.attributes.get("cache.name") == cache_name:
            labels = tuple(sorted((k, v) for k, v in point.attributes.items() if k != "cache.name"))
            latest[labels] = point.value
    return latest


async def scripted_workload(redis: ti.testing.RedisServer, name: str) -> ti.CacheManager:
    """3 hits, 2 misses, 1 set, 1 failing operation, 1 fallback, inside a trace."""
    namespace = f"tel-{uuid.uuid4().hex[:8]}"
    async with ti.CacheManager(redis_url=redis.url, namespace=namespace, telemetry=False) as seeder:
        await seeder.mset({"h1": 1, "h2": 2, "h3": 3})
    cache = ti.CacheManager(redis_url=redis.url, namespace=namespace, name=name, failure_threshold=1)
    await cache.initialize()
    with tracer.start_as_current_span("workload"):
        for key in ("h1", "h2", "h3", "m1", "m2"):
            await cache.get(key)
        await cache.set("s1", {"v": 1}, ttl=60)
        with pytest.raises(ti.CacheSerializationError):
            await cache.set("bad", object())
        redis.kill()
        await cache.set("fallback", "to memory")
    return cache


async def test_scripted_workload_counts_exactly_on_both_paths(telemetry, otlp_receiver, redis_restartable):
    name = f"wl-{uuid.uuid4().hex[:6]}"
    cache = await scripted_workload(redis_restartable, name)
    expected_errors = {
        (("error_type", "CacheSerializationError"),): 1.0,
        (("error_type", "ConnectionError"),): 1.0,
    }
    assert prometheus_samples(telemetry, "cache_hits_total", name) == {(): 3.0}
    assert prometheus_samples(telemetry, "cache_misses_total", name) == {(): 2.0}
    assert prometheus_samples(telemetry, "cache_errors_total", name) == expected_errors
    assert prometheus_samples(telemetry, "cache_fallback_active", name) == {(): 1.0}
    counts = prometheus_samples(telemetry, "cache_operation_duration_seconds_count", name)
    assert counts == {
        (("cache_backend", "redis"), ("cache_operation", "get")): 5.0,
        (("cache_backend", "redis"), ("cache_operation", "set")): 2.0,
        (("cache_backend", "memory"), ("cache_operation", "set")): 1.0,
    }

    telemetry.force_flush()
    points = otlp_receiver.wait_for_metric_points(lambda p: p.attributes.get("cache.name") == name, count=6)
    assert otlp_sums(points, "cache.hits", name) == {(): 3}
    assert otlp_sums(points, "cache.misses", name) == {(): 2}
    assert otlp_sums(points, "cache.errors", name) == {
        (("error.type", "CacheSerializationError"),): 1,
        (("error.type", "ConnectionError"),): 1,
    }
    assert otlp_sums(points, "cache.fallback.active", name) == {(): 1}
    histograms = [
        p for p in points if p.name == "cache.operation.duration" and p.attributes["cache.name"] == name
    ]
    assert {p.unit for p in histograms} == {"s"}
    assert all(tuple(p.explicit_bounds) == SECONDS_BUCKETS for p in histograms)
    assert sum(p.count for p in histograms) == 8
    assert all(p.sum < 1.0 for p in histograms)  # seconds, not milliseconds
    await cache.close()


async def test_spans_names_attributes_parents_and_redis_children(telemetry, otlp_receiver, redis_restartable):
    name = f"sp-{uuid.uuid4().hex[:6]}"
    cache = await scripted_workload(redis_restartable, name)
    telemetry.force_flush()
    workload = otlp_receiver.wait_for_spans(lambda s: s.name == "workload")[0]
    spans = otlp_receiver.wait_for_spans(
        lambda s: s.name.startswith("cache.") and s.attributes.get("cache.name") == name, count=8
    )
    assert [s.name for s in spans].count("cache.get") == 5
    assert all(s.kind == "INTERNAL" and s.parent_span_id == workload.span_id for s in spans)
    gets = {s.attributes["cache.key"]: s for s in spans if s.name == "cache.get"}
    assert [gets[k].attributes["cache.hit"] for k in ("h1", "h2", "h3", "m1", "m2")] == [True] * 3 + [
        False
    ] * 2
    assert gets["h1"].attributes["cache.item_size"] > 0
    assert {s.attributes["cache.backend"] for s in gets.values()} == {"redis"}

    sets = {s.attributes["cache.key"]: s for s in spans if s.name == "cache.set"}
    assert sets["s1"].attributes["cache.ttl"] == 60 and sets["s1"].status_code == "UNSET"
    failed = sets["bad"]
    assert failed.status_code == "ERROR"
    assert failed.attributes["error.type"] == "CacheSerializationError"
    assert "exception" in [event for event, _ in failed.events]
    fallback = sets["fallback"]
    assert fallback.attributes["cache.backend"] == "memory"
    assert {"exception", "cache.fallback.opened"} <= {event for event, _ in fallback.events}

    redis_gets = otlp_receiver.wait_for_spans(
        lambda s: s.name == "GET" and s.trace_id == workload.trace_id, count=5
    )
    get_span_ids = {s.span_id for s in gets.values()}
    assert {s.parent_span_id for s in redis_gets} <= get_span_ids
    await cache.close()


async def test_no_span_outside_a_trace_but_metrics_still_count(telemetry, otlp_receiver):
    name = f"nt-{uuid.uuid4().hex[:6]}"
    async with ti.CacheManager(name=name) as cache:
        await cache.set("k", 1)
        await cache.get("k")
    telemetry.force_flush()
    assert [s for s in otlp_receiver.spans() if s.attributes.get("cache.name") == name] == []
    assert prometheus_samples(telemetry, "cache_hits_total", name) == {(): 1.0}


async def test_keys_are_truncated_or_hashed_on_spans(telemetry, otlp_receiver):
    long_key = "user:" + "x" * 500
    async with (
        ti.CacheManager(name="plain-keys") as plain,
        ti.CacheManager(name="hashed-keys", hash_keys_in_spans=True) as hashed,
    ):
        with tracer.start_as_current_span("keys"):
            await plain.get(long_key)
            await hashed.get("alice@example.com")
    telemetry.force_flush()
    spans = otlp_receiver.wait_for_spans(lambda s: s.name == "cache.get", count=2)
    by_cache = {s.attributes["cache.name"]: s.attributes["cache.key"] for s in spans}
    assert len(by_cache["plain-keys"]) == 128 and by_cache["plain-keys"].startswith("user:xxx")
    assert by_cache["hashed-keys"].startswith("sha256:") and "alice" not in by_cache["hashed-keys"]


async def test_two_managers_are_kept_apart_and_pool_gauges_are_bounded(telemetry, redis_server):
    first, second = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    async with (
        ti.CacheManager(redis_url=redis_server.url, name=first, namespace=first, max_connections=4) as a,
        ti.CacheManager(redis_url=redis_server.url, name=second, namespace=second) as b,
    ):
        await a.set("k", 1)
        for _ in range(3):
            await a.get("k")
        await b.get("k")
        assert prometheus_samples(telemetry, "cache_hits_total", first) == {(): 3.0}
        assert prometheus_samples(telemetry, "cache_hits_total", second) == {(): 0.0}
        assert prometheus_samples(telemetry, "cache_misses_total", second) == {(): 1.0}
        text = telemetry.prometheus_text()
        pool = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.labels.get("db_client_connection_pool_name") == first:
                    pool[(sample.name, sample.labels.get("db_client_connection_state"))] = sample.value
        maximum = pool[("db_client_connection_max", None)]
        assert maximum == 4
        assert 0 <= pool[("db_client_connections_usage", "used")] <= maximum
        assert 1 <= pool[("db_client_connections_usage", "idle")] <= maximum
        await a.clear()


async def test_exposition_passes_promtool(telemetry):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    async with ti.CacheManager(name="promtool") as cache:
        await cache.get("k")
    done = await asyncio.to_thread(
        subprocess.run,
        [promtool, "check", "metrics"],
        input=telemetry.prometheus_text(),
        text=True,
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr  # 1: a parse error, 3: lint problems


async def test_duration_exemplars_point_at_the_cache_span(telemetry, otlp_receiver):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

    name = f"ex-{uuid.uuid4().hex[:6]}"
    async with ti.CacheManager(name=name) as cache:
        with tracer.start_as_current_span("request"):
            await cache.get("k")
    exemplars = [
        sample.exemplar
        for family in openmetrics_families(telemetry.prometheus_text(openmetrics=True))
        for sample in family.samples
        if sample.name == "cache_operation_duration_seconds_bucket"
        and sample.labels.get("cache_name") == name
        and sample.exemplar is not None
    ]
    telemetry.force_flush()
    span = otlp_receiver.wait_for_spans(
        lambda s: s.name == "cache.get" and s.attributes["cache.name"] == name
    )[0]
    assert exemplars and {(e.labels["trace_id"], e.labels["span_id"]) for e in exemplars} == {
        (span.trace_id, span.span_id)
    }
    point = otlp_receiver.wait_for_metric_points(
        lambda p: p.name == "cache.operation.duration" and p.attributes["cache.name"] == name and p.exemplars
    )[0]
    assert {e.get("trace_id") for e in point.exemplars} == {span.trace_id}


async def test_without_a_sampled_trace_no_span_is_exported_not_even_a_redis_command(
    telemetry, otlp_receiver, redis_server
):
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    name = f"quiet-{uuid.uuid4().hex[:6]}"
    async with ti.CacheManager(redis_url=redis_server.url, namespace=name, name=name) as cache:
        await cache.set("outside", 1)  # no trace at all
        unsampled = NonRecordingSpan(SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(0)))
        with trace.use_span(unsampled):
            await cache.get("outside")
        with tracer.start_as_current_span("marker"):
            await cache.get("outside")  # sampled: cache.get -> GET
    telemetry.force_flush()
    otlp_receiver.wait_for_spans(lambda s: s.name == "marker")
    names = sorted(s.name for s in otlp_receiver.spans())
    assert names == ["GET", "cache.get", "marker"], names
    assert prometheus_samples(telemetry, "cache_operation_duration_seconds_count", name) == {
        (("cache_backend", "redis"), ("cache_operation", "get")): 2.0,
        (("cache_backend", "redis"), ("cache_operation", "set")): 1.0,
    }


async def test_near_cache_counters_tier_and_duration_series(telemetry, otlp_receiver, redis_server):
    name = f"near-{uuid.uuid4().hex[:6]}"
    namespace = f"tel-{uuid.uuid4().hex[:8]}"
    async with (
        ti.CacheManager(redis_url=redis_server.url, namespace=namespace, telemetry=False) as writer,
        ti.CacheManager(redis_url=redis_server.url, namespace=namespace, name=name, near_cache=True) as cache,
    ):
        await writer.mset({"k": 1, "j": 2})
        assert await cache._near.channel.sync()
        with tracer.start_as_current_span("near-workload"):
            await cache.get("k")  # miss near, hit redis
            await cache.get("k")  # near
            await cache.mget(["k"])  # near
            await cache.mget(["k", "j"])  # k near, j from redis: the span says redis
            await writer.set("k", 3)
            assert await cache._near.channel.sync()
            assert await cache.get("k") == 3  # invalidated: from redis again
        telemetry.force_flush()
        spans = otlp_receiver.wait_for_spans(
            lambda s: s.name in ("cache.get", "cache.mget") and s.attributes.get("cache.name") == name,
            count=5,
        )
        tiers = [(s.name, s.attributes["cache.tier"], s.attributes["cache.backend"]) for s in spans]
        assert sorted(tiers) == sorted(
            [
                ("cache.get", "redis", "redis"),
                ("cache.get", "near", "redis"),
                ("cache.mget", "near", "redis"),
                ("cache.mget", "redis", "redis"),
                ("cache.get", "redis", "redis"),
            ]
        )
        # counted per key, like cache.hits
        assert prometheus_samples(telemetry, "cache_near_hits_total", name) == {(): 3.0}
        assert prometheus_samples(telemetry, "cache_near_misses_total", name) == {(): 3.0}
        # every key Redis named: the first mset's two, then "k"
        assert prometheus_samples(telemetry, "cache_near_invalidations_total", name) == {(): 3.0}
        assert prometheus_samples(telemetry, "cache_hits_total", name) == {(): 6.0}
        counts = prometheus_samples(telemetry, "cache_operation_duration_seconds_count", name)
        near_series = (("cache_backend", "redis"), ("cache_operation", "get"), ("cache_tier", "near"))
        assert counts[near_series] == 1.0
        # the exposition gives the other series of the family an empty cache_tier
        assert counts[(("cache_backend", "redis"), ("cache_operation", "get"), ("cache_tier", ""))] == 2.0
        stats = cache.get_stats()
        assert (stats["near_hits"], stats["near_misses"], stats["near_invalidations"]) == (3, 3, 3)


async def test_every_operation_has_the_spans_design_names(telemetry, otlp_receiver, redis_server):
    """docs/design.md's span table, operation by operation, on a healthy Redis."""
    name = f"dn-{uuid.uuid4().hex[:6]}"
    cache = ti.CacheManager(redis_url=redis_server.url, name=name)
    await cache.initialize()
    with trace.get_tracer("test").start_as_current_span("design"):
        await cache.set("k", {"v": 1}, ttl=60)
        await cache.get("k")  # a hit: cache.item_size is set
        await cache.exists("k")
        await cache.mset({"m1": 1, "m2": 2}, ttl=60)
        await cache.mget(["m1", "m2"])
        await cache.delete("k")
        await cache.clear("m*")
    await cache.close()
    telemetry.force_flush()
    design = design_contracts.cache_spans()
    spans = otlp_receiver.wait_for_spans(lambda s: s.attributes.get("cache.name") == name, count=len(design))
    by_name = {span.name: span for span in spans}
    assert set(by_name) == set(design)
    for span_name, attributes in design.items():
        assert set(by_name[span_name].attributes) == set(attributes), span_name
