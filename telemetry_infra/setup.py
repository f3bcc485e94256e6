"""``configure()`` and ``shutdown()``: resource, providers, exporters, readers.

OTel's global providers can be set once per process, so the first ``configure()``
installs switchable providers (see :mod:`telemetry_infra.switchable_providers`) and
every call builds a fresh set of SDK providers behind them. The previous set is
flushed and shut down in the background within a bounded time: a second
``configure()`` never duplicates an export, and never hangs on a dead collector.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.version import __version__ as sdk_version

from telemetry_infra.preaggregated import SECONDS_BUCKETS, WithPreaggregated, reset_all
from telemetry_infra.prometheus import PrometheusBridge, serve_metrics
from telemetry_infra.prometheus_multiprocess import multiprocess_dir
from telemetry_infra.settings import Settings
from telemetry_infra.switchable_providers import SwitchableMeterProvider, SwitchableTracerProvider

__all__ = ["SECONDS_BUCKETS", "Telemetry", "configure", "get_telemetry", "shutdown"]

_log = logging.getLogger(__name__)

#: Meters whose ``s`` histograms get :data:`SECONDS_BUCKETS`.
OUR_METERS = ("telemetry_infra", "telemetry_infra.cache", "telemetry_infra.logs", "telemetry_infra.asgi")

_INSTANCE_ID = str(uuid.uuid4())


@dataclass
class Telemetry:
    """What ``configure()`` set up. ``shutdown()`` flushes and releases all of it."""

    settings: Settings
    tracer_provider: trace.TracerProvider
    meter_provider: metrics.MeterProvider
    logger_provider: Any
    resource: Resource | None = None
    prometheus_bridge: PrometheusBridge | None = None
    metrics_url: str | None = None
    _stop_server: Callable[[], None] | None = field(default=None, repr=False)
    _log_handler: Any = field(default=None, repr=False)  # logs.OTLPLogHandler
    _exporters: tuple[Any, ...] = field(default=(), repr=False)
    _closed: bool = field(default=False, repr=False)

    @property
    def enabled(self) -> bool:
        return not self.settings.sdk_disabled

    def prometheus_text(self, openmetrics: bool = False) -> str:
        """The current Prometheus exposition (OpenMetrics, with exemplars, if asked)."""
        if self.prometheus_bridge is None:
            return ""
        return self.prometheus_bridge.text(openmetrics=openmetrics)

    def _release_process_hooks(self) -> None:
        """Stop serving /metrics and take our OTLP handler off the root logger (shutdown closes it)."""
        stop, self._stop_server = self._stop_server, None
        if stop is not None:
            stop()
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        """Export everything buffered now; ``False`` if it did not finish in time."""
        if not self.enabled:
            return True
        millis = int(timeout_s * 1000)
        flushes = (self.tracer_provider, self.meter_provider, self.logger_provider)
        handler = self._log_handler

        def flush() -> bool:
            if handler is not None:
                handler.flush(timeout_s)  # records it queued reach the logger provider first
            return all(p.force_flush(millis) is not False for p in flushes)

        return _bounded(flush, timeout_s)

    def shutdown(self, timeout_s: float = 5.0) -> bool:
        """Flush and release exporters, readers and the metrics server, within ``timeout_s``."""
        if self._closed:
            return True
        self._closed = True
        self._release_process_hooks()
        handler, self._log_handler = self._log_handler, None
        if not self.enabled:
            return True
        providers = (self.tracer_provider, self.meter_provider, self.logger_provider)
        if _bounded(lambda: _flush_and_shutdown(handler, providers, timeout_s), timeout_s):
            return True
        # still exporting to an unreachable collector: stop its retries in the background
        for exporter in self._exporters:
            _quietly(exporter.shutdown)
        return False


def _quietly(call: Callable[[], Any]) -> None:
    try:
        call()
    except Exception:  # one failing exporter must not keep the others from shutting down
        _log.debug("error during telemetry shutdown", exc_info=True)


def _flush_and_shutdown(handler: Any, providers: tuple[Any, ...], timeout_s: float) -> bool:
    if handler is not None:  # its queued records reach the logger provider first
        _quietly(lambda: handler.close(timeout_s))
    millis = int(timeout_s * 1000)
    for provider in providers:
        _quietly(lambda p=provider: p.force_flush(millis))
    for provider in providers:
        _quietly(provider.shutdown)
    return True


def _bounded(work: Callable[[], bool], timeout_s: float) -> bool:
    """Run ``work`` in a daemon thread; give up waiting after ``timeout_s``.

    A collector that accepts connections and never answers can hold an export for the
    exporter's whole timeout; the caller must not wait for it.
    """
    outcome: list[bool] = []
    worker = threading.Thread(target=lambda: outcome.append(work()), name="telemetry-shutdown", daemon=True)
    worker.start()
    worker.join(timeout_s)
    return bool(outcome and outcome[0])


# --------------------------------------------------------------------- building


def _resource(settings: Settings) -> Resource:
    attributes: dict[str, Any] = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": sdk_version,
        "host.name": socket.gethostname(),
        "process.pid": os.getpid(),
        "service.instance.id": _INSTANCE_ID,
    }
    attributes.update(settings.resource_attributes)
    attributes["service.name"] = settings.service_name
    attributes["service.version"] = settings.service_version
    attributes["deployment.environment.name"] = settings.environment
    return Resource(attributes)


def _refresh_resource_after_fork() -> None:
    """A forked worker is its own instance: a new ``process.pid`` and ``service.instance.id``.

    Every provider, reader and exporter of a setup holds the one ``Resource`` object
    ``_build`` made, so updating its attributes in place reaches all of them (no lock is
    taken: another thread may have held one at the moment of the fork).
    """
    global _INSTANCE_ID
    _INSTANCE_ID = str(uuid.uuid4())
    telemetry = _current
    if telemetry is None or telemetry.resource is None:
        return
    fresh: dict[str, Any] = {"process.pid": os.getpid()}
    if "service.instance.id" not in telemetry.settings.resource_attributes:  # one the user chose stays
        fresh["service.instance.id"] = _INSTANCE_ID
    attributes = {**telemetry.resource.attributes, **fresh}
    telemetry.resource._attributes = BoundedAttributes(attributes=attributes, immutable=True)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_refresh_resource_after_fork)


def _signal_url(settings: Settings, signal: str) -> str:
    """gRPC takes the bare endpoint; HTTP needs the per-signal path."""
    endpoint = settings.otlp_endpoint or ""
    if settings.otlp_protocol == "grpc":
        return endpoint
    return f"{endpoint}/v1/{signal}"


def _exporters(settings: Settings) -> tuple[Any, Any, Any]:
    """(span, metric, log) OTLP exporters for the configured protocol."""
    common: dict[str, Any] = {"headers": dict(settings.otlp_headers), "timeout": settings.otlp_timeout_s}
    if settings.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        common["insecure"] = (settings.otlp_endpoint or "").startswith("http://")
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter  # type: ignore[assignment]
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[assignment]
            OTLPMetricExporter,
        )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
            OTLPSpanExporter,
        )
    return (
        OTLPSpanExporter(endpoint=_signal_url(settings, "traces"), **common),
        OTLPMetricExporter(endpoint=_signal_url(settings, "metrics"), **common),
        OTLPLogExporter(endpoint=_signal_url(settings, "logs"), **common),
    )


def _views() -> list[View]:
    buckets = ExplicitBucketHistogramAggregation(boundaries=SECONDS_BUCKETS)
    return [
        View(instrument_type=Histogram, instrument_unit="s", meter_name=name, aggregation=buckets)
        for name in OUR_METERS
    ]


def _build(settings: Settings) -> Telemetry:
    resource = _resource(settings)
    # shutdown_on_exit=False: our own atexit shutdown() is bounded; the SDK's hooks join
    # export threads that a hanging collector holds for a whole export timeout or more.
    # Sampler: OTEL_TRACES_SAMPLER(_ARG), parent-based by default.
    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    bridge = PrometheusBridge(resource, multiprocess_dir())
    readers: list[MetricReader] = [bridge]
    exporters: tuple[Any, ...] = ()
    if settings.exports_over_network:
        exporters = span_exporter, metric_exporter, log_exporter = _exporters(settings)
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
        readers.append(
            PeriodicExportingMetricReader(
                WithPreaggregated(metric_exporter, resource),
                export_interval_millis=settings.metric_export_interval_ms,
            )
        )
    meter_provider = MeterProvider(
        resource=resource, metric_readers=readers, views=_views(), shutdown_on_exit=False
    )
    reset_all()  # a new meter provider starts every histogram from zero, ours too
    return Telemetry(
        settings=settings,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
        resource=resource,
        prometheus_bridge=bridge,
        _exporters=exporters,
    )


def _disabled(settings: Settings) -> Telemetry:
    from opentelemetry._logs import NoOpLoggerProvider

    return Telemetry(
        settings=settings,
        tracer_provider=trace.NoOpTracerProvider(),
        meter_provider=metrics.NoOpMeterProvider(),
        logger_provider=NoOpLoggerProvider(),
    )


# ------------------------------------------------------------------ global state

_lock = threading.RLock()
_current: Telemetry | None = None
_tracer_provider = SwitchableTracerProvider()
_meter_provider = SwitchableMeterProvider()
_globals_installed = False
_atexit_registered = False


def _install_globals() -> None:
    """Install the switchable providers as OTel's globals, once per process."""
    global _globals_installed
    if _globals_installed:
        return
    _globals_installed = True
    trace.set_tracer_provider(_tracer_provider)
    metrics.set_meter_provider(_meter_provider)
    if trace.get_tracer_provider() is not _tracer_provider:
        _log.warning(
            "another OpenTelemetry tracer provider was set before telemetry_infra.configure(); "
            "spans from tracers taken from the global provider will not reach our exporters"
        )


