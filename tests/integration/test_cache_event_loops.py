"""One manager, several event loops: pytest-asyncio's per-test loops, successive
``asyncio.run()`` calls (one ending while the breaker is open) and threads with loops
of their own, against a real Redis.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

import pytest

import telemetry_infra as ti

MISSING = object()
TIMEOUTS = {"socket_timeout": 0.3, "socket_connect_timeout": 0.3, "probe_interval": 0.1}
loops_seen: list[asyncio.AbstractEventLoop] = []


@pytest.fixture(scope="module")
def module_cache(redis_server) -> Iterator[ti.CacheManager]:
    """Made outside any loop and shared by the tests below, like a module-level
    ``cache = CacheManager(...)``; each test runs in its own function-scoped loop."""
    cache = ti.CacheManager(
        redis_url=redis_server.url, namespace=f"loops-{uuid.uuid4().hex[:8]}", max_connections=2
    )
    yield cache
    asyncio.run(cache.clear())
    asyncio.run(cache.close())  # from yet another loop: releases what it can, raises nothing


async def test_module_level_manager_in_a_first_test_loop(module_cache):
    loops_seen.append(asyncio.get_running_loop())
    await module_cache.set("user:1", {"name": "Ada"})
    assert await module_cache.get("user:1") == {"name": "Ada"}
    assert await module_cache.mget(["user:1", "user:2"]) == {"user:1": {"name": "Ada"}}


async def test_module_level_manager_in_a_second_test_loop(module_cache):
    loops_seen.append(asyncio.get_running_loop())
    assert await module_cache.get("user:1", MISSING) == {"name": "Ada"}
    await module_cache.set("user:2", {"name": "Grace"})
    assert await module_cache.exists("user:2")


async def test_module_level_manager_in_a_third_test_loop_under_a_burst(module_cache):
    loops_seen.append(asyncio.get_running_loop())
    results = await asyncio.gather(*(module_cache.get(f"user:{1 + i % 2}", MISSING) for i in range(100)))
    assert results == [{"name": "Ada"}, {"name": "Grace"}] * 50
    assert await module_cache.delete("user:2") is True
    assert len(set(map(id, loops_seen))) == 3, "each test ran in a loop of its own"
    stats = module_cache.get_stats()
    assert (stats["errors"], stats["fallbacks"], stats["hits"]) == (0, 0, 103)


def connected_clients(server: ti.testing.RedisServer) -> int:
    """Clients connected to ``server`` besides this check, once closes in flight have landed."""
    deadline = time.monotonic() + 1.0
    with server.client() as raw:
        while True:
            count = raw.info("clients")["connected_clients"] - 1
            if count == 0 or time.monotonic() > deadline:
                return count
            time.sleep(0.02)


def test_successive_asyncio_runs_one_ending_with_the_breaker_open(redis_restartable):
    cache = ti.CacheManager(redis_url=redis_restartable.url, namespace="runs", **TIMEOUTS)

    async def first() -> object:
        await cache.set("k", "before")
        return await cache.get("k")

    async def second() -> tuple[object, bool]:
        await cache.set("k", "during")  # Redis is gone: the breaker opens, memory serves
        return await cache.get("k"), cache.fallback_active

    async def third() -> tuple[float, object, object]:
        started = time.monotonic()
        while cache.fallback_active:  # the probe died with the second loop; calls restart it
            assert time.monotonic() - started < 3.0, "the breaker never closed: nobody probes Redis"
            await cache.get("k")
            await asyncio.sleep(0.05)
        recovered_in = time.monotonic() - started
        await cache.set("k", "after")
        return recovered_in, await cache.get("k"), await cache.get("absent", MISSING)

    assert asyncio.run(first()) == "before"
    assert connected_clients(redis_restartable) == 0, "the first loop's connections were released"
    redis_restartable.kill()
    assert asyncio.run(second()) == ("during", True)
    redis_restartable.start()
    recovered_in, value, absent = asyncio.run(third())
    assert (value, absent) == ("after", MISSING)
    assert recovered_in < 1.0
    assert redis_restartable.client().get("runs:k") is not None  # written to Redis, not memory
    asyncio.run(cache.close())
    assert connected_clients(redis_restartable) == 0
    assert cache.get_stats()["fallbacks"] == 1


@pytest.mark.parametrize("call", ["initialize", "health_check"])
def test_a_new_loop_that_only_checks_redis_resumes_probing(redis_restartable, call):
    """The breaker opened at startup under a loop that has ended; the next loop calls
    only ``initialize()`` (or ``health_check()``) and waits: Redis must be probed again."""
    cache = ti.CacheManager(redis_url=redis_restartable.url, namespace="checks", **TIMEOUTS)

    async def waits_for_redis() -> float:
        await getattr(cache, call)()
        started = time.monotonic()
        while cache.fallback_active:
            if time.monotonic() - started > 3.0:
                break
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    redis_restartable.kill()
    asyncio.run(cache.initialize())
    assert cache.fallback_active
    redis_restartable.start()
    assert asyncio.run(waits_for_redis()) < 1.0, "the breaker never closed: nobody probes Redis"
    asyncio.run(cache.close())


def run_in_threads(work: Callable[[int], Awaitable[None]], count: int) -> list[BaseException]:
    """``asyncio.run(work(n))`` in ``count`` threads at once; what escaped from them."""
    failures: list[BaseException] = []

    def run(thread: int) -> None:
        try:
            asyncio.run(work(thread))
        except BaseException as exc:  # the point of these tests: nothing may escape
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return failures


def test_two_threads_with_their_own_loops_share_one_manager(redis_server):
    cache = ti.CacheManager(
        redis_url=redis_server.url, namespace=f"threads-{uuid.uuid4().hex[:8]}", max_connections=2
    )
    wrong: list[tuple[str, object]] = []

    async def work(thread: int) -> None:
        for n in range(300):
            key = f"t{thread}:{n % 7}"
            await cache.set(key, n)
            found = await cache.get(key, MISSING)
            if found != n:
                wrong.append((key, found))
            await asyncio.gather(cache.mget([f"t{thread}:{i}" for i in range(7)]), cache.exists(key))

    failures = run_in_threads(work, 2)
    asyncio.run(cache.clear())
    asyncio.run(cache.close())
    assert failures == [] and wrong == []
    stats = cache.get_stats()
    assert (stats["errors"], stats["fallbacks"]) == (0, 0)


@pytest.mark.parametrize("redis", ["down", "none"])
def test_threads_share_the_memory_store_safely(redis):
    """Memory serves (Redis down, or none configured) to three threads with loops of
    their own, on overlapping keys, with evictions and expiries: nothing escapes to a caller."""
    url = f"redis://127.0.0.1:{ti.testing.free_port()}/0" if redis == "down" else None
    cache = ti.CacheManager(redis_url=url, memory_cache_size=50, telemetry=False, **TIMEOUTS)

    async def work(thread: int) -> None:
        for n in range(20_000):
            await cache.set(f"k{(n * 7 + thread) % 200}", n, ttl=0.001 if n % 3 == 0 else 60)
            await cache.get(f"k{(n * 3) % 200}")
            if n % 50 == 0:
                await cache.delete(f"k{n % 200}")
                await cache.mget([f"k{i}" for i in range(10)])

    failures = run_in_threads(work, 3)
    asyncio.run(cache.close())
    assert failures == []
    assert cache.get_stats()["evictions"] > 0
