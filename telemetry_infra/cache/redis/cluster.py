"""Redis Cluster store on ``redis.asyncio.cluster.RedisCluster``, one client per event loop.

redis-py routes each command to the primary of its key's hash slot and follows
``MOVED``/``ASK``; it also retries ``TRYAGAIN`` and ``CLUSTERDOWN`` (a failover in
progress) a bounded number of times. This backend adds what a cache needs on top:

* batches split by slot: ``mget`` is one ``MGET`` per slot and ``mset`` one
  ``SET ... PX`` per key, pipelined per node (TTL kept); removals ``UNLINK`` per slot;
  ``clear`` runs its ``SCAN`` + ``UNLINK`` loop on every primary;
* failures told apart by extent. A node that cannot be reached while other primaries
  answer is a *shard* failure: it raises ``CacheShardUnavailableError`` (a backend
  error: reads of its slots are misses, writes to them are masked and undone on
  recovery), and the breaker stays closed so the other slots keep being served by
  Redis. Only when no primary answers a PING on a connection of its own (or no node
  can be reached at all) is the error an outage that opens the breaker. redis-py
  refreshes the slot map after the failure, so once a replica is promoted its slots
  are served again.

redis-py's cluster nodes keep their own connection lists (no queue: a node with
``max_connections`` busy connections fails at once); that is reported as
``CachePoolExhaustedError``, the single-node pool's back-pressure error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, RedisClusterException, SlotNotCoveredError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import KeyT

from telemetry_infra.cache.errors import CachePoolExhaustedError, CacheShardUnavailableError
from telemetry_infra.cache.redis.node import (
    ABSENT,
    MSET_CHUNK_BYTES,
    MSET_CHUNK_ITEMS,
    ExpiringRead,
    ExpiringScript,
    PerLoopClients,
    _chunks,
    _closed_with_its_loop,
    _milliseconds,
    _running_loop,
    _writing,
    expiring_reads,
)
from telemetry_infra.cache.redis.options import ConnectionOptions
from telemetry_infra.cache.redis.urls import RedisTarget

__all__ = ["RedisClusterBackend", "create_cluster_client"]

logger = logging.getLogger("telemetry_infra.cache")

#: How long the answer to "does any primary answer?" is reused by calls that fail.
VERDICT_TTL_S = 0.5
#: Attempts redis-py makes after a connection error or CLUSTERDOWN (it refreshes the slot
#: map in between and sleeps 0.25 s after CLUSTERDOWN): bounded, so a call fails fast.
CLUSTER_RETRIES = 2

_NETWORK_ERRORS = (RedisConnectionError, RedisTimeoutError, asyncio.TimeoutError, OSError)
#: Everything redis-py's cluster client raises that this backend translates. AttributeError:
#: redis-py closes every node's connections (in use or not) to refresh its slot map after
#: a failure, and a call then writing on one fails on its ``None`` writer.
_CLUSTER_FAILURES = (*_NETWORK_ERRORS, RedisClusterException, AttributeError)

#: The near tier's read on a Cluster (``redis._GET_EXPIRING``) also says which node
#: answered: after a ``MOVED``/``ASK`` it may be one whose invalidations nobody hears yet.
_get_expiring_here = ExpiringScript(
    """#!lua flags=no-writes
local r = {redis.call('CLUSTER', 'MYID')}
for i = 1, #KEYS do
  r[2 * i] = redis.call('GET', KEYS[i])
  r[2 * i + 1] = redis.call('PTTL', KEYS[i])
