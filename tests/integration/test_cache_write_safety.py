"""Writes Redis refuses, times out or cannot hold never leave a wrong, stale or wiped value.

Every test owns its redis-server(s): some change ``maxmemory``, pause writes or kill it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from functools import partial

import pytest
from caches import cache_manager, wait_until

import telemetry_infra as ti
from telemetry_infra.testing import RedisServer

SOCKET_TIMEOUT = 0.25
PROBE_INTERVAL = 0.2
MISSING = object()

manager = partial(
    cache_manager,
    socket_timeout=SOCKET_TIMEOUT,
    socket_connect_timeout=SOCKET_TIMEOUT,  # also where a test shortens socket_timeout
    probe_interval=PROBE_INTERVAL,
    namespace="safety",
)


def out_of_memory(server: RedisServer) -> None:
    """``maxmemory`` below what is used, ``noeviction``: Redis refuses every write with OOM."""
    with server.client() as raw:
        raw.config_set("maxmemory-policy", "noeviction")
        raw.config_set("maxmemory", 1)


def memory_back(server: RedisServer) -> None:
    with server.client() as raw:
        raw.config_set("maxmemory", 0)


@pytest.fixture
def replica(redis_restartable: RedisServer) -> Iterator[RedisServer]:
    """A second private redis-server replicating ``redis_restartable``: what a demoted
    primary answers (reads served, writes refused with ``READONLY``)."""
    server = RedisServer().start()
    with redis_restartable.client() as primary:  # the full sync at once, not after 5 s
        primary.config_set("repl-diskless-sync-delay", 0)
    with server.client() as raw:
        raw.execute_command("REPLICAOF", redis_restartable.host, redis_restartable.port)
        deadline = time.monotonic() + 10
        while raw.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "replica never synced"
            time.sleep(0.05)
    yield server
    server.close()


def replicated(replica: RedisServer, key: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    with replica.client() as raw:
        while not raw.exists(key):
            assert time.monotonic() < deadline, f"{key} never reached the replica"
            time.sleep(0.02)


# ------------------------------------------------------------------ item 4: big mset


async def test_a_huge_mset_is_written_whole_and_wipes_nothing(redis_restartable):
    raw = redis_restartable.client()
    items = {f"bulk:{i}": i for i in range(200_000)}
    # one command for 200,000 items keeps Redis busy far longer than 100 ms
    async with manager(redis_restartable.url, socket_timeout=0.1) as cache:
        raw.set("safety:other-worker", b"written by another process")
        assert await cache.mset(items, ttl=600) is True
        await asyncio.sleep(PROBE_INTERVAL * 3)  # a (wrong) recovery would have replayed by now
        assert cache.get_stats()["fallbacks"] == 0, "a healthy Redis was treated as an outage"
        assert raw.dbsize() == len(items) + 1
        assert raw.get("safety:other-worker") is not None
        assert await cache.mget(["bulk:0", "bulk:199999"]) == {"bulk:0": 0, "bulk:199999": 199999}


async def test_mset_commands_are_bounded_in_items_and_bytes(redis_restartable):
    raw = redis_restartable.client()

    def script_calls() -> int:
        return raw.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)

    async with manager(redis_restartable.url, enable_compression=False) as cache:
        assert await cache.mset({"warm": 1}) is True  # loads the script
        before = script_calls()
        assert await cache.mset({f"n{i}": i for i in range(2500)}) is True
        assert script_calls() - before == 3  # 1000 + 1000 + 500 items
        before = script_calls()
        assert await cache.mset({f"big{i}": "x" * 400_000 for i in range(5)}) is True
        assert script_calls() - before == 3  # at most 1 MiB a command: 2 + 2 + 1 values
        assert raw.strlen("safety:big4") > 400_000 and raw.exists("safety:n2499")


async def test_a_write_timeout_on_an_answering_redis_keeps_the_breaker_closed(redis_restartable):
    raw = redis_restartable.client()
    async with manager(redis_restartable.url) as cache:
        await cache.set("k", "old")
        raw.execute_command("CLIENT", "PAUSE", 600, "WRITE")  # reads and PING still answer
        assert await cache.set("k", "new") is False  # not confirmed: not True
        assert not cache.fallback_active
        assert await cache.get("other", MISSING) is MISSING  # Redis answers reads meanwhile
        assert await cache.get("k", MISSING) is MISSING  # neither the old nor an unconfirmed value
        raw.execute_command("CLIENT", "UNPAUSE")
        assert await cache.set("j", 1) is True  # a write lands: the unconfirmed key is removed too
        assert await cache.get("k", MISSING) is MISSING
        assert raw.exists("safety:k") == 0
        assert cache.get_stats()["fallbacks"] == 0


async def test_an_outage_batch_larger_than_memory_is_refused_not_half_kept(redis_restartable):
    async with manager(redis_restartable.url, memory_cache_size=10, failure_threshold=1) as cache:
        await cache.set("kept", "during outage")
        redis_restartable.kill()
        assert await cache.get("x", MISSING) is MISSING
        assert cache.fallback_active
        await cache.set("kept", "during outage")
        assert await cache.mset({f"k{i}": i for i in range(11)}) is False
        assert await cache.mget([f"k{i}" for i in range(11)]) == {}
        assert await cache.get("kept") == "during outage"  # the batch evicted nothing
        assert await cache.mset({f"k{i}": i for i in range(5)}) is True


# ------------------------------------------------------------------ item 5: refused writes


async def test_out_of_memory_write_leaves_no_stale_value_and_says_why(redis_restartable, caplog):
    raw = redis_restartable.client()
    async with manager(redis_restartable.url) as cache:
        await cache.set("session", "old")
        await cache.mset({"a": 1, "b": 2})
        out_of_memory(redis_restartable)
        with caplog.at_level(logging.WARNING, logger="telemetry_infra.cache"):
            assert await cache.set("session", "new") is False
        assert await cache.get("session", MISSING) is MISSING  # not the old value
        assert raw.exists("safety:session") == 0  # UNLINK works under OOM: gone for everyone
        assert await cache.mset({"a": 10, "b": 20}) is False
        assert await cache.mget(["a", "b"]) == {}
        assert "command not allowed when used memory" in caplog.text  # Redis's own message

        health = await cache.health_check()
        assert health["status"] == "degraded" and not cache.fallback_active
        assert "OutOfMemoryError" in health["redis"]["write_error"]

        memory_back(redis_restartable)
        assert await cache.set("session", "newer") is True
        assert await cache.get("session") == "newer"
        assert (await cache.health_check())["status"] == "healthy"


async def test_cached_refresh_under_out_of_memory_does_not_keep_serving_the_old_result(redis_restartable):
    calls = []

    @ti.cached(ttl=60)
    async def load(user: int) -> dict:
        calls.append(user)
        return {"user": user, "call": len(calls)}

    async with manager(redis_restartable.url) as cache:
        assert await load(7, _cache_manager=cache) == {"user": 7, "call": 1}
        out_of_memory(redis_restartable)
        assert await load(7, _cache_manager=cache, _cache_refresh=True) == {"user": 7, "call": 2}
        assert await load(7, _cache_manager=cache) != {"user": 7, "call": 1}


async def test_read_only_replica_refuses_writes_and_deletes_loudly(redis_restartable, replica):
    async with manager(redis_restartable.url) as writer:
        await writer.set("session", "admin session")
        await writer.set("profile", "old profile")
        await writer.set("prefs", "old prefs")
    for key in ("session", "profile", "prefs"):
        replicated(replica, f"safety:{key}")

    async with manager(replica.url) as cache:  # a demoted primary: reads work, writes do not
        assert await cache.get("session") == "admin session"
        with pytest.raises(ti.CacheWriteError, match=r"ReadOnlyError: .*read only replica") as refused:
            await cache.delete("session")
        assert isinstance(refused.value, ti.CacheError)
        assert await cache.get("session", MISSING) is MISSING  # not served by this manager
        assert await cache.exists("session") is False
        with pytest.raises(ti.CacheWriteError):  # Redis refuses UNLINK even for a missing key
            await cache.delete("never-existed")
        assert await cache.set("profile", "new profile") is False
        assert await cache.get("profile", MISSING) is MISSING
        assert await cache.mget(["profile", "session"]) == {}
        assert await cache.exists("prefs") is True
        with pytest.raises(ti.CacheWriteError, match="ReadOnlyError"):
            await cache.clear("pref*")
        assert await cache.exists("prefs") is False
        assert await cache.get("prefs", MISSING) is MISSING
        assert not cache.fallback_active
        health = await cache.health_check()
        assert health["status"] == "degraded"
        assert "ReadOnlyError" in health["redis"]["write_error"]


# ------------------------------------------------------------------ item 7: outage copies


async def test_outage_copies_do_not_come_back_in_the_next_outage(redis_restartable):
    options = {"failure_threshold": 1}
    async with manager(redis_restartable.url, **options) as a, manager(redis_restartable.url, **options) as b:
        redis_restartable.kill()
        assert await a.get("k", MISSING) is MISSING  # outage 1: A serves from memory
        assert await b.get("k", MISSING) is MISSING
        assert a.fallback_active and b.fallback_active
        assert await a.set("k", "v1 (A, outage 1)") is True
        redis_restartable.start()
        await wait_until(lambda: not (a.fallback_active or b.fallback_active), PROBE_INTERVAL + 1.0)
        assert await b.set("k", "v2 (B, after recovery)") is True
        assert await a.get("k") == "v2 (B, after recovery)"

        redis_restartable.kill()  # outage 2
        assert await a.get("k", MISSING) is MISSING
        assert a.fallback_active
        assert a.get_stats()["memory_items"] == 0