def _attach_logging(telemetry: Telemetry, console: bool) -> None:
    from telemetry_infra import logs

    settings = telemetry.settings
    logs.setup_logging(
        log_level=settings.log_level,
        log_dir=settings.log_dir,
        environment=settings.environment,
        console=console,
    )
    if settings.capture_uncaught_exceptions:
        logs.install_exception_hooks()
    else:
        logs.uninstall_exception_hooks()
    if settings.exports_over_network:
        handler = logs.OTLPLogHandler(telemetry.logger_provider)
        logging.getLogger().addHandler(handler)
        telemetry._log_handler = handler


def _instrument_redis(enabled: bool) -> None:
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    instrumentor = RedisInstrumentor()
    if enabled and not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=_tracer_provider)
    elif not enabled and instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


def configure(
    service_name: str | None = None,
    *,
    otlp_endpoint: str | None = None,
    otlp_protocol: str | None = None,
    environment: str | None = None,
    log_level: str | int | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    prometheus_port: int | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    service_version: str | None = None,
    otlp_headers: Mapping[str, str] | str | None = None,
    otlp_timeout_s: float | None = None,
    metric_export_interval_ms: int | None = None,
    prometheus_host: str | None = None,
    sdk_disabled: bool | None = None,
    instrument_redis: bool = True,
    capture_uncaught_exceptions: bool = True,
    setup_logs: bool = True,
    console_logs: bool = True,
) -> Telemetry:
    """Set up traces, metrics and logs for this process; replace any earlier setup.

    Every argument falls back to its environment variable (``OTEL_SERVICE_NAME``,
    ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_PROTOCOL``, ``ENVIRONMENT``,
    ``LOG_LEVEL``, ``LOG_DIR``, ...), then to a default. With no OTLP endpoint
    nothing is sent over the network and everything else works. Raises
    ``ValueError`` naming the argument or variable when a value is malformed.

    ``setup_logs=False`` leaves the logging configuration alone (no console or file
    handlers, no OTLP log export); ``console_logs=False`` keeps the files and OTLP
    export but prints nothing to the console.
    """
    settings = Settings.resolve(
        service_name,
        service_version=service_version,
        environment=environment,
        log_level=log_level,
        log_dir=log_dir,
        otlp_endpoint=otlp_endpoint,
        otlp_protocol=otlp_protocol,
        otlp_headers=otlp_headers,
        otlp_timeout_s=otlp_timeout_s,
        resource_attributes=resource_attributes,
        sdk_disabled=sdk_disabled,
        metric_export_interval_ms=metric_export_interval_ms,
        prometheus_port=prometheus_port,
        prometheus_host=prometheus_host,
        instrument_redis=instrument_redis,
        capture_uncaught_exceptions=capture_uncaught_exceptions,
    )
    global _current, _atexit_registered
    with _lock:
        previous = _current
        telemetry = _disabled(settings) if settings.sdk_disabled else _build(settings)
        if previous is not None:
            previous._release_process_hooks()  # its port and root handler, before ours take them
        if not settings.sdk_disabled:
            _install_globals()
        _tracer_provider.switch(telemetry.tracer_provider)
        _meter_provider.switch(telemetry.meter_provider)
        if not settings.sdk_disabled:
            _instrument_redis(settings.instrument_redis)
        if settings.prometheus_port is not None and not settings.sdk_disabled:
            _serve(telemetry)
        if setup_logs:
            _attach_logging(telemetry, console_logs)
        _current = telemetry
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True
    if previous is not None:
        previous.shutdown(timeout_s=5.0)
    return telemetry


def _serve(telemetry: Telemetry) -> None:
    settings = telemetry.settings
    assert telemetry.prometheus_bridge is not None and settings.prometheus_port is not None
    telemetry._stop_server = serve_metrics(
        telemetry.prometheus_bridge, settings.prometheus_port, settings.prometheus_host
    )
    telemetry.metrics_url = f"http://{settings.prometheus_host}:{settings.prometheus_port}/metrics"


def get_telemetry() -> Telemetry | None:
    """The setup made by the last ``configure()``, or ``None``."""
    return _current


def shutdown(timeout_s: float = 5.0) -> bool:
    """Flush and shut down what ``configure()`` set up; returns within ``timeout_s``.

    Safe to call twice, and when ``configure()`` was never called. After it, tracers
    and meters keep working as no-ops until the next ``configure()``.
    """
    global _current
    with _lock:
        telemetry, _current = _current, None
        if telemetry is None:
            return True
        _tracer_provider.switch(trace.NoOpTracerProvider())
        _meter_provider.switch(metrics.NoOpMeterProvider())
    return telemetry.shutdown(timeout_s=timeout_s)
