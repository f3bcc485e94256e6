"""``cache.sync``: the synchronous view of a ``CacheManager``, for Django, Flask, Celery, scripts.

One daemon thread per manager (and process) runs an event loop, started on the first
sync call that needs Redis; a call is handed to it and the caller waits for the result.
The manager already gives every event loop its own connection pool, so that loop is
simply one more loop: a bounded pool shared by every thread, no connection per call,
and the same keys, codec, breaker, journal, near cache and telemetry as the async API.
The caller's context (its OpenTelemetry span, its request context) travels with the call.

Two kinds of call never hop. Near-cache hits are answered in the caller's thread. On a
single Redis node without a near tier, the reads (``get``, ``mget``, ``exists``) run the
manager's own coroutines in the caller's thread, driven to their end with no loop
(``run_inline``): the one policy, over redis-py's sync client on a thread-safe pool
(``backends.redis_sync``) whose commands never suspend. That pool and the loop's share
one ``max_connections`` budget (``RedisBackend.share_with_threads``). A breaker such a
read opens probes from the view's loop (``CircuitBreaker.loop_for_threads``); while it
is open, reads take the hop.

From a thread where an event loop is running (a coroutine), every call raises
``RuntimeError`` at once: blocking that loop until another one answers stalls every
task on it, and deadlocks when the answer needs it. Use ``await cache.get(...)`` there.

Forks (Celery prefork, gunicorn ``--preload``): the child starts its own thread and
loop on its first call. It never closes the loop it inherited, nor its connections:
that loop's epoll instance is shared with the parent, and unregistering a socket
from it (which closing a loop or a connection does) would remove the parent's. The
inherited loop is kept referenced for the child's life and marked closed, which
tells the backends to forget its connections and the near cache to start a new
invalidation listener. At interpreter exit the thread is stopped within a bounded time.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
import weakref
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import timedelta
from typing import Any, ParamSpec, Protocol, TypeVar

from telemetry_infra.cache.fork_safety import hold_across_fork
from telemetry_infra.cache.near.tier import NEAR_MISS

__all__ = ["LoopThread", "SyncCache", "sync_view_of"]

P = ParamSpec("P")
T = TypeVar("T")

TTL = float | int | timedelta | None


class CacheManager(Protocol):
    """What the view needs of ``manager.CacheManager`` (which imports this module)."""

    name: str
    redis_url: str | None
    _failover: Any
    _near: Any

    def _get_near(self, key: str) -> Any: ...
    def _forget_invalidations_after_fork(self) -> None: ...
    async def get(self, key: str, default: Any = None) -> Any: ...
    async def set(self, key: str, value: Any, ttl: TTL = None) -> bool: ...
    async def delete(self, key: str) -> bool: ...
    async def exists(self, key: str) -> bool: ...
    async def clear(self, pattern: str | None = None) -> int: ...
    async def mget(self, keys: Sequence[str]) -> dict[str, Any]: ...
    async def mset(self, mapping: Mapping[str, Any], ttl: TTL = None) -> bool: ...
    async def health_check(self) -> dict[str, Any]: ...
    async def close(self) -> None: ...


#: How long interpreter exit (or ``close()``) waits for the loop thread to finish.
STOP_TIMEOUT_S = 2.0

_running_loop = asyncio._get_running_loop
_views: weakref.WeakSet[SyncCache] = weakref.WeakSet()
_views_lock = hold_across_fork(threading.Lock())
#: loops (and their threads) inherited from the parent process: referenced for good, never closed
_inherited: list[LoopThread] = []


class _HandOff:
    """One coroutine run on the loop thread for a caller blocked on ``done``."""

    __slots__ = ("coroutine", "done", "task")

    def __init__(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        self.coroutine = coroutine
        self.done = threading.Lock()
        self.done.acquire()
        self.task: asyncio.Task[Any] | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.task = task = loop.create_task(self.coroutine)
        task.add_done_callback(self.finished)

    def finished(self, _task: asyncio.Task[Any]) -> None:
        self.done.release()

    def wait(self) -> Any:
        self.done.acquire()
        task = self.task
        if task is None:  # done is released by the task's callback: start() ran
            raise RuntimeError("a hand-off waited on before it was started")
        return task.result()


def run_inline(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never waits on a future to its end in this thread (a memory-only
    manager's operations; the reads on ``ThreadReads``): no loop, no hop. A bare ``yield``
    (``asyncio.sleep(0)``) just resumes it."""
    try:
        while coroutine.send(None) is None:
            pass
    except StopIteration as finished:
        return finished.value  # type: ignore[no-any-return]  # typeshed types StopIteration.value as Any
    coroutine.close()
    raise RuntimeError("a cache operation run in the caller's thread waited on a future")


