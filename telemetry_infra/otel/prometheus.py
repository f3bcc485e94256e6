"""Prometheus exposition of the OTel metrics, exemplars included.

The stock ``PrometheusMetricReader`` drops exemplars. :class:`PrometheusBridge` is a
``MetricReader`` that hands every collection to prometheus-client as metric families
whose histogram buckets carry the trace id of a sampled measurement, so a scrape in
OpenMetrics format (``Accept: application/openmetrics-text``) links latency to traces.
Names follow the OTel -> Prometheus rules: ``cache.operation.duration`` with unit
``s`` becomes ``cache_operation_duration_seconds``, counters end in ``_total``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import errno
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.exporter.prometheus._mapping import map_unit, sanitize_attribute, sanitize_full_name
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    HistogramDataPoint,
    MetricReader,
    MetricsData,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_latest_openmetrics
from prometheus_client.samples import Exemplar

from telemetry_infra.otel.preaggregated import add_preaggregated
from telemetry_infra.otel.prometheus_multiprocess import (
    ENV_VAR,
    Family,
    MultiprocessSnapshots,
    UnusableDirectory,
    answer_wait,
)

__all__ = ["MetricsApp", "PrometheusBridge", "metrics_asgi_app", "serve_metrics"]

_CUMULATIVE: dict[type, AggregationTemporality] = {
    kind: AggregationTemporality.CUMULATIVE
    for kind in (
        Counter,
        UpDownCounter,
        Histogram,
        ObservableCounter,
        ObservableUpDownCounter,
        ObservableGauge,
    )
}
_SCOPE_LABEL = "otel_scope_name"
_log = logging.getLogger("telemetry_infra.otel.prometheus")


@dataclass
class _Family:
    """One Prometheus family gathered across scopes: its rows share one label set."""

    kind: str  # "counter" | "gauge" | "histogram"
    description: str
    unit: str
    rows: list[tuple[dict[str, str], Any]] = field(default_factory=list)

    def as_tuple(self) -> Family:
        return self.kind, self.description, self.unit, self.rows

    def build(self, name: str) -> Metric:
        keys = sorted({key for labels, _ in self.rows for key in labels})
        rows = [([labels.get(key, "") for key in keys], value) for labels, value in self.rows]
        if self.kind == "histogram":
            histogram = HistogramMetricFamily(name, self.description, labels=keys, unit=self.unit)
            for values, (buckets, sum_value) in rows:
                histogram.add_metric(values, buckets=buckets, sum_value=sum_value)
            return histogram
        family: CounterMetricFamily | GaugeMetricFamily
        if self.kind == "counter":
            family = CounterMetricFamily(name, self.description, labels=keys, unit=self.unit)
        else:
            family = GaugeMetricFamily(name, self.description, labels=keys, unit=self.unit)
        for values, value in rows:
            family.add_metric(values, value)
        return family


def _label_value(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _exemplar_for(exemplar: Any) -> Exemplar | None:
    if not exemplar.trace_id:
        return None
    labels = {"trace_id": f"{exemplar.trace_id:032x}", "span_id": f"{exemplar.span_id:016x}"}
    return Exemplar(labels, exemplar.value, exemplar.time_unix_nano / 1e9)


def _buckets(point: HistogramDataPoint, exemplars: dict[int, Exemplar]) -> list[tuple[Any, ...]]:
    """Cumulative ``(le, count)`` buckets, ``(le, count, exemplar)`` where one fell into it.

    ``exemplars`` (bucket index -> exemplar) is this series' memory: the SDK hands an
    exemplar to one collection only, while a bucket should show it until a newer one.
    """
    for exemplar in sorted(point.exemplars or (), key=lambda e: e.time_unix_nano):
        converted = _exemplar_for(exemplar)
        if converted is not None:
            exemplars[bisect.bisect_left(point.explicit_bounds, exemplar.value)] = converted
    bounds = [*map(float, point.explicit_bounds), float("inf")]
    buckets: list[tuple[Any, ...]] = []
    running = 0
    for index, (bound, count) in enumerate(zip(bounds, point.bucket_counts, strict=True)):
        running += count
        label = "+Inf" if bound == float("inf") else repr(bound)
        shown = exemplars.get(index)
        buckets.append((label, running) if shown is None else (label, running, shown))
    return buckets


def _kind(data: Any) -> str | None:
    if isinstance(data, Sum):
        return "counter" if data.is_monotonic else "gauge"
    if isinstance(data, Gauge):
        return "gauge"
    if isinstance(data, HistogramData):
        return "histogram"
    return None


def _family_name(metric_name: str, unit: str, kind: str) -> str:
    name = sanitize_full_name(metric_name)
    if kind == "counter" and name.endswith("_total"):
        name = name[: -len("_total")]
    if unit and name.endswith("_" + unit):
        name = name[: -len(unit) - 1]  # prometheus-client appends the unit itself
    return name


#: (family name, sorted labels) -> bucket index -> the newest exemplar seen there
ExemplarMemory = dict[tuple[str, tuple[tuple[str, str], ...]], dict[int, Exemplar]]


def translate(data: MetricsData, families: dict[str, _Family], exemplars: ExemplarMemory) -> None:
    """Fold one collection into ``families`` (by Prometheus name)."""
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            scope = {_SCOPE_LABEL: scope_metrics.scope.name}
            for metric in scope_metrics.metrics:
                _add_metric(metric, scope, families, exemplars)


def _add_metric(
    metric: Any, scope: dict[str, str], families: dict[str, _Family], exemplars: ExemplarMemory
) -> None:
    kind = _kind(metric.data)
    if kind is None:
        return
    unit = map_unit(metric.unit or "")
    name = _family_name(metric.name, unit, kind)
    family = families.setdefault(name, _Family(kind, metric.description or "", unit))
    for point in metric.data.data_points:
        labels = {sanitize_attribute(k): _label_value(v) for k, v in point.attributes.items()}
        labels.update(scope)
        if kind == "histogram":
            memory = exemplars.setdefault((name, tuple(sorted(labels.items()))), {})
            family.rows.append((labels, (_buckets(point, memory), point.sum)))
        else:
            family.rows.append((labels, point.value))


#: Resource attributes that differ between the workers a merged exposition answers for.
_PER_PROCESS_ATTRIBUTES = frozenset({"process.pid", "service.instance.id"})


def _target_info(resource: Resource, per_process: bool = True) -> Metric:
    labels = {
        sanitize_attribute(k): _label_value(v)
        for k, v in resource.attributes.items()
        if per_process or k not in _PER_PROCESS_ATTRIBUTES
    }
    info = InfoMetricFamily("target", "Target metadata", labels=list(labels))
    info.add_metric(list(labels), labels)
    return info


class PrometheusBridge(MetricReader):
    """A pull ``MetricReader`` that serves its collections to prometheus-client.

    ``registry`` holds only this bridge, so several ``configure()`` calls in one
    process never register a metric twice. With ``multiprocess_dir`` (see
    :mod:`telemetry_infra.otel.prometheus_multiprocess`) a scrape answers for every live
    worker sharing the directory.
    """

    def __init__(self, resource: Resource | None = None, multiprocess_dir: str | None = None) -> None:
        super().__init__(preferred_temporality=_CUMULATIVE)
        self._resource = resource
        self._lock = threading.Lock()
        self._exemplars: ExemplarMemory = {}
        self._collected: dict[str, _Family] = {}
        self._multiprocess: MultiprocessSnapshots | None = None
        self._scrape = threading.local()
        #: Why ``multiprocess_dir`` could not be used (``configure()`` logs it as an ERROR).
        self.multiprocess_problem: str | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self._collector = _RegistryCollector(self)
        self.registry.register(self._collector)
        if multiprocess_dir is not None:
            self._start_multiprocess(multiprocess_dir)
        _bridges.add(self)

    def _start_multiprocess(self, directory: str) -> None:
        service = self._resource.attributes.get("service.name", "") if self._resource else ""
        try:
            self._multiprocess = MultiprocessSnapshots(directory, self._collect_own, str(service))
        except UnusableDirectory as error:  # this process answers for itself alone
            self.multiprocess_problem = str(error)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # the snapshot thread may have held it at the fork
        if self._multiprocess is not None:
            self._multiprocess.after_fork_in_child()

    @property
    def multiprocess(self) -> bool:
        return self._multiprocess is not None

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **_: Any) -> None:
        # Translated on every collection, also those another reader's force_flush()
        # triggers: the SDK hands each exemplar to one collection only.
        families: dict[str, _Family] = {}
        if self._resource is not None:
            metrics_data = add_preaggregated(metrics_data, self._resource)
        translate(metrics_data, families, self._exemplars)
        self._collected = families

    def shutdown(self, timeout_millis: float = 30_000, **_: Any) -> None:
        with contextlib.suppress(KeyError):  # already shut down
            self.registry.unregister(self._collector)
        if self._multiprocess is not None:
            self._multiprocess.close()

    def _collect_own(self, timeout_millis: float = 10_000) -> dict[str, Family]:
        """One OTel collection of this process, by Prometheus family name."""
        with self._lock:
            self._collected = {}
            if self._collect is not None:  # else not on a MeterProvider yet: nothing to collect
                super().collect(timeout_millis=timeout_millis)
            return {name: family.as_tuple() for name, family in self._collected.items()}

    def collect_families(self, timeout_millis: float = 10_000) -> list[Metric]:
        """Run one OTel collection and return it as Prometheus metric families.

        In multi-process mode: merged with the other live workers' snapshots.
        """
        families = self._collect_own(timeout_millis)
        if self._multiprocess is not None:
            wait_s = getattr(self._scrape, "wait_s", None) or answer_wait(None)
            families = self._multiprocess.merged(families, wait_s)
        built = [_Family(*family).build(name) for name, family in families.items()]
        if self._resource is None:
            return built
        return [_target_info(self._resource, per_process=self._multiprocess is None), *built]

    def text(self, openmetrics: bool = False) -> str:
        """The current exposition: Prometheus text, or OpenMetrics (with exemplars)."""
        encode: Callable[[CollectorRegistry], bytes]
        encode = generate_latest_openmetrics if openmetrics else generate_latest
        return encode(self.registry).decode("utf-8")

    @contextlib.contextmanager
    def scrape_timeout(self, seconds: str | float | None) -> Iterator[None]:
        """Within this block (this thread), a scrape waits for the other workers at most
        :func:`~telemetry_infra.otel.prometheus_multiprocess.answer_wait` of ``seconds``
        (``X-Prometheus-Scrape-Timeout-Seconds``)."""
        self._scrape.wait_s = answer_wait(seconds)
        try:
            yield
        finally:
            self._scrape.wait_s = None

    def render(self, encode: Callable[[CollectorRegistry], bytes], scrape_timeout: str | None) -> bytes:
        """``encode(registry)`` for one scrape that Prometheus gives ``scrape_timeout`` seconds."""
        with self.scrape_timeout(scrape_timeout):
            return encode(self.registry)


class _RegistryCollector:
    """prometheus-client's side: each scrape runs one OTel collection."""

    def __init__(self, bridge: PrometheusBridge) -> None:
        self._bridge = bridge

    def describe(self) -> list[Metric]:
        return []  # nothing to collect at register time

    def collect(self) -> Iterator[Metric]:
        return iter(self._bridge.collect_families())