end
return r
"""
)


def _reads_from(reply: list[Any]) -> list[ExpiringRead]:
    node = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
    return expiring_reads(reply[1:], node)


class _RefreshingRedisCluster(RedisCluster):
    """``RedisCluster`` whose slot map refreshes leave connections in use alone.

    redis-py calls ``aclose()`` to refresh its slot map (after ``CLUSTERDOWN``, a failed
    pipeline, a failed refresh), and that closes every connection of every node,
    including those other calls are reading from: those calls then fail, or read a
    reply meant for an earlier command. Here a refresh marks connections in use for
    reconnection once their call ends and closes only idle ones; ``close_for_good()``
    really closes (when the loop ends or the cache closes).
    """

    async def aclose(self) -> None:
        self._initialize = True
        for node in self.get_nodes():
            node.update_active_connections_for_reconnect()
            await node.disconnect_free_connections()

    async def initialize(
        self,
        additional_startup_nodes_info: list[tuple[str, int]] | None = None,
        last_failed_node_name: str | None = None,
    ) -> RedisCluster:
        """redis-py's, without closing every connection when the refresh fails (retried next call)."""
        if self._initialize:
            if not self._lock:
                self._lock = asyncio.Lock()
            async with self._lock:
                if self._initialize:
                    await self.nodes_manager.initialize(
                        additional_startup_nodes_info=additional_startup_nodes_info,
                        last_failed_node_name=last_failed_node_name,
                    )
                    await self.commands_parser.initialize(self.nodes_manager.default_node)
                    self._initialize = False
        return self

    async def close_for_good(self) -> None:
        self._initialize = False  # redis-py's aclose() only closes an initialized client
        await super().aclose()


class _ClosedForGood:
    """What the per-loop closer closes: the client, really."""

    def __init__(self, client: _RefreshingRedisCluster) -> None:
        self._client = client

    async def aclose(self) -> None:
        await self._client.close_for_good()


def create_cluster_client(target: RedisTarget, options: ConnectionOptions) -> _RefreshingRedisCluster:
    """A cluster client seeded with ``target.nodes``; connects on first use.

    ``options.pool_timeout`` does not apply: a node's pool with ``max_connections`` busy
    connections fails at once (see the module docstring)."""
    return _RefreshingRedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        username=target.username,
        password=target.password,
        ssl=target.tls,
        max_connections=options.max_connections,
        health_check_interval=options.health_check_interval,
        retry=Retry(NoBackoff(), CLUSTER_RETRIES),
        **options.timeouts,
    )


class _ClusterLoopClient:
    """The cluster client of one event loop (closed with the loop, see ``_LoopClient``)."""

    __slots__ = ("client", "closer", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, client: _RefreshingRedisCluster) -> None:
        self.loop = loop
        self.client = client
        self.closer = _closed_with_its_loop(_ClosedForGood(client))


