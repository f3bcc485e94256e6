"""In-process LRU store with per-entry TTL (cachetools ``TLRUCache``), bounded by entries and bytes.

One store serves every event loop and thread using its manager; cachetools caches
are not thread-safe, so every access holds a lock (never across an ``await``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from cachetools import TLRUCache

from telemetry_infra.cache.fork_safety import hold_across_fork
from telemetry_infra.cache.keys import glob_matcher

__all__ = ["MemoryBackend"]

Entry = tuple[bytes, float]


def _expires_at(_key: str, entry: Entry, now: float) -> float:
    return now + entry[1]


def _payload_size(entry: Entry) -> int:
    return len(entry[0])


class _ReportingLRU(TLRUCache):
    """At most ``max_items`` entries and ``max_bytes`` of payload; reports entries pushed out
    for room (LRU evictions). Expiry is not eviction."""

    def __init__(self, max_items: int, max_bytes: int, on_evict: Callable[[], None]) -> None:
        super().__init__(max_bytes, _expires_at, timer=time.monotonic, getsizeof=_payload_size)
        self._max_items = max_items
        self._on_evict = on_evict

    def __setitem__(self, key: str, entry: Entry) -> None:  # type: ignore[override]
        try:
            super().__setitem__(key, entry)
        except ValueError:  # larger than max_bytes: not kept, and the previous value must go too
            self.pop(key, None)
            self._on_evict()
            return
        while len(self) > self._max_items:
            self.popitem()

    def popitem(self):  # type: ignore[no-untyped-def]
        item = super().popitem()
        self._on_evict()
        return item


class MemoryBackend:
    """``maxsize`` entries and ``max_bytes`` of payloads, least recently used evicted first;
    no entry outlives ``max_ttl``; a payload larger than ``max_bytes`` is not kept."""

    name = "memory"

    def __init__(
        self,
        maxsize: int = 1000,
        max_ttl: float = 300.0,
        on_evict: Callable[[], None] = lambda: None,
        *,
        max_bytes: int = 64 * 1024 * 1024,
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
        self._entries = _ReportingLRU(maxsize, max_bytes, on_evict)
        self._lock = hold_across_fork(threading.Lock())
        self._acquire, self._release = self._lock.acquire, self._lock.release

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def stored_bytes(self) -> int:
        """Payload bytes held now (expired entries count until they are swept)."""
        return self._entries.currsize

    def _entry(self, payload: bytes, ttl: float | None) -> Entry:
        max_ttl = self.max_ttl
        return payload, max_ttl if ttl is None or ttl > max_ttl else ttl

    async def get(self, key: str) -> bytes | None:
        # not Cache.get(): it checks expiry twice (__contains__, then __getitem__);
        # acquire/release spelt out: half the cost of ``with`` on the hottest path
        self._acquire()
        try:
            return self._entries[key][0]
        except KeyError:
            return None
        finally:
            self._release()

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        return [await self.get(key) for key in keys]

    async def set(self, key: str, payload: bytes, ttl: float | None) -> None:
        entry = self._entry(payload, ttl)
        with self._lock:
            self._entries[key] = entry

    async def mset(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        entries = self._entries
        with self._lock:
            for key, payload in items:
                entries[key] = self._entry(payload, ttl)

    async def delete(self, key: str) -> bool:
        with self._lock:
            return self._entries.pop(key, None) is not None

    async def delete_many(self, keys: Sequence[str]) -> int:
        pop = self._entries.pop
        with self._lock:
            return sum(pop(key, None) is not None for key in keys)

    async def exists(self, key: str) -> bool:
        with self._lock:
            return key in self._entries

    async def clear(self, pattern: str) -> int:
        matches = glob_matcher(pattern)
        with self._lock:
            doomed = [key for key in list(self._entries.keys()) if matches(key)]
        return await self.delete_many(doomed)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        with self._lock:
            self._entries.clear()
