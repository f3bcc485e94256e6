"""The invalidation channel: one RESP3 connection to a Redis node tracking a key prefix.

Redis's server-assisted client-side caching, as this project uses it:

* ``CLIENT TRACKING ON BCAST PREFIX <namespace>:`` on a dedicated connection opened with
  ``HELLO 3``: Redis pushes an ``invalidate`` message on that very connection for every
  key under the prefix that changes (written, deleted, expired, evicted), whoever changed
  it, and ``invalidate`` with no keys on ``FLUSHDB``/``FLUSHALL``.
* Why RESP3 on one connection rather than RESP2 ``REDIRECT``: redis-py 8.1's asyncio
  connection reads RESP3 push frames (``read_response(push_request=True)`` hands them
  over once an invalidation handler is set), so one connection carries the tracking,
  the notifications and the health PINGs. With ``REDIRECT`` the tracking client and the
  subscribed target are two connections that fail separately, and a RESP2 tracking
  client is not told when its target is gone: invalidations would be lost silently.
  The data connections stay RESP2 and untouched.
* Why BCAST rather than OPTIN: no per-read bookkeeping (``CLIENT CACHING yes``) on the
  pooled, per-event-loop data connections, and no per-key table on the server. The cost
  is one message per change under the prefix, read or not by this process.
* NOLOOP would only silence writes made on the tracking connection, which makes none:
  our own writes come back as invalidations like anyone else's (BCAST does not say who
  wrote). The near tier drops its entry on its own writes at once (see ``near``).

The channel belongs to one node: the node of a ``redis://`` URL, or under Sentinel the
primary the Sentinels name when it connects (``sentinel_connection_factory``; its health
check is then ``ROLE``, so a primary demoted in place is left, and ``on_new_node`` makes the
data connections follow before anything is filled from the new one). On a Cluster there is
one channel per primary (``cluster_invalidations``).

It runs as a task on one event loop: the loop of the first call that needed it
(``ensure_listening()``). When that loop ends, or the
connection drops, or a PING goes unanswered for ``answer_timeout`` seconds, the near
tier is flushed and reads go to Redis; the channel reconnects every ``retry_interval``
seconds, and a later call on another running loop starts it there if its loop is gone.
The task ends as soon as it is cancelled, even when a library call swallowed the
cancellation (``asyncio.run()`` cancels a loop's tasks once, then waits for them).

That loop also beats a heartbeat every ``HEARTBEAT_INTERVAL_S``; the near tier serves
only while the last one is younger than ``HEARTBEAT_WINDOW_S``. After a longer gap
(a blocked loop: invalidations waiting unread in the socket) it serves again once a
PING sent after the gap is answered, which proves the backlog has been read.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from telemetry_infra.cache.background_tasks import cancel_anywhere
from telemetry_infra.cache.redis.options import ConnectionOptions
from telemetry_infra.cache.redis.sentinel import sentinels_of
from telemetry_infra.cache.redis.urls import RedisTarget

__all__ = [
    "InvalidationChannel",
    "node_connection_factory",
    "sentinel_connection_factory",
    "tracking_connection_factory",
]

logger = logging.getLogger("telemetry_infra.cache")
_monotonic = time.monotonic

#: Seconds between PINGs on the channel (its health check).
PING_INTERVAL_S = 1.0
#: Seconds between the heartbeats of the channel's event loop (proof that it runs).
HEARTBEAT_INTERVAL_S = 0.01
#: A near hit needs a heartbeat younger than this. After a longer gap (the loop was
#: blocked, or starved) nothing is served until a PING sent after the gap is answered:
#: its answer follows every invalidation Redis sent before it.
HEARTBEAT_WINDOW_S = 0.05

Connect = Callable[[], Any]


def tracking_connection_factory(url: str, options: ConnectionOptions, *, client_name: str) -> Connect:
    """Makes RESP3 connections to the node of ``url`` (TLS, credentials and db as in the
    URL); commands time out after ``options.socket_timeout``, never retried, never health-checked
    behind our back (that would read a reply meant for the listener). ``client_name``
    (``CLIENT SETNAME``) lets operators tell the channel apart in ``CLIENT LIST``."""
    template = aioredis.ConnectionPool.from_url(url)
    keywords = _tracking_options(template.connection_kwargs, options, client_name)
    connection_class = template.connection_class
    return lambda: connection_class(**keywords)


def node_connection_factory(
    target: RedisTarget,
    address: tuple[str, int],
    options: ConnectionOptions,
    *,
    client_name: str,
) -> Connect:
    """``tracking_connection_factory`` for one node of a Cluster ``target`` (its TLS and credentials)."""
    keywords = _tracking_options(
        {"host": address[0], "port": address[1], "username": target.username, "password": target.password},
        options,
        client_name,
    )
    connection_class = aioredis.SSLConnection if target.tls else aioredis.Connection
    return lambda: connection_class(**keywords)


def sentinel_connection_factory(
    target: RedisTarget,
    options: ConnectionOptions,
    *,
    client_name: str,
    named_primary: Callable[[], tuple[str, int] | None] = lambda: None,
    not_primary: Callable[[tuple[str, int]], None] = lambda address: None,
) -> Connect:
    """``tracking_connection_factory`` for the primary that ``target``'s Sentinels name *when the
    connection is opened* (asked again at every reconnection, so a failover is followed);
    ``named_primary()``, the primary they announced last, is preferred when known, and
    ``not_primary(address)`` is told when it answers ROLE as a replica."""
    sentinel = sentinels_of(target, options)
    keywords = _tracking_options(
        {"db": target.db, "username": target.username, "password": target.password}, options, client_name
    )
    base = aioredis.SSLConnection if target.tls else aioredis.Connection
    if target.service_name is None:
        raise ValueError("a redis+sentinel:// target names its service (parse_redis_url ensures it)")
    service: str = target.service_name

    class PrimaryTrackingConnection(base):  # type: ignore[misc,valid-type]  # base chosen at run time (TLS or not)
        async def connect(self) -> None:
            try:
                address: tuple[str, int] = named_primary() or await sentinel.discover_master(service)
                self.host, self.port = address
            finally:  # the channel may reconnect on another event loop: keep no Sentinel connection
                for client in sentinel.sentinels:
                    await client.connection_pool.disconnect()
            await super().connect()
            await self.send_command("ROLE")
            role = await self.read_response()
            if role[0] not in (b"master", "master"):
                # named before the Sentinels switched: tracking a replica would miss every write
                await self.disconnect()
                not_primary((self.host, self.port))
                raise RedisError(f"{self.host}:{self.port}, named by the Sentinels, is not a primary")

    return lambda: PrimaryTrackingConnection(**keywords)


def _tracking_options(kwargs: dict[str, Any], options: ConnectionOptions, client_name: str) -> dict[str, Any]:
    """A tracking connection's keywords: ``options``'s timeouts, never a health check (its
    PING would read a reply meant for the listener); the pool settings do not apply."""
    return {
        **kwargs,
        **options.timeouts,
        "protocol": 3,
        "health_check_interval": 0,
        "client_name": "".join(c if c.isalnum() or c in "-_.:" else "_" for c in client_name),
        "retry": Retry(NoBackoff(), 0),
    }


def _node_of(connection: Any) -> str:
    path = getattr(connection, "path", None)
    return path if path else f"{connection.host}:{connection.port}"


class NotPrimaryError(RedisError):
    """The node tracked as the primary answered ROLE as a replica."""


class ChannelSilentError(RedisError):
    """The channel did not answer a PING in time (half-open connection, paused server...)."""


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _cancelling(task: asyncio.Task[None] | None) -> bool:
    """Has ``task`` been asked to stop (``Task.cancelling()``, Python 3.11+)?"""
    cancelling = getattr(task, "cancelling", None)
    return cancelling is not None and bool(cancelling())


async def _as_received(message: Any) -> Any:
    return message


async def tracking_within(listener: InvalidationListener, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``listener`` to be tracking; whether it is."""
    deadline = _monotonic() + timeout
    # polled: the listener may run on another thread's loop, where no Event of ours can wake us
    while not listener.tracking and _monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    return listener.tracking


