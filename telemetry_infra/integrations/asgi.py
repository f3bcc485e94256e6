"""ASGI middleware: a SERVER span per request, request context, one access record.

Each HTTP request gets a SERVER span (W3C ``traceparent`` in, the stable HTTP semantic
convention attributes, named ``METHOD route`` once routed), made here in one pass over
the headers rather than through ``opentelemetry-instrumentation-asgi`` (which still
traces WebSocket connections); the ``request_id`` (from an incoming ``X-Request-ID`` or
the trace id, echoed in the response), the user id, and an access record per request on
the ``api.access`` logger. It records the stable HTTP metrics
``http.server.request.duration`` (seconds, with ``http.route``) and
``http.server.active_requests``.
Works with any ASGI app (Starlette, FastAPI, plain ASGI).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, TypedDict

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.instrumentation.asgi import get_host_port_url_tuple
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.http import ExcludeList

from telemetry_infra.integrations.http_server import (
    ACCESS_LOGGER,
    HTTP_DURATION_BUCKETS,
    Exchange,
    ExcludedPaths,
    UserResolver,
    clean_request_id,
    name_span_after_route,
    request_ended,
    request_started,
    user_id_of,
)
from telemetry_infra.logs import request_context, set_request_context
from telemetry_infra.logs.context import USER_ID_ATTRIBUTE
from telemetry_infra.logs.server_loggers import set_middleware_logs_access
from telemetry_infra.otel.light_spans import LightSpansOf

__all__ = [
    "ACCESS_LOGGER",
    "HTTP_DURATION_BUCKETS",
    "ExcludedPaths",
    "MiddlewareOptions",
    "TelemetryMiddleware",
    "user_id_of",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
UserIdGetter = Callable[[Scope], Any]


class MiddlewareOptions(TypedDict, total=False):
    """:class:`TelemetryMiddleware`'s keywords, typed once for the functions that pass them on."""

    user_id_getter: UserIdGetter | None
    request_id_header: str
    excluded_urls: str | None
    excluded_paths: Iterable[str]
    log_excluded: bool
    access_log: bool


_EXCEPTION_RECORDED = "telemetry_infra.exception_recorded"
_tracer = trace.get_tracer("telemetry_infra.asgi")
#: the request's SERVER span: a light span where that is exact (``otel.light_spans``)
_spans = LightSpansOf(_tracer)
#: FastAPI (0.165 and later) makes its own SERVER span, HTTP metrics and exception records
#: for a request unless this key is in its scope: under our middleware they would be a
#: second set of each, so the key is set (to ``None``, what FastAPI itself uses for "off")
FASTAPI_TELEMETRY_SCOPE_KEY = "fastapi.telemetry"


def _route_template(scope: Scope) -> str | None:
    route = scope.get("route")
    return getattr(route, "path_format", None) or getattr(route, "path", None)


def _name_span_after_route(span: trace.Span, scope: Scope) -> None:
    name_span_after_route(span, scope.get("method", ""), _route_template(scope))


def record_exception(span: trace.Span, scope: Scope, error: BaseException) -> None:
    """``exception`` event and ``error.type`` on the SERVER span, once per request."""
    if scope.get(_EXCEPTION_RECORDED) or not span.is_recording():
        return
    scope[_EXCEPTION_RECORDED] = type(error).__qualname__
    span.record_exception(error)
    span.set_attribute("error.type", type(error).__qualname__)


class _Headers(Getter["_Headers"]):
    """A request's headers decoded once, lower-case names; also the propagators' carrier."""

    __slots__ = ("values",)

    def __init__(self, scope: Scope) -> None:
        self.values: dict[str, str] = {}
        for key, value in scope.get("headers") or ():
            name = key.decode("latin-1").lower()
            text = value.decode("latin-1")
            self.values[name] = f"{self.values[name]},{text}" if name in self.values else text

    def get(self, carrier: _Headers, key: str) -> list[str] | None:
        value = carrier.values.get(key)
        return None if value is None else [value]

    def keys(self, carrier: _Headers) -> list[str]:
        return list(carrier.values)


