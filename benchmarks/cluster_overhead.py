"""What CacheManager costs on top of raw ``redis.asyncio.cluster.RedisCluster``, measured in one run.

    python benchmarks/cluster_overhead.py [--rounds 15] [--iterations 300]

Starts a private local Redis Cluster (3 primaries, 3 replicas; never touches yours).
The floor is a raw ``RedisCluster`` client on the same bytes: ``GET``/``SET ... EX``
through ``execute_command`` and ``mget_nonatomic`` over the same 100 keys (spread over
all slots). Telemetry is off on both sides. Rounds alternate raw and manager so
machine noise hits both; the table is ``cache_overhead.py``'s.
"""

from __future__ import annotations

import argparse
import asyncio

from cache_overhead import BATCH, SMALL, TTL, VALUE, Case, measure, report
from redis.asyncio.cluster import ClusterNode, RedisCluster

import telemetry_infra as ti
from telemetry_infra.testing import RedisCluster as LocalCluster


async def main(rounds: int, iterations: int) -> None:
    with LocalCluster() as cluster:
        raw = RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in cluster.startup_nodes])
        cache = ti.CacheManager(cluster.url, namespace="bench", telemetry=False)
        await cache.initialize()
        keys = [f"k{i}" for i in range(BATCH)]
        stored = [f"bench:{key}" for key in keys]
        await cache.mset({key: SMALL for key in keys}, ttl=TTL)
        payloads = {}
        for label, value in (("small", SMALL), ("1 KB", VALUE)):
            await cache.set(label, value, ttl=TTL)
            payloads[label] = await raw.execute_command("GET", f"bench:{label}")
        cases = []
        for label, value in (("small", SMALL), ("1 KB", VALUE)):
            size = f"{len(payloads[label])} B"
            cases += [
                Case(f"get hit ({size})", lambda k=label: cache.get(k),
                     lambda k=label: raw.execute_command("GET", f"bench:{k}"), "<= 1.15x"),
                Case(f"set ttl ({size})", lambda v=value: cache.set("w", v, ttl=TTL),
                     lambda p=payloads[label]: raw.execute_command("SET", "bench:w", p, "EX", TTL),
                     "<= 1.15x"),
            ]  # fmt: skip
        cases.append(
            Case(f"mget 100 across slots ({len(payloads['small'])} B)", lambda: cache.mget(keys),
                 lambda: raw.mget_nonatomic(stored), "<= 1.3x"),
        )  # fmt: skip
        try:
            report(
                "Cluster: CacheManager vs raw RedisCluster, telemetry off",
                await measure(cases, rounds, iterations),
            )
        finally:
            await cache.close()
            await raw.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--iterations", type=int, default=300)
    options = parser.parse_args()
    asyncio.run(main(options.rounds, options.iterations))