def _start_http_server(bridge: PrometheusBridge, port: int, host: str) -> tuple[Any, threading.Thread]:
    """prometheus-client's ``start_http_server``, whose scrapes honour
    ``X-Prometheus-Scrape-Timeout-Seconds`` (see :meth:`PrometheusBridge.scrape_timeout`)."""
    from wsgiref.simple_server import make_server

    from prometheus_client.exposition import (
        ThreadingWSGIServer,
        _get_best_family,
        _SilentHandler,
        make_wsgi_app,
    )

    metrics = make_wsgi_app(bridge.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        with bridge.scrape_timeout(environ.get("HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS")):
            return metrics(environ, start_response)

    class Server(ThreadingWSGIServer):
        """A copy, so the address family is set for this server only."""

    Server.address_family, address = _get_best_family(host, port)  # type: ignore[no-untyped-call]  # unannotated in prometheus-client
    server = make_server(address, port, app, Server, handler_class=_SilentHandler)
    thread = threading.Thread(target=server.serve_forever, name="telemetry-metrics-http", daemon=True)
    thread.start()
    return server, thread


#: How often a process whose metrics port is taken tries to bind it again.
TAKEOVER_INTERVAL_S = 1.0


class _MetricsServer:
    """``/metrics`` on ``host:port`` in a daemon thread; when the port is taken (another
    worker serves it), one log record and a retry every :data:`TAKEOVER_INTERVAL_S`, so
    the port is served once and a worker that frees it is replaced, never a crash."""

    def __init__(self, bridge: PrometheusBridge, port: int, host: str) -> None:
        self._bridge, self._port, self._host = bridge, port, host
        self._stopped = threading.Event()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        _servers.add(self)
        if not self._try_bind():
            self._log_port_taken()
            retry = threading.Thread(target=self._retry, name="telemetry-metrics-takeover", daemon=True)
            retry.start()

    @property
    def serving(self) -> bool:
        return self._server is not None

    def _try_bind(self) -> bool:
        with self._lock:
            if self._stopped.is_set():
                return True
            try:
                self._server, self._thread = _start_http_server(self._bridge, self._port, self._host)
            except OSError as error:
                if error.errno != errno.EADDRINUSE:
                    raise OSError(
                        error.errno,
                        f"cannot serve metrics on {self._host}:{self._port} "
                        f"(prometheus_port / OTEL_EXPORTER_PROMETHEUS_PORT): {error.strerror}",
                    ) from error
                return False
        return True

    def _log_port_taken(self) -> None:
        where = f"{self._host}:{self._port}"
        if self._bridge.multiprocess:
            _log.info(
                "metrics port %s (prometheus_port / OTEL_EXPORTER_PROMETHEUS_PORT) is served by another "
                "process; it answers for this worker too (%s); this process takes the port over if it frees",
                where,
                ENV_VAR,
            )
            return
        _log.warning(
            "metrics port %s (prometheus_port / OTEL_EXPORTER_PROMETHEUS_PORT) is already in use: this "
            "process's metrics are not served there until it frees. With several workers set %s to a "
            "shared directory so one port answers for all of them",
            where,
            ENV_VAR,
        )

    def _retry(self) -> None:
        while not self._stopped.wait(TAKEOVER_INTERVAL_S):
            if self._try_bind():
                if self._server is not None:
                    _log.info("now serving metrics on %s:%s", self._host, self._port)
                return

    def _after_fork_in_child(self) -> None:
        """A forked worker (gunicorn ``--preload``) leaves the port to its parent: it closes
        its copy of the listening socket, which no thread of its own serves."""
        self._lock = threading.Lock()  # another thread may have held it at the fork
        self._stopped.set()
        server, self._server, self._thread = self._server, None, None
        if server is not None:
            server.socket.close()

    def stop(self) -> None:
        with self._lock:
            self._stopped.set()
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)