class InvalidationListener(Protocol):
    """What a channel feeds: the near tier itself, or one Cluster node's share of it."""

    @property
    def tracking(self) -> bool: ...

    def invalidate(self, keys: Iterable[str]) -> None: ...

    def flush(self) -> None: ...

    def tracking_started(self, heard_until: float, channel: object) -> None: ...

    def renew(self, heard_until: float, channel: object) -> None: ...

    def tracking_lost(self, channel: object = None) -> None: ...


class InvalidationChannel:
    """Feeds ``near`` with the invalidations of keys starting with ``prefix`` on one node."""

    def __init__(
        self,
        connect: Connect,
        prefix: str,
        near: InvalidationListener,
        *,
        answer_timeout: float = 1.0,
        retry_interval: float = 1.0,
        ping_interval: float = PING_INTERVAL_S,
        primary_only: bool = False,
        on_new_node: Callable[[], None] | None = None,
        task_context: Callable[[], contextvars.Context] = contextvars.copy_context,
        identify: bool = False,
    ) -> None:
        self._connect = connect
        # a Cluster node's channel learns the node's id (``CLUSTER MYID``) before tracking
        self._identify = identify
        #: the id of the Cluster node tracked (None elsewhere, or not known yet)
        self.node_id: str | None = None
        self._tracking_command: tuple[str, ...] = ("CLIENT", "TRACKING", "ON", "BCAST")
        if prefix:
            self._tracking_command += ("PREFIX", prefix)
        self._near = near
        self.answer_timeout = answer_timeout
        self.retry_interval = retry_interval
        self.ping_interval = ping_interval
        # under Sentinel the health check is ROLE: a primary demoted in place (SENTINEL FAILOVER)
        # keeps its connections, and tracking a replica would follow a dataset being replaced
        self._probe = ("ROLE",) if primary_only else ("PING",)
        # told before entries are filled from a node other than the last one tracked
        self._on_new_node = on_new_node
        self._last_node: str | None = None
        # the channel is believed for one PING period plus an answer's time either side
        self._trust_s = ping_interval + 2 * answer_timeout
        self._task_context = task_context
        self._listener: asyncio.Task[None] | None = None
        self._stopped = False
        # PINGs sent on the connection and not answered yet, oldest first: (sent at, answered)
        self._pings: deque[tuple[float, asyncio.Future[None]]] = deque()
        # what may be served is covered until the earlier of: the last PING answered plus
        # its trust, and the last heartbeat of the channel's loop plus HEARTBEAT_WINDOW_S
        self._trusted_until = 0.0
        self._fresh_until = 0.0
        self._connection: Any = None
        # resolved (from any thread) when the Sentinels announce another primary
        self._moved: asyncio.Future[None] | None = None
        self._moves = 0
        #: what ended the last connection (``Type: message``), None while tracking
        self.last_error: str | None = None
        #: ``host:port`` of the node tracked now (None while not tracking)
        self.node: str | None = None
        self._warned = False

    @property
    def tracking(self) -> bool:
        return self._near.tracking

    def ensure_listening(self) -> None:
        """Start the listener on the running loop unless one runs on a live loop.

        Cheap enough for every near miss. A listener whose loop no longer runs cannot
        deliver invalidations: the tier is flushed and a new listener starts here.
        """
        listener = self._listener
        if self._stopped or (
            listener is not None and not listener.done() and listener.get_loop().is_running()
        ):
            return
        if listener is not None:
            self._near.tracking_lost()
        loop = asyncio.get_running_loop()
        # the listener outlives the call that started it: it must not run in its context
        self._listener = self._task_context().run(loop.create_task, self._listen_forever())

    def covers_node(self, node_id: str | None) -> bool:
        """May a read answered by ``node_id`` fill the near tier? One node: always."""
        return True

    async def wait_tracking(self, timeout: float) -> bool:
        """Start listening if needed and wait up to ``timeout`` s for tracking to be on."""
        self.ensure_listening()
        return await tracking_within(self._near, timeout)

    async def stop(self) -> None:
        """Stop listening for good (on close), whichever loop the listener runs on; flush the tier."""
        self._stopped = True
        listener, self._listener = self._listener, None
        self._near.tracking_lost()
        await cancel_anywhere(listener)

    # -- the listener task --------------------------------------------------------------

    async def _listen_forever(self) -> None:
        me = asyncio.current_task()
        try:
            while self._is_current(me):
                try:
                    await self._listen(me)
                except (TimeoutError, RedisError, OSError) as exc:
                    self._lost(me, exc)
                if not self._is_current(me):
                    return
                await asyncio.sleep(self.retry_interval)
        finally:
            # cancelled (close, or the loop shutting down) or superseded: if this listener was
            # the one tracking, nothing delivers invalidations now
            self._near.tracking_lost(me)

    def primary_moved(self) -> None:
        """The Sentinels announced another primary (callable from any thread): nothing is served
        near from now on, and the channel leaves the old primary for the new one."""
        self._moves += 1
        self._near.tracking_lost()
        moved = self._moved
        if moved is not None:
            with contextlib.suppress(RuntimeError):  # its loop has closed
                moved.get_loop().call_soon_threadsafe(_resolve, moved)

    def _is_current(self, me: asyncio.Task[None] | None) -> bool:
        """Is ``me`` still the listener, and not being cancelled? A cancellation swallowed by a
        library call (redis-py's connect can) must still end it: ``asyncio.run()`` cancels the
        tasks of its loop once, then waits for them."""
        return self._listener is me and not _cancelling(me)

    async def _listen(self, me: asyncio.Task[None] | None) -> None:
        moves = self._moves
        connection = self._connect()
        try:
            await connection.connect()
            if not self._is_current(me):
                return
            connection._parser.set_invalidation_push_handler(_as_received)
            if self._identify:
                await connection.send_command("CLUSTER", "MYID")
                node_id = await connection.read_response()
                self.node_id = node_id.decode() if isinstance(node_id, bytes) else node_id
            started = _monotonic()
            await connection.send_command(*self._tracking_command)
            await connection.read_response()  # OK, or raises (Redis < 6, a proxy refusing it)
            if not self._is_current(me):
                return
            self._moved = asyncio.get_running_loop().create_future()
            if self._moves != moves:
                raise RedisError("the Sentinels named another primary while the channel connected")
            self._pings.clear()
            node = _node_of(connection)
            if node != self._last_node and self._last_node is not None and self._on_new_node is not None:
                self._on_new_node()  # the data connections follow before any fill is allowed
            self._last_node = node
            self._trusted_until = started + self._trust_s
            self._fresh_until = _monotonic() + HEARTBEAT_WINDOW_S
            self._near.tracking_started(self._covered_until(), me)
            if self.last_error is not None:
                logger.info("near cache: invalidation channel tracking again")
            self.last_error = None
            self.node = node
            self._connection = connection
            await self._read_and_ping(connection, me)
        finally:
            if self._connection is connection:
                self._connection = None
                self.node = None
            with contextlib.suppress(Exception):
                await connection.disconnect()

    async def _read_and_ping(self, connection: Any, me: asyncio.Task[None] | None) -> None:
        tasks = (
            asyncio.ensure_future(self._read(connection, me)),
            asyncio.ensure_future(self._ping(connection)),
            asyncio.ensure_future(self._heartbeat(connection, me)),
        )
        moved = self._moved
        try:
            waited = tasks if moved is None else (*tasks, moved)
            done, _pending = await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
            if moved is not None and moved.done():
                raise RedisError("the Sentinels named another primary")
            for task in done:
                task.result()  # raises what ended it
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read(self, connection: Any, me: asyncio.Task[None] | None) -> None:
        while self._is_current(me):
            message = await connection.read_response(timeout=math.inf, push_request=True)
            if isinstance(message, list) and message and message[0] in (b"invalidate", "invalidate"):
                self._invalidated(message)
            elif self._pings and self._answers_probe(message):
                sent_at, answered = self._pings.popleft()
                self._trusted_until = sent_at + self._trust_s
                self._near.renew(self._covered_until(), me)
                if not answered.done():
                    answered.set_result(None)

    def _covered_until(self) -> float:
        return min(self._trusted_until, self._fresh_until)

    async def _heartbeat(self, connection: Any, me: asyncio.Task[None] | None) -> None:
        """Keep proving that this loop runs (near hits need a recent heartbeat). After a gap
        longer than ``HEARTBEAT_WINDOW_S`` (the loop was blocked: invalidations may wait
        unread), serve again only once a PING sent after the gap is answered."""
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL_S)
            if _monotonic() >= self._fresh_until:
                answered = await self._send_ping(connection)
                try:
                    await asyncio.wait_for(asyncio.shield(answered), self.answer_timeout)
                except TimeoutError:
                    raise ChannelSilentError(
                        f"no answer to PING within {self.answer_timeout:g} s after a stall"
                    ) from None
            self._fresh_until = _monotonic() + HEARTBEAT_WINDOW_S
            self._near.renew(self._covered_until(), me)

    def _invalidated(self, message: list[Any]) -> None:
        if len(message) < 2 or message[0] not in (b"invalidate", "invalidate"):
            return
        keys = message[1]
        if keys is None:  # FLUSHDB / FLUSHALL
            self._near.flush()
            return
        self._near.invalidate([key.decode("utf-8", "replace") if type(key) is bytes else key for key in keys])

    def _answers_probe(self, message: Any) -> bool:
        """Is ``message`` the answer to a health check (PONG, or ROLE's ``[role, ...]``)?
        Raises ``NotPrimaryError`` when ROLE says the node is not the primary any more."""
        if self._probe[0] == "PING":
            return message in (b"PONG", "PONG")
        if not isinstance(message, list) or not message:
            return False
        if message[0] not in (b"master", "master"):
            raise NotPrimaryError("the tracked node is no longer the primary (demoted by the Sentinels)")
        return True

    async def _ping(self, connection: Any) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            answered = await self._send_ping(connection)
            try:
                await asyncio.wait_for(asyncio.shield(answered), self.answer_timeout)
            except TimeoutError:
                raise ChannelSilentError(f"no answer to PING within {self.answer_timeout:g} s") from None

    async def _send_ping(self, connection: Any) -> asyncio.Future[None]:
        if not connection.is_connected:
            # sending would reconnect without tracking: end here, the listener starts over
            raise RedisError("invalidation channel disconnected")
        answered = asyncio.get_running_loop().create_future()
        self._pings.append((_monotonic(), answered))
        await connection.send_packed_command(connection.pack_command(*self._probe), check_health=False)
        return answered

    async def sync(self, timeout: float = 1.0) -> bool:
        """Wait until every invalidation Redis sent before now has been applied; False if the
        channel is not tracking or does not answer within ``timeout``.

        A PING's answer follows, on the same connection, the invalidations of every write
        Redis completed before it. Call it on the loop the channel runs on (tests do, to
        make "B wrote, A has heard" deterministic).
        """
        connection = self._connection
        if connection is None or not self._near.tracking:
            return False
        try:
            answered = await self._send_ping(connection)
            await asyncio.wait_for(asyncio.shield(answered), timeout)
        except (TimeoutError, RedisError, OSError):
            return False
        return True

    def _lost(self, me: asyncio.Task[None] | None, exc: BaseException) -> None:
        self._near.tracking_lost(me)
        if self._listener is not me:
            return
        self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        level = logging.DEBUG if self._warned else logging.WARNING
        self._warned = True
        logger.log(
            level,
            "near cache: invalidation channel lost (%s); near entries flushed, reads go to Redis "
            "until it is back (retrying every %.3gs)",
            self.last_error,
            self.retry_interval,
        )
