"""The Redis backend a URL calls for: one node, a Cluster or a Sentinel-managed primary."""

from __future__ import annotations

import functools

from telemetry_infra.cache.redis.cluster import RedisClusterBackend, create_cluster_client
from telemetry_infra.cache.redis.node import RedisBackend, create_client
from telemetry_infra.cache.redis.options import ConnectionOptions
from telemetry_infra.cache.redis.sentinel import RedisSentinelBackend, create_sentinel_client
from telemetry_infra.cache.redis.sentinel_watch import SentinelWatch
from telemetry_infra.cache.redis.thread_reads import ThreadReads
from telemetry_infra.cache.redis.urls import parse_redis_url

__all__ = ["RedisStore", "redis_backend_for"]

#: The Redis backend of a manager: one node (or the Sentinels' primary), or a Cluster.
RedisStore = RedisBackend | RedisClusterBackend


def redis_backend_for(url: str, options: ConnectionOptions, *, check_interval: float = 1.0) -> RedisStore:
    """A backend on ``url`` (see ``redis_urls``); ``ValueError`` naming the problem when malformed.

    ``options.max_connections`` bounds each event loop's pool; on a Cluster, each node's.
    Under Sentinel, ``check_interval`` is how often a Sentinel whose announcements cannot be
    subscribed to is asked instead, and a write waits at most ``options.socket_timeout`` for
    a failover under way to finish.
    """
    target = parse_redis_url(url)
    if target.topology == "cluster":
        return RedisClusterBackend(functools.partial(create_cluster_client, target, options))
    if target.topology == "sentinel":
        watch = SentinelWatch(target, options, check_interval=check_interval)
        connect = functools.partial(create_sentinel_client, target, options, watch=watch)
        return RedisSentinelBackend(connect, watch, failover_wait=options.socket_timeout)

    def thread_reads(share: int) -> ThreadReads:
        """The sync reads' pool: their share of max_connections (see RedisBackend.share_with_threads)."""
        return ThreadReads(url, options.with_max_connections(share))

    return RedisBackend(functools.partial(create_client, url, options), thread_reads=thread_reads)
