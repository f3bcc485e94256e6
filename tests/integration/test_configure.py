"""configure() / shutdown() checked on the wire, through the in-process OTLP receiver."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
from opentelemetry import metrics, trace

import telemetry_infra as ti
from telemetry_infra.otel.setup import SECONDS_BUCKETS
from telemetry_infra.settings import Settings
from telemetry_infra.testing import OTLPReceiver, free_port

PROTOCOLS = ["grpc", "http/protobuf"]

# Taken once at import, as user code does: they must follow every reconfigure.
tracer = trace.get_tracer("tests.configure")
meter = metrics.get_meter("telemetry_infra")
requests_counter = meter.create_counter("test.requests")
duration = meter.create_histogram("test.duration", unit="s")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("OTEL_")]:
        monkeypatch.delenv(name, raising=False)


def _emit(name: str) -> str:
    with tracer.start_as_current_span(name) as span:
        requests_counter.add(1, {"route": name})
        duration.record(0.0042, {"route": name})
        logging.getLogger("api.test").warning("record from %s", name, extra={"order_id": 42})
        return format(span.get_span_context().trace_id, "032x")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_span_metric_and_log_arrive_with_service_name(
    protocol: str, otlp_receiver: OTLPReceiver, tmp_path: Path
) -> None:
    service = f"svc-{protocol.replace('/', '-')}"
    telemetry = ti.configure(
        service, otlp_endpoint=otlp_receiver.endpoint(protocol), otlp_protocol=protocol, log_dir=tmp_path
    )
    trace_id = _emit("checkout")
    assert telemetry.force_flush(timeout_s=5)

    transport = "grpc" if protocol == "grpc" else "http"
    (span,) = otlp_receiver.wait_for_spans(lambda s: s.name == "checkout")
    assert (span.trace_id, span.transport, span.kind) == (trace_id, transport, "INTERNAL")
    assert span.resource["service.name"] == service
    for key in ("service.version", "deployment.environment.name", "host.name", "process.pid"):
        assert key in span.resource

    (point,) = otlp_receiver.wait_for_metric_points(lambda p: p.name == "test.requests")
    assert point.value == 1 and point.attributes == {"route": "checkout"}
    assert point.resource["service.name"] == service

    (log,) = otlp_receiver.wait_for_logs(lambda r: r.body == "record from checkout")
    assert log.trace_id == trace_id and log.severity_text == "WARN"
    assert log.attributes["order_id"] == 42
    assert log.resource["service.name"] == service


def test_seconds_histograms_get_sub_millisecond_buckets(otlp_receiver: OTLPReceiver, tmp_path: Path) -> None:
    ti.configure("buckets", otlp_endpoint=otlp_receiver.grpc_endpoint, log_dir=tmp_path, setup_logs=False)
    trace_id = _emit("bucketed")
    ti.get_telemetry().force_flush()
    (point,) = otlp_receiver.wait_for_metric_points(lambda p: p.name == "test.duration")
    assert tuple(point.explicit_bounds) == SECONDS_BUCKETS
    assert point.count == 1 and point.bucket_counts[SECONDS_BUCKETS.index(0.005)] == 1
    assert point.exemplars and point.exemplars[0]["trace_id"] == trace_id


def test_no_endpoint_exports_nothing_and_everything_works(
    otlp_receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # An exporter built by the SDK with its defaults would send to localhost:4317/4318.
    telemetry = ti.configure("embedded", log_dir=tmp_path)
    _emit("local-only")
    assert (tmp_path / "api.log").read_text().count("record from local-only") == 1
    assert telemetry.force_flush(timeout_s=2)
    assert "test_requests_total" in telemetry.prometheus_text()
    time.sleep(0.2)
    assert otlp_receiver.requests == 0
    started = time.monotonic()
    assert ti.shutdown(timeout_s=2)
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_collector_down_does_not_slow_calls_and_shutdown_is_bounded(protocol: str, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    ti.configure("down", otlp_endpoint=dead, otlp_protocol=protocol, log_dir=tmp_path, setup_logs=False)
    started = time.monotonic()
    for index in range(2000):
        _emit(f"op-{index % 10}")
    assert time.monotonic() - started < 5, "2,000 traced calls must not wait on the dead collector"
    started = time.monotonic()
    ti.shutdown(timeout_s=2)
    assert time.monotonic() - started < 3


def test_silent_collector_shutdown_is_bounded(silent_collector: str, tmp_path: Path) -> None:
    ti.configure("silent", otlp_endpoint=silent_collector, log_dir=tmp_path, setup_logs=False)
    for index in range(100):
        _emit(f"silent-{index}")
    started = time.monotonic()
    ti.shutdown(timeout_s=2)
    assert time.monotonic() - started < 3


def test_reconfiguring_exports_each_record_once(otlp_receiver: OTLPReceiver, tmp_path: Path) -> None:
    for round_ in range(3):
        ti.configure(f"round-{round_}", otlp_endpoint=otlp_receiver.grpc_endpoint, log_dir=tmp_path)
    _emit("once")
    ti.get_telemetry().force_flush()
    spans = otlp_receiver.wait_for_spans(lambda s: s.name == "once")
    logs = otlp_receiver.wait_for_logs(lambda r: r.body == "record from once")
    points = otlp_receiver.wait_for_metric_points(lambda p: p.name == "test.requests")
    time.sleep(0.3)  # anything duplicated would have arrived by now
    assert len(otlp_receiver.wait_for_spans(lambda s: s.name == "once")) == len(spans) == 1
    assert len(logs) == 1 and len(points) == 1
    assert spans[0].resource["service.name"] == "round-2"
    ours = [h for h in logging.getLogger().handlers if type(h).__name__ == "OTLPLogHandler"]
    assert len(ours) == 1


def test_environment_only_configuration(
    otlp_receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "env-service")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.http_endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=payments,service.version=2.0.1")
    monkeypatch.setenv("LOG_DIR", str(tmp_path))
    ti.configure()
    _emit("from-env")
    ti.get_telemetry().force_flush()
    (span,) = otlp_receiver.wait_for_spans(lambda s: s.name == "from-env")
    assert span.transport == "http"
    assert span.resource["service.name"] == "env-service"
    assert span.resource["team"] == "payments"
    assert span.resource["service.version"] == "2.0.1"


def test_sampler_comes_from_the_environment(
    otlp_receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    ti.configure("sampled-out", otlp_endpoint=otlp_receiver.grpc_endpoint, log_dir=tmp_path, setup_logs=False)
    _emit("dropped")
    ti.get_telemetry().force_flush()
    otlp_receiver.wait_for_metric_points(lambda p: p.name == "test.requests")
    assert not [s for s in otlp_receiver.spans() if s.name == "dropped"]


def test_sdk_disabled_installs_nothing(
    otlp_receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    telemetry = ti.configure("off", otlp_endpoint=otlp_receiver.grpc_endpoint, log_dir=tmp_path)
    with tracer.start_as_current_span("nothing") as span:
        assert not span.is_recording()
    requests_counter.add(1)
    assert telemetry.prometheus_text() == ""
    assert telemetry.force_flush()
    time.sleep(0.2)
    assert otlp_receiver.requests == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"otlp_protocol": "udp"}, "otlp_protocol"),
        ({"otlp_endpoint": "collector:4317"}, "otlp_endpoint"),
        ({"resource_attributes": "team"}, "resource_attributes"),
        ({"log_level": "chatty"}, "log_level"),
    ],
)
def test_bad_configuration_raises_before_changing_anything(
    kwargs: dict, message: str, tmp_path: Path
) -> None:
    before = ti.configure("kept", log_dir=tmp_path, setup_logs=False)
    with pytest.raises(ValueError, match=message):
        ti.configure("broken", log_dir=tmp_path, setup_logs=False, **kwargs)
    assert ti.get_telemetry() is before


@pytest.mark.parametrize("call", [ti.configure, Settings.resolve])
def test_an_unknown_keyword_is_a_type_error_naming_it(call, tmp_path: Path) -> None:
    before = ti.configure("kept", log_dir=tmp_path, setup_logs=False)
    with pytest.raises(TypeError, match="unexpected keyword argument 'otlp_endpont'"):
        call("broken", otlp_endpont="http://127.0.0.1:4317")
    assert ti.get_telemetry() is before
