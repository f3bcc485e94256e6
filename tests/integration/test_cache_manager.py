"""CacheManager against a real Redis: operations, TTLs, namespaces, codec, bad input."""

from __future__ import annotations

import asyncio
import logging
import pickle
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import telemetry_infra as ti
from telemetry_infra.cache.codec import Codec

MISSING = object()


@pytest.fixture
async def cache(redis_server, namespace):
    manager = ti.CacheManager(redis_url=redis_server.url, namespace=namespace)
    await manager.initialize()
    yield manager
    await manager.close()


@pytest.fixture
def raw(redis_server):
    client = redis_server.client()
    yield client
    client.close()


def stored_keys(raw, namespace: str) -> set[bytes]:
    return set(raw.scan_iter(match=f"{namespace}:*", count=1000))


def command_calls(raw, command: str) -> int:
    return raw.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0)


async def test_basic_operations_and_return_values(cache, raw, namespace):
    assert cache.get_stats()["hit_rate"] == 0.0
    assert await cache.set("user:1", {"name": "Ada", "tags": ["x"]}, ttl=300) is True
    assert await cache.get("user:1") == {"name": "Ada", "tags": ["x"]}
    assert raw.exists(f"{namespace}:user:1") == 1
    assert await cache.exists("user:1") is True
    assert await cache.delete("user:1") is True
    assert await cache.delete("user:1") is False
    assert await cache.exists("user:1") is False
    assert await cache.get("user:1") is None
    assert await cache.get("user:1", "fallback") == "fallback"
    stats = cache.get_stats()
    assert (stats["hits"], stats["misses"], stats["sets"], stats["deletes"]) == (1, 2, 1, 2)
    assert stats["hit_rate"] == pytest.approx(1 / 3)
    assert stats["backend"] == "redis" and stats["fallback_active"] is False


async def test_none_is_cached_and_told_apart_from_a_miss(cache):
    await cache.set("nothing", None)
    assert await cache.get("nothing", MISSING) is None
    assert await cache.exists("nothing") is True
    assert await cache.get("absent", MISSING) is MISSING
    assert await cache.mget(["nothing", "absent"]) == {"nothing": None}


async def test_ttl_forms_expire_and_default(redis_server, raw, namespace):
    async with ti.CacheManager(redis_url=redis_server.url, namespace=namespace, default_ttl=120) as cache:
        await cache.set("short", 1, ttl=0.3)
        await cache.set("delta", 1, ttl=timedelta(minutes=2))
        await cache.set("default", 1)
        assert 110_000 < raw.pttl(f"{namespace}:delta") <= 120_000
        assert 110_000 < raw.pttl(f"{namespace}:default") <= 120_000
        assert await cache.get("short") == 1
        await asyncio.sleep(0.5)
        assert await cache.get("short", MISSING) is MISSING


async def test_mget_is_one_mget_and_mset_one_command_with_ttls(cache, raw, namespace):
    mapping = {f"k{i}": {"i": i} for i in range(100)}
    await cache.mset({"warm-up": 1})  # the first call loads the script (NOSCRIPT, SCRIPT LOAD)
    evalsha, sets = command_calls(raw, "evalsha"), command_calls(raw, "set")
    assert await cache.mset(mapping, ttl=60) is True
    assert command_calls(raw, "evalsha") == evalsha + 1
    assert all(55_000 < raw.pttl(f"{namespace}:k{i}") <= 60_000 for i in range(100))
    assert command_calls(raw, "set") - sets == 100  # the SETs ran server-side, inside the script

    mgets = command_calls(raw, "mget")
    found = await cache.mget([*mapping, "missing"])
    assert command_calls(raw, "mget") == mgets + 1
    assert found == mapping
    assert cache.get_stats()["misses"] == 1


async def test_clear_by_pattern_and_whole_namespace(cache, redis_server, raw, namespace):
    async with ti.CacheManager(redis_url=redis_server.url, namespace=namespace + "-other") as other:
        await other.set("user:1", "kept")
        await cache.mset({"user:1": 1, "user:2": 2, "order:1": 3})
        assert await cache.clear("user:*") == 2
        assert await cache.get("order:1") == 3
        assert await cache.clear() == 1
        assert stored_keys(raw, namespace) == set()
        assert await other.get("user:1") == "kept"


