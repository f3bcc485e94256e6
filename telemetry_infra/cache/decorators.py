"""``@cached``: memoise coroutine results in a ``CacheManager``, one call per key at a time."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from telemetry_infra.cache.keys import call_key
from telemetry_infra.cache.manager import TTL, CacheManager

__all__ = ["cached", "get_default_cache_manager", "set_default_cache_manager"]

R = TypeVar("R")
AsyncFunction = Callable[..., Coroutine[Any, Any, R]]

_MISS = object()
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
) -> Callable[[AsyncFunction[R]], AsyncFunction[R]]:
    """Cache the results of an ``async def`` function.

    The key is ``[key_prefix:]module.qualname:<digest of the bound arguments>``, or
    ``[key_prefix:]`` + ``key_builder(*args, **kwargs)`` when a builder is given.
    Results (``None`` included) are cached for ``ttl``; exceptions are not.
    Concurrent calls with the same key run the function once and share its result.
    Per call: ``_cache_manager=`` picks the manager (else the process default) and
    ``_cache_refresh=True`` skips the lookup and overwrites the entry.
    """

    def decorate(func: AsyncFunction[R]) -> AsyncFunction[R]:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(
                f"@cached works on coroutine functions (async def); {func.__qualname__} is "
                f"{type(func).__name__}. Cache its result yourself with CacheManager.get/set."
            )
        signature = inspect.signature(func)
        flights: dict[tuple[int, str], asyncio.Future[Any]] = {}

        def key_for(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
            if key_builder is None:
                return call_key(key_prefix, func, signature, args, kwargs)
            built = key_builder(*args, **kwargs)
            return f"{key_prefix}:{built}" if key_prefix else built

        async def compute_and_store(manager: CacheManager, key: str, args: Any, kwargs: Any) -> R:
            result = await func(*args, **kwargs)
            await manager.set(key, result, ttl=ttl)
            return result

        @functools.wraps(func)
        async def wrapper(
            *args: Any,
            _cache_manager: CacheManager | None = None,
            _cache_refresh: bool = False,
            **kwargs: Any,
        ) -> R:
            manager = _manager_for(_cache_manager, func)
            key = key_for(args, kwargs)
            if not _cache_refresh:
                value = await manager.get(key, _MISS)
                if value is not _MISS:
                    return value
            flight = (id(manager), key)
            shared = flights.get(flight)
            if shared is None:
                shared = asyncio.ensure_future(compute_and_store(manager, key, args, kwargs))
                flights[flight] = shared
                shared.add_done_callback(lambda _done: flights.pop(flight, None))
            # shield: a caller that is cancelled does not cancel the others' result
            return await asyncio.shield(shared)

        # lets callers invalidate: await cache.delete(func.cache_key(*args, **kwargs))
        wrapper.cache_key = lambda *args, **kwargs: key_for(args, kwargs)  # type: ignore[attr-defined]
        return wrapper

    return decorate
