"""Uncaught exceptions logged at CRITICAL with their traceback.

Installs ``sys.excepthook``, ``threading.excepthook`` and, when a loop is running
(or one is given), the asyncio loop's exception handler. Hooks someone installed
before are still called afterwards. The interpreter's own hooks print the traceback
to stderr, as Python always does (scripts, supervisors and CI read it there), whatever
the log handlers: they are skipped only when a handler that takes the record already
wrote it to this process's stderr, so it never appears there twice.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from types import TracebackType
from typing import Any

__all__ = ["install_exception_hooks", "uninstall_exception_hooks"]

_log = logging.getLogger("telemetry_infra.uncaught")
_previous: dict[str, Any] = {}


def _worth_chaining(previous: Any, interpreter_default: Any) -> bool:
    return previous is not interpreter_default or not _written_to_stderr()


def _written_to_stderr() -> bool:
    """Whether logging the uncaught exception already wrote it to stderr (a console handler there)."""
    stderr = (sys.stderr, sys.__stderr__)
    handlers: list[logging.Handler] = []
    logger: logging.Logger | None = _log
    while logger is not None:
        handlers += logger.handlers
        logger = logger.parent if logger.propagate else None
    if not handlers:  # logging's last resort prints to stderr
        return logging.lastResort is not None
    return any(
        isinstance(handler, logging.StreamHandler)
        and handler.stream in stderr
        and handler.level <= logging.CRITICAL
        for handler in handlers
    )


def _log_uncaught(message: str, exc: BaseException | None, *args: Any) -> None:
    try:
        exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
        _log.critical(message, *args, exc_info=exc_info)
    except Exception:  # a hook must never fail while reporting a failure
        pass


def _sys_hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    previous = _previous.get("sys", sys.__excepthook__)
    if not issubclass(exc_type, KeyboardInterrupt):
        _log_uncaught("Uncaught exception: %s", exc.with_traceback(tb) if exc is not None else None, exc_type)
        if not _worth_chaining(previous, sys.__excepthook__):
            return
    previous(exc_type, exc, tb)


def _thread_hook(args: threading.ExceptHookArgs) -> None:
    previous = _previous.get("threading", threading.__excepthook__)
    if args.exc_type is not SystemExit:
        thread_name = args.thread.name if args.thread is not None else "unknown"
        _log_uncaught("Uncaught exception in thread %s", args.exc_value, thread_name)
        if not _worth_chaining(previous, threading.__excepthook__):
            return
    previous(args)


def _asyncio_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    _log_uncaught("Unhandled exception in event loop: %s", context.get("exception"), context.get("message"))
    previous = _previous.get("asyncio")
    if previous is not None:
        previous(loop, context)


def _install_on_loop(loop: asyncio.AbstractEventLoop | None) -> None:
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
    current = loop.get_exception_handler()
    if current is _asyncio_handler:
        return
    _previous["asyncio"] = current
    _previous["asyncio_loop"] = loop
    loop.set_exception_handler(_asyncio_handler)


def install_exception_hooks(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Log uncaught exceptions at CRITICAL (``telemetry_infra.uncaught`` logger).

    Covers the main thread, other threads, and ``loop`` or the running event loop.
    Idempotent; previously installed hooks keep being called.
    """
    if sys.excepthook is not _sys_hook:
        _previous["sys"] = sys.excepthook
        sys.excepthook = _sys_hook
    if threading.excepthook is not _thread_hook:
        _previous["threading"] = threading.excepthook
        threading.excepthook = _thread_hook
    _install_on_loop(loop)


def uninstall_exception_hooks() -> None:
    """Put back the hooks that were there before :func:`install_exception_hooks`."""
    if sys.excepthook is _sys_hook:
        sys.excepthook = _previous.pop("sys", sys.__excepthook__)
    if threading.excepthook is _thread_hook:
        threading.excepthook = _previous.pop("threading", threading.__excepthook__)
    loop = _previous.pop("asyncio_loop", None)
    previous_handler = _previous.pop("asyncio", None)
    if loop is not None and not loop.is_closed() and loop.get_exception_handler() is _asyncio_handler:
        loop.set_exception_handler(previous_handler)
