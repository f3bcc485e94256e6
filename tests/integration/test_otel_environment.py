"""The OTel spec's environment variables, honoured as the SDK's own exporters honour them.

Each test runs a fresh interpreter configured by the environment alone (as a deployed
service is) and checks what reaches the in-process OTLP receiver.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from telemetry_infra.testing import OTLPReceiver

EMIT = """
import logging, sys, time
import telemetry_infra as ti
from opentelemetry import metrics, trace

telemetry = ti.configure("env-app", environment="production", log_dir=sys.argv[1])
with trace.get_tracer("app").start_as_current_span("work"):
    metrics.get_meter("app").create_counter("app.jobs").add(1)
    logging.getLogger("app").warning("job done")
started = time.monotonic()
flushed = telemetry.force_flush(timeout_s=8)
print(f"flushed={flushed} after={time.monotonic() - started:.2f}", flush=True)
ti.shutdown(timeout_s=2)
"""


@pytest.fixture
def run_app(run_script: Any) -> Callable[..., subprocess.CompletedProcess]:
    def run(env: dict[str, str], log_dir: Path, script: str = EMIT) -> subprocess.CompletedProcess:
        return run_script(script, env, str(log_dir))

    return run


@pytest.fixture
def second_receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as receiver:
        yield receiver


def test_per_signal_endpoints_protocols_and_exporter_selection(
    run_app: Any, otlp_receiver: OTLPReceiver, second_receiver: OTLPReceiver, tmp_path: Path
) -> None:
    env = {
        # traces: their own HTTP endpoint, used as given (no /v1/traces appended)
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{second_receiver.http_endpoint}/v1/traces",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        # metrics: the general endpoint over gRPC
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.grpc_endpoint,
        # logs: not exported
        "OTEL_LOGS_EXPORTER": "none",
    }
    result = run_app(env, tmp_path)
    assert result.returncode == 0, result.stderr
    (span,) = second_receiver.wait_for_spans(lambda s: s.name == "work")
    assert span.transport == "http"
    assert otlp_receiver.wait_for_metric_points(lambda p: p.name == "app.jobs")[0].transport == "grpc"
    assert not otlp_receiver.spans() and not second_receiver.metric_points()
    assert not otlp_receiver.logs() and not second_receiver.logs()
    assert "job done" in (tmp_path / "app.log").read_text()  # the files still get it


def test_general_http_endpoint_gets_the_signal_path(
    run_app: Any, otlp_receiver: OTLPReceiver, tmp_path: Path
) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.http_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
    }
    assert run_app(env, tmp_path).returncode == 0
    assert otlp_receiver.wait_for_spans(lambda s: s.name == "work")[0].transport == "http"
    assert otlp_receiver.wait_for_logs(lambda r: r.body == "job done")
    assert otlp_receiver.wait_for_metric_points(lambda p: p.name == "app.jobs")


def test_otlp_timeout_is_in_milliseconds(run_app: Any, silent_collector: str, tmp_path: Path) -> None:
    """OTEL_EXPORTER_OTLP_TIMEOUT=300 is 0.3 s (the spec), not 300 s (the Python SDK's reading)."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": silent_collector,
        "OTEL_EXPORTER_OTLP_TIMEOUT": "300",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
    }
    result = run_app(env, tmp_path)
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("flushed=")]
    flushed, after = (part.split("=")[1] for part in line.split())
    # the export gave up after its 0.3 s deadline; the flush finished well within its 8 s
    assert flushed == "True" and float(after) < 5, result.stdout


def test_console_exporter_prints_spans(run_app: Any, tmp_path: Path) -> None:
    result = run_app({"OTEL_TRACES_EXPORTER": "console"}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"name": "work"' in result.stdout


def test_unsupported_variables_get_one_warning_each_in_the_log(run_app: Any, tmp_path: Path) -> None:
    script = EMIT.replace(
        "telemetry = ti.configure(", 'ti.configure("first", log_dir=sys.argv[1])\ntelemetry = ti.configure('
    )
    env = {"OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "host", "OTEL_TRACE_EXPORTER": "otlp"}
    result = run_app(env, tmp_path, script)
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "app.log").read_text()
    for name in env:
        assert log.count(f"{name} is set but not supported") == 1, log
    assert "OTEL_SERVICE_NAME" not in log


def test_batch_and_sampler_variables_are_applied(
    run_app: Any, otlp_receiver: OTLPReceiver, tmp_path: Path
) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.grpc_endpoint,
        "OTEL_TRACES_SAMPLER": "traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0",
        "OTEL_BLRP_MAX_QUEUE_SIZE": "4",
        "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": "2",
    }
    assert run_app(env, tmp_path).returncode == 0
    otlp_receiver.wait_for_logs(lambda r: r.body == "job done")
    time.sleep(0.2)
    assert not otlp_receiver.spans()  # ratio 0: nothing sampled
