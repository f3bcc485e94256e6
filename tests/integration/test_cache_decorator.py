"""@cached against a real Redis."""

from __future__ import annotations

import asyncio

import pytest

import telemetry_infra as ti


class Calls:
    """A cached function's body, counting how often it really runs."""

    def __init__(self, result=None):
        self.count = 0
        self.result = result

    async def __call__(self, *args, **kwargs):
        self.count += 1
        await asyncio.sleep(0.01)
        return self.result if self.result is not None else {"args": list(args), "kwargs": kwargs}


async def test_results_are_cached_per_arguments(cache):
    body = Calls()

    @ti.cached(ttl=60, key_prefix="api")
    async def fetch(a, b=2):
        return await body(a, b)

    first = await fetch(1, _cache_manager=cache)
    assert await fetch(1, _cache_manager=cache) == first == {"args": [1, 2], "kwargs": {}}
    assert await fetch(a=1, b=2, _cache_manager=cache) == first  # same bound arguments, same key
    await fetch(2, _cache_manager=cache)
    assert body.count == 2
    key = fetch.cache_key(1)
    assert key.startswith("api:") and fetch.__qualname__ in key
    assert await cache.get(key) == first


async def test_none_results_are_cached_and_exceptions_are_not(cache):
    runs = {"none": 0, "boom": 0}

    @ti.cached()
    async def nothing():
        runs["none"] += 1

    @ti.cached()
    async def boom():
        runs["boom"] += 1
        raise LookupError("no")

    for _ in range(3):
        assert await nothing(_cache_manager=cache) is None
        with pytest.raises(LookupError):
            await boom(_cache_manager=cache)
    assert runs == {"none": 1, "boom": 3}


async def test_concurrent_calls_run_the_function_once(cache):
    body = Calls(result="shared")

    @ti.cached(ttl=60, key_prefix="slow")  # the prefix stands for `body`, which has no stable identity
    async def slow(x):
        return await body(x)

    results = await asyncio.gather(*(slow(7, _cache_manager=cache) for _ in range(25)))
    assert results == ["shared"] * 25 and body.count == 1


async def test_refresh_bypasses_the_read_and_overwrites(cache):
    version = {"n": 0}

    @ti.cached(ttl=60)
    async def current():
        version["n"] += 1
        return version["n"]

    assert await current(_cache_manager=cache) == 1
    assert await current(_cache_manager=cache) == 1
    assert await current(_cache_manager=cache, _cache_refresh=True) == 2
    assert await current(_cache_manager=cache) == 2


async def test_default_manager_and_key_builder(cache):
    @ti.cached(ttl=60, key_prefix="user", key_builder=lambda user_id: f"id={user_id}")
    async def profile(user_id):
        return {"id": user_id}

    ti.set_default_cache_manager(cache)
    try:
        assert ti.get_default_cache_manager() is cache
        assert await profile(5) == {"id": 5}
        assert await cache.get("user:id=5") == {"id": 5}
    finally:
        ti.set_default_cache_manager(None)
    with pytest.raises(RuntimeError, match="_cache_manager"):
        await profile(5)


def test_generator_functions_are_rejected_at_decoration():
    """Plain functions are cached through the sync view (tests/integration/test_cached_threads.py);
    a generator's result is an iterator, nothing to store."""
    with pytest.raises(TypeError, match="def or async def"):

        @ti.cached()
        def numbers():
            yield 1
