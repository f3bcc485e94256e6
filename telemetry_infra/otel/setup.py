"""``configure()`` and ``shutdown()``: resource, providers, exporters, readers.

OTel's global providers can be set once per process, so the first ``configure()``
installs switchable providers (see :mod:`telemetry_infra.otel.switchable_providers`) and
every call builds a fresh set of SDK providers behind them. The previous set is
flushed and shut down in the background within a bounded time: a second
``configure()`` never duplicates an export, and never hangs on a dead collector.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Unpack, runtime_checkable

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
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.sdk.version import __version__ as sdk_version

from telemetry_infra.otel.otlp_tls import grpc_credentials, requests_session
from telemetry_infra.otel.otlp_wire.exporters import (
    FastLogExporter,
    FastSpanExporter,
    ValidTextLogExporter,
    ValidTextSpanExporter,
)
from telemetry_infra.otel.otlp_wire.pipeline import (
    SHARED_WAKE_AT,
    SHARED_WORKER_SHARE,
    ExportThread,
    QueuedSpanProcessor,
)
from telemetry_infra.otel.preaggregated import SECONDS_BUCKETS, WithPreaggregated, reset_all
from telemetry_infra.otel.prometheus import PrometheusBridge, serve_metrics, set_current_bridge
from telemetry_infra.otel.prometheus_multiprocess import multiprocess_dir
from telemetry_infra.otel.switchable_providers import SwitchableMeterProvider, SwitchableTracerProvider
from telemetry_infra.settings import (
    SIGNALS,
    BatchSettings,
    OTLPExport,
    Settings,
    SettingsArguments,
    check_arguments,
    configuration_warnings,
)

if TYPE_CHECKING:
    pass

__all__ = ["SECONDS_BUCKETS", "Telemetry", "configure", "get_telemetry", "shutdown"]

_log = logging.getLogger(__name__)

#: Meters whose ``s`` histograms get :data:`SECONDS_BUCKETS`.
OUR_METERS = ("telemetry_infra", "telemetry_infra.cache", "telemetry_infra.logs", "telemetry_infra.asgi")

_INSTANCE_ID = str(uuid.uuid4())


@runtime_checkable
class _SdkProvider(Protocol):
    """What the SDK's tracer, meter and logger providers share (the API's no-op ones lack it)."""

    def force_flush(self, timeout_millis: int = ...) -> bool:
        """Export what is buffered; ``False`` if it did not finish in time."""
        ...

    def shutdown(self) -> None:
        """Release exporters and readers."""
        ...


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
    _fast_exporters: tuple[Any, ...] = field(default=(), repr=False)  # otlp_wire's, spans then logs
    _export_thread: ExportThread | None = field(default=None, repr=False)  # theirs, one for both
    _exporters: tuple[Any, ...] = field(default=(), repr=False)
    _closed: bool = field(default=False, repr=False)

    @property
    def enabled(self) -> bool:
        return not self.settings.sdk_disabled

    @property
    def fast_export(self) -> bool:
        """Whether spans and log records leave through our own encoders (``configure(fast_export=...)``).

        ``False`` without an endpoint, with ``fast_export=False``, or once the SDK's
        exporter internals turned out not to be the ones we know (then the SDK's path is used).
        """
        return bool(self._fast_exporters) and all(exporter.fast for exporter in self._fast_exporters)

    def prometheus_text(self, openmetrics: bool = False) -> str:
        """The current Prometheus exposition (OpenMetrics, with exemplars, if asked)."""
        if self.prometheus_bridge is None:
            return ""
        return self.prometheus_bridge.text(openmetrics=openmetrics)

    def _sdk_providers(self) -> tuple[_SdkProvider, ...]:
        """The providers to flush and shut down: tracer, meter, logger (SDK ones only)."""
        providers = (self.tracer_provider, self.meter_provider, self.logger_provider)
        return tuple(provider for provider in providers if isinstance(provider, _SdkProvider))

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
        flushes = self._sdk_providers()
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
        providers = self._sdk_providers()
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


def _flush_and_shutdown(handler: Any, providers: Sequence[_SdkProvider], timeout_s: float) -> bool:
    if handler is not None:  # its queued records reach the logger provider first
        _quietly(lambda: handler.close(timeout_s))
    millis = int(timeout_s * 1000)
    for provider in providers:
        _quietly(functools.partial(provider.force_flush, millis))
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


#: The SDK's exporter class per protocol and signal: module (imported on first use) and name.
_EXPORTER_CLASSES = {
    ("grpc", "traces"): ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "OTLPSpanExporter"),
    ("grpc", "metrics"): ("opentelemetry.exporter.otlp.proto.grpc.metric_exporter", "OTLPMetricExporter"),
    ("grpc", "logs"): ("opentelemetry.exporter.otlp.proto.grpc._log_exporter", "OTLPLogExporter"),
    ("http", "traces"): ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "OTLPSpanExporter"),
    ("http", "metrics"): ("opentelemetry.exporter.otlp.proto.http.metric_exporter", "OTLPMetricExporter"),
    ("http", "logs"): ("opentelemetry.exporter.otlp.proto.http._log_exporter", "OTLPLogExporter"),
}


def _exporter_class(protocol: str, signal: str) -> Any:
    module, name = _EXPORTER_CLASSES[(protocol, signal)]
    return getattr(importlib.import_module(module), name)


def _grpc_exporter(export: OTLPExport) -> Any:
    import grpc

    compression = {"gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}
    return _exporter_class("grpc", export.signal)(
        endpoint=export.endpoint,
        insecure=not export.tls,
        credentials=grpc_credentials(export) if export.tls else None,
        headers=dict(export.headers),
        timeout=export.timeout_s,
        compression=compression.get(export.compression, grpc.Compression.NoCompression),
    )


def _http_exporter(export: OTLPExport) -> Any:
    from opentelemetry.exporter.otlp.proto.http import Compression

    compression = {"gzip": Compression.Gzip, "deflate": Compression.Deflate}
    return _exporter_class("http", export.signal)(
        endpoint=export.endpoint,
        session=requests_session(export) if export.certificate else None,
        certificate_file=export.certificate,
        client_key_file=export.client_key,
        client_certificate_file=export.client_certificate,
        headers=dict(export.headers),
        timeout=export.timeout_s,
        compression=compression.get(export.compression, Compression.NoCompression),
    )


def otlp_exporter(export: OTLPExport) -> Any:
    """The SDK's OTLP exporter for one signal, configured from its resolved settings.

    Everything is passed explicitly, so the SDK's own reading of the environment (which
    takes ``OTEL_EXPORTER_OTLP_TIMEOUT`` in seconds, not the spec's milliseconds) never
    applies.
    """
    return _grpc_exporter(export) if export.protocol == "grpc" else _http_exporter(export)


def _exporters(settings: Settings) -> tuple[Any, Any, Any]:
    """(span, metric, log) OTLP exporters; ``None`` for a signal not exported over OTLP."""
    built = [otlp_exporter(settings.otlp[signal]) if signal in settings.otlp else None for signal in SIGNALS]
    return built[0], built[1], built[2]


def _fast_exporters(
    settings: Settings, span_exporter: Any, log_exporter: Any, resource: Resource
) -> tuple[Any, ...]:
    """Our encoders in front of the OTLP span and log exporters, where their SDK is one we know."""
    if not settings.fast_export:
        return ()
    fast: list[Any] = []
    if span_exporter is not None:
        wrapped = FastSpanExporter.wrap(span_exporter)
        if wrapped is not span_exporter:
            fast.append(wrapped)
    if log_exporter is not None and (fast_logs := FastLogExporter.wrap(log_exporter, resource)) is not None:
        fast.append(fast_logs)
    return tuple(fast)


def _console_exporters(settings: Settings) -> tuple[Any, Any, Any]:
    """(span, metric, log) console exporters for the signals whose ``OTEL_*_EXPORTER`` has ``console``."""
    from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    def wanted(signal: str, factory: Callable[[], Any]) -> Any:
        return factory() if settings.exports(signal, "console") else None

    return (
        wanted("traces", ConsoleSpanExporter),
        wanted("metrics", ConsoleMetricExporter),
        wanted("logs", ConsoleLogRecordExporter),
    )


def _sampler(settings: Settings) -> Sampler:
    """OTEL_TRACES_SAMPLER(_ARG), validated by Settings; parent-based, always on by default."""
    from opentelemetry.sdk.trace import sampling

    fixed = {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "parentbased_always_on": sampling.DEFAULT_ON,
        "parentbased_always_off": sampling.DEFAULT_OFF,
    }
    if settings.sampler in fixed:
        return fixed[settings.sampler]
    ratio = settings.sampler_arg if settings.sampler_arg is not None else 1.0
    if settings.sampler == "traceidratio":
        return sampling.TraceIdRatioBased(ratio)
    return sampling.ParentBasedTraceIdRatio(ratio)


def _export_thread(settings: Settings, fast: Sequence[Any]) -> ExportThread | None:
    """The one thread exporting spans and log records on the fast path.

    It wakes when a batch waits, else at the shorter schedule delay of the two signals.
    """
    delays = [
        (
            settings.span_batch if isinstance(exporter, FastSpanExporter) else settings.log_batch
        ).schedule_delay_ms
        for exporter in fast
    ]
    if not delays:
        return None
    return ExportThread("telemetry-otlp-export", min(delays) / 1000, SHARED_WORKER_SHARE, SHARED_WAKE_AT)


def _span_processor(exporter: Any, batch: BatchSettings, thread: ExportThread | None) -> Any:
    """Ours on the export thread for our encoders; the SDK's batch processor otherwise."""
    if thread is not None and isinstance(exporter, FastSpanExporter):
        return QueuedSpanProcessor(
            exporter,
            thread,
            max_queue_size=batch.max_queue_size,
            max_export_batch_size=batch.max_export_batch_size,
            export_timeout_s=batch.export_timeout_ms / 1000,
        )
    return BatchSpanProcessor(exporter, **_batch_options(batch))


def _batch_options(batch: BatchSettings) -> dict[str, Any]:
    return {
        "schedule_delay_millis": batch.schedule_delay_ms,
        "export_timeout_millis": batch.export_timeout_ms,
        "max_queue_size": batch.max_queue_size,
        "max_export_batch_size": batch.max_export_batch_size,
    }


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
    tracer_provider = TracerProvider(resource=resource, sampler=_sampler(settings), shutdown_on_exit=False)
    logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    bridge = PrometheusBridge(resource, multiprocess_dir())
    readers: list[MetricReader] = [bridge]
    exporters: list[Any] = []
    span_otlp, metric_otlp, log_otlp = _exporters(settings)
    fast = _fast_exporters(settings, span_otlp, log_otlp, resource)
    export_thread = _export_thread(settings, fast)
    for fast_exporter in fast:  # our encoders, through the same SDK exporters (see otlp_wire)
        if isinstance(fast_exporter, FastSpanExporter):
            span_otlp = fast_exporter
        else:
            log_otlp = fast_exporter
    if span_otlp is not None and not isinstance(span_otlp, FastSpanExporter):
        span_otlp = ValidTextSpanExporter(span_otlp)  # alone, the SDK loses a batch to one bad string
    if log_otlp is not None and not isinstance(log_otlp, FastLogExporter):
        log_otlp = ValidTextLogExporter(log_otlp)
    for span_exporter, metric_exporter, log_exporter in (
        (span_otlp, metric_otlp, log_otlp),
        _console_exporters(settings),
    ):
        if span_exporter is not None:
            tracer_provider.add_span_processor(
                _span_processor(span_exporter, settings.span_batch, export_thread)
            )
        if log_exporter is not None:
            logger_provider.add_log_record_processor(
                BatchLogRecordProcessor(log_exporter, **_batch_options(settings.log_batch))
            )
        if metric_exporter is not None:
            readers.append(
                PeriodicExportingMetricReader(
                    WithPreaggregated(metric_exporter, resource),
                    export_interval_millis=settings.metric_export_interval_ms,
                    export_timeout_millis=settings.metric_export_timeout_ms,
                )
            )
        exporters.extend(e for e in (span_exporter, metric_exporter, log_exporter) if e is not None)
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
        _exporters=tuple(exporters),
        _fast_exporters=fast,
        _export_thread=export_thread,
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


def _install_globals() -> bool:
    """Install the switchable providers as OTel's globals, once per process.

    ``True`` the first time, when another provider had been set already (warned about
    by the caller once logging is set up, so the warning reaches the user's log).
    """
    global _globals_installed
    if _globals_installed:
        return False
    _globals_installed = True
    if _foreign_providers():
        return True
    trace.set_tracer_provider(_tracer_provider)
    metrics.set_meter_provider(_meter_provider)
    return False


def _foreign_providers() -> bool:
    """Whether something (the SDK's own configurator, usually) already set OTel's global providers."""
    tracer_provider = trace.get_tracer_provider()
    return (
        not isinstance(tracer_provider, trace.ProxyTracerProvider) and tracer_provider is not _tracer_provider
    )


def _warn_foreign_providers() -> None:
    _log.warning(
        "another OpenTelemetry tracer provider was set before telemetry_infra.configure(): spans, "
        "metrics and log records from the global providers will not reach telemetry_infra's exporters "
        "or /metrics. Under opentelemetry-instrument with opentelemetry-distro installed too, set "
        "OTEL_PYTHON_DISTRO=telemetry_infra."
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
    if settings.exports("logs", "otlp") or settings.exports("logs", "console"):
        fast_logs = next((e for e in telemetry._fast_exporters if isinstance(e, FastLogExporter)), None)
        handler = logs.OTLPLogHandler(
            telemetry.logger_provider,
            exporter=fast_logs,
            export_thread=telemetry._export_thread if fast_logs is not None else None,
        )
        logging.getLogger().addHandler(handler)
        telemetry._log_handler = handler


_warned_variables: set[str] = set()


def _warn_about_variables() -> None:
    """One warning per process for each OTEL_* variable that nothing reads or that looks mistaken."""
    for name, warning in configuration_warnings().items():
        if name not in _warned_variables:
            _warned_variables.add(name)
            _log.warning("%s", warning)


def _report_unusable_multiprocess_dir(telemetry: Telemetry) -> None:
    """PROMETHEUS_MULTIPROC_DIR that cannot be used: this worker's counts would be missing
    from the other workers' scrapes, so it is an ERROR, not a silent fallback."""
    bridge = telemetry.prometheus_bridge
    if bridge is not None and bridge.multiprocess_problem is not None:
        _log.error(
            "%s; this process's /metrics answers for itself only and the other workers' "
            "scrapes do not count it",
            bridge.multiprocess_problem,
        )


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
    setup_logs: bool = True,
    console_logs: bool = True,
    **arguments: Unpack[SettingsArguments],
) -> Telemetry:
    """Set up traces, metrics and logs for this process; replace any earlier setup.

    Every argument falls back to its environment variable (``OTEL_SERVICE_NAME``,
    ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_PROTOCOL``, ``ENVIRONMENT``,
    ``LOG_LEVEL``, ``LOG_DIR``, ...), then to a default; the per-signal
    ``OTEL_EXPORTER_OTLP_<SIGNAL>_*`` variables and ``OTEL_<SIGNAL>_EXPORTER`` are
    honoured as the OpenTelemetry spec defines them (timeouts in milliseconds). With
    no OTLP endpoint nothing is sent over the network and everything else works. Raises
    ``ValueError`` naming the argument or variable when a value is malformed, and
    ``TypeError`` naming a keyword that is no setting. The settings' keywords are typed once,
    in :class:`telemetry_infra.settings.SettingsArguments` (shared with ``Settings.resolve``):
    IDEs complete them and type checkers check them as for a written-out signature.

    ``otlp_timeout_s`` is in seconds. ``otlp_certificate`` is the PEM file of the CA
    that signed the collector's certificate (``https://`` endpoints);
    ``otlp_client_key`` and ``otlp_client_certificate`` together enable mutual TLS.
    ``traces_exporter``/``metrics_exporter``/``logs_exporter`` take ``otlp``,
    ``console``, ``none`` or a list such as ``"otlp,console"``.

    ``setup_logs=False`` leaves the logging configuration alone (no console or file
    handlers, no OTLP log export); ``console_logs=False`` keeps the files and OTLP
    export but prints nothing to the console.

    ``fast_export`` (``TELEMETRY_FAST_EXPORT``, default on) encodes spans and log
    records with our own OTLP encoders (:mod:`telemetry_infra.otel.otlp_wire`) and sends
    them through the same SDK exporters; ``False`` is the SDK's own encoding path.
    Metrics always take the SDK's path.
    """
    check_arguments(arguments, "configure()")
    settings = Settings.resolve(service_name, **arguments)
    global _current, _atexit_registered
    with _lock:
        previous = _current
        telemetry = _disabled(settings) if settings.sdk_disabled else _build(settings)
        if previous is not None:
            previous._release_process_hooks()  # its port and root handler, before ours take them
        foreign = not settings.sdk_disabled and _install_globals()
        _tracer_provider.switch(telemetry.tracer_provider)
        _meter_provider.switch(telemetry.meter_provider)
        if not settings.sdk_disabled:
            _instrument_redis(settings.instrument_redis)
        if settings.prometheus_port is not None and not settings.sdk_disabled:
            _serve(telemetry)
        if setup_logs:
            _attach_logging(telemetry, console_logs)
        _warn_about_variables()
        _report_unusable_multiprocess_dir(telemetry)
        if foreign:
            _warn_foreign_providers()
        _current = telemetry
        set_current_bridge(telemetry.prometheus_bridge)
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
        set_current_bridge(None)
        _tracer_provider.switch(trace.NoOpTracerProvider())
        _meter_provider.switch(metrics.NoOpMeterProvider())
    return telemetry.shutdown(timeout_s=timeout_s)
