"""CacheManager on a real Sentinel set (primary, replica, 3 Sentinels) through a redis+sentinel:// URL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from check_command import redis_check_lines
from failover_load import FailoverLoad
from redis.sentinel import Sentinel
from topologies import planned_failover

import telemetry_infra as ti
from telemetry_infra.cache import CacheManager
from telemetry_infra.testing import RedisSentinel, free_port


@pytest.fixture(scope="module")
def topology() -> Iterator[RedisSentinel]:
    with RedisSentinel() as started:
        yield started


def _primary(topology: RedisSentinel):
    return Sentinel(topology.sentinel_addresses, socket_timeout=1).master_for("mymaster", socket_timeout=1)


async def test_every_operation_under_sentinel(topology: RedisSentinel) -> None:
    cache = CacheManager(topology.url, namespace="ops")
    await cache.initialize()
    assert cache.backend_name == "redis-sentinel"
    assert await cache.set("a", [1, 2], ttl=30)
    assert _primary(topology).pttl("ops:a") > 0
    assert await cache.get("a") == [1, 2] and await cache.exists("a")
    assert await cache.delete("a") and await cache.get("a") is None

    mapping = {f"k{i}": i for i in range(200)}
    assert await cache.mset(mapping, ttl=60)
    assert await cache.mget([*mapping, "absent"]) == mapping
    assert await cache.warm_cache(lambda: {"w1": 1, "w2": 2}, chunk_size=1) == 2

    @ti.cached(ttl=60)
    async def double(n: int) -> int:
        return 2 * n

    ti.set_default_cache_manager(cache)
    try:
        assert await double(21) == 42 and await double(21) == 42
    finally:
        ti.set_default_cache_manager(None)

    _primary(topology).set("outside", b"1")
    assert await cache.clear() >= 203
    assert _primary(topology).get("outside") == b"1"

    health = await cache.health_check()
    assert health["status"] == "healthy" and health["backend"] == "redis-sentinel"
    sentinels = [node for node in health["redis"]["nodes"] if node["role"] == "sentinel"]
    host, port = topology.master_address()
    primary = f"{host}:{port}"
    assert len(sentinels) == 3 and all(node["connected"] and node["primary"] == primary for node in sentinels)
    assert {"address": primary, "role": "primary", "connected": True} in health["redis"]["nodes"]
    assert cache.get_stats()["errors"] == 0
    await cache.close()


async def test_a_manual_failover_is_followed_without_an_outage(topology: RedisSentinel) -> None:
    """SENTINEL FAILOVER demotes the primary the pool is connected to: writes follow the new one."""
    cache = CacheManager(topology.url, namespace="demote")
    assert await cache.set("before", 1)
    await asyncio.to_thread(planned_failover, topology)

    assert await cache.set("after", 2)  # the pool was connected to the demoted primary
    assert await cache.delete("before")
    assert await cache.get("after") == 2 and await cache.get("before") is None
    assert cache.get_stats()["errors"] == 0 and not cache.fallback_active
    await cache.close()


@pytest.mark.slow
async def test_a_primary_killed_under_20_tasks(topology: RedisSentinel) -> None:
    cache = CacheManager(topology.url, namespace="fo", socket_timeout=0.5, socket_connect_timeout=0.5)
    await cache.initialize()
    load = FailoverLoad(cache)
    running = await load.run()
    await asyncio.sleep(1.0)
    first = topology.master_address()

    def kill() -> tuple[object, float]:
        return topology.kill_primary(wait=False), time.monotonic()

    victim, killed_at = await asyncio.to_thread(kill)
    load.killed_at = killed_at
    while await asyncio.to_thread(_named_primary, topology) in {first, None}:
        pass
    failover_s = time.monotonic() - killed_at
    while cache.fallback_active and time.monotonic() < killed_at + failover_s + 2.0:  # noqa: ASYNC110 - polls other processes
        await asyncio.sleep(0.02)
    back_on_redis = time.monotonic()
    await asyncio.sleep(1.0)
    await load.stop(running)

    landed = load.first_landing_after(back_on_redis)
    print(f"sentinel failover {failover_s:.2f} s, writes on Redis again {back_on_redis - killed_at:.2f} s")
    assert load.exceptions == []
    assert load.wrong == []
    assert not cache.fallback_active and back_on_redis - killed_at <= failover_s + 2.0
    assert landed is not None
    assert _primary(topology).exists(f"fo:{load.landed[-1][0]}")  # the last confirmed write is in Redis
    await cache.close()
    await asyncio.to_thread(topology.restart, victim)


def _named_primary(topology: RedisSentinel) -> tuple[str, int] | None:
    try:
        return topology.master_address()
    except Exception:
        return None


def test_check_asks_every_sentinel_and_the_primary(topology: RedisSentinel) -> None:
    host, port = topology.master_address()
    dead = free_port()
    with_dead = topology.url.replace("redis+sentinel://", f"redis+sentinel://127.0.0.1:{dead},")
    unknown_service = topology.url.replace("/mymaster", "/unknown")
    [answers], [dead_one], [unknown] = redis_check_lines(topology.url, with_dead, unknown_service)
    assert answers.split()[1] == "ok" and f"name primary {host}:{port}, which answers" in answers
    assert dead_one.split()[1] == "FAIL" and f"Sentinel 127.0.0.1:{dead} does not answer" in dead_one
    assert unknown.split()[1] == "FAIL" and "knows no service 'unknown'" in unknown


async def test_readonly_from_a_demoted_primary_is_followed_not_an_outage() -> None:
    """A primary demoted without its clients being disconnected (here by hand, as after a
    partition) answers the pooled connection's write with READONLY: the cache asks the
    Sentinels again and retries once on the primary they name now."""
    with RedisSentinel() as own:
        cache = CacheManager(own.url, namespace="ro")
        assert await cache.set("before", 1)  # leaves an idle pooled connection to the primary
        old = own.current_primary()
        new = next(node for node in own.data_nodes if node is not old)
        with new.client() as promoted, old.client() as demoted:
            promoted.execute_command("REPLICAOF", "NO", "ONE")
            demoted.execute_command("REPLICAOF", new.host, new.port)
        for sentinel in own.sentinels:  # the Sentinels now name the new primary
            with sentinel.client() as client:
                client.execute_command("SENTINEL", "REMOVE", own.service_name)
                client.execute_command("SENTINEL", "MONITOR", own.service_name, new.host, new.port, 2)
        assert own.master_address() == (new.host, new.port)

        assert await cache.set("after", 2)
        assert not cache.fallback_active and cache.get_stats()["errors"] == 0
        with new.client() as promoted:
            assert promoted.get("ro:after") is not None
        assert await cache.get("after") == 2
        await cache.close()
