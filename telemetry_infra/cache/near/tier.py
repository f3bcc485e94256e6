"""Near cache: hot entries in process memory, kept exact by Redis's invalidation messages.

The coherence rules, in one place (the channel that feeds them is ``invalidations``):

* **Served only while covered.** An entry is served only while the invalidation
  channel is tracking and has proven itself recently (``renew``: a PING answered on
  the channel, whose replies come in order with the invalidations sent before them,
  and a heartbeat of the channel's event loop younger than ``HEARTBEAT_WINDOW_S``:
  a stalled loop leaves invalidations unread). Both fold into one deadline, so a hit
  costs one ``monotonic()`` comparison, whatever thread it runs on.
  When the channel drops, its loop ends or its PING goes unanswered, everything is
  flushed and reads go to Redis until tracking is back. While the circuit breaker is
  open (memory serves) the near tier is flushed and suspended the same way.
* **Placeholder per read in flight** (the race of the Redis client-side caching guide).
  A read that misses registers a *flight* for its key before its command is sent. An
  invalidation (or our own write, or a flush) arriving before the reply marks the flight
  stale, and a stale flight installs nothing. Readers of one key share a flight: when
  two of them come back with different answers, a write happened in between whose
  invalidation is still on its way, so the entry is dropped and nothing is installed
  (installing the older answer would hand out a value older than one already returned).
* **Own writes** drop the key's entry and mark its flights stale before the write is
  sent and again once it is answered (or has failed), so after ``set``/``delete``/
  ``clear``/``mset`` returns no entry and no pending fill predates it.
* **Bounded**: at most ``maxsize`` entries and ``max_bytes`` of payloads (least recently
  used evicted first), none older than ``max_ttl`` seconds, and none past its key's Redis
  expiry (``settle``'s ``expires_at``: the fill read the key's PTTL with its value, since
  Redis announces an expiry only when it gets round to deleting the key).

Values are held decoded. ``str``, ``int``, ``float``, ``bool``, ``bytes`` and ``None`` are
immutable and handed out as they are; anything else (a dict, a list, an object) is
decoded afresh for every hit, like ``@cached`` does, so a caller mutating its value never
changes what the next caller gets (``orjson`` decodes a small document faster than
``copy.deepcopy`` copies it). What is decoded is the body prepared once at the fill
(``Codec.body_of``: header stripped, decompressed, a pickle's signature verified), so a
hit is one loader call on bytes, nothing else.

Thread-safe: one lock, never held across an ``await``; the tier serves every event loop
and thread using its manager.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from telemetry_infra.cache.fork_safety import hold_across_fork
from telemetry_infra.cache.keys import glob_matcher
from telemetry_infra.cache.stats import CacheStats

__all__ = ["NEAR_MISS", "Flight", "NearCache"]

#: What ``NearCache.get`` returns when it has nothing to serve.
NEAR_MISS: Any = object()
_NOTHING_YET = object()
Loader = Callable[[bytes], Any]
_SHAREABLE = frozenset((str, int, float, bool, bytes, type(None)))
_monotonic = time.monotonic


class Flight:
    """The placeholder of the reads of one key in flight (see the module docstring)."""

    __slots__ = ("answer", "readers", "stale")

    def __init__(self) -> None:
        self.readers = 0
        self.stale = False
        self.answer: Any = _NOTHING_YET


class NearCache:
    """At most ``maxsize`` decoded entries and ``max_bytes`` of their payloads (least
    recently used evicted first; a payload larger than ``max_bytes`` is not kept), each
    for at most ``max_ttl`` seconds, served only while covered (tracking on, breaker
    closed, channel heard from recently)."""

    def __init__(
        self,
        maxsize: int,
        max_ttl: float,
        decode: Loader,
        stats: CacheStats,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        body_of: Callable[[bytes], tuple[Loader, bytes]] | None = None,
    ) -> None:
        """``decode`` reads a payload; ``body_of`` (default: ``decode`` on the whole payload)
        splits one into the loader and bytes that make a fresh copy on each hit."""
        for name, bound in (("near_cache_size", maxsize), ("near_cache_max_bytes", max_bytes)):
            if isinstance(bound, bool) or not isinstance(bound, int):
                raise TypeError(f"{name} must be an int, got {type(bound).__qualname__}")
            if bound < 1:
                raise ValueError(f"{name} must be >= 1, got {bound!r}")
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.stored_bytes = 0
        self.max_ttl = max_ttl
        self._body_of = body_of or (lambda payload: (decode, payload))
        self._stats = stats
        #: key -> (value or None, its loader or None when shared, body, deadline, payload size)
        self._entries: OrderedDict[str, tuple[Any, Loader | None, bytes, float, int]] = OrderedDict()
        self._flights: dict[str, Flight] = {}
        self._lock = hold_across_fork(threading.Lock())
        self._acquire, self._release = self._lock.acquire, self._lock.release
        self._tracking = False
        self._tracked_by: object = None
        self._suspended = False
        self._heard_until = 0.0
        #: monotonic time until which entries may be served; 0 while not covered
        self._serve_until = 0.0
        self.flushes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def tracking(self) -> bool:
        """True while the invalidation channel tracks this tier's keys."""
        return self._tracking

    @property
    def serving(self) -> bool:
        """True while hits may be served (tracking, breaker closed, channel heard from)."""
        return _monotonic() < self._serve_until

    # -- the hot path -----------------------------------------------------------------

    def get(self, key: str) -> Any:
        """The value held for ``key`` (a fresh copy unless immutable), or ``NEAR_MISS``."""
        now = _monotonic()
        if now >= self._serve_until:
            return NEAR_MISS
        self._acquire()
        try:
            entry = self._entries[key]
            if entry[3] <= now:
                self._drop(key)
                return NEAR_MISS
            self._entries.move_to_end(key)
        except KeyError:
            return NEAR_MISS
        finally:
            self._release()
        loads = entry[1]
        return entry[0] if loads is None else loads(entry[2])

    # -- fills ------------------------------------------------------------------------

    def begin(self, key: str) -> Flight | None:
        """Register a read of ``key`` about to be sent; None when nothing may be installed."""
        with self._lock:
            if not self._tracking or self._suspended:
                return None
            flight = self._flights.get(key)
            if flight is None:
                flight = self._flights[key] = Flight()
            flight.readers += 1
            return flight

    def settle(
        self, key: str, flight: Flight, payload: bytes | None, value: Any = None, expires_at: float = math.inf
    ) -> None:
        """The read of ``key`` came back with ``payload`` (None: absent), decoded to ``value``;
        install it, to be served until ``expires_at`` (``monotonic()``: the key's Redis expiry)
        at the latest, unless an invalidation or a different answer came first."""
        with self._lock:
            self._leave(key, flight)
            if flight.stale:
                return
            if flight.answer is _NOTHING_YET:
                flight.answer = payload
            elif flight.answer != payload:
                flight.stale = True
                self._drop(key)
                return
            if payload is None:
                return
            self._install(key, payload, value, expires_at)

    def release(self, key: str, flight: Flight) -> None:
        """The read of ``key`` failed or was cancelled: it installs nothing."""
        with self._lock:
            self._leave(key, flight)

    def _leave(self, key: str, flight: Flight) -> None:
        flight.readers -= 1
        if flight.readers == 0 and self._flights.get(key) is flight:
            del self._flights[key]

    def _install(self, key: str, payload: bytes, value: Any, expires_at: float) -> None:
        self._drop(key)
        size = len(payload)
        now = _monotonic()
        if size > self.max_bytes or expires_at <= now:
            return
        deadline = min(now + self.max_ttl, expires_at)
        entries = self._entries
        if value.__class__ in _SHAREABLE:
            entries[key] = (value, None, b"", deadline, size)
        else:
            loads, body = self._body_of(payload)
            entries[key] = (None, loads, body, deadline, size)
        self.stored_bytes += size
        while len(entries) > self.maxsize or self.stored_bytes > self.max_bytes:
            self.stored_bytes -= entries.popitem(last=False)[1][4]

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.stored_bytes -= entry[4]

    # -- invalidation -----------------------------------------------------------------

    def invalidate(self, keys: Iterable[str]) -> None:
        """Redis says these keys changed (counted as ``cache.near.invalidations``)."""
        self._stats.near_invalidations += self.discard(keys)

    def discard(self, keys: Iterable[str]) -> int:
        """Drop ``keys`` and make their reads in flight install nothing; returns how many keys."""
        count = 0
        entries, flights = self._entries, self._flights
        with self._lock:
            for key in keys:
                count += 1
                if key in entries:
                    self._drop(key)
                flight = flights.pop(key, None)
                if flight is not None:
                    flight.stale = True
        return count

    def discard_changed(self, keys: Sequence[str] | str) -> None:
        """Drop what a change to ``keys`` (a sequence, or a glob pattern) makes stale."""
        if isinstance(keys, str):
            self.discard_matching(keys)
        else:
            self.discard(keys)

    def discard_matching(self, pattern: str) -> None:
        """Drop every key matching the Redis glob ``pattern`` (our own ``clear``)."""
        matches = glob_matcher(pattern)
        with self._lock:
            keys = [key for key in (*self._entries, *self._flights) if matches(key)]
        self.discard(keys)

    def abandon_fills(self) -> None:
        """Every read in flight installs nothing (one of them may be served by the fallback)."""
        with self._lock:
            for flight in self._flights.values():
                flight.stale = True
            self._flights.clear()

    def flush(self) -> None:
        """Drop everything, reads in flight included."""
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        self._entries.clear()
        self.stored_bytes = 0
        for flight in self._flights.values():
            flight.stale = True
        self._flights.clear()
        self.flushes += 1

    # -- coverage (called by the invalidation channel and the breaker) -----------------

    def tracking_started(self, heard_until: float, channel: object) -> None:
        """Tracking confirmed by ``channel`` (a connection's listener): entries may be filled,
        and served until ``heard_until``."""
        with self._lock:
            self._flush()  # whatever is held predates this channel
            self._tracking = True
            self._tracked_by = channel
            self._renew(heard_until)

    def renew(self, heard_until: float, channel: object) -> None:
        """``channel`` answered a PING: serve until ``heard_until`` unless heard from again."""
        with self._lock:
            if self._tracking and self._tracked_by is channel:
                self._renew(heard_until)

    def tracking_lost(self, channel: object = None) -> None:
        """The channel dropped or went silent (``channel``: only if it is the one tracking;
        None: whichever): flush, and reads go to Redis until tracking is back."""
        with self._lock:
            if channel is not None and self._tracked_by is not channel:
                return
            self._tracked_by = None
            self._tracking = False
            self._serve_until = 0.0
            self._flush()

    def breaker_changed(self, is_open: bool, _cause: BaseException | None = None) -> None:
        """Breaker listener: flushed and suspended while open, resumed when it closes."""
        with self._lock:
            self._suspended = is_open
            if is_open:
                self._serve_until = 0.0
                self._flush()
            else:
                self._renew(self._heard_until)

    def _renew(self, heard_until: float) -> None:
        self._heard_until = heard_until
        self._serve_until = heard_until if self._tracking and not self._suspended else 0.0
