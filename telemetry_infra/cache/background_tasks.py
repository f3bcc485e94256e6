"""Background tasks of the cache (the breaker's probe, the near cache's invalidation
listener): each runs on one event loop, and is stopped from whichever loop closes the manager."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["cancel_anywhere"]


async def cancel_anywhere(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` from any loop: awaited when it runs on this one; otherwise cancelled
    on its own loop's thread (a task may only be touched from there)."""
    if task is None or task.done():
        return
    loop = task.get_loop()
    if loop is asyncio.get_running_loop():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return
    # Another thread's loop, or one that no longer runs; unreferenced, the task would stop
    # at its next turn anyway.
    with contextlib.suppress(RuntimeError):  # that loop closed meanwhile
        if loop.is_running():
            loop.call_soon_threadsafe(task.cancel)
        elif not loop.is_closed():
            task.cancel()
