"""Cache exceptions and the one classification of backend failures.

``OUTAGE_ERRORS`` are failures that mean "Redis cannot be reached right now": they
feed the circuit breaker and the operation is served from memory instead.
``BACKEND_ERRORS`` are everything else a backend may raise (a server-side error
such as ``WRONGTYPE`` or ``OOM``): counted, logged, and the operation degrades to
its "nothing happened" result. Callers never see either.
"""

from __future__ import annotations

import asyncio

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = [
    "BACKEND_ERRORS",
    "OUTAGE_ERRORS",
    "CacheClosedError",
    "CacheDecodeError",
    "CacheError",
    "CacheSerializationError",
]

OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    asyncio.TimeoutError,
    OSError,
)
BACKEND_ERRORS: tuple[type[BaseException], ...] = (RedisError,)


class CacheError(Exception):
    """Base class of the errors raised by the cache."""


class CacheSerializationError(CacheError, TypeError):
    """A value cannot be encoded with the configured serializer; nothing was written."""

    def __init__(self, key: str, value: object, serializer: str, reason: object) -> None:
        self.key = key
        self.value_type = type(value).__qualname__
        self.serializer = serializer
        super().__init__(
            f"cannot cache key {key!r}: a value of type {self.value_type} is not "
            f"{serializer}-serializable ({reason})"
        )


class CacheDecodeError(CacheError, ValueError):
    """Stored bytes are not a payload this cache can read (foreign, corrupted or forged).

    Never reaches callers: the lookup becomes a miss and is counted as an error.
    """


class CacheClosedError(CacheError, RuntimeError):
    """An operation was attempted on a ``CacheManager`` after ``close()``."""