def _span_attributes(scope: Scope, headers: _Headers, method: str) -> dict[str, Any]:
    """The stable HTTP server span attributes known when the request arrives."""
    attributes: dict[str, Any] = {
        "http.request.method": method,
        "url.scheme": scope.get("scheme", "http"),
        "url.path": scope.get("path", ""),
        "network.protocol.version": scope.get("http_version", "1.1"),
    }
    if scope.get("query_string"):
        attributes["url.query"] = scope["query_string"].decode("latin-1")
    host = headers.values.get("host")
    server = scope.get("server")
    if host:
        address, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
        attributes["server.address"] = address
        if port.isdigit():
            attributes["server.port"] = int(port)
    elif server:
        attributes["server.address"] = server[0]
        if server[1] is not None:
            attributes["server.port"] = server[1]
    client = scope.get("client")
    if client:
        attributes["client.address"] = client[0]
        attributes["client.port"] = client[1]
    agent = headers.values.get("user-agent")
    if agent:
        attributes["user_agent.original"] = agent
    return attributes


def _full_url(scope: Scope) -> str:
    """What ``excluded_urls`` patterns are searched in: scheme, host, path and query."""
    return str(get_host_port_url_tuple(scope)[2])  # type: ignore[no-untyped-call]  # unannotated in opentelemetry-instrumentation-asgi


class _RequestContextMiddleware:
    """Each HTTP request: its SERVER span (unless ``measure`` is off), request context, the
    duration metric and the access record."""

    def __init__(
        self,
        app: ASGIApp,
        user: UserResolver,
        header: bytes,
        access_log: bool,
        measure: bool,
        excluded_urls: ExcludeList | None = None,
    ) -> None:
        self.app = app
        self.user = user
        self.header = header
        self.header_name = header.decode("latin-1").lower()
        self.access_log = logging.getLogger(ACCESS_LOGGER) if access_log else None
        self.measure = measure
        self.excluded_urls = excluded_urls

    def _start_span(self, scope: Scope, headers: _Headers, method: str) -> trace.Span:
        if not self.measure or (self.excluded_urls and self.excluded_urls.url_disabled(_full_url(scope))):
            return trace.INVALID_SPAN
        context = propagate.extract(headers, getter=headers)
        return _spans.start_in(method, SpanKind.SERVER, _span_attributes(scope, headers, method), context)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _Headers(scope)
        method = scope.get("method", "_OTHER")
        span = self._start_span(scope, headers, method)
        token = (
            otel_context.attach(trace.set_span_in_context(span)) if span is not trace.INVALID_SPAN else None
        )
        try:
            await self._serve(scope, receive, send, headers, span)
        finally:
            if token is not None:
                span.end()
                otel_context.detach(token)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, headers: _Headers, span: trace.Span
    ) -> None:
        request_id = clean_request_id(headers.values.get(self.header_name))
        if request_id is None and span.get_span_context().is_valid:
            request_id = format(span.get_span_context().trace_id, "032x")
        # before the app: a getter reading headers gives the handler's logs the user; one
        # reading Starlette's scope["user"] only sees it once authentication ran, below
        user_id = self.user(scope, quiet=True)
        status: int | None = None  # until the app answers
        if self.measure:
            request_started(scope.get("method", "_OTHER"), scope.get("scheme", "http"))
        started = time.perf_counter()

        learned_late = False

        def learn_user() -> None:
            nonlocal user_id, learned_late
            if user_id is None:
                user_id = self.user(scope, quiet=False)
                learned_late = user_id is not None

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] != "http.response.start":
                await send(message)
                return
            status = message["status"]
            _answered(span, scope, status)
            learn_user()
            if learned_late and span.is_recording():
                span.set_attribute(USER_ID_ATTRIBUTE, user_id)
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
                record_exception(span, scope, exc)
                raise
            finally:
                learn_user()
                if learned_late:  # for the access record
                    set_request_context(user_id=user_id)
                self._finish(scope, span, status, time.perf_counter() - started, error)

    def _finish(
        self, scope: Scope, span: trace.Span, status: int | None, duration: float, error: Exception | None
    ) -> None:
        if status is None:  # never answered: what the client gets is the server's 500
            status = 500
            _name_span_after_route(span, scope)
        if error is not None and span.is_recording():
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__qualname__}: {error}"))
        exchange = Exchange(
            method=scope.get("method", "_OTHER"),
            path=scope.get("path", ""),
            route=_route_template(scope),
            status=status,
            scheme=scope.get("scheme", "http"),
            protocol_version=scope.get("http_version", "1.1"),
            duration=duration,
            error=error,
        )
        request_ended(exchange, span, self.access_log, measure=self.measure)


