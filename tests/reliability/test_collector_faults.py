"""Collector faults: refused connections, a silent endpoint, answers of 503 / UNAVAILABLE.

The application must not notice: a traced and logged workload runs about as fast
as with no exporter (a generous bound here; the soak prints the exact ratio),
memory stays bounded because the export queues drop instead of growing, and
``shutdown()`` returns within its timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from opentelemetry import trace

import telemetry_infra as ti

PROTOCOLS = ("grpc", "http/protobuf")
FAULTS = ("refusing", "silent", "unavailable")
RECORDS = 800
SHUTDOWN_TIMEOUT = 1.0


def traced_and_logged(records: int, payload: str = "") -> float:
    """Seconds taken by ``records`` requests, each one span and one log record."""
    tracer = trace.get_tracer("reliability.collector")
    log = ti.get_logger("reliability.collector")
    started = time.perf_counter()
    for i in range(records):
        with tracer.start_as_current_span("request", attributes={"payload": payload}):
            log.info("handled request %d", i, extra={"payload": payload})
    return time.perf_counter() - started


@pytest.fixture
def faulty_endpoint(request, refusing_endpoint, silent_endpoint, otlp_receiver):
    """``(fault, protocol) -> endpoint`` for the three collector faults."""

    def endpoint(fault: str, protocol: str) -> str:
        if fault == "refusing":
            return refusing_endpoint
        if fault == "silent":
            return silent_endpoint
        otlp_receiver.unavailable = True
        return otlp_receiver.endpoint(protocol)

    return endpoint


def configure(tmp_path, endpoint: str | None = None, protocol: str = "grpc") -> ti.Telemetry:
    return ti.configure(
        service_name="reliability-collector",
        otlp_endpoint=endpoint,
        otlp_protocol=protocol,
        otlp_timeout_s=1.0,
        environment="production",
        log_dir=tmp_path,
        console_logs=False,
    )


def timed_runs(tmp_path, endpoint: str | None, protocol: str) -> float:
    """Best of three runs of the workload with ``configure()`` pointed at ``endpoint``."""
    configure(tmp_path, endpoint, protocol)
    traced_and_logged(200)  # warm up
    return min(traced_and_logged(RECORDS) for _ in range(3))


@pytest.mark.slow
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("fault", FAULTS)
def test_application_does_not_wait_for_a_broken_collector(
    tmp_path, figures, otlp_receiver, faulty_endpoint, fault, protocol
):
    no_exporter = timed_runs(tmp_path, None, protocol)
    healthy = timed_runs(tmp_path, otlp_receiver.endpoint(protocol), protocol)
    with_fault = timed_runs(tmp_path, faulty_endpoint(fault, protocol), protocol)
    started = time.monotonic()
    ti.shutdown(timeout_s=SHUTDOWN_TIMEOUT)
    shutdown_s = time.monotonic() - started

    figures.record(
        "collector_faults",
        f"{fault}/{protocol}",
        records=RECORDS,
        ratio_to_no_exporter=round(with_fault / no_exporter, 3),
        ratio_to_healthy_collector=round(with_fault / healthy, 3),
        healthy_to_no_exporter=round(healthy / no_exporter, 3),
        shutdown_s=round(shutdown_s, 3),
        shutdown_timeout_s=SHUTDOWN_TIMEOUT,
    )
    # Blocking on the collector would cost a timeout per batch: many times, not a fraction.
    assert with_fault / healthy < 1.75, f"requests slowed down {with_fault / healthy:.2f}x by the fault"
    assert shutdown_s < SHUTDOWN_TIMEOUT + 1.0


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
@pytest.mark.parametrize("fault", ["silent", "unavailable"])
def test_memory_stays_bounded_when_exports_fail(tmp_path, figures, faulty_endpoint, fault):
    configure(tmp_path, faulty_endpoint(fault, "grpc"))
    payload = "x" * 1024
    burst = 6000
    before = resident_bytes()
    traced_and_logged(burst, payload)
    after_first = resident_bytes()
    traced_and_logged(2 * burst, payload)
    after_third = resident_bytes()
    figures.record(
        "collector_faults",
        f"memory/{fault}",
        payload_bytes=len(payload),
        records=3 * burst,
        rss_growth_first_burst_mb=round((after_first - before) / 2**20, 1),
        rss_growth_next_two_bursts_mb=round((after_third - after_first) / 2**20, 1),
    )
    # Full queues hold at most 2048 spans + 2048 log records + 10000 records waiting in
    # the OTLP log handler, about 40 MB at this payload; keeping the 12000 records of the
    # next two bursts would take well over 60 MB.
    assert after_third - after_first < 48 * 2**20


@pytest.mark.slow
def test_dropped_spans_are_counted(tmp_path, figures, silent_endpoint, monkeypatch):
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    telemetry = configure(tmp_path, silent_endpoint)
    traced_and_logged(6000)
    exposition = telemetry.prometheus_text()
    dropped = _sample(exposition, "otel_sdk_processor_span_processed_total", error_type="queue_full")
    figures.record("collector_faults", "drops_counted", spans=6000, dropped_spans_exported=dropped)
    assert dropped and dropped > 0


EXIT_SCRIPT = """
import logging, sys, telemetry_infra as ti
ti.configure(service_name="exit", otlp_endpoint=sys.argv[1], otlp_protocol=sys.argv[2],
             log_dir=sys.argv[3], console_logs=False)
for n in range(3000):
    logging.getLogger("app").warning("record %d", n)
print("exiting", flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_process_exits_within_the_shutdown_bound_when_the_collector_hangs(
    tmp_path, figures, silent_endpoint, protocol
):
    """At exit only our bounded shutdown() runs (5 s by default): not the SDK's own exit
    hooks, nor a second wait in logging.shutdown(), which let a hanging collector keep
    the process alive for a whole export timeout or more."""
    process = subprocess.Popen(
        [sys.executable, "-c", EXIT_SCRIPT, silent_endpoint, protocol, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "exiting"
    started = time.monotonic()
    process.wait(timeout=60)
    exit_s = time.monotonic() - started
    figures.record("collector_faults", f"exit/{protocol}", exit_s=round(exit_s, 2), shutdown_timeout_s=5.0)
    assert exit_s < 5.0 + 1.5


def _sample(exposition: str, name: str, **labels: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None
