"""CacheManager on a real local Redis Cluster (3 primaries, 3 replicas) through a redis+cluster:// URL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from check_command import redis_check_lines
from failover_load import FailoverLoad
from opentelemetry import trace
from prometheus_client.parser import text_string_to_metric_families
from redis.cluster import ClusterNode
from redis.cluster import RedisCluster as ClusterClient
from redis.crc import key_slot

import telemetry_infra as ti
from telemetry_infra.cache import CacheManager
from telemetry_infra.testing import OTLPReceiver, RedisCluster, free_port


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as topology:
        yield topology


@pytest.fixture
def raw(cluster: RedisCluster) -> Iterator[ClusterClient]:
    client = ClusterClient(startup_nodes=[ClusterNode(h, p) for h, p in cluster.startup_nodes])
    yield client
    client.close()


def _manager(cluster: RedisCluster, namespace: str, **options: object) -> CacheManager:
    return CacheManager(cluster.url, namespace=namespace, **options)


async def test_every_operation_on_a_cluster(cluster: RedisCluster, raw: ClusterClient) -> None:
    cache = _manager(cluster, "ops")
    await cache.initialize()
    assert cache.backend_name == "redis-cluster"
    assert await cache.set("a", {"x": 1}, ttl=30)
    assert await cache.get("a") == {"x": 1}
    assert await cache.exists("a") and not await cache.exists("b")
    assert 0 < raw.pttl("ops:a") <= 30_000
    assert await cache.delete("a") and not await cache.delete("a")
    assert await cache.get("a", "gone") == "gone"

    assert await cache.warm_cache(lambda: {f"w{i}": i for i in range(50)}, ttl=60, chunk_size=7) == 50
    assert await cache.mget([f"w{i}" for i in range(50)]) == {f"w{i}": i for i in range(50)}

    calls = []

    @ti.cached(ttl=60)
    async def square(n: int) -> int:
        calls.append(n)
        return n * n

    ti.set_default_cache_manager(cache)
    try:
        assert [await square(3), await square(3), await square(4)] == [9, 9, 16]
    finally:
        ti.set_default_cache_manager(None)
    assert calls == [3, 4]

    health = await cache.health_check()
    assert health["status"] == "healthy" and health["backend"] == "redis-cluster"
    assert sorted(node["address"] for node in health["redis"]["nodes"]) == sorted(
        f"{node.host}:{node.port}" for node in cluster.primaries()
    )
    assert all(node["connected"] for node in health["redis"]["nodes"])
    assert cache.get_stats()["errors"] == 0
    await cache.close()


async def test_batches_of_200_keys_span_slots_and_keep_their_ttl(
    cluster: RedisCluster, raw: ClusterClient
) -> None:
    cache = _manager(cluster, "batch")
    mapping = {f"key-{i}": {"i": i} for i in range(200)}
    assert len({key_slot(f"batch:{key}".encode()) for key in mapping}) > 150

    assert await cache.mset(mapping, ttl=45)

    assert await cache.mget([*mapping, "absent"]) == mapping
    ttls = [raw.pttl(f"batch:{key}") for key in mapping]
    assert all(40_000 < ttl <= 45_000 for ttl in ttls), ttls[:5]
    holders = {f"{node.host}:{node.port}" for node in cluster.primaries() if node.client().dbsize()}
    assert len(holders) == 3  # every primary holds part of the batch
    await cache.close()


async def test_clear_removes_the_namespace_on_every_primary_and_nothing_else(
    cluster: RedisCluster, raw: ClusterClient
) -> None:
    cache = _manager(cluster, "wipe")
    outside = {"other:1": b"x", "wiped": b"y", "wipe-not:2": b"z", "{wipe:}x": b"w"}
    for key, value in outside.items():
        raw.set(key, value)
    assert await cache.mset({f"k{i}": i for i in range(300)}) and await cache.set("user:1", 1)

    assert await cache.clear("user:*") == 1
    assert await cache.clear() == 300

    for node in cluster.primaries():
        with node.client() as client:
            assert not list(client.scan_iter(match="wipe:*")), f"{node.port} still holds keys"
    assert {key: raw.get(key) for key in outside} == outside
    await cache.close()


async def test_one_client_per_event_loop_on_a_cluster(cluster: RedisCluster) -> None:
    cache = _manager(cluster, "loops")
    assert await cache.set("shared", 1)

    def in_another_loop() -> object:
        return asyncio.run(cache.get("shared"))

    assert await asyncio.to_thread(in_another_loop) == 1
    assert await cache.get("shared") == 1
    await cache.close()


@pytest.mark.slow
async def test_a_primary_killed_under_20_tasks_degrades_only_its_slots(cluster: RedisCluster) -> None:
    cache = _manager(cluster, "fo", socket_timeout=0.5, socket_connect_timeout=0.5)
    await cache.initialize()
    load = FailoverLoad(cache)
    running = await load.run()
    await asyncio.sleep(1.0)
    victim_key = "fo:" + load.keys_of(0)[0]
    victim_keys = {
        key
        for key in load.history
        if cluster.primary_for("fo:" + key).port == cluster.primary_for(victim_key).port
    }

    def kill() -> tuple[object, float]:
        return cluster.kill_primary(victim_key, wait=False), time.monotonic()

    victim, killed_at = await asyncio.to_thread(kill)
    load.killed_at = killed_at
    while await asyncio.to_thread(cluster.primary_for, victim_key) is victim:
        pass
    failover_s = time.monotonic() - killed_at
    landed_by = killed_at + failover_s + 2.0
    while load.first_landing_after(killed_at + failover_s, victim_keys) is None:
        if time.monotonic() > landed_by:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    await load.stop(running)

    landed = load.first_landing_after(killed_at + failover_s, victim_keys)
    print(
        f"cluster failover {failover_s:.2f} s, writes land again {landed - killed_at if landed else None} s"
    )
    assert load.exceptions == []
    assert load.wrong == []
    assert landed is not None and landed - killed_at <= failover_s + 2.0
    others = set(load.history) - victim_keys
    assert load.first_landing_after(killed_at, others) < killed_at + failover_s  # healthy slots kept going
    assert cache.get_stats()["fallbacks"] == 0  # the breaker stayed closed
    assert (await cache.health_check())["status"] in {"healthy", "degraded"}
    await cache.close()
    await asyncio.to_thread(cluster.restart, victim)


def test_check_probes_every_seed_node(cluster: RedisCluster) -> None:
    dead = free_port()
    [answers], [with_dead] = redis_check_lines(cluster.url, f"{cluster.url},127.0.0.1:{dead}")
    assert answers.split()[1] == "ok" and "6 seed node(s) answer, cluster_state:ok" in answers
    assert with_dead.split()[1] == "FAIL" and f"127.0.0.1:{dead} does not answer" in with_dead


async def test_spans_name_the_node_that_answered_and_pools_are_gauged_per_node(
    cluster: RedisCluster, otlp_receiver: OTLPReceiver
) -> None:
    telemetry = ti.configure(
        service_name="cluster-telemetry", otlp_endpoint=otlp_receiver.grpc_endpoint, setup_logs=False
    )
    cache = _manager(cluster, "tel", name="cluster-tel")
    keys = [f"key{i}" for i in range(12)]
    with trace.get_tracer("tests.cluster").start_as_current_span("work"):
        for key in keys:
            await cache.set(key, 1)
        await cache.mget(keys)
    telemetry.force_flush()
    sets = otlp_receiver.wait_for_spans(
        lambda s: s.name == "cache.set" and s.attributes.get("cache.name") == "cluster-tel", count=len(keys)
    )
    answered = set()
    for span in sets:
        owner = cluster.primary_for("tel:" + span.attributes["cache.key"])
        assert (span.attributes["server.address"], span.attributes["server.port"]) == (owner.host, owner.port)
        assert span.attributes["cache.backend"] == "redis-cluster"
        answered.add(owner.port)
    assert len(answered) == 3

    used_or_idle: dict[int, float] = {}
    for family in text_string_to_metric_families(telemetry.prometheus_text()):
        for sample in family.samples:
            if (
                sample.name == "db_client_connections_usage"
                and sample.labels.get("db_client_connection_pool_name") == "cluster-tel"
            ):
                port = int(sample.labels["server_port"])
                used_or_idle[port] = used_or_idle.get(port, 0) + sample.value
    assert {port for port, count in used_or_idle.items() if count > 0} == answered
    await cache.close()


async def test_a_cluster_no_node_answers_is_an_outage_served_from_memory() -> None:
    url = f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    cache = CacheManager(url, namespace="down", socket_timeout=0.3, socket_connect_timeout=0.3)

    assert [await cache.get("k", "miss") for _ in range(3)] == ["miss"] * 3  # failure_threshold
    assert cache.fallback_active and cache.backend_name == "memory"
    assert await cache.set("k", 1) and await cache.get("k") == 1
    assert await cache.mget(["k", "absent"]) == {"k": 1}
    health = await cache.health_check()
    assert health["status"] == "degraded" and not health["redis"]["connected"]
    await cache.close()