async def test_pattern_clear_of_ten_thousand_keys(cache, raw, namespace):
    loaded = await cache.warm_cache(lambda: ((f"bulk:{i}", i) for i in range(10_000)), chunk_size=2000)
    await cache.set("keep:1", "still here")
    assert loaded == 10_000
    assert await cache.clear("bulk:*") == 10_000
    assert stored_keys(raw, namespace) == {f"{namespace}:keep:1".encode()}


async def test_glob_characters_in_namespace_are_escaped(redis_server, raw):
    tag = uuid.uuid4().hex[:8]
    async with (
        ti.CacheManager(redis_url=redis_server.url, namespace=f"g{tag}*[ab]") as globby,
        ti.CacheManager(redis_url=redis_server.url, namespace=f"g{tag}xa") as lookalike,
    ):
        await globby.set("k", 1)
        await lookalike.set("k", 2)
        assert await globby.clear() == 1
        assert await lookalike.get("k") == 2
        await lookalike.clear()


async def test_namespaces_isolate_two_managers(redis_server, namespace):
    async with (
        ti.CacheManager(redis_url=redis_server.url, namespace=namespace + "a") as a,
        ti.CacheManager(redis_url=redis_server.url, namespace=namespace + "b") as b,
    ):
        await a.set("same", "from a")
        await b.set("same", "from b")
        assert (await a.get("same"), await b.get("same")) == ("from a", "from b")
        await a.delete("same")
        assert await b.get("same") == "from b"
        await b.clear()


async def test_compression_shrinks_what_redis_stores(redis_server, raw, namespace):
    value = {"rows": ["the same row of text"] * 500}
    async with (
        ti.CacheManager(redis_url=redis_server.url, namespace=namespace) as packed,
        ti.CacheManager(
            redis_url=redis_server.url, namespace=namespace + "p", enable_compression=False
        ) as plain,
    ):
        await packed.set("big", value)
        await plain.set("big", value)
        await packed.set("small", "tiny")
        assert raw.strlen(f"{namespace}:big") * 10 < raw.strlen(f"{namespace}p:big")
        assert await packed.get("big") == value == await plain.get("big")
        assert await plain.get("big") == await packed.get("big")
        assert raw.get(f"{namespace}:small")[1] & 0x10 == 0  # under the threshold: not compressed
        await plain.clear()


async def test_warm_cache_accepts_async_loaders_pairs_and_ttl(cache, raw, namespace):
    async def load():
        return [("w:1", "one"), ("w:2", "two"), ("w:3", "three")]

    async def stream():
        for i in range(5):
            yield f"s:{i}", i

    assert await cache.warm_cache(load, ttl=50, chunk_size=2) == 3
    assert await cache.warm_cache(stream) == 5
    assert await cache.mget(["w:1", "w:3", "s:4"]) == {"w:1": "one", "w:3": "three", "s:4": 4}
    assert 45_000 < raw.pttl(f"{namespace}:w:2") <= 50_000


async def test_bad_input_is_rejected_and_nothing_is_written(cache, raw, namespace):
    for call in (
        cache.get(1),
        cache.set(b"k", 1),
        cache.delete(None),
        cache.exists(1.5),
        cache.mget(["ok", 2]),
        cache.mget("abc"),
        cache.mset({"ok": 1, 3: 1}),
        cache.set("k", 1, ttl="10"),
    ):
        with pytest.raises(TypeError):
            await call
    for ttl in (0, -1, timedelta(0)):
        with pytest.raises(ValueError):
            await cache.set("k", 1, ttl=ttl)
    with pytest.raises(ti.CacheSerializationError, match=r"'bad'.*Path") as raised:
        await cache.set("bad", Path("/"))
    assert isinstance(raised.value, TypeError)
    with pytest.raises(ti.CacheSerializationError, match="set"):
        await cache.mset({"fine": 1, "also-bad": {1, 2}})
    assert stored_keys(raw, namespace) == set()
    with pytest.raises(ValueError, match="serialization"):
        ti.CacheManager(serialization="xml")


async def test_foreign_and_corrupted_payloads_are_misses_logged_once(cache, raw, namespace, caplog):
    raw.set(f"{namespace}:foreign", b'{"plain": "json"}')
    raw.set(f"{namespace}:corrupt", bytes((0xC1, 0x10)) + b"not zlib at all")
    raw.set(f"{namespace}:empty", b"")
    with caplog.at_level(logging.DEBUG, logger="telemetry_infra.cache"):
        assert await cache.get("foreign", MISSING) is MISSING
        assert await cache.get("corrupt", MISSING) is MISSING
        assert await cache.mget(["empty", "foreign"]) == {}
    stats = cache.get_stats()
    assert (stats["errors"], stats["misses"], stats["hits"]) == (4, 4, 0)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "foreign" in warnings[0].getMessage()


