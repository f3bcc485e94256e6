"""Storage backends: bytes in, bytes out, nothing else.

A backend stores payloads under fully qualified keys and knows nothing of codecs,
namespaces, statistics, fallback or telemetry; those wrap it. ``ttl`` is in seconds
(``None``: the backend's longest life).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["Backend"]


class Backend(Protocol):
    """What the cache needs from a store."""

    @property
    def name(self) -> str:
        """What ``cache.backend`` reports: ``redis``, ``memory``, ..."""
        ...

    async def get(self, key: str) -> bytes | None: ...

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def set(self, key: str, payload: bytes, ttl: float | None) -> None: ...

    async def mset(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None: ...

    async def delete(self, key: str) -> bool: ...

    async def delete_many(self, keys: Sequence[str]) -> int: ...

    async def exists(self, key: str) -> bool: ...

    async def clear(self, pattern: str) -> int:
        """Remove every key matching the Redis-style glob ``pattern``; return how many."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
