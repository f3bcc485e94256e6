"""``@cached`` from several threads: async functions called from threads that each run
their own event loop (issue #21 item 6), and plain ``def`` functions called from many
threads at once (issue #24), against a real Redis and on memory."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import telemetry_infra as ti

THREADS = 8


def _in_threads(target: Callable[[int], Any], count: int = THREADS) -> list[Any]:
    """Run ``target(i)`` in ``count`` threads released together; their results (or exceptions)."""
    results: list[Any] = [None] * count
    barrier = threading.Barrier(count)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = target(index)
        except Exception as exc:  # reported by the assertion, with its message
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


@pytest.fixture(params=["redis", "memory"])
def manager(request, redis_server) -> ti.CacheManager:
    url = redis_server.url if request.param == "redis" else None
    cache = ti.CacheManager(redis_url=url, namespace=f"cached-threads-{uuid.uuid4().hex[:8]}")
    yield cache
    cache.sync.close()


def test_async_cached_from_threads_each_running_its_own_loop(manager):
    """#21 item 6: ``asyncio.run`` in 8 threads, cold calls of 5 keys each at once."""
    runs: list[int] = []

    @ti.cached(ttl=60)
    async def square(n: int) -> int:
        runs.append(n)
        await asyncio.sleep(0.05)  # every thread's cold call overlaps the others'
        return n * n

    def five_cold_calls(_index: int) -> list[int]:
        async def calls() -> list[int]:
            return list(await asyncio.gather(*(square(n, _cache_manager=manager) for n in range(5))))

        return asyncio.run(calls())

    results = _in_threads(five_cold_calls)
    errors = [repr(result) for result in results if isinstance(result, Exception)]
    assert errors == [], f"{len(errors)} of {THREADS} threads failed: {errors[:2]}"
    assert results == [[0, 1, 4, 9, 16]] * THREADS
    assert len(runs) <= 5 * THREADS  # at most once per key and loop, never an error


def test_sync_cached_runs_once_per_key_across_threads(manager):
    runs: list[int] = []

    @ti.cached(ttl=60)
    def slow_square(n: int) -> int:
        runs.append(n)
        time.sleep(0.1)  # all 8 threads arrive while the first computes
        return n * n

    results = _in_threads(lambda i: slow_square(i % 2, _cache_manager=manager))
    assert results == [0, 1] * (THREADS // 2)
    assert sorted(runs) == [0, 1], "each key's body ran once for the 8 concurrent callers"
    assert slow_square(1, _cache_manager=manager) == 1
    assert sorted(runs) == [0, 1]


def test_sync_cached_shares_keys_with_async_and_the_default_manager(manager):
    calls: list[str] = []

    @ti.cached(ttl=60, key_prefix="profile")
    def profile(user: str) -> dict[str, str]:
        calls.append(user)
        return {"user": user}

    previous = ti.get_default_cache_manager()
    ti.set_default_cache_manager(manager)
    try:
        assert profile("ada") == {"user": "ada"}
        assert profile("ada") == {"user": "ada"}
    finally:
        ti.set_default_cache_manager(previous)
    assert calls == ["ada"]
    key = profile.cache_key("ada")
    assert key.startswith("profile:")
    assert manager.sync.get(key) == {"user": "ada"}  # the same entry, read through the sync view
    assert asyncio.run(manager.get(key)) == {"user": "ada"}


def test_sync_cached_does_not_cache_exceptions_and_refreshes(manager):
    attempts: list[int] = []

    @ti.cached(ttl=60)
    def flaky(n: int) -> int:
        attempts.append(n)
        if len(attempts) == 1:
            raise ValueError("first call fails")
        return n + len(attempts)

    with pytest.raises(ValueError, match="first call fails"):
        flaky(1, _cache_manager=manager)
    assert flaky(1, _cache_manager=manager) == 3
    assert flaky(1, _cache_manager=manager) == 3
    assert flaky(1, _cache_manager=manager, _cache_refresh=True) == 4
    assert flaky(1, _cache_manager=manager) == 4