class RedisClusterBackend(PerLoopClients[_RefreshingRedisCluster, _ClusterLoopClient]):
    """Payloads under their full keys in a Redis Cluster; see the module docstring."""

    name = "redis-cluster"

    def __init__(self, connect: Callable[[], _RefreshingRedisCluster], *, scan_count: int = 1000) -> None:
        self._verdict: tuple[float, bool] = (-VERDICT_TTL_S, True)
        self._asking: dict[asyncio.AbstractEventLoop, asyncio.Task[bool]] = {}
        super().__init__(connect, scan_count=scan_count)

    def _pool_size(self, client: _RefreshingRedisCluster) -> int:
        limit = client.get_connection_kwargs().get("max_connections")
        return 100 if limit is None else int(limit)  # redis-py's default

    def _loop_client(
        self, loop: asyncio.AbstractEventLoop, client: _RefreshingRedisCluster
    ) -> _ClusterLoopClient:
        return _ClusterLoopClient(loop, client)

    async def _client(self) -> _RefreshingRedisCluster:
        """The running loop's client (RuntimeError outside a loop)."""
        bound = self._bound
        if bound.loop is not _running_loop():
            bound = await self._bind()
        return bound.client

    # -- failure classification -----------------------------------------------------

    async def _translated(self, exc: BaseException, client: RedisCluster) -> BaseException:
        """redis-py's cluster error as this cache classifies it (see the module docstring)."""
        if isinstance(exc, MaxConnectionsError):
            return CachePoolExhaustedError(0, self._max_connections)
        if isinstance(exc, SlotNotCoveredError):
            return CacheShardUnavailableError(None, exc)
        if isinstance(exc, AttributeError):
            exc = RedisConnectionError(f"connection closed by the slot map refresh while in use ({exc})")
        if not isinstance(exc, RedisClusterException) and await self._some_primary_answers(client):
            node = getattr(exc, "connection", None)
            return CacheShardUnavailableError(node.name if isinstance(node, ClusterNode) else None, exc)
        if isinstance(exc, RedisClusterException):  # no startup node answered
            return RedisConnectionError(str(exc))
        return exc

    async def _some_primary_answers(self, client: RedisCluster) -> bool:
        """Does any primary answer a PING on a connection of its own? Asked once per
        ``VERDICT_TTL_S`` (calls failing meanwhile share the answer).

        redis-py's own connections are no witness: after a node fails it closes the
        connections of every node to refresh the slot map, failing calls on healthy nodes.
        """
        decided_at, answers = self._verdict
        if time.monotonic() - decided_at < VERDICT_TTL_S:
            return answers
        loop = asyncio.get_running_loop()
        pending = self._asking.get(loop)
        if pending is None or pending.done():
            pending = self._asking[loop] = loop.create_task(self._ask_primaries(client))
        answers = await asyncio.shield(pending)
        self._verdict = (time.monotonic(), answers)
        return answers

    async def _ask_primaries(self, client: RedisCluster) -> bool:
        return any(error is None for _, error in await self._ping_primaries(client, fresh=True))

    # -- operations -----------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        bound = self._bound
        if bound.loop is not _running_loop():
            bound = await self._bind()
        try:
            payload: bytes | None = await bound.client.execute_command("GET", key)
            return payload
        except _CLUSTER_FAILURES as exc:
            raise await self._translated(exc, bound.client) from exc

    async def exists(self, key: str) -> bool:
        client = await self._client()
        try:
            return bool(await client.execute_command("EXISTS", key))
        except _CLUSTER_FAILURES as exc:
            raise await self._translated(exc, client) from exc

    async def set(self, key: str, payload: bytes, ttl: float | None) -> None:
        bound = self._bound
        if bound.loop is not _running_loop():
            bound = await self._bind()
        try:
            if ttl is None:
                await bound.client.execute_command("SET", key, payload)
            else:
                await bound.client.execute_command("SET", key, payload, "PX", _milliseconds(ttl))
        except _CLUSTER_FAILURES as exc:
            raise await self._translated(exc, bound.client) from exc

    async def delete(self, key: str) -> bool:
        client = await self._client()
        try:
            return bool(await client.execute_command("UNLINK", key))
        except _CLUSTER_FAILURES as exc:
            raise await self._translated(exc, client) from exc

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        """One ``MGET`` per slot, pipelined per node; when a node fails, the keys it serves
        read as misses while the others are still read."""
        client = await self._client()
        try:
            return await client.mget_nonatomic(keys)
        except _CLUSTER_FAILURES as exc:
            failure = await self._translated(exc, client)
            if not isinstance(failure, CacheShardUnavailableError):
                raise failure from exc
        return await self._mget_per_slot(client, keys)

    async def get_expiring(self, key: str) -> ExpiringRead:
        """The value, its remaining TTL and the node that answered, in one round trip."""
        bound = self._bound
        if bound.loop is not _running_loop():
            bound = await self._bind()
        client: Any = bound.client
        try:
            return _reads_from(await _get_expiring_here(client, (key,)))[0]
        except _CLUSTER_FAILURES as exc:
            raise await self._translated(exc, client) from exc

    async def mget_expiring(self, keys: Sequence[str]) -> list[ExpiringRead]:
        """``get_expiring`` per slot, the slots read concurrently; the keys of a node that
        fails read as absent while the others are still read."""
        client: Any = await self._client()
        groups = list(client._partition_keys_by_slot(keys).values())
        replies = await asyncio.gather(
            *(_get_expiring_here(client, slot_keys) for slot_keys in groups), return_exceptions=True
        )
        found: dict[str, ExpiringRead] = {}
        failure: BaseException | None = None
        for slot_keys, reply in zip(groups, replies, strict=True):
            if isinstance(reply, BaseException):
                if not isinstance(reply, _CLUSTER_FAILURES):
                    raise reply
                failure = await self._translated(reply, client)
                if not isinstance(failure, CacheShardUnavailableError):
                    raise failure from reply
                continue
            found.update(zip(slot_keys, _reads_from(reply), strict=True))
        if not found and failure is not None:
            raise failure
        return [found.get(key, ABSENT) for key in keys]

    async def _mget_per_slot(self, client: RedisCluster, keys: Sequence[str]) -> list[bytes | None]:
        """The slow path of ``mget`` after a node failed: slots one by one, failures as misses."""
        found: dict[KeyT, bytes | None] = {}
        failure: BaseException | None = None
        answered = False
        for slot_keys in client._partition_keys_by_slot(keys).values():
            try:
                values = await client.execute_command("MGET", *slot_keys)
            except _CLUSTER_FAILURES as exc:
                failure = await self._translated(exc, client)
                if not isinstance(failure, CacheShardUnavailableError):
                    raise failure from exc
                continue
            answered = True
            found.update(zip(slot_keys, values, strict=True))
        if not answered and failure is not None:
            raise failure
        return [found.get(key) for key in keys]

    async def mset(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        """``SET`` (with ``PX``) per key, pipelined per node, in bounded chunks; on failure some
        of the items may have been written."""
        client = await self._client()
        milliseconds = None if ttl is None else _milliseconds(ttl)
        token = _writing.set(True)
        try:
            for chunk in _chunks(items, MSET_CHUNK_ITEMS, MSET_CHUNK_BYTES):
                pipe = client.pipeline()
                for key, payload in chunk:
                    pipe.set(key, payload, px=milliseconds)
                await pipe.execute()
        except _CLUSTER_FAILURES as exc:
            raise await self._translated(exc, client) from exc
        finally:
            _writing.reset(token)

    async def delete_many(self, keys: Sequence[str]) -> int:
        """``UNLINK`` per slot (redis-py splits the keys); also the journal's replay."""
        client = await self._client()
        removed = 0
        try:
            for start in range(0, len(keys), self._scan_count):
                removed += await client.unlink(*keys[start : start + self._scan_count])
        except _CLUSTER_FAILURES as exc:
            raise await self._translated(exc, client) from exc
        return removed

    async def clear(self, pattern: str) -> int:
        """``SCAN MATCH`` + ``UNLINK`` on every primary, concurrently."""
        client = await self._client()
        try:
            if client._initialize:
                await client.initialize()
            counts = await asyncio.gather(
                *(self._clear_node(client, node, pattern) for node in client.get_primaries())
            )
        except _CLUSTER_FAILURES as exc:
            raise await self._translated(exc, client) from exc
        return sum(counts)

    async def _clear_node(self, client: RedisCluster, node: ClusterNode, pattern: str) -> int:
        removed = 0
        cursor = None
        while cursor != 0:
            reply = await client.execute_command(
                "SCAN", cursor or 0, "MATCH", pattern, "COUNT", self._scan_count, target_nodes=node
            )
            cursor, keys = _scan_reply(reply, node)
            if keys:
                removed += await client.unlink(*keys)
        return removed

    async def ping(self) -> None:
        """PING every primary; raises only when none answers (a dead shard is not an outage)."""
        client = await self._client()
        health = await self._ping_primaries(client)
        failures = [error for _, error in health if error is not None]
        if failures and len(failures) == len(health):
            raise failures[0]

    async def _ping_primaries(
        self, client: RedisCluster, *, fresh: bool = False
    ) -> list[tuple[ClusterNode, BaseException | None]]:
        """PING each primary of the slot map (refreshed first if due).

        A refresh that fails (a dead node may be asked first) leaves the last map known;
        with none known at all, the seed nodes are asked instead. ``fresh``: on a new
        connection per node, closed after.
        """
        try:
            if client._initialize:
                await client.initialize()
        except _CLUSTER_FAILURES as exc:
            logger.debug("refreshing the Redis Cluster slot map failed: %r", exc)
        primaries = client.get_primaries() or list(client.nodes_manager.startup_nodes.values())
        ping = _ping_fresh if fresh else _ping
        replies = await asyncio.gather(
            *(ping(node, client.get_connection_kwargs()) for node in primaries), return_exceptions=True
        )
        return [
            (node, reply if isinstance(reply, BaseException) else None)
            for node, reply in zip(primaries, replies, strict=True)
        ]

    async def node_health(self) -> list[dict[str, Any]]:
        """Every primary's address and whether it answers PING (for ``health_check``)."""
        client = await self._client()
        report = []
        for node, error in await self._ping_primaries(client):
            entry: dict[str, Any] = {"address": node.name, "role": "primary", "connected": error is None}
            if error is not None:
                entry["error"] = f"{type(error).__name__}: {error}".rstrip(": ")
            report.append(entry)
        return report

    def server_of(self, key: str | None) -> tuple[str, int] | None:
        """The node serving ``key`` in the slot map of the loop used last (for span attributes)."""
        if key is None:
            return None
        try:
            node = self._bound.client.get_node_from_key(key)
        except (RedisClusterException, KeyError, AttributeError):
            return None
        return None if node is None else (node.host, int(node.port))

    def fail_fast_when(self, unreachable: Callable[[], bool]) -> None:
        """Cluster nodes have no queue to drain: calls fail at once when a node is full."""
        self._refuse_waiters = unreachable

    def connections(self) -> tuple[int, int, int]:
        """``(used, idle, max)`` over every node of the loops alive now."""
        used = idle = most = 0
        for node_used, node_idle, node_max in self.connections_by_node().values():
            used += node_used
            idle += node_idle
            most += node_max
        return used, idle, most

    def connections_by_node(self) -> dict[tuple[str, int], tuple[int, int, int]]:
        """``{(host, port): (used, idle, max)}`` over the loops alive now (pool gauges per node)."""
        with self._lock:
            clients = [bound.client for bound in self._by_loop.values() if not bound.loop.is_closed()]
        usage: dict[tuple[str, int], tuple[int, int, int]] = {}
        for client in clients:
            for node in client.get_nodes():
                idle = len(node._free)
                used = len(node._connections) - idle
                address = (node.host, int(node.port))
                before = usage.get(address, (0, 0, 0))
                usage[address] = (
                    before[0] + used,
                    before[1] + idle,
                    before[2] + node.max_connections,
                )
        return usage

    async def reconnect(self) -> None:
        """Drop idle connections of every node and refresh the slot map on next use."""
        client = await self._client()
        await client.aclose()


async def _ping(node: ClusterNode, _kwargs: dict[str, Any]) -> None:
    await node.execute_command("PING")


async def _ping_fresh(node: ClusterNode, kwargs: dict[str, Any]) -> None:
    probe = ClusterNode(node.host, node.port, **{**kwargs, "max_connections": 1})
    try:
        await probe.execute_command("PING")
    finally:
        await probe.disconnect()


def _scan_reply(reply: Any, node: ClusterNode) -> tuple[int, list[Any]]:
    """``(cursor, keys)`` of one node's ``SCAN`` (redis-py answers ``({node: cursor}, keys)``)."""
    cursors, keys = reply
    cursor = cursors.get(node.name, 0) if isinstance(cursors, dict) else cursors
    return int(cursor), list(keys)
