"""``@cached``: memoise results of ``async def`` and plain ``def`` functions in a
``CacheManager``, one call per key at a time.

Single flight: concurrent cold calls of one key run the function once. For coroutine
functions a flight is an asyncio future of one event loop, so flights are kept per loop
(a manager serves any number of loops, in any threads). For plain functions a flight is
a ``threading.Event``: the calls of every thread of the process share it."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

from telemetry_infra.cache.errors import CacheSerializationError
from telemetry_infra.cache.fork_safety import after_fork_in_child, hold_across_fork
from telemetry_infra.cache.function_keys import FunctionKeys, function_digest
from telemetry_infra.cache.manager import TTL, CacheManager
from telemetry_infra.cache.sync import sync_view_of

__all__ = ["cached", "get_default_cache_manager", "set_default_cache_manager"]

R = TypeVar("R")
AsyncFunction = Callable[..., Coroutine[Any, Any, R]]
#: what a computed result is handed out as: its stored payload (None if unencodable) and itself
Stored = tuple[bytes | None, Any]

_MISS = object()
logger = logging.getLogger("telemetry_infra.cache")
_default_manager: CacheManager | None = None


def set_default_cache_manager(manager: CacheManager | None) -> None:
    """Make ``manager`` the one ``@cached`` functions use when no ``_cache_manager=`` is given."""
    global _default_manager
    _default_manager = manager


def get_default_cache_manager() -> CacheManager | None:
    """The process default set by ``set_default_cache_manager`` (None if unset)."""
    return _default_manager


def _manager_for(explicit: CacheManager | None, func: Callable[..., Any]) -> CacheManager:
    manager = explicit or _default_manager
    if manager is None:
        raise RuntimeError(
            f"{func.__qualname__} is @cached but has no cache: pass _cache_manager=... "
            "or call telemetry_infra.set_default_cache_manager(manager) at startup"
        )
    return manager


def cached(
    ttl: TTL = 300,
    key_prefix: str = "",
    key_builder: Callable[..., str] | None = None,
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Cache the results of an ``async def`` or a plain ``def`` function.

    Key: ``[key_prefix:]module.qualname:<digest>``; the digest covers the function (its
    code and closure variables, so closures from one factory never share entries) and
    the bound arguments in a canonical typed form that is the same in every process
    (``f(1)``, ``f(1.0)``, ``f((1,))`` and ``f([1])`` are separate entries; dict and set
    order do not matter). An argument with no stable identity (``object.__repr__``, or a
    repr showing ``at 0x...``) raises ``TypeError`` naming the parameter: give its type a
    ``__cache_key__(self)`` method returning what identifies it, or pass ``key_builder``.
    A closure variable without one raises ``TypeError`` at decoration unless ``key_prefix``
    is given (the prefix then stands for it). See ``function_keys`` for every rule.

    ``key_builder(*args, **kwargs)`` replaces everything after the prefix: you own the key.

    Every call returns what the cache hands back, the first one included: the result's
    round trip through the manager's serializer (with ``serialization="json"`` a datetime
    is its ISO string and a tuple a list on the first call too; ``"pickle"`` keeps types).
    A result the serializer cannot encode is returned uncached: counted in the manager's
    errors (``CacheSerializationError``) and logged once per function at WARNING.
    Results (``None`` included) are cached for ``ttl``; exceptions are not. Concurrent
    calls with the same key run the function once (per event loop for an ``async def``,
    per process for a plain ``def`` called from many threads) and each gets its own copy.
    A plain ``def`` goes through the manager's sync view (``cache.sync``): call it where
    no event loop runs. Per call: ``_cache_manager=`` picks the manager (else the process
    default) and ``_cache_refresh=True`` skips the lookup and overwrites the entry.
    """

    def decorate(func: Callable[..., R]) -> Callable[..., R]:
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func) or not callable(func):
            raise TypeError(
                f"@cached works on functions returning a value (def or async def); {func!r} is "
                f"{type(func).__name__}. Cache its result yourself with CacheManager.get/set."
            )
        calls = _CachedCalls(func, ttl, key_prefix, key_builder)
        wrapper: Any = (
            _async_wrapper(func, calls) if inspect.iscoroutinefunction(func) else _sync_wrapper(func, calls)
        )
        # lets callers invalidate: await cache.delete(func.cache_key(*args, **kwargs))
        wrapper.cache_key = lambda *args, **kwargs: calls.key(args, kwargs)
        return cast(Callable[..., R], wrapper)  # held as Any to carry cache_key; made from func

    return decorate


def _async_wrapper(func: AsyncFunction[R], calls: _CachedCalls) -> AsyncFunction[R]:
    @functools.wraps(func)
    async def wrapper(
        *args: Any,
        _cache_manager: CacheManager | None = None,
        _cache_refresh: bool = False,
        **kwargs: Any,
    ) -> R:
        result = await calls(_manager_for(_cache_manager, func), args, kwargs, _cache_refresh)
        return cast(R, result)  # func's result, or the copy of one the codec stored

    return wrapper


def _sync_wrapper(func: Callable[..., R], calls: _CachedCalls) -> Callable[..., R]:
    @functools.wraps(func)
    def wrapper(
        *args: Any,
        _cache_manager: CacheManager | None = None,
        _cache_refresh: bool = False,
        **kwargs: Any,
    ) -> R:
        result = calls.call_sync(_manager_for(_cache_manager, func), args, kwargs, _cache_refresh)
        return cast(R, result)  # func's result, or the copy of one the codec stored

    return wrapper


