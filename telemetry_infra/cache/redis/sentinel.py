"""Redis under Sentinel: the primary of a service, found (and found again) through its Sentinels.

The data lives on one primary, so the single-node ``RedisBackend`` does the work; only
how connections find their server changes. ``FairSentinelConnectionPool`` is the fair,
bounded pool of ``redis.py`` (first come, first served hand-over, ``pool_timeout`` for
reads) whose connections ask the Sentinels for the primary's address each time they
connect, as ``redis.asyncio.sentinel.SentinelConnectionPool`` does.

The primary is the one the Sentinels *announce* (``sentinel_watch.SentinelWatch``), not
the one a server claims to be: a primary demoted by ``SENTINEL FAILOVER`` answers as a
primary for seconds after the switch. Each pool compares the watch's ``switches`` at
every checkout and, when the Sentinels named another primary, drops every connection
(idle at once, in use when released) and connects to the announced address. A write
is acknowledged only when no failover of the service began or ended between sending it
and reading its reply (the watch's ``epoch``); otherwise it is sent again to the primary
named once the failover is over, and not acknowledged at all if that takes longer than
``failover_wait`` seconds (``FailoverUnderwayError``: the write-safety policy of
``failover`` journals it). While a failover is announced and not finished, writes wait
for its end (at most ``failover_wait``) before being sent.

After a failover:

* the dead primary refuses connections: an outage for the breaker (all the data is on
  that one server); its probe reconnects, which asks the Sentinels again and so finds
  the promoted replica;
* a primary *demoted* while still running answers writes with ``READONLY``. With a
  plain ``redis://`` URL that is a refused write; here it means the Sentinels moved
  the service: the idle connections are dropped, the primary is looked up again and
  the write is retried once on it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError

from telemetry_infra.cache.errors import FailoverUnderwayError
from telemetry_infra.cache.redis.node import FairConnectionPool, RedisBackend
from telemetry_infra.cache.redis.options import ConnectionOptions
from telemetry_infra.cache.redis.sentinel_watch import SentinelWatch
from telemetry_infra.cache.redis.urls import RedisTarget

__all__ = [
    "FairSentinelConnectionPool",
    "MasterDemotedError",
    "RedisSentinelBackend",
    "create_sentinel_client",
    "sentinels_of",
]

T = TypeVar("T")


class MasterDemotedError(RedisConnectionError):
    """The server this connection writes to was the primary and is a replica now."""


class _DemotionAware(SentinelManagedConnection):
    """Turns ``READONLY`` from the server believed to be the primary into ``MasterDemotedError``."""

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except MasterDemotedError:
            raise
        except (ReadOnlyError, RedisConnectionError) as exc:
            if isinstance(exc, ReadOnlyError) or "now a slave" in str(exc):
                await self.disconnect()
                raise MasterDemotedError(f"{self.host}:{self.port} was demoted to a replica") from exc
            raise


class _PrimaryConnection(_DemotionAware, SentinelManagedConnection):
    pass


class _PrimarySSLConnection(_DemotionAware, SentinelManagedSSLConnection):
    pass


class FairSentinelConnectionPool(FairConnectionPool, SentinelConnectionPool):
    """``FairConnectionPool``'s hand-over and bounds, with Sentinel's primary discovery;
    with a ``watch``, the primary is the one the Sentinels announced last."""

    def __init__(self, *, watch: SentinelWatch | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.watch = watch
        self._switches_seen = 0 if watch is None else watch.switches

    def server_address(self) -> tuple[str, int] | None:
        """The primary's address as last discovered (None before the first connection)."""
        return self.master_address

    def follow_new_primary(self) -> None:
        """Every connection, idle or in use, asks the Sentinels again before its next command
        (no I/O here: callable from any event loop)."""
        self.master_address = None
        for connection in (*self._available_connections, *self._in_use_connections):
            connection.mark_for_reconnect()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated

    async def get_master_address(self) -> tuple[str, int]:
        named = None if self.watch is None else self.watch.named_primary()
        if named is not None:
            self.master_address = named
            return named
        address: tuple[str, int] = await super().get_master_address()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        return address

    async def ensure_connection(self, connection: Any) -> None:
        watch = self.watch
        if watch is not None:
            watch.ensure_running()
            if watch.switches != self._switches_seen:
                self._switches_seen = watch.switches
                self.follow_new_primary()
        if connection.should_reconnect():
            connection.reset_should_reconnect()
            await connection.disconnect()
        await super().ensure_connection(connection)


class _SentinelManagedRedis(aioredis.Redis):
    """The data client; closing it also closes its connections to the Sentinels (``discovery``:
    not ``sentinel``, which would hide redis-py's ``sentinel()`` command method)."""

    discovery: Sentinel

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            for client in self.discovery.sentinels:
                await client.aclose()


def sentinels_of(target: RedisTarget, options: ConnectionOptions) -> Sentinel:
    """The Sentinels of ``target`` (its credentials and TLS), asked once per call, never retried."""
    return Sentinel(
        list(target.nodes),
        sentinel_kwargs={
            "username": target.username,
            "password": target.password,
            "ssl": target.tls,
            "retry": Retry(NoBackoff(), 0),
            **options.timeouts,
        },
    )


