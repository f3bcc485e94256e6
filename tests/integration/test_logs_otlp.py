"""Records exported as OTLP logs, checked on the wire through the receiver."""

from __future__ import annotations

import logging
import os
import time

import pytest
from opentelemetry import trace
from opentelemetry._logs import NoOpLoggerProvider

import telemetry_infra as ti
from telemetry_infra.logs import OTLPLogHandler, TraceCorrelationFilter, teardown_logging


@pytest.fixture
def exported(otlp_receiver, tmp_path):
    ti.configure(service_name="logs-otlp", otlp_endpoint=otlp_receiver.grpc_endpoint, log_dir=tmp_path)
    yield lambda message: otlp_receiver.wait_for_logs(lambda r: r.body == message, timeout=15)[0]
    teardown_logging()


def test_record_carries_native_ids_severity_body_and_extras(exported):
    tracer = trace.get_tracer("tests.logs")
    with tracer.start_as_current_span("request") as span:
        ti.get_logger("api.client").warning(
            "slow call %s", "GET", extra={"duration": 0.5, "tags": ["a", "b"], "meta": {"k": 1}}
        )
    record = exported("slow call GET")

    context = span.get_span_context()
    assert (record.trace_id, record.span_id) == (f"{context.trace_id:032x}", f"{context.span_id:016x}")
    assert (record.severity_text, record.severity_number) == ("WARN", 13)
    assert record.scope == "api.client"
    assert record.resource["service.name"] == "logs-otlp"
    assert record.attributes["duration"] == 0.5 and record.attributes["tags"] == ["a", "b"]
    assert record.attributes["meta"] == "{'k': 1}"  # maps are not attribute values: text
    assert (
        record.attributes["code.function.name"] == "test_record_carries_native_ids_severity_body_and_extras"
    )
    assert not {"trace_id", "span_id", "trace_flags"} & set(record.attributes)


def test_request_context_and_exception_become_attributes(exported):
    with ti.request_context(request_id="req-42", user_id="u-1"):
        try:
            raise ConnectionError("refused")
        except ConnectionError:
            ti.get_logger("svc").exception("upstream down")
    record = exported("upstream down")

    assert (record.severity_text, record.severity_number) == ("ERROR", 17)
    assert record.attributes["request_id"] == "req-42" and record.attributes["user_id"] == "u-1"
    assert record.attributes["exception.type"] == "ConnectionError"
    assert record.attributes["exception.message"] == "refused"
    assert "raise ConnectionError" in record.attributes["exception.stacktrace"]


def test_secrets_are_redacted_in_otlp(exported):
    ti.get_logger("svc").info("auth", extra={"api_key": "k-secret", "body": {"password": "p-secret"}})
    record = exported("auth")
    assert record.attributes["api_key"] == "[REDACTED]"
    assert "p-secret" not in record.attributes["body"] and "[REDACTED]" in record.attributes["body"]


def test_exporter_loggers_are_not_exported(exported, otlp_receiver):
    logging.getLogger("opentelemetry.exporter.otlp").warning("exporter noise")
    logging.getLogger("grpc._channel").warning("grpc noise")
    ti.get_logger("svc").info("marker")
    exported("marker")
    assert not [r for r in otlp_receiver.logs() if "noise" in str(r.body)]


def test_reconfigure_keeps_exactly_one_otlp_handler(otlp_receiver, tmp_path):
    for _ in range(2):
        ti.configure(service_name="logs-otlp", otlp_endpoint=otlp_receiver.grpc_endpoint, log_dir=tmp_path)
    try:
        handlers = [h for h in logging.getLogger().handlers if isinstance(h, OTLPLogHandler)]
        assert len(handlers) == 1
        ti.get_logger("svc").info("exported once")
        otlp_receiver.wait_for_logs(lambda r: r.body == "exported once")
        ti.get_telemetry().force_flush(timeout_s=5)
        assert len([r for r in otlp_receiver.logs() if r.body == "exported once"]) == 1
    finally:
        teardown_logging()


def test_dead_collector_never_blocks_or_raises(tmp_path):
    from telemetry_infra.testing import free_port

    ti.configure(service_name="dead", otlp_endpoint=f"http://127.0.0.1:{free_port()}", log_dir=tmp_path)
    try:
        started = time.monotonic()
        for n in range(200):
            ti.get_logger("svc").error("collector is gone %d", n)
        assert time.monotonic() - started < 5  # generous: the calling thread only enqueues
    finally:
        teardown_logging()


def test_failing_export_that_logs_neither_loops_nor_raises():
    logger = logging.getLogger("isolated.otlp")
    calls = []

    class FailingProvider:
        def get_logger(self, name):
            calls.append(name)
            logger.error("export failed")  # would re-enter the handler without the guard
            raise RuntimeError("provider exploded")

    logger.propagate = False
    handler = OTLPLogHandler(FailingProvider())
    logger.addHandler(handler)
    try:
        logger.error("still fine")  # must not raise
        handler.flush()
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert calls == ["isolated.otlp"]  # the failure logged while exporting was not re-exported


def test_records_dropped_by_a_full_queue_are_counted_in_the_metrics(tmp_path):
    telemetry = ti.configure(service_name="drops", log_dir=tmp_path, setup_logs=False)

    def dropped_total() -> float:
        text = telemetry.prometheus_text()
        lines = [line for line in text.splitlines() if line.startswith("telemetry_infra_logs_dropped_total")]
        return float(lines[0].split()[-1]) if lines else 0.0

    before = dropped_total()
    handler = OTLPLogHandler(telemetry.logger_provider, max_queue=5)
    logger = logging.getLogger("tests.drops")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for n in range(200):  # far faster than the worker's 100 ms pick-up
            logger.warning("burst %d", n)
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert handler.dropped > 0
    assert dropped_total() - before == handler.dropped


