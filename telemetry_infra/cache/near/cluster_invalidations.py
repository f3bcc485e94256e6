"""The near cache's invalidations on a Redis Cluster: one ``InvalidationChannel`` per primary.

``CLIENT TRACKING ... BCAST`` reports the keys changed *on the node it runs on*, so a
cluster needs a tracking connection on every primary; between them they report every
write, wherever the key's slot lives (a slot migrating from one primary to another
is reported by both: deleted on one, restored on the other).

The rules, in one place:

* **Served only while every primary tracks.** The near tier is covered while each
  primary of the current slot map has a channel that tracks and answered its last PING;
  the tier is renewed until the earliest of their deadlines.
* **Flushed on any change.** A channel that drops or goes silent, a primary that
  appears (a promoted replica: it may lack writes its old primary acknowledged) or
  disappears: the whole near tier is flushed, and it fills again once every primary
  of the new map tracks. Entries are not attributed to nodes: a slot lookup (CRC16)
  per fill and a per-node index would cost every read, for a gain only during the
  seconds a failover lasts, when the other nodes' entries are refilled at once anyway.
* **The slot map is watched.** A watcher task asks a node for ``CLUSTER SLOTS`` every
  ``refresh_interval`` seconds (the manager's ``probe_interval``), starts a channel for
  each new primary and stops those of nodes that no longer own slots.
* **Only tracked nodes fill.** Every read that fills the near tier names the node that
  answered (``CLUSTER MYID`` in its Lua call); an answer from a node whose channel does
  not track (a slot moved to a new primary: ``MOVED``/``ASK``) installs nothing and wakes
  the watcher at once (``covers_node``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from telemetry_infra.cache.background_tasks import cancel_anywhere
from telemetry_infra.cache.near.invalidations import (
    InvalidationChannel,
    node_connection_factory,
    tracking_within,
)
from telemetry_infra.cache.near.tier import NearCache
from telemetry_infra.cache.redis.options import ConnectionOptions
from telemetry_infra.cache.redis.urls import RedisTarget

__all__ = ["ClusterInvalidations"]

logger = logging.getLogger("telemetry_infra.cache")

Address = tuple[str, int]
Seed = tuple[Address, aioredis.Redis]


class _NodeCoverage:
    """What one primary's channel reports, received through the interface a channel feeds."""

    def __init__(self, group: ClusterInvalidations, address: Address) -> None:
        self._group = group
        self.address = address
        self.tracking = False
        self.owner: object = None
        self.heard_until = 0.0

    def tracking_started(self, heard_until: float, channel: object) -> None:
        self._group._node_changed(self, tracking=True, heard_until=heard_until, channel=channel)

    def renew(self, heard_until: float, channel: object) -> None:
        if self.tracking and self.owner is channel:
            self._group._node_changed(self, tracking=True, heard_until=heard_until, channel=channel)

    def tracking_lost(self, channel: object = None) -> None:
        if channel is not None and self.owner is not channel:
            return
        self._group._node_changed(self, tracking=False, heard_until=0.0, channel=None)

    def invalidate(self, keys: Iterable[str]) -> None:
        self._group.near.invalidate(keys)

    def flush(self) -> None:
        self._group.near.flush()