def create_sentinel_client(
    target: RedisTarget, options: ConnectionOptions, *, watch: SentinelWatch | None = None
) -> aioredis.Redis:
    """A client of ``target.service_name``'s primary with ``create_client``'s fail-fast settings
    (on the primary ``watch`` heard announced, when given)."""
    sentinel = sentinels_of(target, options)
    pool = FairSentinelConnectionPool(
        service_name=target.service_name,
        sentinel_manager=sentinel,
        watch=watch,
        pool_timeout=options.pool_timeout,
        max_connections=options.max_connections,
        connection_class=_PrimarySSLConnection if target.tls else _PrimaryConnection,
        db=target.db,
        health_check_interval=options.health_check_interval,
        retry=Retry(NoBackoff(), 0),
        username=target.username,
        password=target.password,
        **options.timeouts,
    )
    # redis-py annotates from_pool as returning Redis; it makes an instance of the class it is called on
    client = cast(_SentinelManagedRedis, _SentinelManagedRedis.from_pool(pool))
    client.discovery = sentinel
    return client


class RedisSentinelBackend(RedisBackend):
    """``RedisBackend`` on the primary the Sentinels name; a write is acknowledged only when
    it was answered by that primary with no failover begun in between (see the module)."""

    name = "redis-sentinel"

    def __init__(
        self, connect: Callable[[], aioredis.Redis], watch: SentinelWatch, *, failover_wait: float
    ) -> None:
        self.watch = watch
        self.failover_wait = failover_wait
        super().__init__(connect)

    async def set(self, key: str, payload: bytes, ttl: float | None) -> None:
        await self._on_named_primary(lambda: RedisBackend.set(self, key, payload, ttl))

    async def mset(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        await self._on_named_primary(lambda: RedisBackend.mset(self, items, ttl))

    async def delete(self, key: str) -> bool:
        return await self._on_named_primary(lambda: RedisBackend.delete(self, key))

    async def delete_many(self, keys: Sequence[str]) -> int:
        return await self._on_named_primary(lambda: RedisBackend.delete_many(self, keys))

    async def clear(self, pattern: str) -> int:
        return await self._on_named_primary(lambda: RedisBackend.clear(self, pattern))

    async def _on_named_primary(self, send: Callable[[], Awaitable[T]]) -> T:
        """``send()`` a change; its result only if no failover began or ended while it was on
        the wire, else the result of sending it again once the failover is over."""
        watch = self.watch
        epoch = await self._settled() if watch.failing_over else watch.epoch
        try:
            result = await send()
        except MasterDemotedError:  # refused (READONLY): not applied, the Sentinels moved on
            await self._rediscover()
            epoch = await self._settled()
            result = await send()
        if watch.epoch == epoch:
            return result
        # a failover began, ended or switched while the change was on the wire: the server
        # that acknowledged it may not be (or stay) the primary; send it where they say now
        epoch = await self._settled()
        result = await send()
        if watch.epoch != epoch:
            raise FailoverUnderwayError("the Sentinels began another failover while the change was re-sent")
        return result

    async def close(self) -> None:
        self.watch.stop()
        await super().close()

    async def _settled(self) -> int:
        """The watch's epoch once no failover is under way (waited for at most ``failover_wait``)."""
        watch = self.watch
        deadline = time.monotonic() + self.failover_wait
        while watch.failing_over:
            if time.monotonic() >= deadline:
                raise FailoverUnderwayError(
                    f"a Sentinel failover of {watch.service_name!r} is under way "
                    f"(waited {self.failover_wait:g} s for the new primary)"
                )
            await asyncio.sleep(0.005)  # the watch runs on threads: polled
        return watch.epoch

    async def _rediscover(self) -> None:
        """The primary we wrote to answered as a replica: whatever the watch heard, it is not the
        primary any more. Ask the Sentinels which one is, and drop the idle connections."""
        pool = _sentinel_pool(await self._client())
        address = await pool.sentinel_manager.discover_master(pool.service_name)
        self.watch.demoted((_text(address[0]), int(address[1])))
        pool.master_address = None
        await pool.disconnect(inuse_connections=False)

    def follow_new_primary(self) -> None:
        """The Sentinels name another primary (the near cache's channel found it): the data
        connections of every event loop reconnect to it before their next command."""
        self.watch.ensure_running()
        clients = (bound.client for bound in (self._bound, *self._by_loop.values()))
        for pool in {id(pool): pool for pool in map(_sentinel_pool, clients)}.values():
            pool.follow_new_primary()

    def server_of(self, key: str | None) -> tuple[str, int] | None:
        """The primary's address as last discovered (for span attributes)."""
        return _sentinel_pool(self._bound.client).server_address()

    async def node_health(self) -> list[dict[str, Any]]:
        """Every Sentinel (does it answer, which primary does it name) and the primary itself."""
        self.watch.ensure_running()
        pool = _sentinel_pool(await self._client())
        report: list[dict[str, Any]] = []
        for sentinel in pool.sentinel_manager.sentinels:
            kwargs = sentinel.connection_pool.connection_kwargs
            entry: dict[str, Any] = {"address": f"{kwargs['host']}:{kwargs['port']}", "role": "sentinel"}
            try:
                state = await sentinel.sentinel_get_master_addr_by_name(pool.service_name)
            except (RedisConnectionError, OSError, Exception) as exc:
                entry.update(connected=False, error=f"{type(exc).__name__}: {exc}".rstrip(": "))
            else:
                entry.update(connected=True, primary=None if state is None else _address(*state))
            report.append(entry)
        address = pool.server_address()
        if address is not None:
            report.append({"address": f"{address[0]}:{address[1]}", "role": "primary", "connected": True})
        return report


def _sentinel_pool(client: aioredis.Redis) -> FairSentinelConnectionPool:
    # create_sentinel_client builds every client of RedisSentinelBackend on this pool class
    return cast(FairSentinelConnectionPool, client.connection_pool)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _address(host: str | bytes, port: int | bytes) -> str:
    return f"{host.decode() if isinstance(host, bytes) else host}:{int(port)}"
