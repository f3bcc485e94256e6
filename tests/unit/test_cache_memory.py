"""Memory-only mode (``redis_url=None``): LRU, TTLs, patterns, stats."""

from __future__ import annotations

import asyncio

import pytest

import telemetry_infra as ti

MISSING = object()


async def test_memory_only_mode_serves_every_operation():
    async with ti.CacheManager(redis_url=None) as cache:
        assert await cache.set("a", {"v": 1}) is True
        assert await cache.get("a") == {"v": 1}
        assert await cache.mset({"b": 2, "c": None}) is True
        assert await cache.mget(["a", "b", "c", "d"]) == {"a": {"v": 1}, "b": 2, "c": None}
        assert await cache.exists("c") is True
        assert await cache.delete("b") is True and await cache.delete("b") is False
        health = await cache.health_check()
        assert health["status"] == "healthy" and health["backend"] == "memory"
        assert health["redis"]["connected"] is False
        assert cache.get_stats()["memory_items"] == 2


async def test_values_are_copies_not_shared_objects():
    async with ti.CacheManager() as cache:
        original = {"list": [1]}
        await cache.set("k", original)
        original["list"].append(2)
        fetched = await cache.get("k")
        fetched["list"].append(3)
        assert await cache.get("k") == {"list": [1]}


@pytest.mark.parametrize(
    ("serialization", "value"),
    [("json", {"list": [1], "text": "x" * 2000}), ("pickle", {"set": {1, 2}, "text": "x" * 2000}),
     ("pickle", {"tuple": (1, 2)})],
)  # fmt: skip
async def test_every_kind_of_entry_is_read_as_a_fresh_copy(serialization, value):
    """Plain, compressed (over compression_threshold) and signed pickle entries alike."""
    async with ti.CacheManager(serialization=serialization, signing_key="s") as cache:
        await cache.set("k", value)
        first = await cache.get("k")
        assert first == value and first is not value
        first["added"] = True
        assert await cache.get("k") == value
        assert cache.get_stats()["hits"] == 2


async def test_an_unreadable_entry_is_a_counted_miss(caplog):
    async with ti.CacheManager(name="unreadable") as cache:
        await cache._memory.set("cache:k", bytes((0xC1, 0x00)) + b"{broken", None)
        assert await cache.get("k", MISSING) is MISSING
        stats = cache.get_stats()
        assert (stats["hits"], stats["misses"], stats["errors"]) == (0, 1, 1)
        assert "cannot be read" in caplog.text


async def test_lru_eviction_keeps_recently_used_and_counts():
    async with ti.CacheManager(memory_cache_size=3) as cache:
        await cache.mset({"a": 1, "b": 2, "c": 3})
        await cache.get("a")  # a is now more recent than b
        await cache.set("d", 4)
        assert await cache.get("b", MISSING) is MISSING
        assert await cache.mget(["a", "c", "d"]) == {"a": 1, "c": 3, "d": 4}
        stats = cache.get_stats()
        assert (stats["evictions"], stats["memory_items"]) == (1, 3)


async def test_per_entry_ttl_and_memory_ttl_cap():
    async with ti.CacheManager(memory_cache_ttl=0.3) as cache:
        await cache.set("short", 1, ttl=0.1)
        await cache.set("capped", 2, ttl=3600)
        await asyncio.sleep(0.18)
        assert await cache.get("short", MISSING) is MISSING
        assert await cache.get("capped") == 2
        await asyncio.sleep(0.2)
        assert await cache.exists("capped") is False


async def test_clear_patterns_follow_redis_glob_rules():
    async with ti.CacheManager(namespace="n*s") as cache:
        await cache.mset({"user:1": 1, "user:22": 2, "user:x": 3, "order:1": 4, "a?b": 5, "acb": 6})
        assert await cache.clear("user:?") == 2
        assert await cache.clear("a\\?b") == 1
        assert await cache.clear("[ox]rder:*") == 1
        assert set(await cache.mget(["user:22", "acb", "order:1"])) == {"user:22", "acb"}
        assert await cache.clear() == 2


async def test_stats_hit_rate_counts_lookups():
    async with ti.CacheManager() as cache:
        assert cache.get_stats()["hit_rate"] == 0.0
        await cache.set("k", 1)
        for key in ("k", "k", "k", "nope"):
            await cache.get(key)
        assert cache.get_stats()["hit_rate"] == pytest.approx(0.75)


def test_invalid_sizes_are_rejected():
    with pytest.raises(ValueError):
        ti.CacheManager(memory_cache_size=0)
    with pytest.raises(ValueError):
        ti.CacheManager(memory_cache_ttl=0)
    with pytest.raises(ValueError):
        ti.CacheManager(max_connections=0)


async def test_memory_is_bounded_by_bytes_as_well_as_entries():
    # 50 values of ~100 KB fit the entry bound (1000) but not a 1 MB byte bound
    async with ti.CacheManager(memory_cache_max_bytes=1_000_000, enable_compression=False) as cache:
        blob = "x" * 100_000
        for i in range(50):
            assert await cache.set(f"k{i}", f"{i}{blob}") is True
        memory = (await cache.health_check())["memory"]
        assert memory["max_bytes"] == 1_000_000
        assert 900_000 <= memory["bytes"] <= 1_000_000
        assert memory["items"] == 9
        assert cache.get_stats()["evictions"] == 41
        assert await cache.get("k49") == f"49{blob}"  # the most recent survive
        assert await cache.get("k0", MISSING) is MISSING
        await cache.delete("k49")
        assert (await cache.health_check())["memory"]["bytes"] == memory["bytes"] - len(f"49{blob}") - 4


async def test_a_value_larger_than_the_byte_bound_is_not_kept_and_drops_the_old_one():
    async with ti.CacheManager(memory_cache_max_bytes=10_000, enable_compression=False) as cache:
        await cache.set("small", 1)
        await cache.set("big", "old")
        assert await cache.set("big", "y" * 20_000) is True
        assert await cache.get("big", MISSING) is MISSING  # never the previous, stale value
        assert await cache.get("small") == 1
        assert cache.get_stats()["evictions"] == 1
        assert (await cache.health_check())["memory"]["items"] == 1


def test_memory_cache_max_bytes_is_validated():
    for bad in (0, -1, 1.5, True, "64MB"):
        with pytest.raises((ValueError, TypeError), match="memory_cache_max_bytes"):
            ti.CacheManager(memory_cache_max_bytes=bad)


async def test_expired_entries_make_room_before_a_live_one_is_evicted():
    async with ti.CacheManager(memory_cache_size=2) as cache:
        await cache.set("short", 1, ttl=0.05)
        await cache.set("long", 2, ttl=60)
        await asyncio.sleep(0.1)
        await cache.set("new", 3)  # over the bound: the expired entry goes, not "long"
        assert await cache.mget(["short", "long", "new"]) == {"long": 2, "new": 3}
        assert cache.get_stats()["evictions"] == 0
        assert await cache.delete("short") is False  # expired counts as absent
