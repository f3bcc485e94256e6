"""ASGI middleware: a SERVER span per request, request context, one access record.

Built on ``opentelemetry-instrumentation-asgi`` (W3C ``traceparent`` in, SERVER span,
HTTP server metrics); this layer adds what the logs need: the ``request_id`` (from an
incoming ``X-Request-ID`` or the trace id, echoed in the response), the user id, and an
access record per request on the ``api.access`` logger. Works with any ASGI app
(Starlette, FastAPI, plain ASGI).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry import trace

from telemetry_infra.logs import request_context

__all__ = ["ACCESS_LOGGER", "TelemetryMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
UserIdGetter = Callable[[Scope], "str | None"]

ACCESS_LOGGER = "api.access"
_MAX_REQUEST_ID = 128


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _clean_request_id(value: str | None) -> str | None:
    """Accept a client's id only if it is short printable text (it ends up in every log line)."""
    if not value or len(value) > _MAX_REQUEST_ID or not value.isprintable():
        return None
    return value


def _route_template(scope: Scope) -> str | None:
    route = scope.get("route")
    return getattr(route, "path_format", None) or getattr(route, "path", None)


def _name_span_after_route(span: trace.Span, scope: Scope) -> None:
    """``GET /items/{item_id}`` rather than ``GET /items/7``: low-cardinality span names."""
    route = _route_template(scope)
    if route and span.is_recording():
        span.update_name(f"{scope.get('method', '')} {route}")
        span.set_attribute("http.route", route)


class _RequestContextMiddleware:
    """Runs inside the OTel middleware, so the SERVER span is current here."""

    def __init__(self, app: ASGIApp, user_id_getter: UserIdGetter | None, header: bytes) -> None:
        self.app = app
        self.user_id_getter = user_id_getter
        self.header = header
        self.access_log = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        span = trace.get_current_span()
        request_id = _clean_request_id(_header(scope, self.header.lower()))
        if request_id is None and span.get_span_context().is_valid:
            request_id = format(span.get_span_context().trace_id, "032x")
        user_id = self.user_id_getter(scope) if self.user_id_getter else None
        status = 500  # what the client gets if the app raises before answering
        started = time.perf_counter()

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                _name_span_after_route(span, scope)  # the OTel middleware ends the span with the response
                if request_id:
                    headers = list(message.get("headers") or [])
                    headers.append((self.header, request_id.encode("latin-1")))
                    message = {**message, "headers": headers}
            await send(message)

        with request_context(request_id=request_id, user_id=user_id):
            error: Exception | None = None
            try:
                await self.app(scope, receive, send_with_request_id)
            except Exception as exc:  # logged with the access record, then re-raised
                error = exc
                raise
            finally:
                self._finish(scope, span, status, time.perf_counter() - started, error)

    def _finish(
        self, scope: Scope, span: trace.Span, status: int, duration: float, error: Exception | None
    ) -> None:
        route = _route_template(scope)
        method = scope.get("method", "")
        _name_span_after_route(span, scope)
        self.access_log.log(
            logging.ERROR if error is not None or status >= 500 else logging.INFO,
            "%s %s %s",
            method,
            route or scope.get("path", ""),
            status,
            extra={
                "http_method": method,
                "http_route": route or scope.get("path", ""),
                "http_status": status,
                "duration": round(duration, 6),
            },
            exc_info=error,
        )


class TelemetryMiddleware:
    """Wrap an ASGI app: ``app = TelemetryMiddleware(app)``.

    ``user_id_getter(scope)`` returns the user id for the logs (or ``None``);
    ``excluded_urls`` (comma-separated regexes) get no span, e.g. ``"/metrics,/health"``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        user_id_getter: UserIdGetter | None = None,
        request_id_header: str = "X-Request-ID",
        excluded_urls: str | None = None,
    ) -> None:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        header = request_id_header.lower().encode("latin-1")
        inner = _RequestContextMiddleware(app, user_id_getter, header)
        self.app = OpenTelemetryMiddleware(
            inner, excluded_urls=excluded_urls, exclude_spans=["receive", "send"]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
