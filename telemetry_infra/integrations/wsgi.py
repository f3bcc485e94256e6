"""WSGI middleware (Flask, Django, any PEP 3333 app): what ``instrument_app`` gives ASGI.

``app.wsgi_app = instrument_wsgi(app.wsgi_app)`` (Flask) or
``application = instrument_wsgi(get_wsgi_application())`` (Django's ``wsgi.py``) gives
every request a SERVER span (W3C ``traceparent`` in) named ``METHOD route`` once the app
has routed it (Flask's ``url_rule``, Django's resolver match, else the path), the
request context for the logs (``X-Request-ID`` in and out, the user id), one access
record on ``api.access``, ``http.server.request.duration`` with ``http.route`` and
``http.server.active_requests``, and ``/metrics`` under the app's own path prefix.
The policies are the ASGI middleware's (:mod:`telemetry_infra.integrations.http_server`).

The request's context (span, request id) is current while the app runs and while its
response is iterated; the span and the access record end when the server closes the
response (PEP 3333 ``close()``), so a streamed body is inside its request. An exception
leaves an ``exception`` event and ``error.type`` on the span and is re-raised; one that
the framework turns into a 500 page itself is caught through its signal
(Flask's and Django's ``got_request_exception``). Flask and Django are never imported
here: they are read from what the app left in the environ, or from ``sys.modules``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind

from telemetry_infra.integrations.http_server import (
    ACCESS_LOGGER,
    Exchange,
    ExcludedPaths,
    UserResolver,
    clean_request_id,
    name_span_after_route,
    request_ended,
    request_started,
)
from telemetry_infra.logs import request_context, set_request_context
from telemetry_infra.logs.context import USER_ID_ATTRIBUTE
from telemetry_infra.logs.server_loggers import set_middleware_logs_access
from telemetry_infra.otel.light_spans import LightSpansOf
from telemetry_infra.otel.prometheus import metrics_asgi_app

__all__ = ["TelemetryWSGIMiddleware", "instrument_wsgi"]

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
UserIdGetter = Callable[[Environ], Any]

_tracer = trace.get_tracer("telemetry_infra.wsgi")
#: the request's SERVER span: a light span where that is exact (``otel.light_spans``)
_spans = LightSpansOf(_tracer)
#: the request being served in this context (the framework's exception signals find it here)
_current: contextvars.ContextVar[_Request | None] = contextvars.ContextVar("wsgi_request", default=None)


class _EnvironGetter(Getter[Environ]):
    """Reads HTTP headers (``traceparent``...) from a WSGI environ for the propagators."""

    def get(self, carrier: Environ, key: str) -> list[str] | None:
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return None if value is None else [value]

    def keys(self, carrier: Environ) -> list[str]:
        return [key[5:].lower().replace("_", "-") for key in carrier if key.startswith("HTTP_")]


_environ_getter = _EnvironGetter()


def route_of(environ: Environ) -> str | None:
    """The route template the app matched: Flask's ``url_rule``, Django's resolver match."""
    request = environ.get("werkzeug.request")
    rule = getattr(getattr(request, "url_rule", None), "rule", None)
    if rule:
        return str(rule)
    if "django.urls" in sys.modules:
        return _django_route(environ.get("PATH_INFO", ""))
    return None


def _django_route(path: str) -> str | None:
    from django.urls import resolve

    try:
        route = resolve(path).route
    except Exception:  # not configured (ImproperlyConfigured), or Resolver404: named after the path
        return None
    return "/" + route.lstrip("^").lstrip("/") if route else None


class _Request:
    """One request's telemetry, from the call to the close of its response."""

    def __init__(self, middleware: TelemetryWSGIMiddleware, environ: Environ, measure: bool) -> None:
        self.middleware = middleware
        self.environ = environ
        self.measure = measure
        self.method = environ.get("REQUEST_METHOD", "_OTHER")
        self.scheme = environ.get("wsgi.url_scheme", "http")
        self.status = 500  # what the client gets if the app raises before answering
        self.error: BaseException | None = None
        self.user_id: str | None = None
        self.learned_late = False
        self.started = time.perf_counter()
        self.span: trace.Span = trace.INVALID_SPAN
        self.finished = False
        self.route: str | None = None

    def begin(self) -> None:
        """In the request's own context: the span, the request id, the user id."""
        environ = self.environ
        if self.measure:
            self.span = _spans.start_in(
                self.method,
                SpanKind.SERVER,
                _span_attributes(environ, self.method, self.scheme),
                propagate.extract(environ, getter=_environ_getter),
            )
            context.attach(trace.set_span_in_context(self.span))
            request_started(self.method, self.scheme)
        _current.set(self)
        header = self.middleware.request_id_key
        request_id = clean_request_id(environ.get(header))
        span_context = self.span.get_span_context()
        if request_id is None and span_context.is_valid:
            request_id = format(span_context.trace_id, "032x")
        self.request_id = request_id
        self.user_id = self.middleware.user(environ, quiet=True)
        request_context(request_id=request_id, user_id=self.user_id).__enter__()

    def start_response(self, start_response: StartResponse) -> StartResponse:
        def start(status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None) -> Any:
            self.status = int(status.split(" ", 1)[0])
            self.route = route_of(self.environ)  # Flask forgets its request once it has answered
            if self.request_id:
                headers = [*headers, (self.middleware.request_id_header, self.request_id)]
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        return start

    def record_exception(self, error: BaseException) -> None:
        """``exception`` event and ``error.type`` on the span, once."""
        if self.error is not None:
            return
        self.error = error
        if self.span.is_recording():
            self.span.record_exception(error)
            self.span.set_attribute("error.type", type(error).__qualname__)

    def finish(self) -> None:
        """Name the span after the route, end it, record the duration and the access record."""
        if self.finished:
            return
        self.finished = True
        duration = time.perf_counter() - self.started
        route = self.route or route_of(self.environ)
        if self.user_id is None:
            self.user_id = self.middleware.user(self.environ, quiet=False)
            if self.user_id is not None:
                set_request_context(user_id=self.user_id)
                if self.span.is_recording():
                    self.span.set_attribute(USER_ID_ATTRIBUTE, self.user_id)
        span = self.span
        name_span_after_route(span, self.method, route)
        if route is None and span.is_recording():  # no route matched (a 404): named after the path
            span.update_name(f"{self.method} {self.environ.get('PATH_INFO', '')}")
        if span.is_recording():
            span.set_attribute("http.response.status_code", self.status)
            if self.error is None and self.status >= 500:
                span.set_attribute("error.type", str(self.status))
                span.set_status(trace.Status(trace.StatusCode.ERROR))
            elif self.error is not None:
                span.set_status(trace.Status(trace.StatusCode.ERROR, str(self.error)))
        exchange = Exchange(
            method=self.method,
            path=self.environ.get("PATH_INFO", ""),
            route=route,
            status=self.status,
            scheme=self.scheme,
            protocol_version=self.environ.get("SERVER_PROTOCOL", "HTTP/1.1").partition("/")[2] or "1.1",
            duration=duration,
            error=self.error if isinstance(self.error, Exception) else None,
        )
        request_ended(exchange, span, self.middleware.access_log, measure=self.measure)
        span.end()


