"""Forking while other threads use the cache (Celery prefork, gunicorn ``--preload`` with
threads started at import): every forked child can use ``cache.sync`` and ``@cached``
at once, whichever lock another thread held at the fork."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable

import pytest

import telemetry_infra as ti

FORKS = 25
CHILD_BOUND_S = 5.0
HAMMERING_THREADS = 4


def namespace() -> str:
    return f"sync-fork-{uuid.uuid4().hex[:8]}"


def _wait_child(pid: int, bound: float) -> int | None:
    """The child's exit code, or None (killed) when it did not exit within ``bound`` seconds."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


def _fork_while_hammered(hammer: Callable[[int], None], in_child: Callable[[], bool]) -> list[str]:
    """Fork ``FORKS`` times while threads run ``hammer(thread)`` in a loop; what went wrong."""
    stop = threading.Event()

    def hammering(thread: int) -> None:
        while not stop.is_set():
            hammer(thread)

    threads = [threading.Thread(target=hammering, args=(n,), daemon=True) for n in range(HAMMERING_THREADS)]
    for thread in threads:
        thread.start()
    problems: list[str] = []
    try:
        for attempt in range(FORKS):
            time.sleep(0.002)
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child reports through its exit status
                try:
                    os._exit(0 if in_child() else 3)
                except BaseException:
                    os._exit(4)
            code = _wait_child(pid, CHILD_BOUND_S)
            if code != 0:
                problems.append(f"fork {attempt}: " + ("hung" if code is None else f"exit code {code}"))
                break
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    return problems


@pytest.mark.parametrize("near_cache", [False, True])
def test_children_forked_while_threads_use_the_sync_view_never_hang(redis_server, near_cache):
    cache = ti.CacheManager(
        redis_url=redis_server.url, namespace=namespace(), near_cache=near_cache, socket_timeout=2.0
    )

    def hammer(thread: int) -> None:
        cache.sync.set(f"t{thread}", thread)
        cache.sync.get(f"t{thread}")
        cache.sync.get("shared")

    def in_child() -> bool:
        return cache.sync.set("child", os.getpid()) and cache.sync.get("child") == os.getpid()

    try:
        cache.sync.set("shared", "v")
        assert _fork_while_hammered(hammer, in_child) == []
        assert cache.sync.get("shared") == "v"  # the parent keeps working
    finally:
        cache.sync.close()


def test_children_forked_while_threads_use_a_memory_cache_never_hang():
    cache = ti.CacheManager(namespace=namespace(), memory_cache_size=50)

    def hammer(thread: int) -> None:
        for n in range(20):
            cache.sync.set(f"t{thread}:{n}", n)  # evicts: the memory lock is held a while
        cache.sync.get(f"t{thread}:0")

    def in_child() -> bool:
        return cache.sync.set("child", 1) and cache.sync.get("child") == 1

    assert _fork_while_hammered(hammer, in_child) == []


def test_children_forked_while_threads_compute_a_cached_def_never_hang():
    cache = ti.CacheManager(namespace=namespace())

    @ti.cached(ttl=60)
    def slow(n: int) -> int:
        time.sleep(0.002)  # the flight of this key is open most of the time
        return n

    def hammer(_thread: int) -> None:
        slow(1, _cache_manager=cache, _cache_refresh=True)

    def in_child() -> bool:  # the flight another thread led in the parent has no thread here
        return slow(1, _cache_manager=cache, _cache_refresh=True) == 1

    assert _fork_while_hammered(hammer, in_child) == []
