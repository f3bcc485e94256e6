"""Redis store on ``redis.asyncio``: one bounded, fair connection pool per event loop.

Asyncio connections belong to the loop that opened them, so the backend keeps a
client (and pool) per running loop, made on first use there: a module-level
manager works across ``asyncio.run()`` calls, pytest-asyncio's per-test loops and
threads with loops of their own. Clients of loops that have closed are dropped.

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

import asyncio
import contextlib
import contextvars
import hashlib
import logging
import threading
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from typing import Any, Generic, NamedTuple, Protocol, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from telemetry_infra.cache.errors import CachePoolExhaustedError
from telemetry_infra.cache.fork_safety import hold_across_fork
from telemetry_infra.cache.redis.options import ConnectionOptions
from telemetry_infra.cache.redis.thread_reads import ThreadReads

__all__ = [
    "MSET_CHUNK_BYTES",
    "MSET_CHUNK_ITEMS",
    "NO_EXPIRY",
    "ExpiringRead",
    "ExpiringScript",
    "RedisBackend",
    "create_client",
]

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

#: The near tier's batch read: each key's value and its remaining TTL in milliseconds
#: (PTTL: -1 no expiry, -2 absent) in one reply. ``no-writes``: it runs during
#: ``CLIENT PAUSE WRITE`` like a GET (a script without flags is held back there).
_GET_EXPIRING = """#!lua flags=no-writes
local r = {}
for i = 1, #KEYS do
  r[2 * i - 1] = redis.call('GET', KEYS[i])
  r[2 * i] = redis.call('PTTL', KEYS[i])
end
return r
"""

#: ``ExpiringRead.ttl_ms`` of a key without an expiry.
NO_EXPIRY = -1


class ExpiringRead(NamedTuple):
    """What a read for the near tier returns for one key."""

    payload: bytes | None
    #: remaining TTL in ms when the node answered; ``NO_EXPIRY`` (-1), or -2: gone
    #: (absent, or expired between the two reads)
    ttl_ms: int
    #: the id of the Cluster node that answered (None elsewhere)
    node: str | None = None


#: What a key reads as when no node answered for it.
ABSENT = ExpiringRead(None, -2)


class Commands(Protocol):
    """A client the backends send raw commands to: redis-py's (whose ``execute_command`` is
    unannotated; this is its signature) or ``ThreadReads``."""

    async def execute_command(self, *args: Any) -> Any: ...


class ExpiringScript:
    """A read-only Lua script called by ``EVALSHA`` (``EVAL`` once when the node lacks it)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # Redis names a script by its SHA1

    async def __call__(self, client: Commands, keys: Sequence[str]) -> Any:
        try:
            return await client.execute_command("EVALSHA", self.sha, len(keys), *keys)
        except NoScriptError:  # a new or restarted node
            return await client.execute_command("EVAL", self.source, len(keys), *keys)


_get_expiring = ExpiringScript(_GET_EXPIRING)


def expiring_reads(reply: Sequence[Any], node: str | None = None) -> list[ExpiringRead]:
    """``_GET_EXPIRING``'s flat ``[value, pttl, ...]`` reply as one ``ExpiringRead`` per key."""
    return [ExpiringRead(reply[i], reply[i + 1], node) for i in range(0, len(reply), 2)]


logger = logging.getLogger("telemetry_infra.cache")
#: the running loop, None in a thread without one (where reads go through ``ThreadReads``)
_running_loop = asyncio._get_running_loop
#: what ``RedisBackend._bound.loop`` is before any loop used the backend: never a running loop
_NO_LOOP_YET: Any = object()

#: True while a write or removal runs: it keeps its place in the pool's queue for as
#: long as it takes, because dropping it would leave a stale value in Redis.
_writing: contextvars.ContextVar[bool] = contextvars.ContextVar("cache_writing", default=False)


