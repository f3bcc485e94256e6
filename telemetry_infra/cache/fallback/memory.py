"""In-process LRU store with per-entry TTL, bounded by entries and bytes.

Each entry keeps its payload and, prepared when it is written, how to read it
(``reader``: the codec's loader and the payload's body as a view, no copy), so a hit
decodes its fresh copy in one call. One store serves every event loop and thread
using its manager. Reads take no lock: each is one ``dict`` look-up, one
``monotonic()`` comparison and a ``move_to_end``,
every one of them atomic under the GIL, so a read racing a write returns the value
before or after it, never a mix. Writes (and sweeps) hold one lock, never across an
``await``. Expired entries are skipped by reads and swept, soonest expiry first, when
a write needs room, before any live entry is evicted (expiry is not eviction).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from telemetry_infra.cache.fork_safety import hold_across_fork
from telemetry_infra.cache.keys import glob_matcher

__all__ = ["Entry", "MemoryBackend", "Reader"]

_monotonic = time.monotonic

#: How to read a payload: ``(loads, body)`` with ``loads(body)`` its value, a fresh copy each call.
Reader = Callable[[bytes], tuple[Callable[[Any], Any], Any]]


def _as_stored(payload: bytes) -> tuple[Callable[[Any], Any], Any]:
    """The default reader: the payload itself (a store used without a codec)."""
    return bytes, payload


class Entry(NamedTuple):
    """A stored payload, until when it is served, and how to read it (see :data:`Reader`)."""

    payload: bytes
    expires_at: float
    loads: Callable[[Any], Any]
    body: Any


class MemoryBackend:
    """``maxsize`` entries and ``max_bytes`` of payloads, least recently used evicted first;
    no entry outlives ``max_ttl``; a payload larger than ``max_bytes`` is not kept (and the
    key's previous value goes, counted as an eviction)."""

    name = "memory"

    def __init__(
        self,
        maxsize: int = 1000,
        max_ttl: float = 300.0,
        on_evict: Callable[[], None] = lambda: None,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        reader: Reader = _as_stored,
    ) -> None:
        if maxsize <= 0:
            raise ValueError(f"memory_cache_size must be positive, got {maxsize!r}")
        if max_ttl <= 0:
            raise ValueError(f"memory_cache_ttl must be positive, got {max_ttl!r}")
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool):
            raise TypeError(f"memory_cache_max_bytes must be an int, got {type(max_bytes).__qualname__}")
        if max_bytes <= 0:
            raise ValueError(f"memory_cache_max_bytes must be positive, got {max_bytes!r}")
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.max_ttl = float(max_ttl)
        #: payload bytes held now (expired entries count until they are swept)
        self.stored_bytes = 0
        self._on_evict = on_evict
        self._reader = reader
        #: key -> its entry (expiry: ``monotonic()`` time), least recently used first
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        #: heap of (expiry, key); records of replaced entries stay until popped or rebuilt
        self._expiries: list[tuple[float, str]] = []
        self._lock = hold_across_fork(threading.Lock())

    def __len__(self) -> int:
        return len(self._entries)

    # -- reads (no lock) ------------------------------------------------------------

    def entry(self, key: str) -> Entry | None:
        """The live entry of ``key``, or None; needs no event loop."""
        entry = self._entries.get(key)
        if entry is None or entry.expires_at <= _monotonic():
            return None
        try:  # noqa: SIM105 (suppress() would cost a context manager per hit)
            self._entries.move_to_end(key)
        except KeyError:  # removed by another thread since: this read came first
            pass
        return entry

    def lookup(self, key: str) -> bytes | None:
        """The payload of ``key``, or None; needs no event loop."""
        entry = self.entry(key)
        return None if entry is None else entry.payload

    async def get(self, key: str) -> bytes | None:
        return self.lookup(key)

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self.lookup(key) for key in keys]

    async def exists(self, key: str) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.expires_at > _monotonic()

    # -- writes (under the lock) ----------------------------------------------------

    async def set(self, key: str, payload: bytes, ttl: float | None) -> None:
        with self._lock:
            self._store(key, payload, ttl)

    async def mset(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        with self._lock:
            for key, payload in items:
                self._store(key, payload, ttl)

    def _store(self, key: str, payload: bytes, ttl: float | None) -> None:
        now = _monotonic()
        expires_at = now + (self.max_ttl if ttl is None or ttl > self.max_ttl else ttl)
        self._remove(key)
        if len(payload) > self.max_bytes:
            self._on_evict()  # not kept; the previous value is gone too
            return
        if expires_at <= now:
            return
        self._entries[key] = Entry(payload, expires_at, *self._reader(payload))
        self.stored_bytes += len(payload)
        heapq.heappush(self._expiries, (expires_at, key))
        if len(self._entries) > self.maxsize or self.stored_bytes > self.max_bytes:
            self._make_room(now)
        if len(self._expiries) > 2 * len(self._entries) + 64:
            # list() copies in one step: a lock-free lookup() may move_to_end() meanwhile
            self._expiries = [(entry.expires_at, key) for key, entry in list(self._entries.items())]
            heapq.heapify(self._expiries)

    def _make_room(self, now: float) -> None:
        """Sweep expired entries, then evict the least recently used until within bounds."""
        expiries, entries = self._expiries, self._entries
        while expiries and expiries[0][0] <= now:
            expiry, key = heapq.heappop(expiries)
            entry = entries.get(key)
            if entry is not None and entry.expires_at == expiry:
                self._remove(key)
        while len(entries) > self.maxsize or self.stored_bytes > self.max_bytes:
            _key, evicted = entries.popitem(last=False)
            self.stored_bytes -= len(evicted.payload)
            self._on_evict()

    def _remove(self, key: str) -> bool:
        """Drop ``key``; True when it held a live (unexpired) value."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self.stored_bytes -= len(entry.payload)
        return entry.expires_at > _monotonic()

    async def delete(self, key: str) -> bool:
        with self._lock:
            return self._remove(key)

    async def delete_many(self, keys: Sequence[str]) -> int:
        with self._lock:
            return sum(self._remove(key) for key in keys)

    async def clear(self, pattern: str) -> int:
        matches = glob_matcher(pattern)
        with self._lock:
            doomed = [key for key in list(self._entries) if matches(key)]
        return await self.delete_many(doomed)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        with self._lock:
            self._entries.clear()
            self._expiries.clear()
            self.stored_bytes = 0
