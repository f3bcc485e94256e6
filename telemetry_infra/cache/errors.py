"""Cache exceptions and the one classification of backend failures.

``OUTAGE_ERRORS`` are failures that mean "Redis cannot be reached right now": they
feed the circuit breaker and the operation is served from memory instead.
``BACKEND_ERRORS`` are everything else a backend may raise (a server-side error
such as ``WRONGTYPE`` or ``OOM``, or ``CachePoolExhaustedError``: every pooled
connection stayed busy): counted, logged, and the operation degrades to its
"nothing happened" result. Callers never see either.

Pool exhaustion is local back-pressure, not evidence of an outage: Redis is
answering, this process just asks more of it than ``max_connections`` carry, so
it never feeds the breaker.
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
    "CachePoolExhaustedError",
    "CacheSerializationError",
]


class CacheError(Exception):
    """Base class of the errors raised by the cache."""


class CachePoolExhaustedError(CacheError):
    """No pooled Redis connection came free within ``pool_timeout`` while Redis was answering.

    Never reaches callers: the read becomes a miss, counted under its own
    ``error.type``. Deliberately not a ``TimeoutError``/``OSError``: those mean an outage.
    """

    def __init__(self, waited: float, max_connections: int) -> None:
        self.waited = waited
        self.max_connections = max_connections
        super().__init__(
            f"all {max_connections} pooled Redis connections stayed busy for {waited:g} s "
            "(pool_timeout), so a read gave up and counts as a miss; Redis itself answers. "
            "Raise max_connections or pool_timeout, or make fewer cache calls at once"
        )


OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    asyncio.TimeoutError,
    OSError,
)
BACKEND_ERRORS: tuple[type[BaseException], ...] = (RedisError, CachePoolExhaustedError)


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
