"""A small connection pool under bursts, cancelled callers and big values, against a real Redis.

A busy pool is back-pressure, not an outage: nobody waits for a connection that is
free, the breaker never opens, and reads of keys that are in Redis stay hits.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

import telemetry_infra as ti
from telemetry_infra.cache.redis.node import create_client
from telemetry_infra.cache.redis.options import ConnectionOptions

MISSING = object()


@pytest.fixture
def namespace() -> str:
    return f"pool-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def telemetry(otlp_receiver):
    endpoint = otlp_receiver.grpc_endpoint
    return ti.configure(service_name="cache-pool-test", otlp_endpoint=endpoint, setup_logs=False)


def errors_by_type(telemetry, cache_name: str) -> dict[str, float]:
    """``cache_errors_total`` of one cache from the Prometheus exposition, by ``error_type``."""
    found = {}
    for family in text_string_to_metric_families(telemetry.prometheus_text()):
        for sample in family.samples:
            if sample.name == "cache_errors_total" and sample.labels.get("cache_name") == cache_name:
                found[sample.labels["error_type"]] = sample.value
    return found


def small_pool(url: str, namespace: str, **options) -> ti.CacheManager:
    options.setdefault("max_connections", 2)
    return ti.CacheManager(redis_url=url, namespace=namespace, telemetry=False, **options)


async def test_bursts_with_cancelled_callers_never_wait_for_a_free_connection(redis_server, namespace):
    """Callers with deadlines give up first at the head of the queue, just as a connection
    is handed to them: the connection must go on to the next caller, not sit idle (a lost
    wake-up shows as calls stalled for the whole 1 s wait bound, then an opened breaker)."""
    rng = random.Random(12)
    async with small_pool(redis_server.url, namespace, socket_timeout=1.0) as cache:
        await cache.set("present", {"v": 1})
        latencies: list[float] = []
        values: list[object] = []

        async def reader() -> None:
            started = time.perf_counter()
            values.append(await cache.get("present", MISSING))
            latencies.append(time.perf_counter() - started)

        async def impatient(tasks: list[asyncio.Task[None]]) -> None:
            cancelled = 0
            while cancelled < 10 and not all(task.done() for task in tasks):
                await asyncio.sleep(0)
                head = [task for task in tasks if not task.done()][:2]
                if head and rng.random() < 0.3:
                    rng.choice(head).cancel()
                    cancelled += 1

        for _ in range(20):
            tasks = [asyncio.create_task(reader()) for _ in range(100)]
            timed = [asyncio.create_task(asyncio.wait_for(cache.get("present"), rng.uniform(0.001, 0.02)))]
            await asyncio.gather(*tasks, *timed, impatient(tasks), return_exceptions=True)

        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99)]
        slowest = latencies[-1]
        assert p99 < 0.6, f"p99 {p99:.3f}s, slowest {slowest:.3f}s: calls waited for a free connection"
        assert len(values) >= 1500 and all(value == {"v": 1} for value in values)
        stats = cache.get_stats()
        assert (stats["fallbacks"], stats["errors"]) == (0, 0)


async def test_connection_handed_to_a_caller_cancelled_before_it_ran_goes_to_the_next(redis_server):
    """The exact lost wake-up of ``asyncio.Condition`` on CPython < 3.13: the first waiter
    is handed a connection and cancelled in the same loop iteration."""
    client = create_client(redis_server.url, ConnectionOptions(max_connections=2, pool_timeout=1.0))
    pool = client.connection_pool
    held = [await pool.get_connection(), await pool.get_connection()]
    waited: dict[str, float] = {}

    async def waiter(name: str) -> None:
        started = time.perf_counter()
        connection = await pool.get_connection()
        waited[name] = time.perf_counter() - started
        await pool.release(connection)

    first, second = asyncio.create_task(waiter("first")), asyncio.create_task(waiter("second"))
    await asyncio.sleep(0.01)  # both queue
    await pool.release(held.pop())
    first.cancel()
    await asyncio.gather(first, second, return_exceptions=True)
    assert first.cancelled() and waited["second"] < 0.2
    assert pool.usage() == (1, 1)  # the cancelled caller leaked nothing
    await pool.release(held.pop())
    await client.aclose()


async def test_burst_of_big_reads_waits_its_turn_instead_of_opening_the_breaker(redis_server, namespace):
    """200 reads of a 0.8 MB value through 2 connections take longer than the socket
    timeout in total; the socket timeout bounds one command, not the wait in the queue."""
    rng = random.Random(8)
    value = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(800_000))
    async with small_pool(redis_server.url, namespace, socket_timeout=0.5) as cache:
        await cache.set("big", value)
        started = time.perf_counter()
        results = await asyncio.gather(*(cache.get("big", MISSING) for _ in range(200)))
        elapsed = time.perf_counter() - started
        stats = cache.get_stats()
        assert (stats["fallbacks"], stats["errors"]) == (0, 0), f"burst took {elapsed:.2f}s"
        assert sum(result == value for result in results) == 200


async def test_read_outwaiting_pool_timeout_is_a_miss_and_writes_keep_their_place(
    redis_restartable, namespace, telemetry, caplog
):
    """The only connection is stuck behind a paused server for 0.6 s: reads queued behind
    it give up after pool_timeout as misses (counted once, logged once, no outage); a
    write and a removal queued behind it wait and are applied."""
    raw = redis_restartable.client()
    options = {"namespace": namespace, "name": namespace, "max_connections": 1, "pool_timeout": 0.15}
    async with ti.CacheManager(redis_restartable.url, socket_timeout=2.0, **options) as cache:
        await cache.mset({"present": "v", "gone": "old", "replaced": "old"})
        redis_restartable.pause(0.6)
        holder = asyncio.create_task(cache.get("present", MISSING))
        await asyncio.sleep(0.05)  # the holder has the connection, waiting for the server
        started = time.perf_counter()
        with caplog.at_level(logging.WARNING, logger="telemetry_infra.cache"):
            queued_reads = await asyncio.gather(cache.get("present", MISSING), cache.get("present", MISSING))
        gave_up_after = time.perf_counter() - started
        write = asyncio.create_task(cache.set("replaced", "new"))
        removal = asyncio.create_task(cache.delete("gone"))
        await asyncio.sleep(0.3)  # longer than pool_timeout: the writes still wait
        assert not write.done() and not removal.done()

        assert await holder == "v"
        assert await write is True and await removal is True
        assert queued_reads == [MISSING, MISSING]
        assert 0.1 < gave_up_after < 0.5
        assert raw.get(f"{namespace}:gone") is None
        assert await cache.get("replaced") == "new" and await cache.get("present") == "v"
        stats = cache.get_stats()
        assert (stats["fallbacks"], stats["errors"], stats["fallback_active"]) == (0, 2, False)
        assert errors_by_type(telemetry, namespace) == {"CachePoolExhaustedError": 2.0}
        warnings = [r.getMessage() for r in caplog.records if "pooled Redis connections" in r.getMessage()]
        assert len(warnings) == 1 and "max_connections" in warnings[0]
