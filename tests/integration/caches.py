"""CacheManager factories and a condition wait shared by the cache tests.

The managers notice an outage fast: a short ``socket_timeout`` (it bounds connecting too)
and a short ``probe_interval``, so a test waits for fractions of a second, not the defaults.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import telemetry_infra as ti

#: How soon another client's write must reach a near tier, at p99. Invalidations are pushed:
#: about half a millisecond on loopback (``benchmarks/cache_overhead.py --parts 17`` measures
#: it). The bound only tells a push from an entry living on until its TTL or a refresh, on a
#: shared machine whose timers can lag by tens of milliseconds (a run at 20.0 ms was seen).
NEAR_PROPAGATION_P99_S = 0.1


def cache_manager(
    url: str, *, socket_timeout: float = 0.5, probe_interval: float = 0.2, **options: Any
) -> ti.CacheManager:
    """A manager on ``url`` giving up on a silent Redis after ``socket_timeout``."""
    options.setdefault("socket_connect_timeout", socket_timeout)
    options.update(socket_timeout=socket_timeout, probe_interval=probe_interval)
    return ti.CacheManager(redis_url=url, **options)


def near_manager(url: str, namespace: str, *, near: bool = True, **options: Any) -> ti.CacheManager:
    """A manager reading through its near tier (``near=False``: another process writing)."""
    options.setdefault("probe_interval", 0.1)
    options.setdefault("name", namespace if near else f"{namespace}-b")
    return cache_manager(url, namespace=namespace, near_cache=near, **options)


async def wait_until(condition: Callable[[], bool | Awaitable[bool]], timeout: float) -> float:
    """Seconds it took for ``condition()`` (plain or async) to hold; fails after ``timeout``."""
    started = time.monotonic()
    while not await _holds(condition):
        assert time.monotonic() - started < timeout, "condition not met in time"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def _holds(condition: Callable[[], bool | Awaitable[bool]]) -> bool:
    result = condition()
    return bool(await result) if inspect.isawaitable(result) else bool(result)
