"""Our OTLP encoders on the wire: through the SDK's exporters, to the receiver, on both protocols."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from grpc import Compression as GrpcCompression
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

import telemetry_infra as ti
from telemetry_infra.logs import OTLPLogHandler
from telemetry_infra.otel.otlp_wire.exporters import FastLogExporter, FastSpanExporter
from telemetry_infra.settings import Settings
from telemetry_infra.testing import OTLPReceiver

PROTOCOLS = ("grpc", "http/protobuf")


def span_exporter(receiver: OTLPReceiver, protocol: str, **options) -> object:
    if protocol == "grpc":
        return GrpcSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True, **options)
    return HttpSpanExporter(endpoint=f"{receiver.http_endpoint}/v1/traces", **options)


def log_exporter(receiver: OTLPReceiver, protocol: str, **options) -> object:
    if protocol == "grpc":
        return GrpcLogExporter(endpoint=receiver.grpc_endpoint, insecure=True, **options)
    return HttpLogExporter(endpoint=f"{receiver.http_endpoint}/v1/logs", **options)


def gzip(protocol: str) -> object:
    return GrpcCompression.Gzip if protocol == "grpc" else HttpCompression.Gzip


def finished_spans() -> list[ReadableSpan]:
    """A request's spans: SERVER with a child, attributes of every type, an event, a link, an error."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "fast", "process.pid": 7}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.fast", "1.2", schema_url="https://opentelemetry.io/schemas/1.26.0")
    with tracer.start_as_current_span("GET /items", kind=SpanKind.SERVER) as server:
        server.set_attributes({"http.route": "/items", "http.response.status_code": 200, "ok": True})
        linked = server.get_span_context()
        with tracer.start_as_current_span("cache.get", links=[Link(linked, {"why": "retry"})]) as child:
            child.set_attributes({"cache.hit": False, "cache.ttl": 1.5, "tags": ("a", "b"), "sizes": [1, 2]})
            child.add_event("miss", {"cache.key": "user:42"})
            child.set_status(Status(StatusCode.ERROR, "redis down"))
    return list(memory.get_finished_spans())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_our_spans_arrive_as_the_sdks_do(protocol):
    """The same spans, once through the SDK's encoder and once through ours: the same on the wire."""
    spans = finished_spans()
    with OTLPReceiver() as receiver:
        stock = span_exporter(receiver, protocol, compression=gzip(protocol))
        assert stock.export(spans) is SpanExportResult.SUCCESS
        expected = receiver.wait_for_spans(count=2)
        receiver.clear()

        fast = FastSpanExporter.wrap(span_exporter(receiver, protocol, compression=gzip(protocol)))
        assert isinstance(fast, FastSpanExporter)
        assert fast.export(spans) is SpanExportResult.SUCCESS
        assert receiver.wait_for_spans(count=2) == expected
        assert receiver.requests == 1 and fast.fast
        fast.shutdown()
        stock.shutdown()


