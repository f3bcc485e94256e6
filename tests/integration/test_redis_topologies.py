"""The Cluster and Sentinel harness shipped in telemetry_infra.testing, on real redis-server processes."""

from __future__ import annotations

import time

import pytest
from redis.cluster import ClusterNode
from redis.cluster import RedisCluster as ClusterClient
from redis.sentinel import Sentinel
from topologies import sentinel_topology

from telemetry_infra.cache.redis_urls import parse_redis_url
from telemetry_infra.testing import RedisCluster

pytestmark = pytest.mark.slow


def test_cluster_of_three_primaries_survives_a_primary_kill() -> None:
    with RedisCluster() as cluster:
        assert len(cluster.nodes) == 6 and len(cluster.primaries()) == 3
        assert parse_redis_url(cluster.url).nodes == tuple(cluster.startup_nodes)
        client = ClusterClient(startup_nodes=[ClusterNode(h, p) for h, p in cluster.startup_nodes])
        for index in range(200):
            client.set(f"k{index}", index)
        victim = cluster.primary_for("k1")

        started = time.monotonic()
        killed = cluster.kill_primary("k1")
        failover_s = time.monotonic() - started

        assert killed is victim and not victim.running
        assert len(cluster.primaries()) == 3  # the replica took over its slots
        assert cluster.primary_for("k1") is not victim
        survivors = ClusterClient(
            startup_nodes=[ClusterNode(h, p) for h, p in cluster.startup_nodes if p != victim.port]
        )
        assert [survivors.get(f"k{index}") for index in range(200)] == [str(i).encode() for i in range(200)]
        assert failover_s < 15

        cluster.restart(victim)
        assert victim.running and victim not in cluster.primaries()


def test_sentinel_promotes_the_replica_when_the_primary_dies() -> None:
    with sentinel_topology() as topology:
        assert parse_redis_url(topology.url).nodes == tuple(topology.sentinel_addresses)
        sentinel = Sentinel(topology.sentinel_addresses, socket_timeout=1)
        first = topology.master_address()
        sentinel.master_for("mymaster", socket_timeout=1).set("kept", b"1")

        killed = topology.kill_primary()

        assert (killed.host, killed.port) == first and not killed.running
        promoted = topology.master_address()
        assert promoted != first
        assert sentinel.discover_master("mymaster") == promoted
        assert sentinel.master_for("mymaster", socket_timeout=1).get("kept") == b"1"
