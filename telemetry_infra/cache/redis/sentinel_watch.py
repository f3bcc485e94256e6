"""Which primary the Sentinels name, and whether they are moving it: heard as they announce it.

A planned ``SENTINEL FAILOVER`` leaves the old primary running, and answering ``ROLE`` as a
primary, for seconds after the Sentinels named another one (until they reconfigure it):
a client that asks the server itself stays on it, reads data that is being replaced and
has its writes acknowledged by a server that will discard them. So the Sentinels are
the authority, not the server:

* a thread per Sentinel of the URL subscribes to its failover announcements
  (``+try-failover`` ... ``+promoted-slave``, ``+switch-master``, ``-failover-abort-*``)
  and asks it ``SENTINEL MASTER`` whenever it (re)subscribes; where the subscription
  cannot be made (a proxy, an ACL without channels) it asks ``SENTINEL MASTER`` every
  ``check_interval`` seconds instead;
* ``address`` is the primary named with the highest configuration epoch heard;
  ``switches`` counts its changes (pools compare it at each checkout and reconnect);
* ``epoch`` changes whenever a failover of our service starts, ends or moves the primary:
  a write whose reply arrives under another epoch than the one it was sent under was
  not necessarily taken by the primary the Sentinels name, and ``failing_over`` is true
  from the announced start of a failover until the switch (or abort) is announced.

The threads are daemons, started on first use in each process (a forked child starts
its own) and stopped by ``stop()``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import redis
from redis.exceptions import RedisError

from telemetry_infra.cache.redis.options import ConnectionOptions
from telemetry_infra.cache.redis.urls import RedisTarget

__all__ = ["FAILOVER_BEGINS", "SWITCH_MASTER", "SentinelWatch"]

logger = logging.getLogger("telemetry_infra.cache")

#: Announcements that a failover of a primary is under way (before the replica is promoted).
FAILOVER_BEGINS = (
    "+try-failover",
    "+elected-leader",
    "+failover-state-select-slave",
    "+selected-slave",
    "+failover-state-send-slaveof-noone",
    "+failover-state-wait-promotion",
    "+promoted-slave",
    "+failover-state-reconf-slaves",
)
SWITCH_MASTER = "+switch-master"
FAILOVER_ABORTS = "-failover-abort-*"
#: How long a failover is believed under way without news when the Sentinel does not say.
DEFAULT_FAILOVER_TIMEOUT_S = 180.0

_forks = [0]  # bumped in every forked child: its threads did not survive the fork
_watches: weakref.WeakSet[SentinelWatch] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    _forks[0] += 1
    for watch in list(_watches):
        watch.forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


class SentinelWatch:
    """What the Sentinels of ``target`` announce about ``target.service_name``."""

    def __init__(
        self,
        target: RedisTarget,
        options: ConnectionOptions,
        *,
        check_interval: float = 1.0,
    ) -> None:
        if target.service_name is None:
            raise ValueError(
                "a Sentinel URL names the service: redis+sentinel://host:port,.../<service_name>"
            )
        self.service_name: str = target.service_name
        self.check_interval = check_interval
        self._sentinels = list(target.nodes)
        self._options: dict[str, Any] = {
            "username": target.username,
            "password": target.password,
            "ssl": target.tls,
            **options.timeouts,
        }
        #: the primary the Sentinels name (highest configuration epoch heard); None until heard
        self.address: tuple[str, int] | None = None
        #: changes of ``address`` so far, and when the last one was heard (``time.monotonic()``)
        self.switches = 0
        self.switched_at: float | None = None
        #: changes when a failover of the service starts, is aborted or moves the primary
        self.epoch = 0
        self._config_epoch = -1
        self._distrusted: tuple[str, int] | None = None
        # Sentinel index -> until when its failover is believed under way
        self._failovers: dict[int, float] = {}
        self._failover_timeout_s = DEFAULT_FAILOVER_TIMEOUT_S
        self._subscribed: set[int] = set()
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._started_in: int | None = None
        _watches.add(self)

    # -- what callers read ----------------------------------------------------------

    @property
    def failing_over(self) -> bool:
        """True between the announced start of a failover and its switch or abort."""
        failovers = self._failovers
        if not failovers:
            return False
        now = time.monotonic()
        return any(until > now for until in list(failovers.values()))

    @property
    def subscribed(self) -> int:
        """How many Sentinels' announcements are being heard now."""
        return len(self._subscribed)

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` (from the watch's thread) each time the named primary changes."""
        self._listeners.append(listener)

    def ensure_running(self) -> None:
        """Start the threads unless they run in this process (cheap: for every checkout)."""
        if self._started_in != _forks[0]:
            self._start()

    def forked(self) -> None:
        """In a forked child: the parent's threads (and maybe a lock they held) are gone."""
        self._lock = threading.Lock()
        self._subscribed = set()

    def stop(self) -> None:
        """Stop the threads (they end within ``check_interval``; daemons either way)."""
        self._stopping.set()

    def named_primary(self) -> tuple[str, int] | None:
        """``address``, unless that server answered as a replica since (then None: ask the Sentinels)."""
        address = self.address
        return None if address == self._distrusted else address

    def distrust(self, address: tuple[str, int]) -> None:
        """``address`` answered ``ROLE`` as a replica: the Sentinels were reconfigured without an
        announcement heard here (``SENTINEL REMOVE``/``MONITOR``...); until they name another
        primary, connections ask them instead of using ``address``."""
        with self._lock:
            if address == self.address:
                self._distrusted = address
                self.switches += 1

    def demoted(self, named: tuple[str, int]) -> None:
        """The server believed primary answered as a replica, and the Sentinels name ``named``:
        follow them (a reconfiguration without announcements, e.g. ``SENTINEL REMOVE``/``MONITOR``)."""
        with self._lock:
            self._config_epoch = -1  # whatever the Sentinels say now, not what they announced before
        self._named(named, -1)

    # -- the threads ----------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._started_in == _forks[0] or self._stopping.is_set():
                return
            self._started_in = _forks[0]
            self._subscribed.clear()
        for index, (host, port) in enumerate(self._sentinels):
            thread = threading.Thread(
                target=self._follow,
                args=(index, host, port),
                name=f"telemetry_infra-sentinel-watch-{host}:{port}",
                daemon=True,
            )
            thread.start()

    def _follow(self, index: int, host: str, port: int) -> None:
        """Hear one Sentinel until stopped: subscribed when possible, else asking it periodically."""
        generation = _forks[0]
        while not self._stopping.is_set() and generation == _forks[0]:
            client = redis.Redis(host=host, port=port, **self._options)
            try:
                self._listen(index, client, generation)
            except (RedisError, OSError) as exc:
                logger.debug("Sentinel %s:%s announcements: %s: %s", host, port, type(exc).__name__, exc)
                self._ask_safely(index, client)
            finally:
                self._subscribed.discard(index)
                client.close()
            self._stopping.wait(self.check_interval)

    def _listen(self, index: int, client: redis.Redis, generation: int) -> None:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(SWITCH_MASTER, *FAILOVER_BEGINS)
            pubsub.psubscribe(FAILOVER_ABORTS)
            self._ask(index, client)  # what happened before the subscription
            self._subscribed.add(index)
            while not self._stopping.is_set() and generation == _forks[0]:
                message = pubsub.get_message(timeout=self.check_interval)
                if message is not None:
                    self._heard(index, client, _text(message["channel"]), _text(message["data"]))
        finally:
            pubsub.close()

    def _ask_safely(self, index: int, client: redis.Redis) -> None:
        try:
            self._ask(index, client)
        except (RedisError, OSError) as exc:
            logger.debug("Sentinel check failed: %s: %s", type(exc).__name__, exc)

    def _ask(self, index: int, client: redis.Redis) -> None:
        """``SENTINEL MASTER``: the primary this Sentinel names, its epoch, a failover under way."""
        state = _master_state(client, self.service_name)
        self._failover_timeout_s = int(state.get("failover-timeout", 0)) / 1000 or DEFAULT_FAILOVER_TIMEOUT_S
        address = (_text(state["ip"]), int(state["port"]))
        self._named(address, int(state.get("config-epoch", 0)))
        if "failover_in_progress" in str(state.get("flags", "")):
            self._begin(index)
        else:
            self._end(index)

    def _heard(self, index: int, client: redis.Redis, channel: str, data: str) -> None:
        words = data.split()
        if channel == SWITCH_MASTER:
            if len(words) >= 5 and words[0] == self.service_name:
                self._switched((words[3], int(words[4])), client)
            return
        if _master_of(words) != self.service_name:
            return
        if channel.startswith("-failover-abort"):
            self._end(index)
        else:
            self._begin(index)

    # -- state changes --------------------------------------------------------------

    def _begin(self, index: int) -> None:
        with self._lock:
            if index not in self._failovers:
                self.epoch += 1
            self._failovers[index] = time.monotonic() + self._failover_timeout_s

    def _end(self, index: int) -> None:
        with self._lock:
            if self._failovers.pop(index, None) is not None:
                self.epoch += 1

    def _switched(self, address: tuple[str, int], client: redis.Redis) -> None:
        """``+switch-master``: the announcing Sentinel holds the new configuration epoch."""
        try:
            config_epoch = int(_master_state(client, self.service_name).get("config-epoch", 0))
        except (RedisError, OSError):
            config_epoch = self._config_epoch + 1
        self._named(address, config_epoch, ends_failovers=True)

    def _named(self, address: tuple[str, int], config_epoch: int, *, ends_failovers: bool = False) -> None:
        with self._lock:
            if config_epoch < self._config_epoch:
                return  # a Sentinel that has not heard of the last failover yet
            self._config_epoch = config_epoch
            moved = address != self.address
            if ends_failovers and self._failovers:
                self._failovers.clear()  # every attempt was about the previous configuration
                self.epoch += 1
            if not moved:
                return
            first = self.address is None
            self.address = address
            self._distrusted = None
            self.switches += 1
            self.switched_at = time.monotonic()
            self.epoch += 1
        if not first:
            logger.info("the Sentinels named %s:%s primary of %s", *address, self.service_name)
            for listener in list(self._listeners):
                try:
                    listener()
                except Exception:
                    logger.exception("a listener of the Sentinels' announcements failed")


def _master_state(client: redis.Redis, service_name: str) -> dict[str, Any]:
    """``SENTINEL MASTER <service_name>`` as redis-py parses it (ip, port, flags, config-epoch...)."""
    state = client.sentinel_master(service_name)
    if not isinstance(state, dict):
        raise RedisError(f"unexpected SENTINEL MASTER reply: {state!r}")
    return state


def _master_of(words: list[str]) -> str | None:
    """The service an instance event is about: ``<type> <name> <ip> <port> [@ <master> <ip> <port>]``."""
    if "@" in words:
        at = words.index("@")
        return words[at + 1] if len(words) > at + 1 else None
    return words[1] if len(words) > 1 and words[0] == "master" else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