class _ThreadFlight:
    """The computation of one key by one thread, awaited by the others."""

    __slots__ = ("done", "error", "stored")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.stored: Stored = (None, None)
        self.error: BaseException | None = None


def _built_key(
    builder: Callable[..., str], prefix: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str:
    """The key ``key_builder`` makes, under ``key_prefix``."""
    built = builder(*args, **kwargs)
    return f"{prefix}:{built}" if prefix else built


class _CachedCalls:
    """The state of one ``@cached`` function: its keys, its flights in progress, its warnings."""

    __slots__ = (
        "__weakref__",
        "_flights",
        "_func",
        "_keys",
        "_prefix",
        "_thread_flights",
        "_threads_lock",
        "_ttl",
        "_warned",
    )

    def __init__(self, func: Any, ttl: TTL, key_prefix: str, key_builder: Callable[..., str] | None) -> None:
        self._func = func
        self._ttl = ttl
        self._prefix = key_prefix
        self._keys: Callable[[tuple[Any, ...], dict[str, Any]], str] = (
            FunctionKeys(func, key_prefix)
            if key_builder is None
            else functools.partial(_built_key, key_builder, key_prefix)
        )
        # (manager, key, loop): an asyncio future belongs to one loop
        self._flights: dict[tuple[int, str, asyncio.AbstractEventLoop], asyncio.Future[Stored]] = {}
        self._thread_flights: dict[tuple[int, str], _ThreadFlight] = {}
        self._threads_lock = hold_across_fork(threading.Lock())
        after_fork_in_child(self._forget_thread_flights)
        self._warned = False

    def _forget_thread_flights(self) -> None:
        """In a forked child: the threads leading the parent's flights do not exist here."""
        self._thread_flights.clear()

    def __cache_key__(self) -> str:
        """A ``@cached`` function captured by another is keyed by the function it caches."""
        return f"{self._prefix}:{function_digest(self._func, skip_unstable=bool(self._prefix))}"

    def key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        return self._keys(args, kwargs)

    async def __call__(
        self, manager: CacheManager, args: tuple[Any, ...], kwargs: dict[str, Any], refresh: bool
    ) -> Any:
        key = self.key(args, kwargs)
        if not refresh:
            value = await manager.get(key, _MISS)
            if value is not _MISS:
                return value
        flight = (id(manager), key, asyncio.get_running_loop())
        shared = self._flights.get(flight)
        if shared is None:
            shared = asyncio.ensure_future(self._compute_and_store(manager, key, args, kwargs))
            self._flights[flight] = shared
            shared.add_done_callback(lambda _done: self._flights.pop(flight, None))
        # shield: a caller that is cancelled does not cancel the others' result
        payload, result = await asyncio.shield(shared)
        return _handed_out(manager, payload, result)

    async def _compute_and_store(
        self, manager: CacheManager, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Stored:
        result = await self._func(*args, **kwargs)
        try:
            await manager.set(key, result, ttl=self._ttl)  # counts CacheSerializationError itself
        except CacheSerializationError as exc:
            self._unencodable(exc)
            return None, result
        return manager._codec.encode(key, result), result

    def call_sync(
        self, manager: CacheManager, args: tuple[Any, ...], kwargs: dict[str, Any], refresh: bool
    ) -> Any:
        """A plain function's call: cached, or computed once for every thread asking meanwhile."""
        key = self.key(args, kwargs)
        view = sync_view_of(manager)
        if not refresh:
            value = view.get(key, _MISS)
            if value is not _MISS:
                return value
        slot = (id(manager), key)
        with self._threads_lock:
            flight = self._thread_flights.get(slot)
            leads = flight is None
            if flight is None:
                flight = self._thread_flights[slot] = _ThreadFlight()
        if leads:
            try:
                flight.stored = self._compute_and_store_sync(manager, key, args, kwargs)
            except BaseException as exc:
                flight.error = exc
                raise
            finally:
                with self._threads_lock:
                    del self._thread_flights[slot]
                flight.done.set()
        else:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
        return _handed_out(manager, *flight.stored)

    def _compute_and_store_sync(
        self, manager: CacheManager, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Stored:
        result = self._func(*args, **kwargs)
        try:
            manager.sync.set(key, result, ttl=self._ttl)  # counts CacheSerializationError itself
        except CacheSerializationError as exc:
            self._unencodable(exc)
            return None, result
        return manager._codec.encode(key, result), result

    def _unencodable(self, exc: CacheSerializationError) -> None:
        level = logging.DEBUG if self._warned else logging.WARNING
        self._warned = True
        logger.log(
            level,
            "@cached %s: a result of type %s cannot be stored with serialization=%r, so it is returned "
            "uncached and the function runs on every call (counted in the cache's errors as "
            "CacheSerializationError): %s",
            self._func.__qualname__,
            exc.value_type,
            exc.serializer,
            exc,
        )


def _handed_out(manager: CacheManager, payload: bytes | None, result: Any) -> Any:
    """What a call returns: the stored form, decoded afresh for every caller (the result
    itself when it could not be stored)."""
    return result if payload is None else manager._codec.decode(payload)