def emit_records(handler: logging.Handler, tracer: trace.Tracer) -> None:
    logger = logging.getLogger("tests.fast.records")
    made = []
    with tracer.start_as_current_span("request"):
        for message, extra in (("first %s", {"duration": 0.5, "items": [1, 2]}), ("second %s", {"ok": True})):
            record = logger.makeRecord(logger.name, logging.WARNING, __file__, 10, message, ("x",), None)
            record.__dict__.update(extra)
            made.append(record)
            handler.handle(record)
    try:
        raise ValueError("bad")
    except ValueError:
        import sys

        record = logger.makeRecord(logger.name, logging.ERROR, __file__, 20, "failed", (), sys.exc_info())
        handler.handle(record)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_handlers_records_arrive_as_through_the_sdk(protocol):
    """The handler encoding its queue itself sends what it sends through the SDK's log records."""
    resource = Resource({"service.name": "fast"})
    tracer = TracerProvider(resource=resource).get_tracer("tests")
    with OTLPReceiver() as receiver:
        provider = LoggerProvider(resource=resource)
        provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter(receiver, protocol)))
        stock = OTLPLogHandler(provider)
        emit_records(stock, tracer)
        stock.close()
        expected = receiver.wait_for_logs(count=3)
        receiver.clear()

        exporter = FastLogExporter.wrap(log_exporter(receiver, protocol), resource)
        assert exporter is not None
        fast = OTLPLogHandler(LoggerProvider(resource=resource), exporter=exporter)  # its provider is unused
        emit_records(fast, tracer)
        fast.close()
        received = receiver.wait_for_logs(count=3)
        assert len(received) == 3 and receiver.requests == 1 and exporter.fast and fast.dropped == 0

        def comparable(records):  # ids differ between the two runs: which records share the first's trace
            return [
                (r.body, r.severity_number, r.attributes, r.scope, r.trace_id == records[0].trace_id)
                for r in records
            ]

        assert comparable(received) == comparable(expected)
        assert [bool(r.trace_id) for r in received] == [True, True, False]
        exporter.shutdown()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_collector_back_from_an_outage_gets_the_batch_through_the_sdks_retries(protocol):
    """Retries, backoff and (gRPC) the reconnect on UNAVAILABLE are the SDK's, and work with our bytes."""
    spans = finished_spans()
    with OTLPReceiver() as receiver:
        receiver.unavailable = True
        fast = FastSpanExporter.wrap(span_exporter(receiver, protocol, timeout=10))
        threading.Timer(0.3, lambda: setattr(receiver, "unavailable", False)).start()
        started = time.monotonic()
        assert fast.export(spans) is SpanExportResult.SUCCESS
        assert time.monotonic() - started >= 0.3  # it was refused first, then retried
        assert len(receiver.wait_for_spans(count=2)) == 2 and fast.fast
        fast.shutdown()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_records_the_collector_refuses_are_counted_as_dropped(protocol):
    with OTLPReceiver() as receiver:
        receiver.unavailable = True
        exporter = FastLogExporter.wrap(log_exporter(receiver, protocol, timeout=0.5), Resource({}))
        handler = OTLPLogHandler(LoggerProvider(), exporter=exporter)
        emit_records(handler, TracerProvider().get_tracer("tests"))
        handler.close(timeout_s=10)
        assert handler.dropped == 3
        exporter.shutdown()


class _UpgradedStub:
    """A future SDK's stub: the method is no longer one plain unary call."""

    def __init__(self, channel):
        self.Export = channel.stream_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")


def test_an_sdk_whose_internals_differ_gets_its_own_path_with_one_warning(caplog, monkeypatch):
    from telemetry_infra.otel.otlp_wire import transport

    monkeypatch.setattr(transport, "_warned", False)  # as in a fresh process
    with OTLPReceiver() as receiver:
        exporter = GrpcSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True)
        exporter._stub = _UpgradedStub
        with caplog.at_level(logging.WARNING, logger="telemetry_infra.otel.otlp_wire"):
            wrapped = FastSpanExporter.wrap(exporter)
            again = GrpcSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True)
            again._stub = _UpgradedStub
            assert FastSpanExporter.wrap(again) is again
        assert wrapped is exporter
        warnings = [r for r in caplog.records if "fast OTLP export unavailable" in r.getMessage()]
        assert len(warnings) == 1


def changed_export_signature(exporter_class: type) -> type:
    """A future SDK's exporter whose ``_export`` takes another argument, consistently in its ``export``."""

    class Changed(exporter_class):
        def _export(self, data, timeout_millis):
            return super()._export(data)

        def export(self, batch):
            return self._export(batch, 10_000)

    return Changed


