"""The Redis backend a URL calls for: one node, a Cluster or a Sentinel-managed primary."""

from __future__ import annotations

import functools
from typing import TypedDict

from telemetry_infra.cache.redis.cluster import RedisClusterBackend, create_cluster_client
from telemetry_infra.cache.redis.node import RedisBackend, create_client
from telemetry_infra.cache.redis.sentinel import RedisSentinelBackend, create_sentinel_client
from telemetry_infra.cache.redis.sentinel_watch import SentinelWatch
from telemetry_infra.cache.redis.thread_reads import ThreadReads
from telemetry_infra.cache.redis.urls import parse_redis_url

__all__ = ["RedisStore", "redis_backend_for"]

#: The Redis backend of a manager: one node (or the Sentinels' primary), or a Cluster.
RedisStore = RedisBackend | RedisClusterBackend


class _PoolKwargs(TypedDict):
    """The connection settings every topology's client factory takes."""

    max_connections: int
    socket_timeout: float
    socket_connect_timeout: float
    health_check_interval: float


def redis_backend_for(
    url: str,
    *,
    max_connections: int,
    socket_timeout: float,
    socket_connect_timeout: float,
    health_check_interval: float,
    pool_timeout: float,
    check_interval: float = 1.0,
) -> RedisStore:
    """A backend on ``url`` (see ``redis_urls``); ``ValueError`` naming the problem when malformed.

    ``max_connections`` bounds each event loop's pool; on a Cluster, each node's. Under
    Sentinel, ``check_interval`` is how often a Sentinel whose announcements cannot be
    subscribed to is asked instead, and a write waits at most ``socket_timeout`` for a
    failover under way to finish.
    """
    target = parse_redis_url(url)
    pool: _PoolKwargs = {
        "max_connections": max_connections,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        "health_check_interval": health_check_interval,
    }
    if target.topology == "cluster":
        return RedisClusterBackend(functools.partial(create_cluster_client, target, **pool))
    if target.topology == "sentinel":
        watch = SentinelWatch(
            target,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            check_interval=check_interval,
        )
        connect = functools.partial(
            create_sentinel_client, target, pool_timeout=pool_timeout, watch=watch, **pool
        )
        return RedisSentinelBackend(connect, watch, failover_wait=socket_timeout)
    return RedisBackend(
        functools.partial(create_client, url, pool_timeout=pool_timeout, **pool),
        thread_reads=functools.partial(  # their share of max_connections: see RedisBackend.share_with_threads
            ThreadReads,
            url,
            pool_timeout=pool_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            health_check_interval=health_check_interval,
        ),
    )
