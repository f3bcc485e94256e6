"""Redis faults under a mixed workload: kill + restart, CLIENT PAUSE, DEBUG SLEEP, OOM.

Each run is a few seconds of 20 concurrent tasks; ``benchmarks/soak.py`` is the
long version. Every fault: no exception reaches a caller, no call outlives the
socket timeout (by a generous margin here; the soak reports the exact figure), no
wrong or stale value is read (a write Redis refused under OOM included), the breaker
closes within the probe interval + 1 s and opens only while Redis is unreachable,
and the counters agree with the lookups made.
"""

from __future__ import annotations

import pytest
from workload import (
    PROBE_INTERVAL,
    SOCKET_TIMEOUT,
    ScenarioResult,
    debug_sleep,
    exported_lookups,
    kill_and_restart,
    out_of_memory,
    pause_clients,
    run_scenario,
)

import telemetry_infra as ti

RECOVERY_BOUND = PROBE_INTERVAL + 1.0
# Behavioural bound, generous for a loaded 2-core machine: a call blocked on the
# network for a second timeout (pool wait + read) would still show up.
CALL_BOUND = SOCKET_TIMEOUT + 0.05
NOISY_CALL_BOUND = 2 * SOCKET_TIMEOUT + 0.5
WORKERS = 20


def cache_for(server, name: str, **options) -> ti.CacheManager:
    return ti.CacheManager(
        redis_url=server.url,
        name=name,
        namespace=f"reliability-{name}",
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        probe_interval=PROBE_INTERVAL,
        **options,
    )


def assert_nothing_lost(result: ScenarioResult, stats: dict) -> None:
    figures = result.figures
    assert figures.exceptions == []
    assert figures.wrong == []
    assert figures.stale == [], "a deleted or overwritten value came back"
    assert figures.slowest_s < NOISY_CALL_BOUND
    assert all(r is not None and r <= RECOVERY_BOUND for r in result.recoveries_s), result.recoveries_s
    assert result.openings_while_healthy == 0, "the breaker opened while Redis answered"
    assert stats["hits"] + stats["misses"] == figures.lookups


def record(figures, name: str, result: ScenarioResult, stats: dict) -> None:
    workload = result.figures
    figures.record(
        "redis_faults",
        name,
        duration_s=round(result.duration_s, 2),
        workers=WORKERS,
        ops=workload.total_ops,
        ops_by_kind=dict(workload.ops),
        lookups=workload.lookups,
        faults=result.faults,
        breaker_opened=result.times_opened,
        breaker_openings_while_healthy=result.openings_while_healthy,
        refused_writes=dict(workload.refused_writes),
        recoveries_s=[None if r is None else round(r, 3) for r in result.recoveries_s],
        recovery_bound_s=RECOVERY_BOUND,
        slowest_call_s=round(workload.slowest_s, 3),
        calls_over_timeout_plus_50ms=workload.slow_calls,
        socket_timeout_s=SOCKET_TIMEOUT,
        exceptions=len(workload.exceptions),
        wrong_values=len(workload.wrong),
        stale_values=len(workload.stale),
        counters_agree=stats["hits"] + stats["misses"] == workload.lookups,
    )


FAULTS = {
    "kill_restart": (kill_and_restart, 0.6),
    "client_pause": (pause_clients, 0.8),
    "debug_sleep": (debug_sleep, 0.8),
    "out_of_memory": (out_of_memory, 0.8),
}


@pytest.mark.slow
@pytest.mark.parametrize("fault_name", FAULTS)
async def test_mixed_workload_survives(redis_restartable, figures, fault_name):
    fault, seconds = FAULTS[fault_name]
    async with cache_for(redis_restartable, fault_name) as cache:
        result = await run_scenario(
            cache,
            redis_restartable,
            [(fault, seconds)],
            workers=WORKERS,
            call_bound_s=CALL_BOUND,
            quiet_s=0.5,
            recovery_timeout_s=RECOVERY_BOUND + 2,
        )
        stats = cache.get_stats()
    record(figures, fault_name, result, stats)
    assert_nothing_lost(result, stats)
    if fault_name == "out_of_memory":
        assert result.figures.refused_writes, "no write was refused: the test proves nothing"
        assert result.times_opened == 0, "Redis answered: the breaker must stay closed"
    else:
        assert result.times_opened >= 1, "the fault never reached the cache: the test proves nothing"


@pytest.mark.slow
async def test_delete_during_pause_is_applied_after_recovery(redis_restartable, figures):
    raw = redis_restartable.client()
    async with cache_for(redis_restartable, "journal", failure_threshold=1) as cache:
        await cache.set("victim", "old value")
        await cache.set("pattern:a", 1)
        await cache.set("survivor", "kept")
        redis_restartable.pause(1.0)
        await cache.set("trip", "x")  # times out; with failure_threshold=1 the breaker opens
        assert cache.fallback_active
        assert await cache.delete("victim") is False  # journaled: Redis is not touched now
        assert await cache.clear("pattern:*") == 0
        assert await cache.get("victim") is None
        assert raw.get("reliability-journal:victim") is not None  # Redis still holds it meanwhile

        recovery = await _wait_closed(cache, RECOVERY_BOUND + 1.0)
        assert await cache.get("victim") is None
        assert await cache.get("pattern:a") is None
        assert await cache.get("survivor") == "kept"
        assert raw.get("reliability-journal:victim") is None
        assert raw.get("reliability-journal:pattern:a") is None
    figures.record("redis_faults", "journaled_delete_under_pause", recovery_s=round(recovery, 3), lost=0)


async def _wait_closed(cache: ti.CacheManager, timeout_s: float) -> float:
    import asyncio
    import time

    started = time.monotonic()
    while cache.fallback_active:
        assert time.monotonic() - started < timeout_s, "breaker still open"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


@pytest.mark.slow
async def test_exported_counters_agree_with_the_workload(redis_restartable, figures, tmp_path):
    telemetry = ti.configure(service_name="reliability", log_dir=tmp_path, setup_logs=False)
    async with cache_for(redis_restartable, "exported") as cache:
        result = await run_scenario(
            cache,
            redis_restartable,
            [(kill_and_restart, 0.5)],
            workers=10,
            call_bound_s=CALL_BOUND,
            quiet_s=0.4,
            recovery_timeout_s=RECOVERY_BOUND + 2,
        )
    exported = exported_lookups(telemetry.prometheus_text(), "exported")
    figures.record(
        "redis_faults",
        "exported_counters",
        lookups=result.figures.lookups,
        exported_hits_plus_misses=exported,
    )
    assert exported == result.figures.lookups
