"""The near cache on Sentinel and Cluster: kept exact across nodes and failovers (real topologies)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from caches import NEAR_PROPAGATION_P99_S
from redis.crc import key_slot
from redis.sentinel import Sentinel
from topologies import planned_failover

from telemetry_infra.cache import CacheManager
from telemetry_infra.testing import RedisCluster, RedisSentinel

FAST = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5, "probe_interval": 0.2}


@pytest.fixture(scope="module")
def sentinel_set() -> Iterator[RedisSentinel]:
    with RedisSentinel() as started:
        yield started


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as started:
        yield started


async def _pair(url: str, namespace: str) -> tuple[CacheManager, CacheManager]:
    a = CacheManager(url, namespace=namespace, near_cache=True, **FAST)
    b = CacheManager(url, namespace=namespace, **FAST)
    await a.initialize()
    await b.initialize()
    assert a._near.tier.tracking, a._near.channel.last_error
    return a, b


@pytest.fixture
async def closing() -> AsyncIterator[list[CacheManager]]:
    managers: list[CacheManager] = []
    yield managers
    for manager in managers:
        await manager.close()


async def _served_near(a: CacheManager, key: str, expected: object, timeout_s: float = 10.0) -> None:
    """``a`` holds ``key`` near (a read that does not reach Redis) within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        before = a.get_stats()["near_hits"]
        assert await a.get(key) == expected
        if a.get_stats()["near_hits"] > before:
            return
        error = a._near.channel.last_error
        assert time.monotonic() < deadline, f"{key!r} not served from the near tier: {error}"
        await asyncio.sleep(0.005)


async def _propagation_p99(a: CacheManager, b: CacheManager, keys: list[str]) -> float:
    """B overwrites each key A holds near; how long until A returns the new value (p99, s)."""
    for key in keys:
        assert await b.set(key, "old")
        await _served_near(a, key, "old")
    delays = []
    for index, key in enumerate(keys):
        assert await a.get(key) == "old"
        assert await b.set(key, index)
        written = time.perf_counter()
        while (value := await a.get(key)) != index:
            assert value == "old"
            assert time.perf_counter() - written < 2.0, f"A still returns the old value of {key!r}"
            await asyncio.sleep(0.0005)
        delays.append(time.perf_counter() - written)
    delays.sort()
    return delays[int(len(delays) * 0.99) - 1]


def _sentinel_primary(topology: RedisSentinel):
    return Sentinel(topology.sentinel_addresses, socket_timeout=1).master_for("mymaster", socket_timeout=1)


# -- Sentinel -------------------------------------------------------------------------


async def test_sentinel_b_writes_reach_a_near_tier_fast(sentinel_set: RedisSentinel, closing) -> None:
    a, b = await _pair(sentinel_set.url, "nt-s-p99")
    closing += [a, b]
    p99 = await _propagation_p99(a, b, [f"k{i}" for i in range(100)])
    assert p99 < NEAR_PROPAGATION_P99_S, f"p99 {p99 * 1000:.1f} ms"
    health = await a.health_check()
    assert health["status"] == "healthy" and health["near"]["tracking"], health


async def _no_stale_read_across(switch, a: CacheManager, b: CacheManager, keys: list[str]) -> None:
    """A holds ``keys`` near; ``switch()`` moves the primary; B writes new values: A never
    returns a value the new primary does not hold, and serves near again afterwards."""
    for key in keys:
        assert await b.set(key, "before")
        await _served_near(a, key, "before")
    await asyncio.to_thread(switch)
    deadline = time.monotonic() + 20
    for key in keys:
        while not await b.set(key, "after"):
            assert time.monotonic() < deadline, "B cannot write after the failover"
            await asyncio.sleep(0.02)
    for key in keys:
        assert await a.get(key) == "after", f"A served a value of {key!r} older than the failover"
    for key in keys:
        await _served_near(a, key, "after", timeout_s=15)
    assert await b.set(keys[0], "later")
    deadline = time.monotonic() + 1
    while (value := await a.get(keys[0])) != "later":
        assert value == "after" and time.monotonic() < deadline, "tracking not re-established"
        await asyncio.sleep(0.005)


@pytest.mark.slow
async def test_sentinel_manual_failover_flushes_and_tracks_the_new_primary(
    sentinel_set: RedisSentinel, closing
) -> None:
    a, b = await _pair(sentinel_set.url, "nt-s-manual")
    closing += [a, b]
    flushes = a._near.tier.flushes
    await _no_stale_read_across(lambda: planned_failover(sentinel_set), a, b, [f"k{i}" for i in range(20)])
    assert a._near.tier.flushes > flushes, "the near tier was not flushed on the switch"
    host, port = sentinel_set.master_address()
    near = (await a.health_check())["near"]
    assert near["tracking"] and near["node"] == f"{host}:{port}", near


@pytest.mark.slow
async def test_sentinel_killed_primary_flushes_and_tracks_the_new_primary(
    sentinel_set: RedisSentinel, closing
) -> None:
    a, b = await _pair(sentinel_set.url, "nt-s-kill")
    closing += [a, b]
    victims = []

    def kill() -> None:
        victims.append(sentinel_set.kill_primary())

    try:
        await _no_stale_read_across(kill, a, b, [f"k{i}" for i in range(20)])
    finally:
        if victims:
            await asyncio.to_thread(sentinel_set.restart, victims[0])
    assert _sentinel_primary(sentinel_set).get("nt-s-kill:k1") is not None