async def test_json_handles_documented_types(cache):
    import datetime as dt
    from dataclasses import dataclass

    @dataclass
    class Point:
        x: int
        y: int

    when = dt.datetime(2026, 1, 15, 23, 0, tzinfo=dt.UTC)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    await cache.set("types", {"when": when, "id": ident, "point": Point(1, 2), "tuple": (1, 2)})
    assert await cache.get("types") == {
        "when": "2026-01-15T23:00:00+00:00",
        "id": "12345678-1234-5678-1234-567812345678",
        "point": {"x": 1, "y": 2},
        "tuple": [1, 2],
    }


class _Boom:
    """Unpickling this creates a file: proof that a payload was executed."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


async def test_tampered_or_foreign_pickle_is_never_unpickled(redis_server, raw, namespace, tmp_path):
    evidence = tmp_path / "executed"
    async with ti.CacheManager(
        redis_url=redis_server.url, namespace=namespace, serialization="pickle", signing_key="k1"
    ) as cache:
        await cache.set("obj", {"ok": (1, 2)})
        genuine = raw.get(f"{namespace}:obj")
        evil = pickle.dumps(_Boom(str(evidence)))
        tampered = genuine[:2] + genuine[2:34] + evil  # a valid-looking header and MAC, other body
        raw.set(f"{namespace}:tampered", tampered)
        forged = Codec("pickle", signing_key="someone-else").encode("x", _Boom(str(evidence)))
        raw.set(f"{namespace}:forged", forged)
        assert await cache.get("tampered", MISSING) is MISSING
        assert await cache.get("forged", MISSING) is MISSING
        assert not evidence.exists()
        assert cache.get_stats()["errors"] == 2
        assert await cache.get("obj") == {"ok": (1, 2)}


async def test_pickle_entries_are_shared_by_the_signing_key(redis_server, namespace):
    options = {"redis_url": redis_server.url, "namespace": namespace, "serialization": "pickle"}
    async with (
        ti.CacheManager(**options, signing_key="shared") as writer,
        ti.CacheManager(**options, signing_key="shared") as reader,
        ti.CacheManager(**options, signing_key="other") as stranger,
    ):
        await writer.set("v", {1, 2, 3})
        assert await reader.get("v") == {1, 2, 3}
        assert await stranger.get("v", MISSING) is MISSING
        await writer.clear()


async def test_200_concurrent_operations_through_a_5_connection_pool(redis_server, namespace):
    async with ti.CacheManager(redis_url=redis_server.url, namespace=namespace, max_connections=5) as cache:

        async def one(i: int):
            await cache.set(f"c:{i}", i)
            return await cache.get(f"c:{i}")

        results = await asyncio.gather(*(one(i) for i in range(200)))
        assert results == list(range(200))
        stats = cache.get_stats()
        assert (stats["errors"], stats["fallback_active"]) == (0, False)
        await cache.clear()


async def test_health_check_pings_and_close_is_idempotent(cache):
    health = await cache.health_check()
    assert health["status"] == "healthy" and health["backend"] == "redis"
    assert health["redis"]["connected"] is True and health["redis"]["latency_ms"] > 0
    assert set(health["stats"]) >= {"hits", "misses", "hit_rate", "evictions", "memory_items"}
    await cache.close()
    await cache.close()
    assert (await cache.health_check())["status"] == "unhealthy"
    with pytest.raises(ti.CacheClosedError):
        await cache.get("k")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner, max_size=6),
    max_leaves=30,
)


@pytest.mark.parametrize("serialization", ["json", "pickle"])
@pytest.mark.parametrize("threshold", [0, 1024])
def test_values_round_trip_through_redis(redis_server, serialization, threshold):
    """Hypothesis over JSON-able values, with (threshold 0) and without compression."""
    loop = asyncio.new_event_loop()
    cache = ti.CacheManager(
        redis_url=redis_server.url,
        namespace=f"rt-{uuid.uuid4().hex[:8]}",
        serialization=serialization,
        signing_key="k",
        compression_threshold=threshold,
    )

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(value=json_values)
    def round_trip(value):
        loop.run_until_complete(cache.set("v", value))
        assert loop.run_until_complete(cache.get("v", MISSING)) == value

    try:
        round_trip()
    finally:
        loop.run_until_complete(cache.clear())
        loop.run_until_complete(cache.close())
        loop.close()
