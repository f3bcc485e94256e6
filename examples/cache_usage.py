"""Every cache example from the seed README, runnable end to end.

    REDIS_URL=redis://localhost:6379/0 python examples/cache_usage.py

Without REDIS_URL the cache runs in memory; when that Redis does not answer it
falls back to memory. Either way every example runs. Keys live under the
``example:`` namespace and are cleared at the end.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta

import telemetry_infra as ti

REDIS_URL = os.environ.get("REDIS_URL") or None


def show(title: str) -> None:
    print(f"\n== {title}")


async def basic_operations(cache: ti.CacheManager) -> None:
    show("basic operations")
    await cache.set("key", {"data": "value"}, ttl=300)
    print("get:", await cache.get("key"))
    print("exists:", await cache.exists("key"))
    await cache.delete("key")
    print("after delete:", await cache.get("key", "<miss>"))
    await cache.set("ttl", "short-lived", ttl=timedelta(seconds=1))
    await cache.set("nothing", None)
    print("cached None vs miss:", await cache.get("nothing", "<miss>"), await cache.get("absent", "<miss>"))


async def batch_operations(cache: ti.CacheManager) -> None:
    show("batch operations")
    await cache.mset({"key1": "val1", "key2": "val2"}, ttl=600)
    print("mget:", await cache.mget(["key1", "key2", "key3"]))


async def compression(cache: ti.CacheManager) -> None:
    show("compression of values over 1 KB")
    report = {"rows": [{"bbl": "1000010001", "violations": 3}] * 200}
    await cache.set("report", report)
    assert await cache.get("report") == report
    print("large value stored compressed and read back intact")


async def pattern_clearing(cache: ti.CacheManager) -> None:
    show("pattern-based clearing")
    await cache.mset({"user:1": "ada", "user:2": "grace", "property:1": "nyc"})
    print("cleared user:* ->", await cache.clear("user:*"))
    print("property:1 kept:", await cache.get("property:1"))


async def decorator(cache: ti.CacheManager) -> None:
    show("@cached decorator")
    calls = 0

    @ti.cached(ttl=600, key_prefix="api")
    async def expensive_function(param: str) -> dict[str, str]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return {"param": param, "computed_at": time.strftime("%H:%M:%S")}

    first = await expensive_function("value", _cache_manager=cache)
    second = await expensive_function("value", _cache_manager=cache)
    print("same result:", first == second, "| function ran", calls, "time(s)")


async def warming(cache: ti.CacheManager) -> None:
    show("cache warming")

    async def load_hot_properties() -> dict[str, dict[str, int]]:
        return {f"property:{bbl}": {"bbl": bbl, "score": bbl % 7} for bbl in range(100)}

    print("warmed", await cache.warm_cache(load_hot_properties, ttl=3600), "entries")


async def health_and_stats(cache: ti.CacheManager) -> None:
    show("health check and statistics")
    health = await cache.health_check()
    print("status:", health["status"], "| backend:", health["backend"], "| redis:", health["redis"])
    stats = cache.get_stats()
    print(f"Hit rate: {stats['hit_rate']:.2%} (hits={stats['hits']}, misses={stats['misses']})")


async def fallback() -> None:
    show("fallback to memory when Redis is unreachable")
    async with ti.CacheManager(redis_url="redis://127.0.0.1:1/0", socket_connect_timeout=0.2) as cache:
        await cache.set("key", "served from memory")
        print("get:", await cache.get("key"), "| backend:", cache.get_stats()["backend"])


async def serialization_modes() -> None:
    show("serialization modes")
    async with ti.CacheManager(serialization="pickle", signing_key="example-only-key") as pickled:
        await pickled.set("tuple-and-set", ({1, 2}, (3, 4)))
        print("pickle keeps Python types:", await pickled.get("tuple-and-set"))
    async with ti.CacheManager(serialization="json") as as_json:
        await as_json.set("tuple", (3, 4))
        print("json turns tuples into lists:", await as_json.get("tuple"))


async def near_cache() -> None:
    show("near cache")
    if REDIS_URL is None:
        print("needs Redis: without it the cache is already in process memory")
        return
    options = {"redis_url": REDIS_URL, "namespace": "example"}
    async with (
        ti.CacheManager(**options, near_cache=True, name="reader") as reader,
        ti.CacheManager(**options, name="writer") as writer,
    ):
        await writer.set("hot", {"price": 1})
        await reader.get("hot")  # from Redis; kept in the reader's memory
        for _ in range(3):
            await reader.get("hot")  # from process memory, no round trip
        await writer.set("hot", {"price": 2})  # Redis tells the reader at once
        for _ in range(1000):  # usually the first read already has it
            if (await reader.get("hot"))["price"] == 2:
                break
            await asyncio.sleep(0.001)
        stats = reader.get_stats()
        print(
            f"reader sees price 2; near hits={stats['near_hits']} invalidations={stats['near_invalidations']}"
        )
        await writer.delete("hot")


async def main() -> None:
    cache = ti.CacheManager(
        redis_url=REDIS_URL, max_connections=50, enable_compression=True, namespace="example"
    )
    await cache.initialize()
    print("backend in use:", cache.get_stats()["backend"])
    try:
        for example in (
            basic_operations,
            batch_operations,
            compression,
            pattern_clearing,
            decorator,
            warming,
        ):
            await example(cache)
        await health_and_stats(cache)
        await cache.clear()
    finally:
        await cache.close()
    await near_cache()
    await fallback()
    await serialization_modes()


if __name__ == "__main__":
    asyncio.run(main())
