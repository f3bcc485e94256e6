"""Redis first, memory while Redis is unreachable: the fallback policy, in one place.

* An outage error (see ``errors.OUTAGE_ERRORS``) is served from memory; callers
  never see it. Failed reads count toward the breaker's threshold; a failed write
  or removal opens it at once (Redis may hold a value we could not replace).
* While the breaker is open nothing touches the network: memory serves everything.
  Once Redis answers a probe, writes go to Redis again while the journal is
  replayed; reads return to Redis when the replay is done.
* Removals and writes made meanwhile are journaled as removals for Redis and
  replayed before the breaker closes, so a value deleted (or replaced) during the
  outage never comes back from Redis afterwards.
* Entries written to memory during an outage stay there until they expire; a later
  write or delete of the same key through Redis drops the memory copy.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Sequence

from telemetry_infra.cache.backends.memory import MemoryBackend
from telemetry_infra.cache.backends.redis import RedisBackend
from telemetry_infra.cache.breaker import CircuitBreaker
from telemetry_infra.cache.errors import BACKEND_ERRORS, OUTAGE_ERRORS
from telemetry_infra.cache.journal import OutageJournal

__all__ = ["FailoverBackend"]

logger = logging.getLogger("telemetry_infra.cache")


class FailoverBackend:
    """A ``Backend`` over a primary (Redis) and a memory fallback.

    ``on_outage(exc)`` hears every failure that was absorbed by the fallback.
    """

    def __init__(
        self,
        primary: RedisBackend,
        memory: MemoryBackend,
        journal: OutageJournal,
        *,
        failure_threshold: int = 3,
        probe_interval: float = 1.0,
        probe_timeout: float = 1.0,
        on_outage: Callable[[BaseException], None] = lambda exc: None,
        task_context: Callable[[], contextvars.Context] = contextvars.copy_context,
    ) -> None:
        self.primary = primary
        self._on_outage = on_outage
        self.memory = memory
        self.journal = journal
        self.probe_timeout = probe_timeout
        self.breaker = CircuitBreaker(
            self._answers,
            self._replay,
            failure_threshold=failure_threshold,
            probe_interval=probe_interval,
            task_context=task_context,
        )

    @property
    def name(self) -> str:
        return self.memory.name if self.breaker.is_open else self.primary.name

    def _read_failed(self, exc: BaseException) -> None:
        self._on_outage(exc)
        self.breaker.record_failure(exc)

    def _write_failed(self, exc: BaseException) -> None:
        # Redis may now hold a value we could not replace or remove: go to memory
        # at once so the journal is replayed before Redis is read again.
        self._on_outage(exc)
        self.breaker.trip(exc)

    async def get(self, key: str) -> bytes | None:
        if self.breaker.is_open:
            self.breaker.keep_probing()
            return await self.memory.get(key)
        try:
            payload = await self.primary.get(key)
        except OUTAGE_ERRORS as exc:
            self._read_failed(exc)
            return await self.memory.get(key)
        self.breaker.failures = 0
        return payload

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        if self.breaker.is_open:
            self.breaker.keep_probing()
            return await self.memory.mget(keys)
        try:
            payloads = await self.primary.mget(keys)
        except OUTAGE_ERRORS as exc:
            self._read_failed(exc)
            return await self.memory.mget(keys)
        self.breaker.failures = 0
        return payloads

    async def exists(self, key: str) -> bool:
        if self.breaker.is_open:
            self.breaker.keep_probing()
            return await self.memory.exists(key)
        try:
            found = await self.primary.exists(key)
        except OUTAGE_ERRORS as exc:
            self._read_failed(exc)
            return await self.memory.exists(key)
        self.breaker.failures = 0
        return found

    async def set(self, key: str, payload: bytes, ttl: float | None) -> None:
        if not self.breaker.blocks_writes:
            try:
                await self.primary.set(key, payload, ttl)
            except OUTAGE_ERRORS as exc:
                self._write_failed(exc)
            else:
                self.breaker.failures = 0
                if len(self.memory):
                    await self.memory.delete(key)
                return
        self.breaker.keep_probing()
        self.journal.record_keys((key,))
        await self.memory.set(key, payload, ttl)

    async def mset(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        if not self.breaker.blocks_writes:
            try:
                await self.primary.mset(items, ttl)
            except OUTAGE_ERRORS as exc:
                self._write_failed(exc)
            else:
                self.breaker.failures = 0
                if len(self.memory):
                    await self.memory.delete_many([key for key, _ in items])
                return
        self.breaker.keep_probing()
        self.journal.record_keys([key for key, _ in items])
        await self.memory.mset(items, ttl)

    async def delete(self, key: str) -> bool:
        in_memory = await self.memory.delete(key)
        if not self.breaker.blocks_writes:
            try:
                removed = await self.primary.delete(key)
            except OUTAGE_ERRORS as exc:
                self._write_failed(exc)
            else:
                self.breaker.failures = 0
                return removed or in_memory
        self.breaker.keep_probing()
        self.journal.record_keys((key,))
        return in_memory

    async def delete_many(self, keys: Sequence[str]) -> int:
        in_memory = await self.memory.delete_many(keys)
        if not self.breaker.blocks_writes:
            try:
                removed = await self.primary.delete_many(keys)
            except OUTAGE_ERRORS as exc:
                self._write_failed(exc)
            else:
                self.breaker.failures = 0
                return max(removed, in_memory)
        self.breaker.keep_probing()
        self.journal.record_keys(keys)
        return in_memory

    async def clear(self, pattern: str) -> int:
        in_memory = await self.memory.clear(pattern)
        if not self.breaker.blocks_writes:
            try:
                removed = await self.primary.clear(pattern)
            except OUTAGE_ERRORS as exc:
                self._write_failed(exc)
            else:
                self.breaker.failures = 0
                return max(removed, in_memory)
        self.breaker.keep_probing()
        self.journal.record_pattern(pattern)
        return in_memory

    async def ping(self) -> None:
        if self.breaker.is_open:
            self.breaker.keep_probing()
        await self.primary.ping()

    async def connect(self, timeout: float) -> BaseException | None:
        """Check Redis once (at startup); open the breaker when it does not answer."""
        if self.breaker.is_open:  # opened under a loop that may have ended since
            self.breaker.keep_probing()
        try:
            await asyncio.wait_for(self.primary.ping(), timeout)
        except (*OUTAGE_ERRORS, *BACKEND_ERRORS) as exc:
            self._on_outage(exc)
            self.breaker.trip(exc)
            return exc
        return None

    async def _answers(self) -> bool:
        """Breaker probe: a PING on a fresh connection."""
        try:
            await self.primary.reconnect()
            await asyncio.wait_for(self.primary.ping(), self.probe_timeout)
        except (*OUTAGE_ERRORS, *BACKEND_ERRORS) as exc:
            logger.debug("Redis probe failed: %r", exc)
            return False
        return True

    async def _replay(self) -> bool:
        """Breaker recovery: apply the journal; True once Redis holds nothing stale."""
        try:
            await self.journal.replay(self.primary.delete_many, self.primary.clear)
        except (*OUTAGE_ERRORS, *BACKEND_ERRORS) as exc:
            logger.debug("journal replay failed: %r", exc)
            return False
        return True

    async def close(self) -> None:
        await self.breaker.stop()
        await self.primary.close()
        await self.memory.close()