class ClusterInvalidations:
    """Keeps ``near`` exact on a Redis Cluster (see the module docstring); the same interface
    as ``InvalidationChannel`` for the manager."""

    def __init__(
        self,
        target: RedisTarget,
        prefix: str,
        near: NearCache,
        options: ConnectionOptions,
        *,
        client_name: str,
        refresh_interval: float = 1.0,
        task_context: Callable[[], contextvars.Context] = contextvars.copy_context,
    ) -> None:
        self.near = near
        self._target = target
        self._prefix = prefix
        self._options = options
        self._client_name = client_name
        self.refresh_interval = refresh_interval
        self._task_context = task_context
        self._lock = threading.RLock()
        self._nodes: dict[Address, tuple[_NodeCoverage, InvalidationChannel]] = {}
        self._covered = False
        self._watcher: asyncio.Task[None] | None = None
        self._stopped = False
        # ids of the nodes whose channels track now: only their answers fill the near tier
        self._tracked_ids: frozenset[str] = frozenset()
        # set (from any thread) to make the watcher read the slot map at once
        self._wake: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        #: why the slot map could not be read last time (None when it could)
        self.map_error: str | None = None

    @property
    def tracking(self) -> bool:
        return self.near.tracking

    @property
    def last_error(self) -> str | None:
        """The first reason found why the near tier is not covered (None while it is)."""
        if self.map_error is not None:
            return f"slot map: {self.map_error}"
        for (host, port), (coverage, channel) in sorted(self._nodes.items()):
            if not coverage.tracking:
                return f"{host}:{port}: {channel.last_error or 'not tracking yet'}"
        return None if self._nodes else "no primary known yet"

    def nodes(self) -> list[dict[str, Any]]:
        """Per primary: ``address``, ``tracking`` and ``error`` (what ended its last connection)."""
        return [
            {"address": f"{host}:{port}", "tracking": coverage.tracking, "error": channel.last_error}
            for (host, port), (coverage, channel) in sorted(self._nodes.items())
        ]

    # -- coverage ----------------------------------------------------------------------

    def _node_changed(
        self, coverage: _NodeCoverage, *, tracking: bool, heard_until: float, channel: object
    ) -> None:
        with self._lock:
            coverage.tracking, coverage.heard_until, coverage.owner = tracking, heard_until, channel
            self._recompute()

    def covers_node(self, node_id: str | None) -> bool:
        """May a read answered by the node ``node_id`` fill the near tier? Only while that
        node's channel tracks. A node nobody tracks answered (a slot moved to it: ``MOVED``/
        ``ASK``), so the slot map is read again at once and its channel started."""
        if node_id in self._tracked_ids:
            return True
        self._refresh_soon()
        return False

    def _refresh_soon(self) -> None:
        wake = self._wake
        if wake is not None and not wake[1].is_set():
            with contextlib.suppress(RuntimeError):  # that loop closed meanwhile
                wake[0].call_soon_threadsafe(wake[1].set)

    def _recompute(self) -> None:
        self._tracked_ids = frozenset(
            channel.node_id
            for coverage, channel in self._nodes.values()
            if coverage.tracking and channel.node_id is not None
        )
        members = [coverage for coverage, _channel in self._nodes.values()]
        if not members or not all(coverage.tracking for coverage in members):
            if self._covered:
                self._covered = False
                self.near.tracking_lost(self)
            return
        heard_until = min(coverage.heard_until for coverage in members)
        if self._covered:
            self.near.renew(heard_until, self)
        else:
            self._covered = True
            self.near.tracking_started(heard_until, self)  # flushes: what is held predates this map

    # -- lifecycle ---------------------------------------------------------------------

    def ensure_listening(self) -> None:
        """Start the watcher (and through it the channels) on the running loop unless one runs."""
        watcher = self._watcher
        if self._stopped or (watcher is not None and not watcher.done() and watcher.get_loop().is_running()):
            return
        loop = asyncio.get_running_loop()
        self._watcher = self._task_context().run(loop.create_task, self._watch())

    async def wait_tracking(self, timeout: float) -> bool:
        """Start listening if needed and wait up to ``timeout`` s until every primary tracks."""
        self.ensure_listening()
        return await tracking_within(self.near, timeout)

    async def sync(self, timeout: float = 1.0) -> bool:
        """Every primary's channel has applied what its node sent before now (see the channel's)."""
        channels = [channel for _coverage, channel in self._nodes.values()]
        results = await asyncio.gather(*(channel.sync(timeout) for channel in channels))
        return bool(channels) and all(results)

    async def stop(self) -> None:
        """Stop the watcher and every channel for good; flush the tier."""
        self._stopped = True
        watcher, self._watcher = self._watcher, None
        await cancel_anywhere(watcher)
        with self._lock:
            nodes, self._nodes = list(self._nodes.values()), {}
            self._recompute()
        for _coverage, channel in nodes:
            await channel.stop()
        self.near.tracking_lost()

    # -- the watcher task --------------------------------------------------------------

    async def _watch(self) -> None:
        me = asyncio.current_task()
        seed: Seed | None = None
        try:
            while self._watcher is me:
                seed = await self._refresh(seed)
                for _coverage, channel in list(self._nodes.values()):
                    channel.ensure_listening()
                await self._pause()
        finally:
            if seed is not None:
                with contextlib.suppress(Exception):
                    await seed[1].aclose()

    async def _pause(self) -> None:
        """``refresh_interval`` seconds, or until ``_refresh_soon()``."""
        wake = asyncio.Event()
        self._wake = (asyncio.get_running_loop(), wake)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), self.refresh_interval)

    async def _refresh(self, seed: Seed | None) -> Seed | None:
        """Read the slot map from a node that answers (the last one first) and apply it."""
        candidates = [*([seed[0]] if seed else []), *self._nodes, *self._target.nodes]
        error: BaseException | None = None
        for address in dict.fromkeys(candidates):
            if seed is None or seed[0] != address:
                if seed is not None:
                    with contextlib.suppress(Exception):
                        await seed[1].aclose()
                seed = (address, self._client(address))
            try:
                slots = await seed[1].execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]  # redis-py leaves execute_command unannotated
            except (TimeoutError, RedisError, OSError) as exc:
                error = exc
                continue
            self.map_error = None
            for channel in self._apply(_primaries(slots, address)):
                await channel.stop()
            return seed
        self.map_error = f"{type(error).__name__}: {error}" if error is not None else "no node to ask"
        return seed

    def _client(self, address: Address) -> aioredis.Redis:
        target = self._target
        return aioredis.Redis(
            host=address[0],
            port=address[1],
            username=target.username,
            password=target.password,
            ssl=target.tls,
            retry=Retry(NoBackoff(), 0),
            single_connection_client=True,
            **self._options.timeouts,
        )

    def _apply(self, primaries: set[Address]) -> list[InvalidationChannel]:
        """Make the channels those of ``primaries``; returns the channels to stop."""
        with self._lock:
            if primaries == set(self._nodes):
                return []
            gone = [self._nodes.pop(address) for address in set(self._nodes) - primaries]
            for address in primaries - set(self._nodes):
                coverage = _NodeCoverage(self, address)
                self._nodes[address] = (coverage, self._channel(address, coverage))
            if self._covered:  # a primary came or went: whatever is held may be stale
                self._covered = False
                self.near.tracking_lost(self)
            self._recompute()
        logger.info(
            "near cache: cluster primaries now %s", ", ".join(f"{h}:{p}" for h, p in sorted(primaries))
        )
        return [channel for _coverage, channel in gone]

    def _channel(self, address: Address, coverage: _NodeCoverage) -> InvalidationChannel:
        connect = node_connection_factory(self._target, address, self._options, client_name=self._client_name)
        return InvalidationChannel(
            connect,
            self._prefix,
            coverage,
            answer_timeout=self._options.socket_timeout,
            retry_interval=self.refresh_interval,
            task_context=self._task_context,
            identify=True,
        )


def _primaries(slots: Any, asked: Address) -> set[Address]:
    """The primaries of a ``CLUSTER SLOTS`` reply (a node that reports no host is the one asked)."""
    primaries: set[Address] = set()
    for entry in slots or ():
        host, port = entry[2][0], int(entry[2][1])
        host = host.decode() if isinstance(host, bytes) else host
        primaries.add((host or asked[0], port))
    return primaries