@pytest.mark.slow
async def test_sentinel_primary_demoted_without_disconnecting_is_left(
    sentinel_set: RedisSentinel, closing
) -> None:
    """A primary demoted in place (by hand here, as after a partition heals) keeps its clients:
    the channel notices it is no longer the primary, the near tier is flushed, and a write
    only the old primary acknowledged is not served once the new one is named."""
    a, b = await _pair(sentinel_set.url, "nt-s-demote")
    closing += [a, b]
    old = sentinel_set.current_primary()
    new = next(node for node in sentinel_set.data_nodes if node is not old)
    await asyncio.to_thread(_wait_replica_in_sync, new)
    assert await b.set("k", "before")
    await _served_near(a, "k", "before")
    with old.client() as primary:
        assert primary.execute_command("WAIT", 1, 5000) == 1  # "before" is on the replica too
    with new.client() as promoted:
        promoted.execute_command("REPLICAOF", "NO", "ONE")
    assert await b.set("k", "lost")  # acknowledged by the old primary only
    assert await a._near.channel.sync()
    await _served_near(a, "k", "lost")
    with old.client() as demoted:
        demoted.execute_command("REPLICAOF", new.host, new.port)
    for sentinel in sentinel_set.sentinels:
        with sentinel.client() as client:
            client.execute_command("SENTINEL", "REMOVE", sentinel_set.service_name)
            client.execute_command("SENTINEL", "MONITOR", sentinel_set.service_name, new.host, new.port, 2)
    deadline = time.monotonic() + 5
    while (await a.health_check())["near"]["node"] != f"{new.host}:{new.port}":
        assert time.monotonic() < deadline, "the invalidation channel still tracks the demoted primary"
        await asyncio.sleep(0.1)
    assert await a.get("k") == "before", (a.get_stats(), await a.health_check())
    await _served_near(a, "k", "before")


def _wait_replica_in_sync(node) -> None:
    deadline = time.monotonic() + 20
    while True:
        with node.client(socket_timeout=1) as client:
            info = client.info("replication")
        if info["role"] == "slave" and info.get("master_link_status") == "up":
            return
        assert time.monotonic() < deadline, f"{node.port} is not a replica in sync"
        time.sleep(0.1)


# -- Cluster --------------------------------------------------------------------------


def _keys_on_every_node(cluster: RedisCluster, namespace: str, count: int) -> list[str]:
    keys = [f"k{i}" for i in range(count)]
    owners = {(node.host, node.port) for node in (cluster.primary_for(f"{namespace}:{k}") for k in keys)}
    assert len(owners) == 3, "the keys should span every primary"
    return keys


async def test_cluster_b_writes_reach_a_near_tier_fast(cluster: RedisCluster, closing) -> None:
    a, b = await _pair(cluster.url, "nt-c-p99")
    closing += [a, b]
    keys = _keys_on_every_node(cluster, "nt-c-p99", 100)
    assert len({key_slot(f"nt-c-p99:{key}".encode()) for key in keys}) > 90
    p99 = await _propagation_p99(a, b, keys)
    assert p99 < NEAR_PROPAGATION_P99_S, f"p99 {p99 * 1000:.1f} ms"
    health = await a.health_check()
    nodes = health["near"]["nodes"]
    assert len(nodes) == 3 and all(node["tracking"] for node in nodes), health["near"]
    assert health["status"] == "healthy"


async def test_cluster_batch_written_across_every_node_is_seen(cluster: RedisCluster, closing) -> None:
    a, b = await _pair(cluster.url, "nt-c-batch")
    closing += [a, b]
    keys = _keys_on_every_node(cluster, "nt-c-batch", 30)
    assert await b.mset(dict.fromkeys(keys, 1))
    for key in keys:
        await _served_near(a, key, 1)
    assert await b.mset(dict.fromkeys(keys, 2))
    assert await a._near.channel.sync()
    assert await a.mget(keys) == dict.fromkeys(keys, 2)


@pytest.mark.slow
async def test_cluster_killed_primary_flushes_and_tracks_the_promoted_replica(
    cluster: RedisCluster, closing
) -> None:
    a, b = await _pair(cluster.url, "nt-c-kill")
    closing += [a, b]
    keys = _keys_on_every_node(cluster, "nt-c-kill", 30)
    victim_address = (cluster.primary_for("nt-c-kill:k0").host, cluster.primary_for("nt-c-kill:k0").port)
    on_victim = [key for key in keys if (cluster.primary_for(f"nt-c-kill:{key}").port) == victim_address[1]]
    victims = []

    def kill() -> None:
        victims.append(cluster.kill_primary("nt-c-kill:k0"))

    try:
        await _no_stale_read_across(kill, a, b, keys)
    finally:
        if victims:
            await asyncio.to_thread(cluster.restart, victims[0])
    addresses = {node["address"] for node in (await a.health_check())["near"]["nodes"]}
    assert f"{victim_address[0]}:{victim_address[1]}" not in addresses and len(addresses) == 3
    assert on_victim


def test_cluster_near_tier_follows_the_event_loop(cluster: RedisCluster) -> None:
    """One manager used by two ``asyncio.run()`` calls: the watcher and the per-primary
    channels start again on the second loop, and the near tier serves there too."""
    cache = CacheManager(cluster.url, namespace="nt-c-loops", near_cache=True, **FAST)
    keys = _keys_on_every_node(cluster, "nt-c-loops", 30)

    async def fill_and_serve() -> None:
        assert await cache.mset(dict.fromkeys(keys, 1))
        for key in keys:
            await _served_near(cache, key, 1)
        nodes = (await cache.health_check())["near"]["nodes"]
        assert len(nodes) == 3 and all(node["tracking"] for node in nodes), nodes

    asyncio.run(fill_and_serve())
    asyncio.run(fill_and_serve())
    asyncio.run(cache.close())
