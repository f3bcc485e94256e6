"""Redis store on ``redis.asyncio`` with a ``BlockingConnectionPool``.

Batch writes go through one Lua script call (``SET ... PX`` per key, executed
server-side), so ``mset`` with a TTL is one command and one reply instead of a
pipeline of N commands and N replies. A batch larger than ``MSET_CHUNK_ITEMS``
items or ``MSET_CHUNK_BYTES`` bytes is written as several such calls, one after
the other, so that no single command can run past the socket timeout (and block
the server for everyone else meanwhile). On Redis Cluster a script, like ``MGET``,
may only touch keys of one hash slot, so batches must be split per slot there;
``clear`` is a per-node ``SCAN`` loop and runs on each primary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["MSET_CHUNK_BYTES", "MSET_CHUNK_ITEMS", "RedisBackend", "create_client"]

#: Most items one ``mset`` command carries: about a millisecond of server time.
MSET_CHUNK_ITEMS = 1000
#: Most bytes (keys + payloads) one ``mset`` command carries.
MSET_CHUNK_BYTES = 1 << 20

_MSET_WITH_TTL = """
local ms = ARGV[1]
for i = 1, #KEYS do
  if ms == '0' then
    redis.call('SET', KEYS[i], ARGV[i + 1])
  else
    redis.call('SET', KEYS[i], ARGV[i + 1], 'PX', ms)
  end
end
return #KEYS
"""


class _FastPathBlockingPool(aioredis.BlockingConnectionPool):
    """``BlockingConnectionPool`` whose uncontended checkout skips the wait machinery.

    The stock checkout enters a condition and an ``async_timeout`` on every call,
    which costs more than the rest of the cache together. When a connection is free
    and nobody is queued, take it directly; otherwise queue as usual (FIFO, timeout).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queued = 0
        self.refuse_waiters: Callable[[], bool] = lambda: False

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self._queued or self._in_maintenance or not self.can_get_connection():
            self._queued += 1
            try:
                connection = await super().get_connection(*args, **kwargs)
            finally:
                self._queued -= 1
            if self.refuse_waiters():
                # Redis went away while this call queued for a connection: another
                # socket timeout on top of the wait would break the caller's latency bound.
                await self.release(connection)
                raise RedisConnectionError("Redis stopped answering while this call waited for a connection")
            return connection
        connection = self.get_available_connection()
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection


def create_client(
    url: str,
    *,
    max_connections: int,
    socket_timeout: float,
    socket_connect_timeout: float,
    health_check_interval: float,
) -> aioredis.Redis:
    """A client whose calls fail fast: short timeouts, no retries, bounded pool.

    Bursts beyond ``max_connections`` wait for a free connection (at most
    ``socket_timeout``) instead of failing. Retries are off: the circuit breaker
    decides what to do about a failure, and a retry would only double the wait.
    """
    pool = _FastPathBlockingPool.from_url(
        url,
        max_connections=max_connections,
        timeout=socket_timeout,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
        health_check_interval=health_check_interval,
        retry=Retry(NoBackoff(), 0),
    )
    return aioredis.Redis.from_pool(pool)


class RedisBackend:
    """Payloads stored as plain Redis strings under their full keys.

    Commands go through ``client.execute_command`` looked up at each call, never a
    saved bound method: opentelemetry-instrumentation-redis patches the class,
    possibly after this backend was created.
    """

    name = "redis"

    def __init__(self, client: aioredis.Redis, *, scan_count: int = 1000) -> None:
        self.client = client
        self._scan_count = scan_count
        self._mset_script = client.register_script(_MSET_WITH_TTL)

    async def get(self, key: str) -> bytes | None:
        return await self.client.execute_command("GET", key)

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        return await self.client.execute_command("MGET", *keys)

    async def set(self, key: str, payload: bytes, ttl: float | None) -> None:
        if ttl is None:
            await self.client.execute_command("SET", key, payload)
        else:
            await self.client.execute_command("SET", key, payload, "PX", _milliseconds(ttl))

    async def mset(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        """Write every item, in chunks of bounded size; on failure, a prefix of the chunks
        may have been written."""
        milliseconds = 0 if ttl is None else _milliseconds(ttl)
        for chunk in _chunks(items, MSET_CHUNK_ITEMS, MSET_CHUNK_BYTES):
            args: list[Any] = [milliseconds]
            args.extend(payload for _, payload in chunk)
            await self._mset_script(keys=[key for key, _ in chunk], args=args)

    async def delete(self, key: str) -> bool:
        return bool(await self.client.execute_command("UNLINK", key))

    async def delete_many(self, keys: Sequence[str]) -> int:
        removed = 0
        for start in range(0, len(keys), self._scan_count):
            removed += await self.client.execute_command("UNLINK", *keys[start : start + self._scan_count])
        return removed

    async def exists(self, key: str) -> bool:
        return bool(await self.client.execute_command("EXISTS", key))

    async def clear(self, pattern: str) -> int:
        """``SCAN MATCH`` + ``UNLINK``; each round trip unlinks one page and fetches the next."""
        cursor, keys = await self.client.scan(0, match=pattern, count=self._scan_count)
        removed = 0
        while keys or cursor:
            pipe = self.client.pipeline(transaction=False)
            if keys:
                pipe.unlink(*keys)
            if cursor:
                pipe.scan(cursor, match=pattern, count=self._scan_count)
            replies = await pipe.execute()
            if keys:
                removed += replies[0]
            cursor, keys = replies[-1] if cursor else (0, [])
        return removed

    async def ping(self) -> None:
        await self.client.execute_command("PING")

    def fail_fast_when(self, unreachable: Callable[[], bool]) -> None:
        """Calls still queued for a connection fail at once while ``unreachable()`` is true."""
        self.client.connection_pool.refuse_waiters = unreachable

    def connections(self) -> tuple[int, int, int]:
        """``(used, idle, max)`` connections of the pool, for the pool gauges."""
        pool = self.client.connection_pool
        return len(pool._in_use_connections), len(pool._available_connections), pool.max_connections

    async def reconnect(self) -> None:
        """Drop idle connections: after an outage they are dead and would each fail once."""
        await self.client.connection_pool.disconnect(inuse_connections=False)

    async def close(self) -> None:
        await self.client.aclose()


def _chunks(
    items: Sequence[tuple[str, bytes]], max_items: int, max_bytes: int
) -> Iterator[Sequence[tuple[str, bytes]]]:
    """Consecutive slices of ``items`` of at most ``max_items`` and ``max_bytes`` (an item
    larger than ``max_bytes`` goes alone)."""
    if len(items) <= max_items and sum(len(key) + len(payload) for key, payload in items) <= max_bytes:
        yield items
        return
    start = size = 0
    for end, (key, payload) in enumerate(items):
        item_size = len(key) + len(payload)
        if end > start and (end - start >= max_items or size + item_size > max_bytes):
            yield items[start:end]
            start, size = end, 0
        size += item_size
    yield items[start:]


def _milliseconds(ttl: float) -> int:
    return max(1, round(ttl * 1000))