def test_a_log_storm_loses_no_record_without_counting_it(otlp_receiver, tmp_path):
    """Every record either arrives at the collector or is counted as dropped: none vanish
    in the SDK's own batch queue, which the handler's worker keeps from overflowing."""
    ti.configure(service_name="storm", otlp_endpoint=otlp_receiver.grpc_endpoint, setup_logs=False)
    handler = OTLPLogHandler(ti.get_telemetry().logger_provider)
    logger = logging.getLogger("tests.storm")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    storm = 30_000
    try:
        for n in range(storm):  # far faster than records can be exported
            logger.info("storm %d", n)
    finally:
        logger.removeHandler(handler)
        handler.close()
    ti.get_telemetry().force_flush()

    arrived = {record.body for record in otlp_receiver.logs() if record.body.startswith("storm ")}
    assert handler.dropped > 0  # the storm did overflow the handler's queue
    assert len(arrived) + handler.dropped == storm


def test_flush_hands_everything_over_without_the_workers_rests(otlp_receiver):
    ti.configure(service_name="hurry", otlp_endpoint=otlp_receiver.grpc_endpoint, setup_logs=False)
    # A 1% share would take the worker ~100x its busy time, seconds for these records.
    handler = OTLPLogHandler(ti.get_telemetry().logger_provider, worker_share=0.01)
    logger = logging.getLogger("tests.hurry")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        for n in range(3000):
            logger.info("queued %d", n)
    finally:
        logger.removeHandler(handler)
        handler.close(timeout_s=5)
    ti.get_telemetry().force_flush()
    arrived = {record.body for record in otlp_receiver.logs() if record.body.startswith("queued ")}
    assert len(arrived) + handler.dropped == 3000 and handler.dropped == 0


@pytest.mark.parametrize("arguments", [{"worker_share": 0}, {"worker_share": 1.5}, {"max_queue": 0}])
def test_bad_handler_arguments_are_refused(arguments):
    with pytest.raises(ValueError, match=next(iter(arguments))):
        OTLPLogHandler(NoOpLoggerProvider(), **arguments)


@pytest.mark.parametrize("filter_runs_first", [True, False])
def test_ids_are_attributes_only_when_set_not_when_derived(otlp_receiver, tmp_path, filter_runs_first):
    """The filter's trace-id fallback for ``request_id`` is not exported (the record has
    the native trace id); a request id from the context or from ``extra`` is, whichever
    handler sees the record first."""
    ti.configure(service_name="ids", otlp_endpoint=otlp_receiver.grpc_endpoint, setup_logs=False)
    otlp = OTLPLogHandler(ti.get_telemetry().logger_provider)
    text = logging.FileHandler(tmp_path / "ids.log")
    text.addFilter(TraceCorrelationFilter())
    logger = logging.getLogger(f"tests.ids.{filter_runs_first}")
    logger.propagate = False
    for handler in (text, otlp) if filter_runs_first else (otlp, text):
        logger.addHandler(handler)
    try:
        with trace.get_tracer("tests").start_as_current_span("request"):
            logger.warning("derived")
            logger.warning("from extra", extra={"request_id": "req-extra"})
            with ti.request_context(user_id="u-7"):
                logger.warning("from context")
    finally:
        for handler in (text, otlp):
            logger.removeHandler(handler)
            handler.close()
    ti.get_telemetry().force_flush()
    by_body = {r.body: r.attributes for r in otlp_receiver.wait_for_logs(lambda r: r.body == "from context")}
    by_body.update({r.body: r.attributes for r in otlp_receiver.logs()})

    assert "request_id" not in by_body["derived"]
    assert by_body["from extra"]["request_id"] == "req-extra"
    assert by_body["from context"]["user_id"] == "u-7" and "request_id" not in by_body["from context"]


def test_an_empty_attribute_count_limit_means_no_limit(otlp_receiver, tmp_path, monkeypatch):
    # The SDK reads OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT="" as "no limit" (None); the record
    # must still reach the collector, with every attribute.
    monkeypatch.setenv("OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT", "")
    ti.configure(service_name="logs-no-limit", otlp_endpoint=otlp_receiver.grpc_endpoint, log_dir=tmp_path)
    try:
        extras = {f"field_{index}": index for index in range(200)}
        ti.get_logger("svc").info("unlimited", extra=extras)
        (record,) = otlp_receiver.wait_for_logs(lambda r: r.body == "unlimited", timeout=15)
    finally:
        teardown_logging()
    assert {key: record.attributes[key] for key in extras} == extras


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_does_not_export_what_its_parent_had_queued(otlp_receiver, tmp_path):
    telemetry = ti.configure(
        service_name="fork-queue",
        otlp_endpoint=otlp_receiver.grpc_endpoint,
        log_dir=tmp_path,
        console_logs=False,
    )
    try:
        ti.get_logger("tests.fork.queue").warning("queued in the parent")  # not flushed before the fork
        child = os.fork()
        if child == 0:
            code = 1
            try:
                ti.get_logger("tests.fork.queue").warning("made in the child")
                code = 0 if telemetry.force_flush(5) else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert telemetry.force_flush(5)
        otlp_receiver.wait_for_logs(lambda r: r.body == "made in the child")
        otlp_receiver.wait_for_logs(lambda r: r.body == "queued in the parent")
        time.sleep(0.2)  # a duplicate from the child would have arrived with its own record
        parents = [r for r in otlp_receiver.logs() if r.body == "queued in the parent"]
        assert len(parents) == 1 and parents[0].resource["process.pid"] == os.getpid()
    finally:
        teardown_logging()