def _span_attributes(environ: Environ, method: str, scheme: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "http.request.method": method,
        "url.path": environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""),
        "url.scheme": scheme,
        "server.address": str(environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")).rsplit(":", 1)[0],
        "network.protocol.version": environ.get("SERVER_PROTOCOL", "HTTP/1.1").partition("/")[2] or "1.1",
    }
    if environ.get("QUERY_STRING"):
        attributes["url.query"] = environ["QUERY_STRING"]
    if environ.get("REMOTE_ADDR"):
        attributes["client.address"] = environ["REMOTE_ADDR"]
    if environ.get("HTTP_USER_AGENT"):
        attributes["user_agent.original"] = environ["HTTP_USER_AGENT"]
    return attributes


class _Response:
    """The app's response iterable, iterated and closed inside the request's context."""

    def __init__(self, body: Iterable[bytes], request: _Request, context_: contextvars.Context) -> None:
        self._body = body
        self._chunks: Iterator[bytes] | None = None
        self._request = request
        self._context = context_

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return self._context.run(self._next)

    def _next(self) -> bytes:
        if self._chunks is None:
            self._chunks = iter(self._body)
        try:
            return next(self._chunks)
        except StopIteration:
            raise
        except BaseException as exc:
            self._request.record_exception(exc)
            raise

    def close(self) -> None:
        self._context.run(self._close)

    def _close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._request.finish()


