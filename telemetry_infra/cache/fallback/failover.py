"""Redis first, memory while Redis is unreachable: the fallback policy, in one place.

* Entries written to memory during an outage are served for at most ``fallback_max_ttl``
  seconds: other processes cannot see them, nor this process theirs, so a value another
  worker wrote meanwhile is hidden for at most that long.
* An outage error (see ``errors.OUTAGE_ERRORS``) is served from memory; callers
  never see it. Failed reads and timed-out writes count toward the breaker's
  threshold (a timeout is not proof of an outage: a busy Redis may still answer the
  next command); any other failed write or removal opens it at once.
* While the breaker is open nothing touches the network: memory serves everything.
  Once Redis answers a probe, writes go to Redis again while the journal is
  replayed; reads return to Redis when the replay is done, and the memory entries
  written during the outage are dropped then: they must not outlive the recovery
  (another process may have written the key in Redis since).
* The journal holds the keys Redis may hold a stale value for: removals and writes
  made during an outage, and writes Redis refused (``OOM``, ``READONLY``) or did not
  confirm (a timeout) while reachable. While the breaker is closed, journaled keys
  read as misses until their ``UNLINK`` is done: on recovery, after the next write
  Redis accepts, on ``health_check()`` or on ``close()``.
* A change that a Sentinel failover overtook (``FailoverUnderwayError``: the primary that
  answered may not be the one the Sentinels name) is an unconfirmed change, not an outage.
* A refused write is first undone with ``UNLINK`` (still allowed under ``OOM``); a
  refused or unconfirmed write or removal raises ``CacheWriteError`` to the manager,
  which turns it into False for ``set``/``mset`` and raises it from ``delete``/``clear``.
* When the journal is full, writes it would have to record are refused the same
  way instead of being accepted without a way to undo them later.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Literal, NoReturn, ParamSpec, TypeVar

from telemetry_infra.cache.errors import (
    BACKEND_ERRORS,
    OUTAGE_ERRORS,
    TIMEOUT_ERRORS,
    CacheWriteError,
    FailoverUnderwayError,
)
from telemetry_infra.cache.fallback.breaker import CircuitBreaker
from telemetry_infra.cache.fallback.journal import OutageJournal
from telemetry_infra.cache.fallback.memory import MemoryBackend
from telemetry_infra.cache.redis.node import ABSENT, NO_EXPIRY, ExpiringRead
from telemetry_infra.cache.redis.topology import RedisStore

__all__ = ["FailoverBackend"]

logger = logging.getLogger("telemetry_infra.cache")

_REDIS_ERRORS = (*OUTAGE_ERRORS, *BACKEND_ERRORS)
P = ParamSpec("P")
T = TypeVar("T")


class _Fallback(enum.Enum):
    MEMORY = "memory"


#: What ``FailoverBackend._change`` answers when memory must take the change.
MEMORY = _Fallback.MEMORY
#: What a masked key reads as for the near tier: no TTL, so it installs nothing.
NOT_TRACKED = ExpiringRead(None, NO_EXPIRY)


class FailoverBackend:
    """A ``Backend`` over a primary (Redis) and a memory fallback.

    ``on_outage(exc)`` hears every failure that was absorbed by the fallback.
    ``write_failure`` describes the last write Redis refused or did not confirm, None
    once a write succeeds again.
    """

    def __init__(
        self,
        primary: RedisStore,
        memory: MemoryBackend,
        journal: OutageJournal,
        *,
        failure_threshold: int = 3,
        probe_interval: float = 1.0,
        probe_timeout: float = 1.0,
        fallback_max_ttl: float = 1.0,
        on_outage: Callable[[BaseException], None] = lambda exc: None,
        task_context: Callable[[], contextvars.Context] = contextvars.copy_context,
    ) -> None:
        self.primary = primary
        self._on_outage = on_outage
        self.memory = memory
        self.journal = journal
        self.probe_timeout = probe_timeout
        self.fallback_max_ttl = fallback_max_ttl
        self.write_failure: str | None = None
        self._replaying = False
        self.breaker = CircuitBreaker(
            self._answers,
            self._recover,
            failure_threshold=failure_threshold,
            probe_interval=probe_interval,
            task_context=task_context,
        )

    @property
    def name(self) -> str:
        return self.memory.name if self.breaker.is_open else self.primary.name

    # -- reads ----------------------------------------------------------------------

    def _read_failed(self, exc: BaseException) -> None:
        self._on_outage(exc)
        self.breaker.record_failure(exc)

    # The reads hand back ``_read``'s coroutine itself (no ``async def`` of their own): the
    # caller awaits it directly, one frame less on every read (breaker-open hits: ~0.2 µs of 1.4).

    def get(self, key: str) -> Coroutine[Any, Any, bytes | None]:
        return self._read(key, None, self.primary.get, self.memory.get)

    def exists(self, key: str) -> Coroutine[Any, Any, bool]:
        return self._read(key, False, self.primary.exists, self.memory.exists)

    def get_expiring(self, key: str) -> Coroutine[Any, Any, ExpiringRead]:
        """``get`` for the near tier: with the key's remaining TTL (and, on a Cluster, the node
        that answered). What memory serves carries no TTL: the near tier installs nothing then."""
        return self._read(key, NOT_TRACKED, self.primary.get_expiring, self._memory_get_expiring)

    def mget(self, keys: Sequence[str]) -> Coroutine[Any, Any, list[bytes | None]]:
        return self._read_many(keys, None, self.primary.mget, self.memory.mget)

    def mget_expiring(self, keys: Sequence[str]) -> Coroutine[Any, Any, list[ExpiringRead]]:
        """``mget`` for the near tier (see ``get_expiring``)."""
        return self._read_many(keys, ABSENT, self.primary.mget_expiring, self._memory_mget_expiring)

    async def _read(
        self,
        key: str,
        masked: T,
        from_redis: Callable[[str], Awaitable[T]],
        from_memory: Callable[[str], Awaitable[T]],
    ) -> T:
        """The read policy for one key: memory while the breaker is open or when Redis fails
        (counted toward the threshold), ``masked`` while the journal holds the key."""
        if self.breaker.is_open:
            self.breaker.keep_probing()
            return await from_memory(key)
        if self.journal.pending and self.journal.masks(key):
            return masked
        try:
            answer = await from_redis(key)
        except OUTAGE_ERRORS as exc:
            self._read_failed(exc)
            return await from_memory(key)
        self.breaker.failures = 0
        return answer

    async def _read_many(
        self,
        keys: Sequence[str],
        masked: T,
        from_redis: Callable[[Sequence[str]], Awaitable[list[T]]],
        from_memory: Callable[[Sequence[str]], Awaitable[list[T]]],
    ) -> list[T]:
        """``_read`` for a batch: ``masked`` for each key the journal held when the read began
        or holds when it ends (a Cluster retries a batch after a pause: it may read a key
        before a replay's UNLINK and return after it, with the stale value)."""
        if self.breaker.is_open:
            self.breaker.keep_probing()
            return await from_memory(keys)
        masked_keys = {key for key in keys if self.journal.masks(key)} if self.journal.pending else ()
        try:
            answers = await from_redis(keys)
        except OUTAGE_ERRORS as exc:
            self._read_failed(exc)
            return await from_memory(keys)
        self.breaker.failures = 0
        if self.journal.pending or masked_keys:
            masks = self.journal.masks
            return [
                masked if key in masked_keys or masks(key) else answer
                for key, answer in zip(keys, answers, strict=True)
            ]
        return answers

    async def _memory_get_expiring(self, key: str) -> ExpiringRead:
        return ExpiringRead(await self.memory.get(key), NO_EXPIRY)

    async def _memory_mget_expiring(self, keys: Sequence[str]) -> list[ExpiringRead]:
        return [ExpiringRead(payload, NO_EXPIRY) for payload in await self.memory.mget(keys)]

    # -- writes ---------------------------------------------------------------------

    async def set(self, key: str, payload: bytes, ttl: float | None) -> None:
        keys = (key,)
        if await self._change(keys, "write", self.primary.set, key, payload, ttl) is MEMORY:
            self._journal_outage_write(keys)
            await self.memory.set(key, payload, self._outage_ttl(ttl))

    async def mset(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        keys = [key for key, _ in items]
        if await self._change(keys, "write", self.primary.mset, items, ttl) is not MEMORY:
            return
        if len(items) > self.memory.maxsize:
            # it would only evict the other outage entries and itself
            self._journal_outage_write(keys)
            await self.memory.delete_many(keys)
            raise CacheWriteError(
                f"Redis is unreachable and a batch of {len(items)} items does not fit in memory "
                f"(memory_cache_size={self.memory.maxsize}); nothing was written",
                tuple(keys),
            )
        self._journal_outage_write(keys)
        await self.memory.mset(items, self._outage_ttl(ttl))

    async def delete(self, key: str) -> bool:
        in_memory = await self.memory.delete(key)
        keys = (key,)
        removed = await self._change(keys, "removal", self.primary.delete, key)
        if removed is MEMORY:
            self._journal_outage_write(keys)
            return in_memory
        return removed or in_memory

    async def delete_many(self, keys: Sequence[str]) -> int:
        in_memory = await self.memory.delete_many(keys)
        removed = await self._change(keys, "removal", self.primary.delete_many, keys)
        if removed is MEMORY:
            self._journal_outage_write(keys)
            return in_memory
        return max(removed, in_memory)

    async def _change(
        self,
        keys: Sequence[str],
        what: Literal["write", "removal"],
        command: Callable[P, Awaitable[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T | Literal[_Fallback.MEMORY]:
        """Run ``command``, a write or removal of ``keys``, on Redis under the fallback policy
        (module docstring): its answer once Redis confirmed it; ``MEMORY`` when memory must take
        the change (the breaker is open, or this failure opened it); ``CacheWriteError`` when
        Redis refused it or did not confirm it."""
        if self.breaker.blocks_writes:
            return MEMORY
        since = self.journal.seq
        try:
            answer = await command(*args, **kwargs)
        except OUTAGE_ERRORS as exc:
            if not self._unreachable(exc):
                self._unconfirmed(keys, exc, what)
            return MEMORY
        except BACKEND_ERRORS as exc:
            await self._refused(keys, exc, undo=what == "write")
        wrote = what == "write"
        if self.journal.pending or len(self.memory) or (wrote and self.write_failure is not None):
            await self._landed(keys, since, wrote=wrote)
        else:
            self.breaker.failures = 0
        return answer

    async def clear(self, pattern: str) -> int:
        in_memory = await self.memory.clear(pattern)
        if not self.breaker.blocks_writes:
            try:
                removed = await self.primary.clear(pattern)
            except OUTAGE_ERRORS as exc:
                if not self._unreachable(exc):
                    self._clear_failed(pattern, exc, refused=False)
            except BACKEND_ERRORS as exc:
                self._clear_failed(pattern, exc, refused=True)
            else:
                self.breaker.failures = 0
                return max(removed, in_memory)
        self.breaker.keep_probing()
        if not self.journal.record_pattern(pattern):
            raise self._journal_full(())
        return in_memory

    def _outage_ttl(self, ttl: float | None) -> float:
        """How long memory serves an entry written during an outage: other processes do not see it."""
        cap = self.fallback_max_ttl
        return cap if ttl is None or ttl > cap else ttl

    # -- write failures -------------------------------------------------------------

    def _unreachable(self, exc: BaseException) -> bool:
        """A write failed on the network; True when the breaker is now open (memory takes it).

        A timeout counts toward the threshold like a failed read: Redis may only be slow
        (a big batch, a busy server) and answer the next command. Anything else opens
        the breaker at once. A failover that overtook the change says nothing about Redis
        being reachable: False, the change is unconfirmed.
        """
        if isinstance(exc, FailoverUnderwayError):
            return False
        if isinstance(exc, TIMEOUT_ERRORS):
            self.breaker.record_failure(exc)
        else:
            self.breaker.trip(exc)
        if not self.breaker.blocks_writes:
            return False
        self._on_outage(exc)
        return True

    def _unconfirmed(self, keys: Sequence[str], exc: BaseException, what: str) -> NoReturn:
        """Redis did not answer a change it may still apply: mask the keys until ``UNLINK`` lands."""
        recorded = self.journal.record_keys(keys)
        raise self._failure(
            f"Redis did not confirm the {what} in time ({_describe(exc)})", keys, exc, masked=recorded
        )

    def _clear_failed(self, pattern: str, exc: BaseException, *, refused: bool) -> None:
        """A ``clear`` Redis refused or did not confirm: mask the pattern until it is applied."""
        recorded = self.journal.record_pattern(pattern)
        what = "refused the removal" if refused else "did not confirm the removal in time"
        raise self._failure(f"Redis {what} ({_describe(exc)})", (pattern,), exc, masked=recorded)

    async def _refused(self, keys: Sequence[str], exc: BaseException, *, undo: bool) -> NoReturn:
        """Redis answered with an error: the old values stay, so remove them (``UNLINK`` is
        allowed under ``OOM``) or, failing that, mask them until it can be done."""
        removed = False
        if undo:
            try:
                await self.primary.delete_many(keys)
                removed = True
            except _REDIS_ERRORS as undo_exc:
                logger.debug("removing the entries of a refused write failed: %s", _describe(undo_exc))
        masked = removed or self.journal.record_keys(keys)
        what = "write" if undo else "removal"
        raise self._failure(f"Redis refused the {what} ({_describe(exc)})", keys, exc, masked=masked)

    def _failure(
        self, message: str, keys: Sequence[str], exc: BaseException, *, masked: bool
    ) -> CacheWriteError:
        if not masked:
            message += (
                f"; the outage journal is full (journal_size={self.journal.capacity}), "
                "so the previous value may still be read"
            )
        self.write_failure = message
        error = CacheWriteError(message, tuple(keys))
        error.__cause__ = exc
        return error

    def _journal_outage_write(self, keys: Sequence[str]) -> None:
        """Memory takes a write or removal: Redis must drop its value on recovery."""
        self.breaker.keep_probing()  # the loop that probed may have ended
        if not self.journal.record_keys(keys):
            raise self._journal_full(keys)

    def _journal_full(self, keys: Sequence[str]) -> CacheWriteError:
        message = (
            f"Redis is unreachable and the outage journal is full (journal_size={self.journal.capacity}): "
            "the change could not be recorded for replay, nothing was written"
        )
        return CacheWriteError(message, tuple(keys))

    async def _landed(self, keys: Sequence[str], since: int, *, wrote: bool = True) -> None:
        """A write or removal Redis confirmed: it supersedes journaled state of these keys.

        Only a write clears ``write_failure``: under ``OOM`` removals still succeed.
        """
        self.breaker.failures = 0
        if wrote:
            self.write_failure = None
        if len(self.memory):
            await self.memory.delete_many(keys)
        if self.journal.pending:
            self.journal.settle(keys, since)
            if not self.breaker.is_open:
                await self.apply_journal()

    async def apply_journal(self) -> bool:
        """Remove from Redis what the journal holds; True once nothing is left.

        Runs on recovery and, while the breaker is closed, after a write Redis accepted
        (and on ``health_check``): a refused or unconfirmed write is undone then.
        """
        if not self.journal.pending:
            return True
        if self._replaying:
            return False
        self._replaying = True
        try:
            await self.journal.replay(self.primary.delete_many, self.primary.clear)
        except _REDIS_ERRORS as exc:
            logger.debug("journal replay failed: %s", _describe(exc))
            return False
        finally:
            self._replaying = False
        return True

    # -- lifecycle ------------------------------------------------------------------

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
        except _REDIS_ERRORS as exc:
            self._on_outage(exc)
            self.breaker.trip(exc)
            return exc
        return None

    async def _answers(self) -> bool:
        """Breaker probe: a PING on a fresh connection."""
        try:
            await self.primary.reconnect()
            await asyncio.wait_for(self.primary.ping(), self.probe_timeout)
        except _REDIS_ERRORS as exc:
            logger.debug("Redis probe failed: %s", _describe(exc))
            return False
        return True

    async def _recover(self) -> bool:
        """Breaker recovery: apply the journal, then forget the outage's memory entries.

        Returns True once Redis holds nothing stale. Memory is emptied with no await
        before the breaker closes, so no read sees an outage copy afterwards.
        """
        if not await self.apply_journal():  # also False while a write applies it: probe again
            return False
        await self.memory.clear("*")
        return True

    async def close(self) -> None:
        await self.breaker.stop()
        if self.journal.pending:
            await self._last_replay()
        await self.primary.close()
        await self.memory.close()

    async def _last_replay(self) -> None:
        """Closing while Redis still owes removals: apply them if it answers now, else say
        so (other processes may then read those entries' previous values)."""
        try:
            applied = await asyncio.wait_for(self._answers_then_replay(), 2 * self.probe_timeout)
        except TimeoutError:
            applied = False
        if not applied:
            logger.warning(
                "closing with %d removals not applied to Redis (unreachable): other processes may "
                "read the previous values of those entries until they expire",
                len(self.journal),
            )

    async def _answers_then_replay(self) -> bool:
        return await self._answers() and await self.apply_journal()


def _describe(exc: BaseException) -> str:
    """``Type: Redis's message`` (redis-py's ``repr`` drops the message)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
