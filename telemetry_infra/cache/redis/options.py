"""``ConnectionOptions``: how the cache's clients connect to Redis, in one frozen object.

Every client factory (``create_client``, ``create_sentinel_client``, ``create_cluster_client``,
``ThreadReads``, ``redis_backend_for``) and every connection of the near tier's invalidation
channel takes this one object instead of its five keywords (as httpx's ``Limits`` and
``Timeout`` do), so a setting is named, defaulted and validated in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TypedDict

from telemetry_infra.cache.durations import seconds

__all__ = ["ConnectionOptions", "SocketTimeouts"]


class SocketTimeouts(TypedDict):
    """The two socket timeouts as redis-py's keywords."""

    socket_timeout: float
    socket_connect_timeout: float


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """Connection settings of one cache's Redis clients; validated when made.

    * ``max_connections``: connections of each event loop's pool (on a Cluster, each node's).
    * ``socket_timeout``: how long a command waits for Redis's answer, in seconds.
    * ``socket_connect_timeout``: how long opening a connection may take, in seconds.
    * ``health_check_interval``: seconds a pooled connection may sit idle before it is
      checked with a ``PING`` on checkout; 0 checks none.
    * ``pool_timeout``: how long a read queues for a free pooled connection (writes queue
      without a bound); a Cluster client fails at once instead.

    Seconds may be given as ``int``, ``float`` or ``timedelta``; they are held as ``float``.
    """

    max_connections: int = 50
    socket_timeout: float = 1.0
    socket_connect_timeout: float = 1.0
    health_check_interval: float = 30.0
    pool_timeout: float = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.max_connections, bool) or not isinstance(self.max_connections, int):
            raise TypeError(
                f"max_connections must be a whole number, got {type(self.max_connections).__qualname__}"
            )
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {self.max_connections!r}")
        for name in ("socket_timeout", "socket_connect_timeout", "pool_timeout"):
            object.__setattr__(self, name, seconds(getattr(self, name), name))
        interval = seconds(self.health_check_interval, "health_check_interval", zero_allowed=True)
        object.__setattr__(self, "health_check_interval", interval)

    @property
    def timeouts(self) -> SocketTimeouts:
        """``socket_timeout`` and ``socket_connect_timeout`` as redis-py's keywords."""
        return {"socket_timeout": self.socket_timeout, "socket_connect_timeout": self.socket_connect_timeout}

    def with_max_connections(self, max_connections: int) -> ConnectionOptions:
        """These options for a pool of ``max_connections`` (a share of this budget)."""
        return replace(self, max_connections=max_connections)