class LoopThread:
    """An event loop running on a daemon thread; other threads run coroutines on it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop, in the caller's context; wait for its result.

        The hand-off is a task made by ``call_soon_threadsafe`` (whose handle carries a copy
        of the caller's context) and a lock the task's end releases: lighter than
        ``run_coroutine_threadsafe``'s chained ``concurrent.futures.Future``."""
        hand_off = _HandOff(coroutine)
        self.loop.call_soon_threadsafe(hand_off.start, self.loop)
        result: T = hand_off.wait()
        return result

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Cancel the loop's tasks, close what its async generators hold (its Redis clients),
        stop it and join the thread, all within about ``timeout`` seconds."""
        loop = self.loop
        if not self.thread.is_alive() or loop.is_closed():
            return
        if threading.current_thread() is self.thread:
            raise RuntimeError("the sync view's loop cannot stop itself")
        winding_down = asyncio.run_coroutine_threadsafe(_wind_down(timeout / 2), loop)
        try:
            winding_down.result(timeout / 2 + 0.1)
        except Exception:  # best effort: the loop is stopped either way
            winding_down.cancel()
        loop.call_soon_threadsafe(loop.stop)
        self.thread.join(timeout / 2)
        if not self.thread.is_alive():  # a daemon thread still running ends with the process
            loop.close()

    def abandon_after_fork(self) -> None:
        """In a forked child: keep the loop referenced for good and mark it closed, never closing it.

        Closing it (or any of its connections) unregisters file descriptors from the epoll
        instance the child shares with the parent, which would silently deafen the parent's
        loop. Marked closed and not running, it tells the backends to forget its connections
        and the near cache's channel to start a listener on a live loop.
        """
        _inherited.append(self)
        loop: Any = self.loop
        loop._closed = True
        loop._thread_id = None


async def _wind_down(timeout: float) -> None:
    """On the loop being stopped: cancel its other tasks (the near cache's listener, the
    breaker's probe) and close its async generators (the Redis clients), within about
    ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    others = [task for task in asyncio.all_tasks(loop) if task is not asyncio.current_task()]
    for task in others:
        task.cancel()
    if others:
        await asyncio.wait(others, timeout=timeout)
    await asyncio.wait_for(loop.shutdown_asyncgens(), timeout)


class SyncCache:
    """The blocking twin of a ``CacheManager``'s operations (``cache.sync``).

    Safe from any number of threads; works without ``initialize()`` (the first call
    connects). Values set through one API are read through the other, across processes.
    Raises ``RuntimeError`` when called where an event loop runs: await the async API there.
    """

    def __init__(self, manager: CacheManager) -> None:
        self._manager = manager
        self._lock = hold_across_fork(threading.Lock())
        self._runner: LoopThread | None = None
        #: memory only: every call runs to its end in the caller's thread (no near tier either)
        self._inline = manager.redis_url is None
        #: reads run in the caller's thread on redis-py's sync client (see ``_share_connections``)
        self._reads_here = False

    # -- operations -------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """The cached value, or ``default`` (a near-cache hit is served in this thread)."""
        if _running_loop() is not None:
            raise self._in_coroutine("get")
        manager = self._manager
        if self._inline:
            return run_inline(manager.get(key, default))
        value = manager._get_near(key)
        if value is not NEAR_MISS:
            return value
        return self._read(manager.get(key, default))

    def set(self, key: str, value: Any, ttl: TTL = None) -> bool:
        """Store ``value`` (see ``CacheManager.set``); False when no store took it."""
        return self._call(self._manager.set, key, value, ttl)

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it existed."""
        return self._call(self._manager.delete, key)

    def exists(self, key: str) -> bool:
        """True if ``key`` holds a value."""
        return self._call_read(self._manager.exists, key)

    def clear(self, pattern: str | None = None) -> int:
        """Remove the keys matching ``pattern`` (all of this namespace by default); how many."""
        return self._call(self._manager.clear, pattern)

    def mget(self, keys: Sequence[str]) -> dict[str, Any]:
        """``{key: value}`` for the keys that hold one."""
        return self._call_read(self._manager.mget, keys)

    def mset(self, mapping: Mapping[str, Any], ttl: TTL = None) -> bool:
        """Store every item; True only when the serving store holds the whole batch."""
        return self._call(self._manager.mset, mapping, ttl)

    def health_check(self) -> dict[str, Any]:
        """What ``CacheManager.health_check`` reports."""
        return self._call(self._manager.health_check)

    def close(self) -> None:
        """Close the manager (for the async API too) and stop this view's thread."""
        if _running_loop() is not None:
            raise self._in_coroutine("close")
        with self._lock:
            runner, self._runner = self._runner, None
        if runner is None:
            if self._inline:
                run_inline(self._manager.close())
            else:
                asyncio.run(self._manager.close())
            return
        runner.call(self._manager.close())
        runner.stop()

    # -- the hop to the loop thread ----------------------------------------------------

    def _call(self, operation: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs) -> T:
        if _running_loop() is not None:
            raise self._in_coroutine(operation.__name__)
        return self._run(operation(*args, **kwargs))

    def _call_read(
        self, operation: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        if _running_loop() is not None:
            raise self._in_coroutine(operation.__name__)
        coroutine = operation(*args, **kwargs)
        return run_inline(coroutine) if self._inline else self._read(coroutine)

    def _read(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """A read on a manager with Redis: in this thread when it can (``_share_connections``)."""
        runner = self._runner or self._start()
        if self._reads_here and not self._manager._failover.breaker.is_open:
            return run_inline(coroutine)
        return runner.call(coroutine)

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Where no loop runs: inline for a memory-only manager, else on the loop thread."""
        if self._inline:  # memory only: nothing to wait for
            return run_inline(coroutine)
        runner = self._runner or self._start()
        return runner.call(coroutine)

    def _start(self) -> LoopThread:
        with self._lock:  # taken alone (see fork_safety): the backend's lock is taken after it
            runner = self._runner
            if runner is not None:
                return runner
            runner = self._runner = LoopThread(f"telemetry_infra-cache-sync:{self._manager.name}")
        self._reads_here = self._share_connections(runner.loop)
        return runner

    def _share_connections(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Let ``get`` run in its caller's thread on redis-py's sync client, the whole policy of
        ``CacheManager.get`` included (``backends.redis_sync``), when nothing in it needs a loop:
        one Redis node (a Sentinel or Cluster topology keeps the hop) and no near tier (its misses
        fill entries under an invalidation listener that lives on a loop). A breaker that opens in
        such a read starts its probe on ``loop``; while it is open reads take the hop."""
        failover = self._manager._failover
        if self._manager._near is not None or not failover.primary.share_with_threads(loop):
            return False
        failover.breaker.loop_for_threads = self._probe_loop
        return True

    def _probe_loop(self) -> asyncio.AbstractEventLoop:
        return (self._runner or self._start()).loop

    @staticmethod
    def _in_coroutine(operation: str) -> RuntimeError:
        return RuntimeError(
            f"cache.sync.{operation}() called where an event loop is running: it would block that "
            f"loop (and deadlock if the call needs it). In a coroutine use `await cache.{operation}(...)`."
        )

    # -- process life ------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.abandon_after_fork()
        self._manager._forget_invalidations_after_fork()

    def _stop_at_exit(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.stop()


def sync_view_of(manager: CacheManager) -> SyncCache:
    """The one ``SyncCache`` of ``manager``, made on first use."""
    view: SyncCache | None = manager.__dict__.get("_sync_view")
    if view is not None:
        return view
    with _views_lock:
        view = manager.__dict__.get("_sync_view")
        if view is None:
            view = manager.__dict__["_sync_view"] = SyncCache(manager)
            _views.add(view)
    return view


def _after_fork_in_child() -> None:
    for view in list(_views):
        view._after_fork_in_child()


def _stop_all_at_exit() -> None:
    for view in list(_views):
        view._stop_at_exit()


if hasattr(os, "register_at_fork"):  # after fork_safety's hook (imported above): the locks are free
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_stop_all_at_exit)
