"""Cache exceptions and the one classification of backend failures.

``OUTAGE_ERRORS`` are failures that mean "Redis cannot be reached right now": they
feed the circuit breaker and the operation is served from memory instead.
``BACKEND_ERRORS`` are everything else a backend may raise (a server-side error
such as ``WRONGTYPE`` or ``OOM``, or ``CachePoolExhaustedError``: every pooled
connection stayed busy): counted, logged, and the operation degrades to its
"nothing happened" result. Callers never see either, with one exception: a removal
that may not have happened (Redis refused it with ``READONLY``, did not confirm it in
time, or the outage journal is full) raises ``CacheWriteError`` from
``delete``/``clear``, since a caller revoking an entry must know it may still be there.

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
    "TIMEOUT_ERRORS",
    "CacheClosedError",
    "CacheDecodeError",
    "CacheError",
    "CachePoolExhaustedError",
    "CacheSerializationError",
    "CacheShardUnavailableError",
    "CacheWriteError",
    "FailoverUnderwayError",
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


class CacheShardUnavailableError(CacheError):
    """One Redis Cluster node cannot be reached while other primaries answer.

    Not an outage of the cache: only the keys of that node's slots fail (reads miss,
    writes are masked until their removal lands), the rest is served by Redis, and
    redis-py moves the slots once a replica takes over. ``node`` is ``host:port`` (None
    when the slot has no node at all in the client's map).
    """

    def __init__(self, node: str | None, cause: BaseException) -> None:
        self.node = node
        where = f"Redis Cluster node {node}" if node else "the Redis Cluster node of this slot"
        super().__init__(
            f"{where} is unavailable while other primaries answer ({type(cause).__name__}: {cause})"
        )


class FailoverUnderwayError(RedisConnectionError):
    """A change was not acknowledged by the primary the Sentinels name: a failover began,
    ended or moved the primary while it was on the wire, or did not finish in time for it.

    Not an outage (the breaker is not told): the write-safety policy treats it as an
    unconfirmed change (``failover``).
    """


OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    asyncio.TimeoutError,
    OSError,
)
#: Outage errors that do not prove an outage: Redis may only be slow, and a write may have
#: landed. They count toward the breaker's threshold instead of opening it at once.
TIMEOUT_ERRORS: tuple[type[BaseException], ...] = (RedisTimeoutError, asyncio.TimeoutError)
BACKEND_ERRORS: tuple[type[BaseException], ...] = (
    RedisError,
    CachePoolExhaustedError,
    CacheShardUnavailableError,
)


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


class CacheWriteError(CacheError):
    """Redis refused or did not confirm a write or removal (``OOM``, ``READONLY``, a timeout...).

    ``delete()`` and ``clear()`` raise it when the entry may still be readable by other
    processes; ``set()``/``mset()`` return False instead. Either way this manager no longer
    serves the old value. ``keys`` are the stored keys concerned; ``__cause__`` is
    the error Redis answered, whose message is in ``str()``.
    """

    def __init__(self, message: str, keys: tuple[str, ...] = ()) -> None:
        self.keys = keys
        super().__init__(message)