class FairConnectionPool(aioredis.ConnectionPool):
    """A bounded pool whose callers queue first come, first served, and never miss a wake-up.

    redis-py's ``BlockingConnectionPool`` waits on an ``asyncio.Condition``; on CPython
    before 3.13 a waiter cancelled after ``notify()`` swallows the wake-up, and a free
    connection sits idle while the queue waits out its timeout. Here ``release()``
    hands the connection itself to the first waiter still waiting (it resolves that
    waiter's future), and a waiter cancelled after the hand-over passes it on. Release
    never suspends before the connection has an owner, so cancelling a caller cannot
    leak a connection either. An uncontended checkout never touches the queue.

    A read queues at most ``pool_timeout`` seconds, then gets ``CachePoolExhaustedError``
    (busy pool: back-pressure, not an outage). Writes queue without a bound.

    Release skips redis-py's after-release event, whose only listener re-authenticates
    connections of streaming credential providers (``create_client`` configures none).
    """

    def __init__(self, *, pool_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pool_timeout = pool_timeout
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self.refuse_waiters: Callable[[], bool] = lambda: False

    async def get_connection(self, *_deprecated: Any, **_options: Any) -> Any:
        if self._waiters or not self.can_get_connection():
            connection = await self._wait_for_connection()
        else:
            connection = self.get_available_connection()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        try:
            await self.ensure_connection(connection)
        except BaseException:
            self._hand_over(connection)
            raise
        return connection

    async def _wait_for_connection(self) -> Any:
        waiters = self._waiters
        while waiters and waiters[0].done():
            waiters.popleft()
        if not waiters and self.can_get_connection():
            return self.get_available_connection()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        waiters.append(waiter)
        timer = None if _writing.get() else loop.call_later(self.pool_timeout, self._expire, waiter)
        try:
            connection = await waiter
        except BaseException:
            self._leave(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if self.refuse_waiters():
            # Redis went away while this call queued for a connection: another
            # socket timeout on top of the wait would break the caller's latency bound.
            self._hand_over(connection)
            raise RedisConnectionError("Redis stopped answering while this call waited for a connection")
        return connection

    def _expire(self, waiter: asyncio.Future[Any]) -> None:
        if not waiter.done():
            waiter.set_exception(CachePoolExhaustedError(self.pool_timeout, self.max_connections))

    def _leave(self, waiter: asyncio.Future[Any]) -> None:
        """The waiting call ended without its connection (cancelled or expired)."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            self._hand_over(waiter.result())  # handed over, then cancelled: pass it on
            return
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)

    def _hand_over(self, connection: Any) -> None:
        """Give ``connection`` (in use by the caller) to the first live waiter, else back to the pool."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self._in_use_connections.discard(connection)
        self._available_connections.append(connection)

    async def release(self, connection: Any) -> None:
        if connection not in self._in_use_connections:
            return  # released twice, or after disconnect(): it has no owner to hand over
        if not connection.should_reconnect():
            self._hand_over(connection)
            return
        try:
            await connection.disconnect()
        finally:
            self._hand_over(connection)

    def usage(self) -> tuple[int, int]:
        """``(used, idle)`` connections."""
        return len(self._in_use_connections), len(self._available_connections)


def create_client(url: str, options: ConnectionOptions) -> aioredis.Redis:
    """A client whose calls fail fast: short timeouts, no retries, bounded pool.

    Bursts beyond ``options.max_connections`` queue for a free connection (reads at most
    ``options.pool_timeout``) instead of failing. Retries are off: the circuit breaker
    decides what to do about a failure, and a retry would only double the wait.
    """
    pool = FairConnectionPool.from_url(
        url,
        max_connections=options.max_connections,
        pool_timeout=options.pool_timeout,
        health_check_interval=options.health_check_interval,
        retry=Retry(NoBackoff(), 0),
        **options.timeouts,
    )
    return aioredis.Redis.from_pool(pool)


class _LoopClient:
    """The client (and pool) of one event loop.

    ``closer`` is an async generator parked at its ``yield``: ``asyncio.run()``, an
    ``asyncio.Runner`` (pytest-asyncio's loops) and ``loop.shutdown_asyncgens()`` close
    every such generator while the loop still runs, and closing this one closes the
    client. So a loop's connections are released when the loop ends, not left to the
    garbage collector.
    """

    __slots__ = ("client", "closer", "loop", "mset_script", "pool")

    def __init__(self, loop: asyncio.AbstractEventLoop, client: aioredis.Redis) -> None:
        self.loop = loop
        self.client = client
        # create_client and create_sentinel_client build their clients on a FairConnectionPool
        self.pool = cast(FairConnectionPool, client.connection_pool)
        self.mset_script = client.register_script(_MSET_WITH_TTL)
        self.closer = _closed_with_its_loop(client)


class Closeable(Protocol):
    """A client ``_closed_with_its_loop`` closes."""

    async def aclose(self) -> None: ...


class LoopBinding(Protocol):
    """What a backend keeps per event loop (``_LoopClient``; the Cluster's own)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def closer(self) -> AsyncGenerator[None, None]: ...


ClientT = TypeVar("ClientT")
BindingT = TypeVar("BindingT", bound=LoopBinding)


async def _closed_with_its_loop(client: Closeable) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        try:
            await client.aclose()
        except (RedisError, OSError) as exc:
            logger.debug("closing Redis connections failed: %r", exc)


class _ThreadBound:
    """What reads outside any loop use in place of a loop's ``_LoopClient``."""

    __slots__ = ("client", "loop")

    def __init__(self, reads: ThreadReads) -> None:
        self.client = reads
        self.loop = None


class PerLoopClients(Generic[ClientT, BindingT]):
    """One redis-py client per event loop that uses the backend (see the module docstring).

    ``connect()`` makes a client; it is called once per event loop that uses the
    backend (the first client is made at once, so a bad URL fails at construction).
    Subclasses say how big a client's pool is (``_pool_size``) and what a loop keeps
    (``_loop_client``).
    """

    def __init__(self, connect: Callable[[], ClientT], *, scan_count: int = 1000) -> None:
        self._connect = connect
        self._scan_count = scan_count
        self._refuse_waiters: Callable[[], bool] = lambda: False
        self._lock = hold_across_fork(threading.Lock())
        self._spare: ClientT | None = connect()
        self._max_connections: int = self._pool_size(self._spare)
        self._by_loop: dict[asyncio.AbstractEventLoop, BindingT] = {}
        # the loop used last and its client: a call from that loop costs one identity check
        self._bound: BindingT = self._loop_client(_NO_LOOP_YET, self._spare)

    def _pool_size(self, client: ClientT) -> int:
        """The most connections ``client`` opens (per node on a Cluster)."""
        raise NotImplementedError

    def _loop_client(self, loop: asyncio.AbstractEventLoop, client: ClientT) -> BindingT:
        """What ``loop``'s calls use."""
        raise NotImplementedError

    async def _bind(self) -> BindingT:
        """The running loop's client, made on the loop's first call; RuntimeError outside a loop."""
        loop = _running_loop()
        if loop is None:
            raise RuntimeError("no running event loop")
        with self._lock:
            bound = self._by_loop.get(loop)
            made = bound is None
            if bound is None:
                self._forget_closed_loops()
                client, self._spare = self._spare or self._connect(), None
                bound = self._by_loop[loop] = self._loop_client(loop, client)
        if made:
            await bound.closer.asend(None)  # registers it with the loop's shutdown_asyncgens()
        self._bound = bound
        return bound

    def _forget_closed_loops(self) -> None:
        # ended without shutdown_asyncgens(): closing needs the loop, the collector does the rest
        for loop in [loop for loop in self._by_loop if loop.is_closed()]:
            del self._by_loop[loop]

    async def close(self) -> None:
        """Close the connections of every loop that still runs; forget those of ended loops."""
        running = _running_loop()
        with self._lock:
            clients, self._by_loop = list(self._by_loop.values()), {}
            self._spare = None
        for bound in clients:
            loop = bound.loop
            if loop is running:
                await bound.closer.aclose()
            elif loop is not None and loop.is_running():
                # another thread's loop: its connections may only be touched from there
                closing = asyncio.run_coroutine_threadsafe(bound.closer.aclose(), loop)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.wrap_future(closing), 1.0)


class RedisBackend(PerLoopClients[aioredis.Redis, _LoopClient]):
    """Payloads stored as plain Redis strings under their full keys.

    Commands go through ``client.execute_command`` looked up at each call, never a
    saved bound method: opentelemetry-instrumentation-redis patches the class,
    possibly after this backend was created.
    """

    name = "redis"

    def __init__(
        self,
        connect: Callable[[], aioredis.Redis],
        *,
        scan_count: int = 1000,
        thread_reads: Callable[[int], ThreadReads] | None = None,
    ) -> None:
        self._make_thread_reads = thread_reads
        self._thread_reads: _ThreadBound | None = None
        self._loop_limits: dict[asyncio.AbstractEventLoop, int] = {}
        super().__init__(connect, scan_count=scan_count)

    def _pool_size(self, client: aioredis.Redis) -> int:
        return client.connection_pool.max_connections

    def _loop_client(self, loop: asyncio.AbstractEventLoop, client: aioredis.Redis) -> _LoopClient:
        """What a loop's calls use: its client, its pool (sized for the loop, told when to
        fail fast), its script."""
        bound = _LoopClient(loop, client)
        limit = self._loop_limits.get(loop)
        if limit is not None:
            bound.pool.max_connections = limit
        bound.pool.refuse_waiters = self._refuse_waiters
        return bound

    async def _bind_anywhere(self) -> _LoopClient | _ThreadBound:
        """``_bind()``, or outside any loop the thread reads (see ``share_with_threads``)."""
        if _running_loop() is None:
            return self._thread_bound()
        return await self._bind()

    def _forget_closed_loops(self) -> None:
        super()._forget_closed_loops()
        for loop in [loop for loop in self._loop_limits if loop.is_closed()]:
            del self._loop_limits[loop]

    # -- reads from threads without an event loop (the sync view) -------------------

    def share_with_threads(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Serve reads made outside any event loop with redis-py's sync client (``redis_sync``),
        ``loop`` (the sync view's) taking the rest of the connections; True when enabled.

        One ``max_connections`` budget for both: ``loop``'s pool gets a quarter of it (at least
        one connection), the threads' pool the rest; with ``max_connections=1`` there is no
        room for two pools and nothing changes (False)."""
        loop_share = max(1, self._max_connections // 4)
        thread_share = self._max_connections - loop_share
        if self._make_thread_reads is None or thread_share < 1:
            return False
        with self._lock:
            if self._thread_reads is None:
                self._thread_reads = _ThreadBound(self._make_thread_reads(thread_share))
            self._loop_limits[loop] = loop_share
            bound = self._by_loop.get(loop)
            if bound is not None:
                bound.pool.max_connections = loop_share
        return True

    def _thread_bound(self) -> _ThreadBound:
        reads = self._thread_reads
        if reads is None:
            raise RuntimeError("no running event loop")
        return reads

    async def _client(self) -> aioredis.Redis:
        """The running loop's client (RuntimeError outside a loop)."""
        bound = self._bound
        if bound.loop is not _running_loop():
            bound = await self._bind()
        return bound.client

    async def _commands(self) -> Commands:
        """The running loop's client, or outside any loop the thread reads."""
        bound: _LoopClient | _ThreadBound = self._bound
        if bound.loop is not _running_loop():
            bound = await self._bind_anywhere()
        return bound.client

    async def get(self, key: str) -> bytes | None:
        bound: _LoopClient | _ThreadBound = self._bound
        if bound.loop is not _running_loop():
            bound = await self._bind_anywhere()
        client: Commands = bound.client
        payload: bytes | None = await client.execute_command("GET", key)
        return payload

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        bound: _LoopClient | _ThreadBound = self._bound
        if bound.loop is not _running_loop():
            bound = await self._bind_anywhere()
        client: Commands = bound.client
        payloads: list[bytes | None] = await client.execute_command("MGET", *keys)
        return payloads

    async def get_expiring(self, key: str) -> ExpiringRead:
        """``get`` for the near tier: the value and its remaining TTL, in one round trip.

        ``GET`` and ``PTTL`` are written together on one connection and Redis runs them back
        to back: cheaper than a Lua call or redis-py's pipeline (``benchmarks/cache_overhead.py
        --parts 21``). A write slipping in between is announced by its invalidation, which
        drops the entry; a key expiring in between reads as PTTL -2 and installs nothing."""
        bound = self._bound
        if bound.loop is not _running_loop():
            bound = await self._bind()
        pool = bound.pool
        connection = await pool.get_connection()
        try:
            commands = connection.pack_commands((("GET", key), ("PTTL", key)))
            await connection.send_packed_command(commands, check_health=False)
            payload = await connection.read_response()
            ttl_ms = await connection.read_response()
        except BaseException:
            await connection.disconnect()  # a reply may be left unread on it
            raise
        finally:
            await pool.release(connection)
        return ExpiringRead(payload, ttl_ms)

    async def mget_expiring(self, keys: Sequence[str]) -> list[ExpiringRead]:
        """``mget`` for the near tier: each value and its remaining TTL, in one round trip."""
        bound: _LoopClient | _ThreadBound = self._bound
        if bound.loop is not _running_loop():
            bound = await self._bind_anywhere()
        return expiring_reads(await _get_expiring(bound.client, keys))

    async def set(self, key: str, payload: bytes, ttl: float | None) -> None:
        bound: _LoopClient | _ThreadBound = self._bound
        if bound.loop is not _running_loop():
            bound = await self._bind_anywhere()
        client: Commands = bound.client
        token = _writing.set(True)
        try:
            if ttl is None:
                await client.execute_command("SET", key, payload)
            else:
                await client.execute_command("SET", key, payload, "PX", _milliseconds(ttl))
        finally:
            _writing.reset(token)

    async def mset(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        """Write every item, in chunks of bounded size; on failure, a prefix of the chunks
        may have been written."""
        milliseconds = 0 if ttl is None else _milliseconds(ttl)
        bound = self._bound
        if bound.loop is not _running_loop():
            bound = await self._bind()
        token = _writing.set(True)
        try:
            for chunk in _chunks(items, MSET_CHUNK_ITEMS, MSET_CHUNK_BYTES):
                args: list[Any] = [milliseconds]
                args.extend(payload for _, payload in chunk)
                await bound.mset_script(keys=[key for key, _ in chunk], args=args)
        finally:
            _writing.reset(token)

    async def delete(self, key: str) -> bool:
        client = await self._commands()
        token = _writing.set(True)
        try:
            return bool(await client.execute_command("UNLINK", key))
        finally:
            _writing.reset(token)

    async def delete_many(self, keys: Sequence[str]) -> int:
        client = await self._commands()
        removed = 0
        token = _writing.set(True)
        try:
            for start in range(0, len(keys), self._scan_count):
                removed += await client.execute_command("UNLINK", *keys[start : start + self._scan_count])
        finally:
            _writing.reset(token)
        return removed

    async def exists(self, key: str) -> bool:
        client = await self._commands()
        return bool(await client.execute_command("EXISTS", key))

    async def clear(self, pattern: str) -> int:
        """``SCAN MATCH`` + ``UNLINK``; each round trip unlinks one page and fetches the next."""
        client = await self._client()
        token = _writing.set(True)
        try:
            return await self._clear(client, pattern)
        finally:
            _writing.reset(token)

    async def _clear(self, client: aioredis.Redis, pattern: str) -> int:
        cursor, keys = await client.scan(0, match=pattern, count=self._scan_count)
        removed = 0
        while keys or cursor:
            pipe = client.pipeline(transaction=False)
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
        client = await self._commands()
        await client.execute_command("PING")

    async def node_health(self) -> list[dict[str, Any]]:
        """Per-node state for ``health_check`` (one node: the PING result says it all)."""
        return []

    def server_of(self, key: str | None) -> tuple[str, int] | None:
        """The address of the server that serves ``key`` (span attributes; None on a socket)."""
        kwargs = self._bound.pool.connection_kwargs
        port = kwargs.get("port")
        return None if port is None else (kwargs.get("host", "localhost"), port)

    def fail_fast_when(self, unreachable: Callable[[], bool]) -> None:
        """Calls still queued for a connection fail at once while ``unreachable()`` is true."""
        with self._lock:
            self._refuse_waiters = unreachable
            for bound in self._by_loop.values():
                bound.pool.refuse_waiters = unreachable

    def connections_by_node(self) -> dict[tuple[str, int], tuple[int, int, int]] | None:
        """Pool usage per node where there are several (a Cluster); None here: one pool."""
        return None

    def connections(self) -> tuple[int, int, int]:
        """``(used, idle, max)`` over the pools of the loops alive now, for the pool gauges.

        ``max_connections`` bounds each loop's pool: with two threads running a loop each,
        the process may hold twice as many.
        """
        with self._lock:
            pools = [bound.pool for bound in self._by_loop.values() if not bound.loop.is_closed()]
        used = idle = 0
        for pool in pools:
            in_use, available = pool.usage()
            used += in_use
            idle += available
        reads = self._thread_reads
        if reads is not None:  # its budget is shared with the sync view's loop
            in_use, available = reads.client.usage()
            used += in_use
            idle += available
        return used, idle, self._max_connections * max(1, len(pools))

    async def reconnect(self) -> None:
        """Drop idle connections: after an outage they are dead and would each fail once."""
        client = await self._client()
        await client.connection_pool.disconnect(inuse_connections=False)

    async def close(self) -> None:
        """Close the thread reads' connections, then every loop's (see ``PerLoopClients``)."""
        with self._lock:
            reads, self._thread_reads = self._thread_reads, None
        if reads is not None:
            reads.client.close()
        await super().close()


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
