"""Helpers for testing code that uses telemetry_infra (and telemetry_infra itself).

* :class:`RedisServer` starts a private ``redis-server`` on a free loopback port,
  and can kill, restart and pause it to stage outages.
* :class:`RedisCluster` (3 primaries, 3 replicas) and :class:`RedisSentinel` (primary,
  replica, 3 Sentinels) are local topologies of such servers, with ``kill_primary()``.
* :class:`OTLPReceiver` is an in-process OTLP endpoint (gRPC and HTTP/protobuf)
  that decodes what arrives into plain Python values.

All are context managers::

    with RedisServer() as redis, OTLPReceiver() as otlp:
        ti.configure(service_name="t", otlp_endpoint=otlp.grpc_endpoint)
        ...
        spans = otlp.wait_for_spans(lambda s: s.name == "cache.get")
"""

from telemetry_infra.testing.otlp_receiver import (
    OTLPReceiver,
    ReceivedLogRecord,
    ReceivedMetricPoint,
    ReceivedSpan,
    ServerTLS,
)
from telemetry_infra.testing.redis_server import INSTALL_HINT, RedisServer, RedisServerNotFound, free_port
from telemetry_infra.testing.redis_topologies import RedisCluster, RedisSentinel, key_in_slot

__all__ = [
    "INSTALL_HINT",
    "OTLPReceiver",
    "ReceivedLogRecord",
    "ReceivedMetricPoint",
    "ReceivedSpan",
    "RedisCluster",
    "RedisSentinel",
    "RedisServer",
    "RedisServerNotFound",
    "ServerTLS",
    "free_port",
    "key_in_slot",
]
