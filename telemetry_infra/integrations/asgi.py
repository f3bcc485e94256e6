"""ASGI middleware: a SERVER span per request, request context, one access record.

Built on ``opentelemetry-instrumentation-asgi`` (W3C ``traceparent`` in, SERVER span);
this layer adds what the logs need: the ``request_id`` (from an incoming
``X-Request-ID`` or the trace id, echoed in the response), the user id, and an access
record per request on the ``api.access`` logger. It records the stable HTTP metrics
``http.server.request.duration`` (seconds, with ``http.route``) and
``http.server.active_requests`` itself: the instrumentation's own metrics are taken
before routing and cannot carry the route.
Works with any ASGI app (Starlette, FastAPI, plain ASGI).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

from telemetry_infra.logs import request_context, set_request_context
from telemetry_infra.logs.context import USER_ID_ATTRIBUTE
from telemetry_infra.logs.server_loggers import set_middleware_logs_access
from telemetry_infra.otel.preaggregated import HistogramSeries, PreaggregatedHistogram

__all__ = ["ACCESS_LOGGER", "HTTP_DURATION_BUCKETS", "ExcludedPaths", "TelemetryMiddleware", "user_id_of"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
UserIdGetter = Callable[[Scope], Any]

ACCESS_LOGGER = "api.access"
_MAX_REQUEST_ID = 128
_EXCEPTION_RECORDED = "telemetry_infra.exception_recorded"

#: The buckets the HTTP semantic conventions advise for ``http.server.request.duration``.
HTTP_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

_duration = PreaggregatedHistogram(
    "http.server.request.duration",
    unit="s",
    description="Duration of HTTP server requests.",
    scope="telemetry_infra.asgi",
    bounds=HTTP_DURATION_BUCKETS,
)
_log = logging.getLogger("telemetry_infra.asgi")

#: (method, scheme) -> requests in flight in this process; read at collection time.
_active: dict[tuple[str, str], int] = {}


def _observe_active(_options: CallbackOptions) -> Iterable[Observation]:
    return [
        Observation(count, {"http.request.method": method, "url.scheme": scheme})
        for (method, scheme), count in list(_active.items())
    ]


metrics.get_meter("telemetry_infra.asgi").create_observable_up_down_counter(
    "http.server.active_requests",
    [_observe_active],
    unit="{request}",
    description="Number of active HTTP server requests.",
)


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


def user_id_of(user: Any) -> str | None:
    """The id of what a ``user_id_getter`` returned: a string, ``None``, or a Starlette ``BaseUser``.

    A user that is not authenticated has no id; an authenticated one is its
    ``identity``, or its ``display_name`` when the class does not implement ``identity``
    (Starlette's ``SimpleUser``).
    """
    if user is None or isinstance(user, str):
        return user or None
    if getattr(user, "is_authenticated", True) is False:
        return None
    for attribute in ("identity", "display_name"):
        try:
            value = getattr(user, attribute)
        except (AttributeError, NotImplementedError):
            continue
        if value:
            return str(value)
    return str(user)


def record_exception(span: trace.Span, scope: Scope, error: BaseException) -> None:
    """``exception`` event and ``error.type`` on the SERVER span, once per request."""
    if scope.get(_EXCEPTION_RECORDED) or not span.is_recording():
        return
    scope[_EXCEPTION_RECORDED] = type(error).__qualname__
    span.record_exception(error)
    span.set_attribute("error.type", type(error).__qualname__)


class ExcludedPaths:
    """Request paths that get no span, no metric and (by default) no access record.

    An entry matches that exact path; an entry ending in ``*`` matches every path that
    starts with what precedes it (``/static/*``). Matching is on the path alone, never
    a substring: excluding ``/metrics`` leaves ``/price/metrics`` traced.
    """

    def __init__(self, paths: Iterable[str]) -> None:
        paths = [path for path in paths if path]
        self.exact = frozenset(path for path in paths if not path.endswith("*"))
        self.prefixes = tuple(path[:-1] for path in paths if path.endswith("*"))

    def __bool__(self) -> bool:
        return bool(self.exact or self.prefixes)

    def __contains__(self, path: object) -> bool:
        return path in self.exact or (
            isinstance(path, str) and path.startswith(self.prefixes) and bool(self.prefixes)
        )


class _UserResolver:
    """Calls the user's getter without ever failing the request; warns once if it raises."""

    def __init__(self, getter: UserIdGetter | None) -> None:
        self.getter = getter
        self._warned = False

    def __call__(self, scope: Scope, quiet: bool) -> str | None:
        if self.getter is None:
            return None
        try:
            return user_id_of(self.getter(scope))
        except Exception:
            if not quiet and not self._warned:
                self._warned = True
                _log.warning("user_id_getter raised; requests go on without a user id", exc_info=True)
            return None


class _RequestContextMiddleware:
    """Runs inside the OTel middleware, so the SERVER span is current here."""

    def __init__(
        self, app: ASGIApp, user: _UserResolver, header: bytes, access_log: bool, measure: bool
    ) -> None:
        self.app = app
        self.user = user
        self.header = header
        self.access_log = logging.getLogger(ACCESS_LOGGER) if access_log else None
        self.measure = measure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        span = trace.get_current_span()
        request_id = _clean_request_id(_header(scope, self.header.lower()))
        if request_id is None and span.get_span_context().is_valid:
            request_id = format(span.get_span_context().trace_id, "032x")
        # before the app: a getter reading headers gives the handler's logs the user; one
        # reading Starlette's scope["user"] only sees it once authentication ran, below
        user_id = self.user(scope, quiet=True)
        status = 500  # what the client gets if the app raises before answering
        active = (scope.get("method", "_OTHER"), scope.get("scheme", "http"))
        if self.measure:
            _active[active] = _active.get(active, 0) + 1
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
            # the OTel middleware ends the span with the response body: annotate it now
            status = message["status"]
            _name_span_after_route(span, scope)
            learn_user()
            if learned_late and span.is_recording():
                span.set_attribute(USER_ID_ATTRIBUTE, user_id)
            if request_id:
                headers = list(message.get("headers") or [])
                headers.append((self.header, request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)
            error_type = scope.get(_EXCEPTION_RECORDED)
            if error_type and span.is_recording():  # the status just sent wrote error.type "500"
                span.set_attribute("error.type", error_type)

        with request_context(request_id=request_id, user_id=user_id):
            error: Exception | None = None
            try:
                await self.app(scope, receive, send_with_request_id)
            except Exception as exc:  # logged with the access record, then re-raised
                error = exc
                if span.is_recording() and not scope.get(_EXCEPTION_RECORDED):
                    # the OTel middleware records the exception event as it passes through
                    scope[_EXCEPTION_RECORDED] = type(exc).__qualname__
                    span.set_attribute("error.type", type(exc).__qualname__)
                raise
            finally:
                if self.measure:
                    _active[active] -= 1
                learn_user()
                if learned_late:  # for the access record
                    set_request_context(user_id=user_id)
                self._finish(scope, span, status, time.perf_counter() - started, error)

    def _finish(
        self, scope: Scope, span: trace.Span, status: int, duration: float, error: Exception | None
    ) -> None:
        route = _route_template(scope)
        method = scope.get("method", "")
        _name_span_after_route(span, scope)
        if self.measure:
            self._series(scope, route, status, error).record(duration, span.get_span_context())
        if self.access_log is None:
            return
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

    @staticmethod
    def _series(scope: Scope, route: str | None, status: int, error: Exception | None) -> HistogramSeries:
        attributes: dict[str, Any] = {
            "http.request.method": scope.get("method", "_OTHER"),
            "http.response.status_code": status,
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", "1.1"),
        }
        if route:
            attributes["http.route"] = route
        if error is not None:
            attributes["error.type"] = type(error).__qualname__
        elif status >= 500:
            attributes["error.type"] = str(status)
        return _duration.series(attributes)


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
        user = _UserResolver(user_id_getter)
        inner = _RequestContextMiddleware(app, user, header, access_log, measure=True)
        self.app = OpenTelemetryMiddleware(
            inner,
            excluded_urls=excluded_urls,
            exclude_spans=["receive", "send"],
            meter_provider=metrics.NoOpMeterProvider(),  # the duration is ours, with the route
        )
        _stable_http_semconv(self.app)
        self.excluded_paths = ExcludedPaths(excluded_paths)
        self.excluded_app: ASGIApp = app
        if log_excluded and access_log:
            self.excluded_app = _RequestContextMiddleware(app, user, header, access_log, measure=False)
        if access_log:
            set_middleware_logs_access(True)  # the server's own access log would repeat ours

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.excluded_paths and scope["type"] == "http" and scope.get("path") in self.excluded_paths:
            await self.excluded_app(scope, receive, send)
            return
        await self.app(scope, receive, send)