def test_a_send_that_fails_on_changed_internals_falls_back_without_losing_the_batch(caplog):
    spans = finished_spans()
    with OTLPReceiver() as receiver:
        fast = FastSpanExporter.wrap(
            changed_export_signature(GrpcSpanExporter)(endpoint=receiver.grpc_endpoint, insecure=True)
        )
        assert isinstance(fast, FastSpanExporter)
        with caplog.at_level(logging.WARNING, logger="telemetry_infra.otel.otlp_wire"):
            assert fast.export(spans) is SpanExportResult.SUCCESS
            assert fast.export(spans) is SpanExportResult.SUCCESS
        assert len(receiver.wait_for_spans(count=4)) == 4
        assert not fast.fast
        assert len([r for r in caplog.records if "from now on" in r.getMessage()]) == 1
        fast.shutdown()


def workload() -> None:
    tracer = trace.get_tracer("tests.fast.workload")
    log = ti.get_logger("tests.fast.workload")
    with tracer.start_as_current_span("GET /users/{id}", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("cache.get", attributes={"cache.hit": True}):
            pass
        log.info("loaded", extra={"user": 42})
        log.info("answered", extra={"status": 200})


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("how", ["argument", "environment"])
def test_configure_fast_export_and_its_stock_fallback_deliver_the_same(protocol, how, monkeypatch, tmp_path):
    def run(fast: bool) -> tuple[list, list, bool]:
        with OTLPReceiver() as receiver:
            if how == "environment":
                monkeypatch.setenv("TELEMETRY_FAST_EXPORT", "true" if fast else "false")
            telemetry = ti.configure(
                service_name="fast-configure",
                otlp_endpoint=receiver.endpoint(protocol),
                otlp_protocol=protocol,
                log_dir=tmp_path,
                console_logs=False,
                **({"fast_export": fast} if how == "argument" else {}),
            )
            for _ in range(3):
                workload()
            assert telemetry.force_flush(10)
            spans = receiver.wait_for_spans(count=6)
            records = receiver.wait_for_logs(lambda r: r.scope == "tests.fast.workload", count=6)
            in_use = telemetry.fast_export
            ti.shutdown()
            spans = sorted((s.name, s.kind, s.attributes, s.scope, bool(s.parent_span_id)) for s in spans)
            records = sorted((r.body, r.severity_text, r.attributes["code.function.name"]) for r in records)
            return spans, records, in_use

    fast_spans, fast_records, fast_in_use = run(True)
    stock_spans, stock_records, stock_in_use = run(False)
    assert (fast_in_use, stock_in_use) == (True, False)
    assert fast_spans == stock_spans and fast_records == stock_records
    assert len(fast_spans) == 6 and len(fast_records) == 6


def test_fast_export_setting_follows_argument_then_variable():
    assert Settings.resolve("s", env={}).fast_export is True
    assert Settings.resolve("s", env={"TELEMETRY_FAST_EXPORT": "off"}).fast_export is False
    assert Settings.resolve("s", fast_export=True, env={"TELEMETRY_FAST_EXPORT": "0"}).fast_export is True
    with pytest.raises(ValueError, match="TELEMETRY_FAST_EXPORT"):
        Settings.resolve("s", env={"TELEMETRY_FAST_EXPORT": "maybe"})
    with pytest.raises(ValueError, match="'fast_export'"):
        Settings.resolve("s", fast_export="maybe")


def test_the_handler_follows_its_exporter_back_to_the_sdk_path_without_losing_records(caplog):
    resource = Resource({"service.name": "fast"})
    with OTLPReceiver() as receiver:
        exporter = FastLogExporter.wrap(
            changed_export_signature(GrpcLogExporter)(endpoint=receiver.grpc_endpoint, insecure=True),
            resource,
        )
        assert exporter is not None
        provider = LoggerProvider(resource=resource)
        provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))  # as configure() does
        handler = OTLPLogHandler(provider, exporter=exporter)
        with caplog.at_level(logging.WARNING, logger="telemetry_infra.otel.otlp_wire"):
            emit_records(handler, TracerProvider(resource=resource).get_tracer("tests"))
            handler.flush()
            emit_records(handler, TracerProvider(resource=resource).get_tracer("tests"))
            handler.close()
        assert len(receiver.wait_for_logs(count=6)) == 6 and handler.dropped == 0
        assert not exporter.fast
        assert len([r for r in caplog.records if "from now on" in r.getMessage()]) == 1
        provider.shutdown()  # and its exporter