def _answered(span: trace.Span, scope: Scope, status: int) -> None:
    """The response starts: its route name and status on the span (a 5xx is an error)."""
    if not span.is_recording():
        return
    attributes: dict[str, Any] = {"http.response.status_code": status}
    if status >= 500:
        attributes["error.type"] = scope.get(_EXCEPTION_RECORDED) or str(status)
        span.set_status(Status(StatusCode.ERROR))
    name_span_after_route(span, scope.get("method", ""), _route_template(scope), attributes)


class ExceptionRecorder:
    """Put inside an error handler that answers 500 before re-raising (Starlette's
    ``ServerErrorMiddleware``): records the exception on the SERVER span while it is
    current, before the error response is sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            record_exception(trace.get_current_span(), scope, exc)
            raise


def _stable_http_semconv(middleware: Any) -> None:
    """Stable HTTP span attributes (``http.request.method``, ``http.response.status_code``,
    ``error.type``) unless the user chose with ``OTEL_SEMCONV_STABILITY_OPT_IN``."""
    if os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN"):
        return
    from opentelemetry.instrumentation._semconv import _StabilityMode

    if hasattr(middleware, "_sem_conv_opt_in_mode"):
        middleware._sem_conv_opt_in_mode = _StabilityMode.HTTP


class TelemetryMiddleware:
    """Wrap an ASGI app: ``app = TelemetryMiddleware(app)``.

    ``user_id_getter(scope)`` returns the user (a string, a Starlette ``BaseUser``, or
    ``None``); it is asked before the app runs and, when that yields nothing, again once
    the app has answered (so after Starlette's ``AuthenticationMiddleware``); one that
    raises is logged once and never fails a request. ``excluded_paths`` (exact paths,
    or prefixes ending in ``*``) get no span, no metric and, unless ``log_excluded``,
    no access record. ``excluded_urls`` is the instrumentation's own option
    (comma-separated regexes searched in the full URL). ``access_log=False`` writes no
    access records.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        user_id_getter: UserIdGetter | None = None,
        request_id_header: str = "X-Request-ID",
        excluded_urls: str | None = None,
        excluded_paths: Iterable[str] = (),
        log_excluded: bool = False,
        access_log: bool = True,
    ) -> None:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        header = request_id_header.lower().encode("latin-1")
        user = UserResolver(user_id_getter)
        self.app: ASGIApp = _RequestContextMiddleware(
            app, user, header, access_log, measure=True, excluded_urls=_excluded_urls(excluded_urls)
        )
        # a WebSocket connection: the instrumentation's SERVER span, as before
        self.websocket_app = OpenTelemetryMiddleware(
            app,
            excluded_urls=excluded_urls,
            exclude_spans=["receive", "send"],
            meter_provider=metrics.NoOpMeterProvider(),
        )
        _stable_http_semconv(self.websocket_app)
        self.excluded_paths = ExcludedPaths(excluded_paths)
        self.excluded_app: ASGIApp = app
        if log_excluded and access_log:
            self.excluded_app = _RequestContextMiddleware(app, user, header, access_log, measure=False)
        if access_log:
            set_middleware_logs_access(True)  # the server's own access log would repeat ours

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope.setdefault(FASTAPI_TELEMETRY_SCOPE_KEY, None)  # this request's telemetry is ours
        if self.excluded_paths and scope["type"] == "http" and scope.get("path") in self.excluded_paths:
            await self.excluded_app(scope, receive, send)
            return
        await (self.websocket_app if scope["type"] == "websocket" else self.app)(scope, receive, send)


def _excluded_urls(patterns: str | None) -> ExcludeList | None:
    from opentelemetry.util.http import parse_excluded_urls

    return parse_excluded_urls(patterns) if patterns else None
