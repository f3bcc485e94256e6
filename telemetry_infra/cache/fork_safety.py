"""Locks that ``os.fork()`` must not copy while another thread holds them.

A forked child has one thread, the one that forked. A lock another thread held at that
moment stays held in the child for good, and the child's first call needing it hangs
(Celery prefork and gunicorn ``--preload`` fork while request or task threads may be
using the cache). So the forking thread takes every registered lock just before the fork
(the data they guard is then between two operations, never half changed) and releases
them right after it, in the parent and in the child alike; then the child's own
clean-up (``after_fork_in_child`` callbacks) runs, with the locks free.

The locks guarded here are never held while taking another one, nor across a call that
may fork, so taking them all in turn cannot deadlock.

``os.register_at_fork`` runs "after" hooks in registration order: this module registers
its hook when first imported, before any module that imports it registers its own, so
those hooks find the locks released.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["after_fork_in_child", "hold_across_fork"]

_registry_lock = threading.Lock()
_locks: weakref.WeakSet[Any] = weakref.WeakSet()
_child_callbacks: list[weakref.WeakMethod[Callable[[], None]]] = []
#: the locks this process took before its fork, released after it (in parent and child)
_taken: list[Any] = []


def hold_across_fork(lock: Any) -> Any:
    """Have the forking thread hold ``lock`` across every ``os.fork()``; returns ``lock``.

    Kept while ``lock`` lives (weakly referenced)."""
    with _registry_lock:
        _locks.add(lock)
    return lock


def after_fork_in_child(callback: Callable[[], None]) -> None:
    """Call the bound method ``callback`` in a forked child, once every guarded lock is free
    (for as long as its object lives)."""
    with _registry_lock:
        _child_callbacks.append(weakref.WeakMethod(callback))


def _take_all() -> None:
    _registry_lock.acquire()
    for lock in list(_locks):
        lock.acquire()
        _taken.append(lock)


def _release_all() -> None:
    while _taken:
        _taken.pop().release()
    _registry_lock.release()


def _release_all_in_child() -> None:
    _release_all()
    with _registry_lock:
        live = [(ref, ref()) for ref in _child_callbacks]
        _child_callbacks[:] = [ref for ref, callback in live if callback is not None]
    for _ref, callback in live:
        if callback is not None:
            callback()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_take_all, after_in_parent=_release_all, after_in_child=_release_all_in_child)