def test_one_export_thread_carries_spans_and_records(otlp_receiver, tmp_path):
    telemetry = ti.configure(
        service_name="one-thread",
        otlp_endpoint=otlp_receiver.grpc_endpoint,
        log_dir=tmp_path,
        console_logs=False,
    )
    try:
        for _ in range(3):
            workload()
        assert telemetry.force_flush(10)
        assert len(otlp_receiver.wait_for_spans(lambda s: s.scope == "tests.fast.workload", count=6)) == 6
        assert len(otlp_receiver.wait_for_logs(lambda r: r.scope == "tests.fast.workload", count=6)) == 6
        names = [thread.name for thread in threading.enumerate()]
        assert names.count("telemetry-otlp-export") == 1
        assert "OtelBatchSpanRecordProcessor" not in names and "telemetry-otlp-logs" not in names
    finally:
        ti.shutdown()


def test_a_full_batch_leaves_without_waiting_for_the_schedule_delay(otlp_receiver, tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "60000")
    ti.configure(service_name="full-batch", otlp_endpoint=otlp_receiver.grpc_endpoint, setup_logs=False)
    try:
        tracer = trace.get_tracer("tests.fast.batch")
        for n in range(512):
            with tracer.start_as_current_span(f"span {n}"):
                pass
        spans = otlp_receiver.wait_for_spans(lambda s: s.scope == "tests.fast.batch", count=512, timeout=10)
        assert len(spans) == 512  # no flush: the full batch woke the thread
    finally:
        ti.shutdown()


@pytest.fixture
def without_pytest_log_capture():
    """The root logger as in a service: pytest's capture handlers slow every record enough
    that an export thread keeps up with any stream."""
    root = logging.getLogger()
    theirs = [handler for handler in root.handlers if type(handler).__module__.startswith("_pytest")]
    for handler in theirs:
        root.removeHandler(handler)
    yield
    for handler in theirs:
        root.addHandler(handler)


@pytest.mark.usefixtures("without_pytest_log_capture")
def test_batches_leave_while_spans_and_records_keep_coming(otlp_receiver, tmp_path):
    """Under a stream that never lets the queues empty, full batches leave as they fill: the
    thread used to keep taking until every queue was empty, sending nothing meanwhile (and
    holding all of it in memory)."""
    telemetry = ti.configure(
        service_name="stream", otlp_endpoint=otlp_receiver.grpc_endpoint, log_dir=tmp_path, console_logs=False
    )
    tracer = trace.get_tracer("tests.fast.stream")
    log = logging.getLogger("tests.fast.stream")
    try:
        started, made = time.monotonic(), 0
        while time.monotonic() - started < 3:  # a request: a span with a child, two records
            with tracer.start_as_current_span("request"):
                with tracer.start_as_current_span("cache.get"):
                    pass
                log.info("cache lookup", extra={"key": made})
                log.info("request handled")
            made += 1
        during = len([s for s in otlp_receiver.spans() if s.scope == "tests.fast.stream"])
        assert during >= min(2 * made, 4096) * 0.5, f"{during} of {2 * made} spans left during the stream"
        # (this receiver decodes on the producer's own GIL: at full speed some overflow is expected)
        assert telemetry.force_flush(20)
        records = len([r for r in otlp_receiver.logs() if r.scope == "tests.fast.stream"])
        assert records + telemetry._log_handler.dropped == 2 * made  # each sent, or counted
    finally:
        ti.shutdown()