_servers: weakref.WeakSet[_MetricsServer] = weakref.WeakSet()
_bridges: weakref.WeakSet[PrometheusBridge] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for bridge in list(_bridges):
        bridge._after_fork_in_child()
    for server in list(_servers):
        server._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def serve_metrics(bridge: PrometheusBridge, port: int, host: str = "127.0.0.1") -> Callable[[], None]:
    """Serve ``/metrics`` on ``host:port`` in a daemon thread; return a function that stops it.

    The format follows the scraper's ``Accept`` header (OpenMetrics when asked). A port
    already in use is logged and retried in the background, never raised (see
    :class:`_MetricsServer`).
    """
    return _MetricsServer(bridge, port, host).stop


_SCRAPE_TIMEOUT_HEADER = b"x-prometheus-scrape-timeout-seconds"


class MetricsApp:
    """An ASGI app answering with the exposition, to mount at ``/metrics``.

    Without ``bridge`` it serves whatever the current ``configure()`` set up, so it can
    be created before ``configure()`` runs. The format follows the ``Accept`` header.
    """

    def __init__(self, bridge: PrometheusBridge | None = None) -> None:
        self.bridge = bridge

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        from prometheus_client.exposition import choose_encoder

        if scope["type"] != "http":
            return
        current = self.bridge or _current_bridge()
        headers = dict(scope.get("headers") or ())
        encode, content_type = choose_encoder(headers.get(b"accept", b"").decode("latin-1"))
        timeout = headers.get(_SCRAPE_TIMEOUT_HEADER)
        scrape_timeout = None if timeout is None else timeout.decode("latin-1")
        body = b""
        if current is not None and current.multiprocess:  # waits for the other workers' snapshots
            loop = asyncio.get_running_loop()
            body = await loop.run_in_executor(None, current.render, encode, scrape_timeout)
        elif current is not None:
            body = encode(current.registry)
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", content_type.encode())],
        }
        await send(start)
        await send({"type": "http.response.body", "body": body})


def metrics_asgi_app(bridge: PrometheusBridge | None = None) -> MetricsApp:
    """The ``/metrics`` ASGI app (see :class:`MetricsApp`)."""
    return MetricsApp(bridge)


_current: PrometheusBridge | None = None


def set_current_bridge(bridge: PrometheusBridge | None) -> None:
    """Make ``bridge`` the one an app without its own bridge serves (``configure()`` calls this)."""
    global _current
    _current = bridge


def _current_bridge() -> PrometheusBridge | None:
    return _current
