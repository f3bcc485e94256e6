"""Reads from threads without an event loop: redis-py's sync client on a bounded, thread-safe pool.

The sync view (``cache.sync``) runs a read's whole policy (``CacheManager.get``: keys, codec,
breaker, journal masks, fallback, telemetry) in its caller's thread, as a coroutine driven to
its end there. What it awaits at the bottom is ``ThreadReads.execute_command``: a coroutine
that never suspends and does the round trip with a blocking socket. No event loop, no thread
hop, the same Redis errors (redis-py raises the same exception classes from both clients).

The pool is a ``BlockingConnectionPool``: a caller waits at most ``pool_timeout`` for a free
connection, then gets ``CachePoolExhaustedError`` like an async caller (back-pressure, not an
outage). redis-py's sync pool notices a fork on its own (it checks the pid on every checkout
and starts empty in the child, never closing the parent's sockets).
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from telemetry_infra.cache.errors import CachePoolExhaustedError
from telemetry_infra.cache.redis.options import ConnectionOptions

__all__ = ["ThreadReads"]

#: what redis-py's ``BlockingConnectionPool`` says when ``timeout`` passed without a free connection
_NO_CONNECTION = "No connection available."


class _BoundedPool(redis.BlockingConnectionPool):
    """A full pool's wait that ran out is back-pressure (``CachePoolExhaustedError``), not an outage."""

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        except RedisConnectionError as exc:
            if str(exc) != _NO_CONNECTION:
                raise
            raise CachePoolExhaustedError(self.timeout, self.max_connections) from exc

    def usage(self) -> tuple[int, int]:
        """``(used, idle)`` connections."""
        with self._lock:
            made = len(self._connections)
            idle = sum(1 for connection in self.pool.queue if connection is not None)
        return made - idle, idle


class ThreadReads:
    """The client reads made outside any event loop use (see module docs). Thread-safe."""

    def __init__(self, url: str, options: ConnectionOptions) -> None:
        self.pool = _BoundedPool.from_url(
            url,
            max_connections=options.max_connections,
            timeout=options.pool_timeout,
            health_check_interval=options.health_check_interval,
            retry=Retry(NoBackoff(), 0),
            **options.timeouts,
        )
        self.client = redis.Redis(connection_pool=self.pool)

    async def execute_command(self, *args: Any) -> Any:
        """The command's reply, read in this thread with a blocking socket (never suspends).

        ``client.execute_command`` is looked up at each call: opentelemetry-instrumentation-redis
        patches the class, possibly later."""
        return self.client.execute_command(*args)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated

    def usage(self) -> tuple[int, int]:
        """``(used, idle)`` connections."""
        return self.pool.usage()

    def close(self) -> None:
        """Close the idle connections; those in use close when returned."""
        self.pool.disconnect(inuse_connections=False)
