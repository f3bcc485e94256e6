"""Redis outages: fallback to memory, breaker, recovery, journal replay.

Every test owns its redis-server (``redis_restartable``) and kills or pauses it.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial

import pytest
from caches import cache_manager, wait_until

import telemetry_infra as ti
from telemetry_infra.testing import free_port

SOCKET_TIMEOUT = 0.5
PROBE_INTERVAL = 0.2
MISSING = object()

manager = partial(
    cache_manager, socket_timeout=SOCKET_TIMEOUT, probe_interval=PROBE_INTERVAL, namespace="outage"
)


async def test_unreachable_at_initialize_serves_memory_then_recovers(redis_restartable):
    redis_restartable.kill()
    async with manager(redis_restartable.url) as cache:
        assert cache.fallback_active and cache.backend_name == "memory"
        assert await cache.set("k", "during outage") is True
        assert await cache.get("k") == "during outage"
        health = await cache.health_check()
        assert health["status"] == "degraded" and health["redis"]["connected"] is False
        assert health["redis"]["error"]

        redis_restartable.start()
        await wait_until(lambda: not cache.fallback_active, PROBE_INTERVAL + 1.0)
        await cache.set("after", "in redis")
        assert redis_restartable.client().get("outage:after") is not None
        assert (await cache.health_check())["status"] == "healthy"


async def test_never_reachable_redis_costs_no_network_wait():
    async with manager(f"redis://127.0.0.1:{free_port()}/0") as cache:
        started = time.monotonic()
        for i in range(1000):
            await cache.set(f"k{i % 10}", i)
            await cache.get(f"k{i % 10}")
        assert time.monotonic() - started < SOCKET_TIMEOUT
        stats = cache.get_stats()
        assert stats["errors"] == 1  # the failed connect; calls made while open never touch Redis
        assert stats["hits"] == 1000 and stats["backend"] == "memory"


async def test_kill_in_the_middle_of_20_workers(redis_restartable):
    raw = redis_restartable.client()
    async with manager(redis_restartable.url) as cache:
        written: dict[str, set[int]] = {}
        failures: list[BaseException] = []
        wrong: list[tuple[str, object]] = []
        slowest = 0.0
        stop = asyncio.Event()

        async def timed(call):
            nonlocal slowest
            started = time.monotonic()
            try:
                return await call
            except BaseException as exc:  # the point of the test: nothing may escape
                failures.append(exc)
                return MISSING
            finally:
                slowest = max(slowest, time.monotonic() - started)

        async def worker(w: int) -> None:
            n = 0
            while not stop.is_set():
                key = f"w{w}:{n % 5}"
                written.setdefault(key, set()).add(n)
                await timed(cache.set(key, {"key": key, "n": n}))
                result = await timed(cache.get(key, MISSING))
                if result is not MISSING and (result["key"] != key or result["n"] not in written[key]):
                    wrong.append((key, result))
                n += 1
                await asyncio.sleep(0)

        workers = [asyncio.create_task(worker(w)) for w in range(20)]
        await asyncio.sleep(0.3)
        redis_restartable.kill()
        await asyncio.sleep(0.7)
        assert cache.fallback_active
        redis_restartable.start()
        recovered_in = await wait_until(lambda: not cache.fallback_active, PROBE_INTERVAL + 1.0)
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*workers)

        assert failures == [] and wrong == []
        assert slowest < SOCKET_TIMEOUT + 0.25, f"a call took {slowest:.3f}s"
        assert recovered_in <= PROBE_INTERVAL + 1.0
        assert raw.dbsize() > 0  # writes reach the restarted Redis again
        assert cache.get_stats()["fallbacks"] == 1


async def test_removals_during_outage_are_replayed_on_recovery(redis_restartable):
    raw = redis_restartable.client()
    async with manager(redis_restartable.url, failure_threshold=1) as cache:
        await cache.mset({"deleted": "old", "replaced": "old", "user:1": "old", "kept": "old"})
        redis_restartable.pause(1.5)  # Redis keeps its data but answers nobody
        assert await cache.get("kept", MISSING) is MISSING  # times out once, then memory serves
        assert cache.fallback_active
        assert await cache.delete("deleted") is False
        await cache.set("replaced", "new")
        assert await cache.clear("user:*") == 0
        assert await cache.get("replaced") == "new"

        await wait_until(lambda: not cache.fallback_active, 1.5 + PROBE_INTERVAL + SOCKET_TIMEOUT + 1.0)
        assert await cache.get("deleted", MISSING) is MISSING
        assert await cache.get("user:1", MISSING) is MISSING
        assert await cache.get("replaced", MISSING) is MISSING  # the pre-outage value never returns
        assert await cache.get("kept") == "old"
        assert raw.exists("outage:deleted", "outage:user:1", "outage:replaced") == 0


async def test_open_breaker_skips_the_network(redis_restartable):
    async with manager(redis_restartable.url, failure_threshold=2) as cache:
        await cache.set("k", 1)
        redis_restartable.pause(2.0)
        await cache.get("k")
        await cache.get("k")
        assert cache.fallback_active
        started = time.monotonic()
        for _ in range(200):
            await cache.get("k")
            await cache.set("k", 2)
        assert time.monotonic() - started < SOCKET_TIMEOUT
        assert await cache.get("k") == 2
        redis_restartable.unpause()


async def test_full_journal_refuses_changes_instead_of_clearing_the_namespace(redis_restartable):
    raw = redis_restartable.client()
    async with manager(redis_restartable.url, failure_threshold=1, journal_size=3) as cache:
        redis_restartable.kill()
        await cache.get("k0")
        assert cache.fallback_active
        redis_restartable.start()  # an empty Redis: seed it as if it had kept its data
        raw.mset({f"outage:k{i}": b"old" for i in range(5)})
        raw.set("outage:survivor", b"written by another process after the outage")
        for i in range(3):
            assert await cache.delete(f"k{i}") is False  # journaled, applied on recovery
        for i in (3, 4):
            with pytest.raises(ti.CacheWriteError, match="journal is full"):
                await cache.delete(f"k{i}")
        assert await cache.set("k5", "new") is False
        assert cache.get_stats()["journal_overflowed"] == 3
        await wait_until(lambda: not cache.fallback_active, PROBE_INTERVAL + 1.0)
        assert raw.get("outage:survivor") is not None  # other writers' entries are not wiped
        assert raw.exists("outage:k0", "outage:k1", "outage:k2") == 0
        assert raw.exists("outage:k3", "outage:k4") == 2  # the caller was told these failed


@pytest.mark.parametrize("operation", ["mget", "exists", "clear", "delete", "mset"])
async def test_every_operation_survives_a_dead_redis(redis_restartable, operation):
    async with manager(redis_restartable.url) as cache:
        await cache.set("k", "v")
        redis_restartable.kill()
        calls = {
            "mget": lambda: cache.mget(["k", "j"]),
            "exists": lambda: cache.exists("k"),
            "clear": lambda: cache.clear(),
            "delete": lambda: cache.delete("k"),
            "mset": lambda: cache.mset({"a": 1}, ttl=5),
        }
        for _ in range(4):
            await calls[operation]()
        assert cache.fallback_active


async def test_close_applies_the_journal_when_redis_answers_again(redis_restartable):
    raw = redis_restartable.client()
    cache = manager(redis_restartable.url, failure_threshold=1, probe_interval=30)
    await cache.initialize()
    await cache.set("revoked", "session")
    redis_restartable.pause(0.6)
    await cache.get("revoked")  # times out: the breaker opens, and probes only in 30 s
    assert cache.fallback_active
    assert await cache.delete("revoked") is False  # journaled
    redis_restartable.unpause()
    await cache.close()  # a deploy restarts the process before the breaker's next probe
    assert raw.exists("outage:revoked") == 0


async def test_an_outage_entry_is_served_at_most_fallback_max_ttl(redis_restartable):
    """Two workers on one Redis, Redis killed: B's memory cannot be seen by A, so A's own outage
    copy (v12) must stop being served within ``fallback_max_ttl`` (default 1 s) of its write,
    however long its TTL: then A reads a miss, never v12, never the pre-outage v11."""
    url = redis_restartable.url
    async with manager(url) as a, manager(url) as b:
        assert await a.set("k", "v11", ttl=3600)
        redis_restartable.kill()
        assert await a.set("k", "v12", ttl=3600) and a.fallback_active
        written = time.monotonic()
        assert await b.set("k", "v13", ttl=3600) and b.fallback_active
        b_written = time.monotonic()  # later than A's write: B's copy ends later too
        assert await a.get("k") == "v12"  # A cannot know of v13
        # the entry's expiry was set inside set(), before `written`: a read asked later than
        # written + 1 s must miss (the time is taken before the read, not after its answer)
        while True:
            asked = time.monotonic()
            value = await a.get("k")
            if value != "v12":
                break
            assert asked - written <= 1.0, "A served its outage copy beyond fallback_max_ttl"
            await asyncio.sleep(0.02)
        served_s = time.monotonic() - written
        assert value is None, value
        assert served_s >= 0.9, f"the outage copy went after {served_s:.2f} s, before fallback_max_ttl"
        await asyncio.sleep(max(0.0, b_written + 1.0 - time.monotonic()))
        assert await b.get("k") is None  # B's copy is bounded the same way


def test_fallback_max_ttl_is_validated_like_the_other_seconds():
    from datetime import timedelta

    assert ti.CacheManager(fallback_max_ttl=timedelta(milliseconds=250))
    for wrong in (0, -1.0):
        with pytest.raises(ValueError, match="fallback_max_ttl"):
            ti.CacheManager(fallback_max_ttl=wrong)
    with pytest.raises(TypeError, match="fallback_max_ttl"):
        ti.CacheManager(fallback_max_ttl="1")
