"""What every HTTP server integration shares (ASGI in ``asgi``, WSGI in ``wsgi``): the
request id, the user id hook, path exclusions, the SERVER span's route name, the
``http.server.request.duration`` histogram and ``http.server.active_requests``, and the one
access record per request on the ``api.access`` logger. One policy, whichever protocol."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

from telemetry_infra.otel.preaggregated import HistogramSeries, PreaggregatedHistogram

__all__ = [
    "ACCESS_LOGGER",
    "HTTP_DURATION_BUCKETS",
    "Exchange",
    "ExcludedPaths",
    "UserResolver",
    "clean_request_id",
    "name_span_after_route",
    "request_ended",
    "request_started",
    "user_id_of",
]

ACCESS_LOGGER = "api.access"
_MAX_REQUEST_ID = 128


#: The buckets the HTTP semantic conventions advise for ``http.server.request.duration``.
HTTP_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

_duration = PreaggregatedHistogram(
    "http.server.request.duration",
    unit="s",
    description="Duration of HTTP server requests.",
    scope="telemetry_infra.asgi",
    bounds=HTTP_DURATION_BUCKETS,
)
_log = logging.getLogger("telemetry_infra.http_server")

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


def clean_request_id(value: str | None) -> str | None:
    """Accept a client's id only if it is short printable text (it ends up in every log line)."""
    if not value or len(value) > _MAX_REQUEST_ID or not value.isprintable():
        return None
    return value


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


class UserResolver:
    """Calls the user's getter without ever failing the request; warns once if it raises."""

    def __init__(self, getter: Callable[[Any], Any] | None) -> None:
        self.getter = getter
        self._warned = False

    def __call__(self, request: Any, quiet: bool) -> str | None:
        if self.getter is None:
            return None
        try:
            return user_id_of(self.getter(request))
        except Exception:
            if not quiet and not self._warned:
                self._warned = True
                _log.warning("user_id_getter raised; requests go on without a user id", exc_info=True)
            return None


def request_started(method: str, scheme: str) -> None:
    """Count a request in ``http.server.active_requests`` (pair with ``request_ended``)."""
    key = (method, scheme)
    _active[key] = _active.get(key, 0) + 1


def name_span_after_route(
    span: trace.Span, method: str, route: str | None, attributes: dict[str, Any] | None = None
) -> None:
    """``GET /items/{item_id}`` rather than ``GET /items/7``: low-cardinality span names.

    ``attributes`` (more of the span's attributes known at the same time) are set with
    ``http.route`` in one call."""
    if not span.is_recording():
        return
    attributes = attributes if attributes is not None else {}
    if route:
        span.update_name(f"{method} {route}")
        attributes["http.route"] = route
    if attributes:
        span.set_attributes(attributes)


@dataclass
class Exchange:
    """One request and its answer, as the duration metric and the access record see it."""

    method: str
    path: str
    route: str | None
    status: int
    scheme: str
    protocol_version: str
    duration: float
    error: BaseException | None = None


def request_ended(
    exchange: Exchange, span: trace.Span, access_log: logging.Logger | None, *, measure: bool = True
) -> None:
    """The request is over: out of the active count, its duration recorded (with the span as
    exemplar), its access record written (ERROR for a 5xx or an exception)."""
    if measure:
        key = (exchange.method, exchange.scheme)
        _active[key] = _active.get(key, 1) - 1
        _duration_series(exchange).record(exchange.duration, span.get_span_context())
    if access_log is None:
        return
    route = exchange.route or exchange.path
    access_log.log(
        logging.ERROR if exchange.error is not None or exchange.status >= 500 else logging.INFO,
        "%s %s %s",
        exchange.method,
        route,
        exchange.status,
        extra={
            "http_method": exchange.method,
            "http_route": route,
            "http_status": exchange.status,
            "duration": round(exchange.duration, 6),
        },
        exc_info=exchange.error,
    )


#: the duration's series by what its attributes are made of: no attribute dict per request
_series_of: dict[tuple[Any, ...], HistogramSeries] = {}


def _duration_series(exchange: Exchange) -> HistogramSeries:
    error = exchange.error
    key = (
        exchange.method,
        exchange.status,
        exchange.scheme,
        exchange.protocol_version,
        exchange.route,
        None if error is None else type(error),
    )
    series = _series_of.get(key)
    if series is None:
        series = _series_of[key] = _duration.series(_duration_attributes(exchange))
    return series


def _duration_attributes(exchange: Exchange) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "http.request.method": exchange.method or "_OTHER",
        "http.response.status_code": exchange.status,
        "url.scheme": exchange.scheme,
        "network.protocol.version": exchange.protocol_version,
    }
    if exchange.route:
        attributes["http.route"] = exchange.route
    if exchange.error is not None:
        attributes["error.type"] = type(exchange.error).__qualname__
    elif exchange.status >= 500:
        attributes["error.type"] = str(exchange.status)
    return attributes