class TelemetryWSGIMiddleware:
    """Wrap ``wsgi_app`` (see the module docs): Flask ``app.wsgi_app = instrument_wsgi(app.wsgi_app)``,
    Django ``application = instrument_wsgi(get_wsgi_application())``.

    ``user_id_getter(environ)`` returns the user (a string or ``None``); asked before the app
    runs and, when that yields nothing, again once it has answered. ``metrics_path`` (``None``:
    none) serves the Prometheus exposition, relative to the app's mount point; it and
    ``excluded_paths`` (exact paths, or prefixes ending in ``*``) get no span and no metric,
    and no access record unless ``log_excluded``. ``access_log=False`` writes none.
    """

    def __init__(
        self,
        wsgi_app: WSGIApp,
        *,
        user_id_getter: UserIdGetter | None = None,
        request_id_header: str = "X-Request-ID",
        metrics_path: str | None = "/metrics",
        excluded_paths: Iterable[str] = (),
        log_excluded: bool = False,
        access_log: bool = True,
    ) -> None:
        self.app = wsgi_app
        self.user = UserResolver(user_id_getter)
        self.request_id_header = request_id_header
        self.request_id_key = "HTTP_" + request_id_header.upper().replace("-", "_")
        self.metrics_path = metrics_path
        self.metrics_app = metrics_asgi_app()
        self.excluded_paths = ExcludedPaths([*excluded_paths, *([metrics_path] if metrics_path else [])])
        self.log_excluded = log_excluded and access_log
        self.access_log = logging.getLogger(ACCESS_LOGGER) if access_log else None
        if access_log:
            set_middleware_logs_access(True)  # the server's own access log would repeat ours
        _connect_framework_signals(wsgi_app)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if self.metrics_path and path == self.metrics_path:
            return _serve_asgi(self.metrics_app, environ, start_response)
        excluded = bool(self.excluded_paths) and path in self.excluded_paths
        if excluded and not self.log_excluded:
            return self.app(environ, start_response)
        request = _Request(self, environ, measure=not excluded)
        request_context_ = contextvars.copy_context()
        return request_context_.run(self._call, request, request_context_, start_response)

    def _call(
        self, request: _Request, request_context_: contextvars.Context, start_response: StartResponse
    ) -> Iterable[bytes]:
        request.begin()
        try:
            body = self.app(request.environ, request.start_response(start_response))
        except BaseException as exc:
            request.record_exception(exc)
            request.finish()
            raise
        return _Response(body, request, request_context_)


#: ``instrument_wsgi(wsgi_app, **options)`` wraps ``wsgi_app``: it is the middleware's own
#: constructor, so its options are defined (typed, defaulted, documented) once, there.
instrument_wsgi = TelemetryWSGIMiddleware


def _record_in_current_request(_sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    """Flask's / Django's ``got_request_exception``: the app turns it into a 500 page itself."""
    request = _current.get()
    if request is not None and exception is not None:
        request.record_exception(exception)


def _record_django_exception(sender: Any = None, request: Any = None, **_: Any) -> None:
    error = sys.exc_info()[1]
    if error is not None:
        _record_in_current_request(exception=error)


_signals_connected: set[str] = set()


def _connect_framework_signals(app: WSGIApp) -> None:
    """Listen to the exception signals of the frameworks already imported (never import one)."""
    if "flask" in sys.modules and "flask" not in _signals_connected:
        import flask

        flask.got_request_exception.connect(_record_in_current_request, weak=False)
        _signals_connected.add("flask")
    if "django.core.signals" in sys.modules and "django" not in _signals_connected:
        from django.core.signals import got_request_exception

        got_request_exception.connect(_record_django_exception, weak=False)
        _signals_connected.add("django")


def _serve_asgi(app: Any, environ: Environ, start_response: StartResponse) -> list[bytes]:
    """Answer one request with an ASGI app (the ``/metrics`` exposition) from WSGI."""
    headers = [
        (key[5:].lower().replace("_", "-").encode("latin-1"), str(value).encode("latin-1"))
        for key, value in environ.items()
        if key.startswith("HTTP_")
    ]
    scope = {
        "type": "http",
        "method": environ.get("REQUEST_METHOD", "GET"),
        "path": environ.get("PATH_INFO", ""),
        "headers": headers,
    }
    answer: dict[str, Any] = {"status": 500, "headers": [], "body": b""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"], answer["headers"] = message["status"], message.get("headers", [])
        else:
            answer["body"] += message.get("body", b"")

    asyncio.run(app(scope, receive, send))
    start_response(
        f"{answer['status']} OK" if answer["status"] == 200 else str(answer["status"]),
        [(name.decode("latin-1"), value.decode("latin-1")) for name, value in answer["headers"]],
    )
    return [answer["body"]]
