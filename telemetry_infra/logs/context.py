"""Request context (request id, user id) carried on :mod:`contextvars`.

One ``ContextVar`` holds an immutable :class:`RequestContext`, so reading it on the
logging hot path is a single lookup. Asyncio tasks copy the context when they are
created and every thread starts with an empty one, so values never leak between
concurrent requests.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass, replace
from types import TracebackType

from opentelemetry import trace

__all__ = [
    "REQUEST_ID_ATTRIBUTE",
    "USER_ID_ATTRIBUTE",
    "RequestContext",
    "clear_request_context",
    "get_request_context",
    "request_context",
    "set_request_context",
]

REQUEST_ID_ATTRIBUTE = "request.id"
"""Span attribute holding the request id (no semantic convention defines one)."""
USER_ID_ATTRIBUTE = "enduser.id"
"""Span attribute holding the user id (OpenTelemetry semantic conventions)."""


@dataclass(frozen=True)
class RequestContext:
    """The ids attached to every log record made while they are set."""

    request_id: str | None = None
    user_id: str | None = None


_EMPTY = RequestContext()
_current: ContextVar[RequestContext] = ContextVar("telemetry_infra_request_context", default=_EMPTY)


def get_request_context() -> RequestContext:
    """Return the request context of the current task or thread."""
    return _current.get()


def _tag_active_span(context: RequestContext) -> None:
    span = trace.get_current_span()
    if not span.is_recording():
        return
    if context.request_id is not None:
        span.set_attribute(REQUEST_ID_ATTRIBUTE, context.request_id)
    if context.user_id is not None:
        span.set_attribute(USER_ID_ATTRIBUTE, context.user_id)


def _updated(request_id: str | None, user_id: str | None) -> RequestContext:
    changes = {}
    if request_id is not None:
        changes["request_id"] = str(request_id)
    if user_id is not None:
        changes["user_id"] = str(user_id)
    return replace(_current.get(), **changes)


def set_request_context(request_id: str | None = None, user_id: str | None = None) -> None:
    """Attach ``request_id`` and/or ``user_id`` to every record logged from here on.

    Only the ids given change; the others keep their value. The ids are also set on
    the active span as ``request.id`` and ``enduser.id``.
    """
    context = _updated(request_id, user_id)
    _current.set(context)
    _tag_active_span(context)


def clear_request_context() -> None:
    """Forget the request and user ids of the current task or thread."""
    _current.set(_EMPTY)


class request_context:
    """Set the request context for a block, then restore the previous one.

    Works as ``with request_context(request_id=...):`` and ``async with``.
    """

    def __init__(self, request_id: str | None = None, user_id: str | None = None) -> None:
        self._request_id = request_id
        self._user_id = user_id
        self._tokens: list[Token[RequestContext]] = []

    def __enter__(self) -> RequestContext:
        context = _updated(self._request_id, self._user_id)
        self._tokens.append(_current.set(context))
        _tag_active_span(context)
        return context

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _current.reset(self._tokens.pop())

    async def __aenter__(self) -> RequestContext:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)
