"""``@log_execution_time`` and ``@log_exceptions``, bare or with arguments.

Both work on functions, coroutine functions, generators and async generators and
keep the wrapped function's metadata (``functools.wraps``).
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any, Protocol, TypeVar, overload

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from telemetry_infra.logs.loggers import get_logger

__all__ = ["log_exceptions", "log_execution_time"]

F = TypeVar("F", bound=Callable[..., Any])
# Records point at the code that called the decorated function, not at the wrapper.
_CALLER = 2


class _CallHooks(Protocol):
    """What a decorator does around one call of the wrapped function."""

    def failed(self, exc: Exception) -> bool:
        """Handle ``exc`` escaping the call; True re-raises it."""
        ...

    def finished(self) -> None:
        """The call is over (returned, raised, or its generator stopped)."""
        ...


def _wrap(func: Callable[..., Any], around: Callable[[], _CallHooks]) -> Callable[..., Any]:
    """Build a wrapper of ``func``'s kind calling ``around()`` -> (on_start, on_error, on_end)."""
    if inspect.isasyncgenfunction(func):

        async def async_gen_wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            hooks = around()
            try:
                async for item in func(*args, **kwargs):
                    yield item
            except Exception as exc:
                if hooks.failed(exc):
                    raise
            finally:
                hooks.finished()

        return functools.wraps(func)(async_gen_wrapper)
    if inspect.isgeneratorfunction(func):

        def gen_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            hooks = around()
            try:
                return (yield from func(*args, **kwargs))
            except Exception as exc:
                if hooks.failed(exc):
                    raise
            finally:
                hooks.finished()

        return functools.wraps(func)(gen_wrapper)
    if inspect.iscoroutinefunction(func):

        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            hooks = around()
            try:
                return await func(*args, **kwargs)
            except Exception as exc:
                if hooks.failed(exc):
                    raise
                return None
            finally:
                hooks.finished()

        return functools.wraps(func)(async_wrapper)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        hooks = around()
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            if hooks.failed(exc):
                raise
            return None
        finally:
            hooks.finished()

    return functools.wraps(func)(wrapper)


class _Timing:
    """Logs ``<function> finished in <s>s`` with ``function``, ``duration`` and ``outcome``."""

    def __init__(self, logger: logging.Logger, function: str, level: int) -> None:
        self._logger = logger
        self._function = function
        self._level = level
        self._outcome = "success"
        self._started = time.perf_counter()

    def failed(self, exc: Exception) -> bool:
        self._outcome = "error"
        return True

    def finished(self) -> None:
        duration = time.perf_counter() - self._started
        self._logger.log(
            self._level,
            "%s finished in %.4fs",
            self._function,
            duration,
            extra={"function": self._function, "duration": duration, "outcome": self._outcome},
            stacklevel=_CALLER + 1,
        )


class _ExceptionLogging:
    """Logs the exception with its traceback and marks the active span as failed."""

    def __init__(self, logger: logging.Logger, function: str, reraise: bool) -> None:
        self._logger = logger
        self._function = function
        self._reraise = reraise

    def failed(self, exc: Exception) -> bool:
        self._logger.error(
            "Exception in %s: %s: %s",
            self._function,
            type(exc).__name__,
            exc,
            exc_info=exc,
            extra={"function": self._function},
            stacklevel=_CALLER + 1,
        )
        span = trace.get_current_span()
        if span.is_recording():
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        return self._reraise

    def finished(self) -> None:
        pass


def _decorator(
    func: Callable[..., Any] | None,
    make_hooks: Callable[[Callable[..., Any], logging.Logger], _CallHooks],
    logger: logging.Logger | None,
) -> Any:
    def decorate(target: Callable[..., Any]) -> Callable[..., Any]:
        target_logger = logger if logger is not None else get_logger(target.__module__)
        return _wrap(target, lambda: make_hooks(target, target_logger))

    return decorate(func) if func is not None else decorate


@overload
def log_execution_time(func: F, /) -> F: ...
@overload
def log_execution_time(
    *, logger: logging.Logger | None = None, level: int = logging.INFO
) -> Callable[[F], F]: ...
def log_execution_time(
    func: Callable[..., Any] | None = None, *, logger: logging.Logger | None = None, level: int = logging.INFO
) -> Any:
    """Log how long each call took: fields ``function`` (qualified name), ``duration`` (s).

    Use bare (``@log_execution_time``) or with ``logger=`` / ``level=``. For
    generators the time runs until the generator is exhausted or closed. The record
    is written whether the call succeeds or raises (``outcome`` says which).
    """
    return _decorator(func, lambda target, log: _Timing(log, target.__qualname__, level), logger)


@overload
def log_exceptions(func: F, /) -> F: ...
@overload
def log_exceptions(*, logger: logging.Logger | None = None, reraise: bool = True) -> Callable[[F], F]: ...
def log_exceptions(
    func: Callable[..., Any] | None = None, *, logger: logging.Logger | None = None, reraise: bool = True
) -> Any:
    """Log an exception escaping the function at ERROR, with its traceback.

    Inside a span the exception is also recorded on the span and its status set to
    ERROR. With ``reraise=False`` the exception is swallowed and the call returns
    ``None`` (a generator simply stops).
    """
    return _decorator(func, lambda target, log: _ExceptionLogging(log, target.__qualname__, reraise), logger)
