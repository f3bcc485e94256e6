"""``CacheManager``: the facade users call.

It validates arguments, builds keys (``keys.Namespace``), encodes values (``codec``),
keeps statistics and applies the error policy; storage, fallback and recovery are
the backends' business (``failover.FailoverBackend`` over Redis and memory).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from telemetry_infra.cache.backend import Backend
from telemetry_infra.cache.codec import Codec
from telemetry_infra.cache.durations import MAX_SECONDS
from telemetry_infra.cache.durations import seconds as _seconds
from telemetry_infra.cache.errors import (
    BACKEND_ERRORS,
    OUTAGE_ERRORS,
    CacheClosedError,
    CacheDecodeError,
    CacheSerializationError,
    CacheWriteError,
)
from telemetry_infra.cache.fallback.failover import FailoverBackend
from telemetry_infra.cache.fallback.journal import OutageJournal
from telemetry_infra.cache.fallback.memory import MemoryBackend
from telemetry_infra.cache.instruments import NO_TELEMETRY, CacheTelemetry, NoTelemetry, Operation
from telemetry_infra.cache.keys import Namespace, key_list
from telemetry_infra.cache.near.cluster_invalidations import ClusterInvalidations
from telemetry_infra.cache.near.invalidations import (
    InvalidationChannel,
    sentinel_connection_factory,
    tracking_connection_factory,
)
from telemetry_infra.cache.near.tier import NEAR_MISS, Flight, NearCache
from telemetry_infra.cache.redis.node import MSET_CHUNK_ITEMS, NO_EXPIRY, ExpiringRead
from telemetry_infra.cache.redis.options import ConnectionOptions
from telemetry_infra.cache.redis.sentinel import RedisSentinelBackend
from telemetry_infra.cache.redis.sentinel_watch import SentinelWatch
from telemetry_infra.cache.redis.topology import redis_backend_for
from telemetry_infra.cache.redis.urls import parse_redis_url
from telemetry_infra.cache.stats import CacheStats
from telemetry_infra.cache.sync import SyncCache, sync_view_of

__all__ = ["TTL", "CacheManager"]

logger = logging.getLogger("telemetry_infra.cache")
T = TypeVar("T")

TTL = float | int | timedelta | None
Pairs = Mapping[str, Any] | Iterable[tuple[str, Any]] | AsyncIterable[tuple[str, Any]]
DataLoader = Callable[[], Pairs | Awaitable[Pairs]]


#: The longest TTL accepted (100 years): Redis stores expiries as milliseconds in 64 bits.
MAX_TTL_S = MAX_SECONDS
_UNANSWERED: Any = object()
#: What a failed write raises: refused or unconfirmed (``CacheWriteError``) or any backend error.
WRITE_ERRORS: tuple[type[BaseException], ...] = (CacheWriteError, *BACKEND_ERRORS)
_perf_counter = time.perf_counter


class _Closed:
    """Stands in for the backend after ``close()``: every operation raises."""

    name = "closed"

    def __getattr__(self, operation: str) -> Callable[..., Any]:
        async def closed(*_args: Any) -> Any:
            raise CacheClosedError(f"CacheManager is closed; cannot {operation}")

        return closed


@dataclass(frozen=True, slots=True)
class _Near:
    """The near tier and what keeps it exact, there together (``near_cache=True`` with Redis)
    or not at all: ``tier`` holds the entries, ``channel`` brings Redis's invalidations,
    ``backend`` answers the tier's fills with the keys' TTLs."""

    tier: NearCache
    channel: InvalidationChannel | ClusterInvalidations
    backend: FailoverBackend

    def deadline(self, read: ExpiringRead, sent_at: float) -> float:
        """The key's Redis expiry as a ``monotonic()`` time (counted from when the read was
        sent, so never later than Redis's); ``inf`` without one; 0 (install nothing) when the
        node that answered is not tracked yet (a Cluster slot just moved to it)."""
        if not self.channel.covers_node(read.node):
            return 0.0
        if read.ttl_ms == NO_EXPIRY:
            return math.inf
        return sent_at + max(read.ttl_ms, 0) / 1000


class CacheManager:
    """Async Redis cache with an in-memory LRU fallback that survives outages.

    With ``redis_url=None`` the memory backend is the cache. Otherwise Redis is
    used and memory takes over while Redis is unreachable (see docs/cache.md).
    Keys are ``str`` and stored under ``"<namespace>:"``; values go through the
    codec (``serialization="json"`` via orjson, or HMAC-signed ``"pickle"``).
    ``near_cache=True`` keeps the entries read in process memory in front of Redis, kept
    exact by Redis's invalidations (``near`` and ``invalidations`` say how).
    """

    def __init__(
        self,
        redis_url: str | None = None,
        max_connections: int = 50,
        memory_cache_size: int = 1000,
        memory_cache_ttl: float = 300,
        enable_compression: bool = True,
        serialization: str = "json",
        *,
        name: str = "default",
        namespace: str = "cache",
        default_ttl: TTL = 3600,
        compression_threshold: int = 1024,
        compression_level: int = 6,
        signing_key: str | bytes | None = None,
        socket_timeout: float = 1.0,
        socket_connect_timeout: float = 1.0,
        pool_timeout: float = 5.0,
        health_check_interval: float = 30,
        failure_threshold: int = 3,
        probe_interval: float = 1.0,
        journal_size: int = 10_000,
        telemetry: bool = True,
        hash_keys_in_spans: bool = False,
        memory_cache_max_bytes: int = 64 * 1024 * 1024,
        near_cache: bool = False,
        near_cache_size: int = 10_000,
        near_cache_max_ttl: float | timedelta = 60,
        near_cache_max_bytes: int = 64 * 1024 * 1024,
        fallback_max_ttl: float | timedelta = 1.0,
    ) -> None:
        self._connection = ConnectionOptions(
            max_connections=max_connections,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            health_check_interval=health_check_interval,
            pool_timeout=pool_timeout,
        )
        self.name = name
        self.redis_url = redis_url
        self.max_connections = max_connections
        self.socket_timeout = self._connection.socket_timeout
        self._probe_interval = probe_interval
        fallback_ttl = _seconds(fallback_max_ttl, "fallback_max_ttl")
        self._namespace = Namespace(namespace)
        self._codec = Codec(
            serialization,
            enable_compression=enable_compression,
            compression_threshold=compression_threshold,
            compression_level=compression_level,
            signing_key=signing_key,
        )
        self._default_ttl = None if default_ttl is None else _seconds(default_ttl, "default_ttl")
        self._stats = CacheStats()
        self._reported: set[str] = set()
        self._memory = MemoryBackend(
            memory_cache_size,
            memory_cache_ttl,
            on_evict=self._stats.count_eviction,
            max_bytes=memory_cache_max_bytes,
            reader=self._codec.view_of,
        )
        self._failover: FailoverBackend | None = None
        self._backend: Backend = self._memory
        if redis_url is not None:
            redis_backend = redis_backend_for(redis_url, self._connection, check_interval=probe_interval)
            self._failover = failover = FailoverBackend(
                redis_backend,
                self._memory,
                OutageJournal(journal_size),
                failure_threshold=failure_threshold,
                probe_interval=probe_interval,
                probe_timeout=self.socket_timeout,
                fallback_max_ttl=fallback_ttl,
                on_outage=self._outage,
                task_context=lambda: self._telemetry.background_context(),
            )
            redis_backend.fail_fast_when(lambda: failover.breaker.blocks_writes)
            self._backend = failover
        self._near: _Near | None = None
        if near_cache and redis_url is not None and self._failover is not None:
            tier = NearCache(
                near_cache_size,
                _seconds(near_cache_max_ttl, "near_cache_max_ttl"),
                self._codec.decode,
                self._stats,
                max_bytes=near_cache_max_bytes,
                body_of=self._codec.body_of,
            )
            channel = self._invalidation_channel(redis_url, tier, self._failover)
            self._near = _Near(tier, channel, self._failover)
            self._failover.breaker.add_listener(tier.breaker_changed)
        self._telemetry: CacheTelemetry | NoTelemetry = NO_TELEMETRY
        #: whether hits answered in place read the clock (nothing reads it with telemetry off)
        self._timed = telemetry
        if telemetry:
            self._telemetry = CacheTelemetry(
                name,
                self._stats,
                lambda: self._backend.name,
                self,
                hash_keys=hash_keys_in_spans,
                near=self._near is not None,
                server_of=self._server_of if self._failover is not None else None,
            )
            if self._failover is not None:
                self._failover.breaker.add_listener(self._telemetry.breaker_changed)

    def _invalidation_channel(
        self, url: str, near: NearCache, failover: FailoverBackend
    ) -> InvalidationChannel | ClusterInvalidations:
        """What keeps ``near`` exact: a tracking connection to the Redis node, to the primary
        the Sentinels name (found again after a failover), or to every Cluster primary."""
        target = parse_redis_url(url)
        client_name = f"telemetry_infra-near:{self.name}"
        if target.topology == "cluster":
            return ClusterInvalidations(
                target,
                self._namespace.prefix,
                near,
                self._connection,
                client_name=client_name,
                refresh_interval=self._probe_interval,
                task_context=lambda: self._telemetry.background_context(),
            )
        watch: SentinelWatch | None = None
        on_new_node: Callable[[], None] | None = None
        if isinstance(failover.primary, RedisSentinelBackend):  # the URL's topology is "sentinel"
            watch = failover.primary.watch
            on_new_node = failover.primary.follow_new_primary
            connect = sentinel_connection_factory(
                target,
                self._connection,
                client_name=client_name,
                named_primary=watch.named_primary,
                not_primary=watch.distrust,
            )
        else:
            connect = tracking_connection_factory(url, self._connection, client_name=client_name)
        channel = InvalidationChannel(
            connect,
            self._namespace.prefix,
            near,
            answer_timeout=self.socket_timeout,
            retry_interval=self._probe_interval,
            primary_only=target.topology == "sentinel",
            on_new_node=on_new_node,
            task_context=lambda: self._telemetry.background_context(),
        )
        if watch is not None:  # the Sentinels announced another primary: the channel follows at once
            watch.add_listener(channel.primary_moved)
        return channel

    # -- lifecycle ------------------------------------------------------------------

    async def initialize(self) -> None:
        """Check Redis once; when it does not answer, start on memory and keep probing.

        With ``near_cache=True`` it also waits (at most ``socket_connect_timeout`` +
        ``socket_timeout``) until the invalidation channel tracks, so the first reads fill
        the near tier. Optional: without it the first call connects. The manager may be used from any
        event loop (each gets its own connection pool), so one made at import time works
        across ``asyncio.run()`` calls, pytest-asyncio's per-test loops and threads.
        """
        if self._failover is not None:
            with self._telemetry.untraced():
                await self._failover.connect(self.socket_timeout)
        if self._near is not None and not self.fallback_active:
            await self._near.channel.wait_tracking(
                self._connection.socket_connect_timeout + self.socket_timeout
            )

    async def close(self) -> None:
        """Release connections (of every loop still running) and the probe task; later calls
        raise ``CacheClosedError``. May be called from any loop."""
        backend, self._backend = self._backend, _Closed()
        if self._near is not None:
            await self._near.channel.stop()
        if not isinstance(backend, _Closed):
            await backend.close()

    @property
    def sync(self) -> SyncCache:
        """The synchronous view of this manager, for code without an event loop (Django,
        Flask, Celery, scripts): ``cache.sync.get(key)``; see ``cache.sync`` module docs."""
        return sync_view_of(self)

    def _get_near(self, key: str) -> Any:
        """``get`` answered by the near tier alone, in the calling thread (the sync view's
        hits, no hop to a loop): the value, counted and traced as a near hit, or ``NEAR_MISS``."""
        near = self._near
        if near is None:
            return NEAR_MISS
        value = near.tier.get(self._namespace.key(key))
        if value is not NEAR_MISS:
            with self._telemetry.operation("get", key) as op:
                self._stats.hits += 1
                self._stats.near_hits += 1
                op.served_near()
                op.set("cache.hit", True)
        return value

    def _forget_invalidations_after_fork(self) -> None:
        """In a forked child: no listener of the parent runs here, so nothing near may be served
        until this process's own channel tracks (it starts on the next near miss)."""
        if self._near is not None:
            self._near.tier.tracking_lost()

    async def __aenter__(self) -> CacheManager:
        await self.initialize()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- operations -----------------------------------------------------------------

    async def get(self, key: str, default: Any = None) -> Any:
        """The cached value, or ``default`` when absent (a cached ``None`` is returned as ``None``)."""
        namespace = self._namespace
        stored = namespace.prefix + key if key.__class__ is str else namespace.key(key)
        near = self._near
        timed = self._timed
        if near is not None:
            started = _perf_counter() if timed else 0.0
            value = near.tier.get(stored)
            if value is not NEAR_MISS:  # the hot path: no await, no per-call object
                stats = self._stats
                stats.hits += 1
                stats.near_hits += 1
                if timed:
                    self._telemetry.near_hit(key, started)
                return value
            return await self._get_from_redis(key, stored, near, default)
        if self._backend is self._memory:  # no Redis configured: a hit is read in place, no await
            started = _perf_counter() if timed else 0.0
            entry = self._memory.entry(stored)
            if entry is not None:
                try:
                    value = entry.loads(entry.body)  # prepared at the write: one call, a fresh copy
                except Exception:  # the general path below decodes it again and reports it
                    pass
                else:
                    self._stats.hits += 1
                    if timed:
                        self._telemetry.memory_hit(key, started, len(entry.payload))
                    return value
        with self._telemetry.operation("get", key) as op:
            payload = None
            try:
                payload = await self._backend.get(stored)
            except BACKEND_ERRORS as exc:
                self._failed(op, exc)
            return self._answer(op, key, payload, default)

    async def _get_from_redis(self, key: str, stored: str, near: _Near, default: Any) -> Any:
        """A ``get`` the near tier could not answer; its reply may fill the near tier."""
        with self._telemetry.operation("get", key) as op:
            flight = self._near_miss(stored, near)
            payload = _UNANSWERED
            expires_at = 0.0
            try:
                if flight is None:
                    payload = await self._backend.get(stored)
                else:
                    payload, expires_at = await self._read_for_near(stored, near)
            except BACKEND_ERRORS as exc:
                self._failed(op, exc)
            finally:
                if payload is _UNANSWERED:
                    payload = None
                    if flight is not None:  # failed or cancelled: says nothing about the key
                        near.tier.release(stored, flight)
                        flight = None
            value = self._answer(op, key, payload, _UNANSWERED)
            if flight is not None:  # absent or unreadable: settled as absent
                if value is _UNANSWERED:
                    near.tier.settle(stored, flight, None)
                else:
                    near.tier.settle(stored, flight, payload, value, expires_at)
            return default if value is _UNANSWERED else value

    def _answer(self, op: Operation, key: str, payload: bytes | None, default: Any) -> Any:
        """What ``get`` returns for ``payload``: its value (a hit), else ``default`` (a miss,
        an unreadable entry included); counted and noted on the span."""
        if payload is not None:
            try:
                value = self._codec.decode(payload)
            except CacheDecodeError as exc:
                self._undecodable(op, key, exc)
            else:
                self._stats.hits += 1
                op.set("cache.hit", True)
                op.set("cache.item_size", len(payload))
                return value
        self._stats.misses += 1
        op.set("cache.hit", False)
        return default

    async def _read_for_near(self, stored: str, near: _Near) -> tuple[bytes | None, float]:
        """The payload of ``stored`` and until when a near entry filled from it may be served."""
        sent_at = time.monotonic()
        read = await near.backend.get_expiring(stored)
        return read.payload, near.deadline(read, sent_at)

    def _near_miss(self, stored: str, near: _Near) -> Flight | None:
        """A read the near tier cannot answer: counted, and registered so its reply may fill it."""
        self._stats.near_misses += 1
        near.channel.ensure_listening()
        return near.tier.begin(stored)

    async def set(self, key: str, value: Any, ttl: TTL = None) -> bool:
        """Store ``value`` for ``ttl`` seconds (``None``: the manager's ``default_ttl``).

        Returns False when the write did not reach a store: Redis refused it (``OOM``,
        ``READONLY``), did not confirm it in time, or is unreachable with the outage
        journal full. The previous value is then not served either: Redis drops it
        (``UNLINK``) or this manager reads the key as a miss until it can. Counted as an
        error and logged with Redis's message.
        """
        stored = self._namespace.key(key)
        seconds = self._ttl(ttl)
        with self._telemetry.operation("set", key) as op:
            payload = self._encode(key, value)
            op.set("cache.item_size", len(payload))
            if seconds is not None:
                op.set("cache.ttl", seconds)
            try:
                await self._changing((stored,), self._backend.set(stored, payload, seconds))
            except WRITE_ERRORS as exc:
                self._failed(op, exc)
                return False
            self._stats.sets += 1
            return True

    async def delete(self, key: str) -> bool:
        """Remove ``key``; True when it existed, False when it did not.

        Raises ``CacheWriteError`` when the removal may not have happened: Redis refused
        it (``READONLY``...) or did not confirm it in time, or Redis is unreachable and the
        outage journal is full. Other processes may then still read the entry (this
        manager does not). While Redis is merely unreachable, the removal is journaled,
        applied on recovery, and nothing is raised.
        """
        stored = self._namespace.key(key)
        with self._telemetry.operation("delete", key) as op:
            removed = await self._guarded(op, self._changing((stored,), self._backend.delete(stored)), False)
            self._stats.deletes += 1
            return removed

    async def exists(self, key: str) -> bool:
        """True when ``key`` holds a value (``None`` included)."""
        stored = self._namespace.key(key)
        with self._telemetry.operation("exists", key) as op:
            found = await self._guarded(op, self._backend.exists(stored), False)
            op.set("cache.hit", found)
            return found

    async def clear(self, pattern: str | None = None) -> int:
        """Remove keys matching the glob ``pattern`` inside the namespace (all of it if None).

        Uses ``SCAN`` + ``UNLINK``, never ``KEYS``/``FLUSHDB``. Returns how many were removed.
        Raises ``CacheWriteError`` like ``delete()``.
        """
        stored_pattern = self._namespace.pattern(pattern)
        with self._telemetry.operation("clear", "*" if pattern is None else pattern) as op:
            removed = await self._guarded(
                op, self._changing(stored_pattern, self._backend.clear(stored_pattern)), 0
            )
            op.set("cache.keys.count", removed)
            return removed

    def _changing(self, keys: Sequence[str] | str, change: Awaitable[T]) -> Awaitable[T]:
        """``change`` with the near entries of ``keys`` (a sequence, or a glob pattern) dropped
        before it is sent and again once it is done or has failed: no near entry or fill
        in flight outlives our own write (see ``near``)."""
        if self._near is None:
            return change
        return self._near_changing(self._near.tier, keys, change)

    async def _near_changing(self, near: NearCache, keys: Sequence[str] | str, change: Awaitable[T]) -> T:
        near.discard_changed(keys)
        try:
            return await change
        finally:
            near.discard_changed(keys)

    async def _guarded(self, op: Operation, call: Awaitable[T], failed: T) -> T:
        """``await call``, or ``failed`` when the backend raises (counted, logged, on the span);
        ``CacheWriteError`` is counted, logged and raised."""
        try:
            return await call
        except CacheWriteError as exc:
            self._failed(op, exc)
            raise
        except BACKEND_ERRORS as exc:
            self._failed(op, exc)
            return failed

    async def mget(self, keys: Iterable[str]) -> dict[str, Any]:
        """Values of the ``keys`` found, in one ``MGET``; keys not cached are absent."""
        user_keys = key_list(keys)
        stored = self._namespace.keys(user_keys)
        if not stored:
            return {}
        with self._telemetry.operation("mget") as op:
            op.set("cache.keys.count", len(stored))
            found: dict[str, Any] = {}
            wanted = len(user_keys)
            near = self._near
            if near is None:
                await self._mget_backend(op, found, user_keys, stored, None)
            else:
                user_keys, stored = self._mget_near(found, user_keys, stored, near)
                if not stored:
                    op.served_near()
                flights: list[Flight | None] = [near.tier.begin(key) for key in stored]
                try:
                    await self._mget_backend(op, found, user_keys, stored, (near, flights))
                finally:
                    for key, flight in zip(stored, flights, strict=True):
                        if flight is not None:  # cancelled meanwhile
                            near.tier.release(key, flight)
            self._stats.hits += len(found)
            self._stats.misses += wanted - len(found)
            op.set("cache.hit", len(found) == wanted)
            return found

    async def _mget_backend(
        self,
        op: Operation,
        found: dict[str, Any],
        user_keys: list[str],
        stored: list[str],
        fills: tuple[_Near, list[Flight | None]] | None,
    ) -> None:
        """Read ``stored`` in one ``MGET`` into ``found``; with ``fills`` (the near tier and
        a flight per key), settle (and clear) each flight."""
        if not stored:
            return
        sent_at = time.monotonic()
        try:
            if fills is None:
                payloads = await self._backend.mget(stored)
            else:
                reads = await fills[0].backend.mget_expiring(stored)
                payloads = [read.payload for read in reads]
        except BACKEND_ERRORS as exc:
            self._failed(op, exc)
            return  # the flights install nothing: released by the caller
        decode = self._codec.decode
        if fills is None:
            for key, payload in zip(user_keys, payloads, strict=True):
                if payload is None:
                    continue
                try:
                    found[key] = decode(payload)
                except CacheDecodeError as exc:
                    self._undecodable(op, key, exc)
            return
        near, flights = fills
        settle = near.tier.settle
        for index, (key, payload) in enumerate(zip(user_keys, payloads, strict=True)):
            value = None
            if payload is not None:
                try:
                    value = found[key] = decode(payload)
                except CacheDecodeError as exc:
                    self._undecodable(op, key, exc)
                    continue  # its flight is released by the caller
            flight = flights[index]
            if flight is not None:
                flights[index] = None
                settle(stored[index], flight, payload, value, near.deadline(reads[index], sent_at))

    def _mget_near(
        self, found: dict[str, Any], user_keys: list[str], stored: list[str], near: _Near
    ) -> tuple[list[str], list[str]]:
        """Put what the near tier holds in ``found``; return the keys (user, stored) it lacks."""
        missing_keys: list[str] = []
        missing_stored: list[str] = []
        for key, stored_key in zip(user_keys, stored, strict=True):
            value = near.tier.get(stored_key)
            if value is NEAR_MISS:
                missing_keys.append(key)
                missing_stored.append(stored_key)
            else:
                found[key] = value
        self._stats.near_hits += len(found)
        self._stats.near_misses += len(missing_stored)
        if missing_stored:
            near.channel.ensure_listening()
        return missing_keys, missing_stored

    async def mset(self, mapping: Mapping[str, Any], ttl: TTL = None) -> bool:
        """Store every item (TTL included): one round trip per chunk of up to 1000 items or
        1 MiB, so no single command runs past ``socket_timeout``. Nothing is written if any
        value cannot be encoded.

        Returns True only when the store serving now holds the whole batch: Redis, or
        memory during an outage (then only a batch no larger than ``memory_cache_size``).
        On False none of the previous values of these keys is served any more (see ``set``).
        """
        seconds = self._ttl(ttl)
        key_of = self._namespace.key
        if not mapping:
            return True
        with self._telemetry.operation("mset") as op:
            if len(mapping) <= MSET_CHUNK_ITEMS:
                items = [(key_of(key), self._encode(key, value)) for key, value in mapping.items()]
            else:
                items = await self._encode_batch(list(mapping.items()))
            op.set("cache.keys.count", len(items))
            op.set("cache.item_size", sum(len(payload) for _, payload in items))
            if seconds is not None:
                op.set("cache.ttl", seconds)
            try:
                keys = [key for key, _ in items] if self._near is not None else ()
                await self._changing(keys, self._backend.mset(items, seconds))
            except WRITE_ERRORS as exc:
                self._failed(op, exc)
                return False
            self._stats.sets += len(items)
            return True

    async def _encode_batch(self, pairs: list[tuple[str, Any]]) -> list[tuple[str, bytes]]:
        """Encode a big batch a chunk at a time, letting other tasks run in between: 200,000
        values take long enough to starve every other call of the event loop."""
        key_of, encode = self._namespace.key, self._encode
        items: list[tuple[str, bytes]] = []
        for start in range(0, len(pairs), MSET_CHUNK_ITEMS):
            items.extend(
                (key_of(key), encode(key, value)) for key, value in pairs[start : start + MSET_CHUNK_ITEMS]
            )
            await asyncio.sleep(0)
        return items

    async def warm_cache(self, data_loader: DataLoader, ttl: TTL = None, *, chunk_size: int = 500) -> int:
        """Load ``data_loader()`` (sync or async; a mapping or (key, value) pairs, sync or
        async iterable) into the cache in ``mset`` chunks. Returns how many were written."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}")
        self._ttl(ttl)  # fail before loading anything
        loaded = data_loader()
        if inspect.isawaitable(loaded):
            loaded = await loaded
        pairs = loaded.items() if isinstance(loaded, Mapping) else loaded
        written = 0
        chunk: dict[str, Any] = {}
        async for key, value in _aiter_pairs(pairs):
            chunk[key] = value
            if len(chunk) >= chunk_size:
                written += await self._write_chunk(chunk, ttl)
                chunk = {}
        return written + await self._write_chunk(chunk, ttl)

    async def _write_chunk(self, chunk: dict[str, Any], ttl: TTL) -> int:
        return len(chunk) if chunk and await self.mset(chunk, ttl) else 0

    # -- observability --------------------------------------------------------------

    @property
    def backend_name(self) -> str:
        """Which store serves operations right now: ``redis`` or ``memory``."""
        return self._backend.name

    @property
    def fallback_active(self) -> bool:
        """True while memory serves because Redis is unreachable."""
        return self._failover is not None and self._failover.breaker.is_open

    def _server_of(self, key: str | None) -> tuple[str, int] | None:
        """The Redis node serving ``key`` (span attributes; None for a batch on a Cluster)."""
        if self._failover is None:  # not asked: telemetry gets this only with Redis configured
            return None
        return self._failover.primary.server_of(None if key is None else self._namespace.key(key))

    def connection_usage(self) -> tuple[int, int, int] | None:
        """``(used, idle, max)`` Redis pool connections; None in memory-only mode."""
        return None if self._failover is None else self._failover.primary.connections()

    def connection_usage_by_node(self) -> dict[tuple[str, int], tuple[int, int, int]] | None:
        """``{(host, port): (used, idle, max)}`` on a Cluster (a pool per node); None otherwise."""
        return None if self._failover is None else self._failover.primary.connections_by_node()

    def get_stats(self) -> dict[str, Any]:
        """Counters since creation: ``hits misses hit_rate sets deletes errors evictions
        fallback_active backend memory_items`` (plus ``fallbacks`` and ``journal_overflowed``),
        and ``near_hits near_misses near_invalidations near_items`` (0 without ``near_cache``).
        ``hits`` include ``near_hits``."""
        stats = self._stats
        failover = self._failover
        return {
            "hits": stats.hits,
            "misses": stats.misses,
            "hit_rate": stats.hit_rate,
            "sets": stats.sets,
            "deletes": stats.deletes,
            "errors": stats.errors,
            "evictions": stats.evictions,
            "fallback_active": self.fallback_active,
            "backend": self.backend_name,
            "memory_items": len(self._memory),
            "fallbacks": failover.breaker.times_opened if failover else 0,
            "journal_overflowed": failover.journal.overflowed if failover else 0,
            "near_hits": stats.near_hits,
            "near_misses": stats.near_misses,
            "near_invalidations": stats.near_invalidations,
            "near_items": len(self._near.tier) if self._near is not None else 0,
        }

    async def health_check(self) -> dict[str, Any]:
        """PING Redis (really, with latency) and report ``status`` healthy/degraded/unhealthy.

        On a Cluster or under Sentinel, ``redis.nodes`` lists every primary (Cluster) or
        every Sentinel and the primary they name, each with ``connected``; one node down
        makes the status ``degraded``.

        ``degraded`` while memory serves, and while writes fail although Redis answers: the
        last write was refused or unconfirmed and none has succeeded since
        (``redis.write_error`` holds Redis's message). With ``near_cache=True`` also while
        its invalidation channel is not tracking although Redis answers (``near.error``
        says why; reads then all go to Redis).
        """
        redis: dict[str, Any] = {"connected": False, "latency_ms": None, "error": None, "write_error": None}
        if isinstance(self._backend, _Closed):
            status, redis["error"] = "unhealthy", "cache manager is closed"
        elif self._failover is None:
            status, redis["error"] = "healthy", "not configured (memory only)"
        else:
            started = time.perf_counter()
            try:
                with self._telemetry.untraced():
                    await asyncio.wait_for(self._failover.ping(), self.socket_timeout)
                    redis["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
                    nodes = await asyncio.wait_for(self._failover.primary.node_health(), self.socket_timeout)
                    if nodes:
                        redis["nodes"] = nodes
                    if not self.fallback_active:
                        await self._failover.apply_journal()
            except (*OUTAGE_ERRORS, *BACKEND_ERRORS) as exc:
                redis["error"] = f"{type(exc).__name__}: {exc}".rstrip(": ")
            else:
                redis["connected"] = True
            failure = self._failover.write_failure
            if failure is not None:
                redis["write_error"] = failure
            healthy = redis["connected"] and not self.fallback_active and failure is None
            healthy = healthy and all(node["connected"] for node in redis.get("nodes", ()))
            if healthy and self._near is not None:
                healthy = await self._near.channel.wait_tracking(self.socket_timeout)
            status = "healthy" if healthy else "degraded"
        report: dict[str, Any] = {
            "status": status,
            "backend": self.backend_name,
            "redis": redis,
            "memory": {
                "items": len(self._memory),
                "max_items": self._memory.maxsize,
                "bytes": self._memory.stored_bytes,
                "max_bytes": self._memory.max_bytes,
                "ttl_seconds": self._memory.max_ttl,
            },
            "stats": self.get_stats(),
        }
        if self._near is not None:
            tier, channel = self._near.tier, self._near.channel
            report["near"] = {
                "tracking": tier.tracking,
                "serving": tier.serving,
                "items": len(tier),
                "max_items": tier.maxsize,
                "bytes": tier.stored_bytes,
                "max_bytes": tier.max_bytes,
                "max_ttl_seconds": tier.max_ttl,
                "flushes": tier.flushes,
                "error": channel.last_error,
            }
            if isinstance(channel, ClusterInvalidations):
                report["near"]["nodes"] = channel.nodes()
            else:
                report["near"]["node"] = channel.node
        return report

    # -- policies -------------------------------------------------------------------

    def _ttl(self, ttl: TTL) -> float | None:
        return self._default_ttl if ttl is None else _seconds(ttl, "ttl")

    def _encode(self, key: str, value: Any) -> bytes:
        try:
            return self._codec.encode(key, value)
        except CacheSerializationError as exc:
            self._stats.count_error(exc)
            raise

    def _failed(self, op: Operation, exc: BaseException) -> None:
        """A backend error: counted (by the type of Redis's error), logged, on the span."""
        cause = exc.__cause__ if isinstance(exc, CacheWriteError) and exc.__cause__ is not None else exc
        self._stats.count_error(cause)
        op.fail(exc)
        self._report(type(cause).__name__, "cache operation failed: %s: %s", type(exc).__name__, exc)

    def _undecodable(self, op: Operation, key: str, exc: CacheDecodeError) -> None:
        self._stats.count_error(exc)
        op.fail(exc)
        self._report("decode", "cache entry %r cannot be read, treated as a miss: %s", key, exc)

    def _outage(self, exc: BaseException) -> None:
        """Redis failed and memory served (see ``failover``): counted, on the span."""
        self._stats.count_error(exc)
        self._telemetry.outage(exc)
        if self._near is not None:
            self._near.tier.abandon_fills()  # the read in flight may be answered by memory

    def _report(self, kind: str, message: str, *args: Any) -> None:
        """Log a kind of failure once at WARNING, then at DEBUG (a flood stays a counter)."""
        level = logging.DEBUG if kind in self._reported else logging.WARNING
        self._reported.add(kind)
        logger.log(level, message, *args)


async def _aiter_pairs(pairs: Any) -> AsyncIterable[tuple[str, Any]]:
    if isinstance(pairs, AsyncIterable):
        async for pair in pairs:
            yield pair
        return
    for pair in pairs:
        yield pair
