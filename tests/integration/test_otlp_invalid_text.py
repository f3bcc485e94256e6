"""Text that is not valid Unicode (a lone surrogate) never costs a batch: it is replaced and counted.

Checked on the wire (the in-process receiver, gRPC and HTTP), with our encoders
(``fast_export``) and with the SDK's, and on ``/metrics``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import telemetry_infra as ti
from telemetry_infra.otel.otlp_wire.exporters import FastSpanExporter
from telemetry_infra.testing import OTLPReceiver

PROTOCOLS = ("grpc", "http/protobuf")
LONE = "\ud800"
REPLACED = "\ufffd"
_QUIETED = (
    "telemetry_infra.otel.otlp_wire",
    "opentelemetry.exporter",
    "opentelemetry.exporter.otlp.proto.common",
)


@pytest.fixture(autouse=True)
def _export_logs_heard() -> Iterator[None]:
    """Other test modules quiet these loggers for the session; here what they say is checked."""
    loggers = [
        logging.getLogger(name) for name in ("telemetry_infra.otel.otlp_wire", "opentelemetry.exporter")
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.NOTSET)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


def _configure(receiver: OTLPReceiver, protocol: str, fast: bool, log_dir: Path) -> ti.Telemetry:
    return ti.configure(
        service_name="invalid-text",
        otlp_endpoint=receiver.endpoint(protocol),
        otlp_protocol=protocol,
        fast_export=fast,
        console_logs=False,
        log_dir=log_dir,
    )


def _sanitized_total(telemetry: ti.Telemetry, item: str) -> float:
    pattern = rf'^telemetry_infra_export_sanitized_total\{{[^}}]*item="{item}"[^}}]*\}} (\S+)$'
    found = re.search(pattern, telemetry.prometheus_text(), re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _warnings(log_dir: Path, words: str) -> list[str]:
    return [line for line in (log_dir / "app.log").read_text().splitlines() if words in line]


@pytest.mark.parametrize("fast", [True, False], ids=["fast_export", "sdk_export"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_span_named_with_a_lone_surrogate_does_not_lose_its_batch(
    otlp_receiver: OTLPReceiver, tmp_path: Path, protocol: str, fast: bool
) -> None:
    telemetry = _configure(otlp_receiver, protocol, fast, tmp_path)
    assert "telemetry_infra_export_sanitized_total{" in telemetry.prometheus_text()  # before any
    sanitized_before = _sanitized_total(telemetry, "span")
    tracer = trace.get_tracer("tests.invalid_text")
    for index in range(20):
        with tracer.start_as_current_span(f"fine {index}"):
            pass
    for _ in range(2):
        with tracer.start_as_current_span(f"bad {LONE} name") as span:
            span.set_attribute("note", f"x{LONE}")
            span.add_event(f"event {LONE}", {"why": LONE})
    assert telemetry.force_flush()

    spans = otlp_receiver.wait_for_spans(count=22)
    assert len(spans) == 22
    bad = [span for span in spans if span.name.startswith("bad")]
    assert [span.name for span in bad] == [f"bad {REPLACED} name"] * 2
    assert bad[0].attributes["note"] == f"x{REPLACED}"
    assert bad[0].events == [(f"event {REPLACED}", {"why": REPLACED})]
    assert _sanitized_total(telemetry, "span") == sanitized_before + 2
    ti.shutdown()
    assert len(_warnings(tmp_path, "not valid Unicode")) == 1  # once per kind, not per item
    assert _warnings(tmp_path, "ERROR") == []  # nothing says the batch was lost


@pytest.mark.parametrize("fast", [True, False], ids=["fast_export", "sdk_export"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_log_records_with_lone_surrogates_keep_every_attribute(
    otlp_receiver: OTLPReceiver, tmp_path: Path, protocol: str, fast: bool
) -> None:
    telemetry = _configure(otlp_receiver, protocol, fast, tmp_path)
    log = logging.getLogger("tests.invalid_text")
    log.warning("fine")
    log.warning("value", extra={"note": f"v{LONE}"})
    log.warning(f"body {LONE}")
    log.warning("key", extra={f"k{LONE}": "v"})
    try:
        raise ValueError(f"failed {LONE}")
    except ValueError:
        log.exception("raised")
    assert telemetry.force_flush()

    records = {record.body: record for record in otlp_receiver.wait_for_logs(count=5)}
    assert len(records) == 5
    assert records["value"].attributes["note"].startswith("v")
    assert [key for key in records["key"].attributes if key.startswith("k")] != []
    assert "failed" in records["raised"].attributes["exception.stacktrace"]
    assert any(body.startswith("body ") for body in records)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_resource_with_a_lone_surrogate_still_exports(protocol: str) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": f"svc{LONE}"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("tests").start_as_current_span("one"):
        pass
    with OTLPReceiver() as receiver:
        from tests.integration.test_otlp_fast_export import span_exporter

        exporter = FastSpanExporter.wrap(span_exporter(receiver, protocol))
        assert exporter.export(memory.get_finished_spans()) is SpanExportResult.SUCCESS
        (span,) = receiver.wait_for_spans()
        assert span.resource["service.name"] == f"svc{REPLACED}"
        exporter.shutdown()


@pytest.mark.parametrize("fast", [True, False], ids=["fast_export", "sdk_export"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_log_records_of_the_otel_logs_api_with_lone_surrogates_arrive_replaced(
    otlp_receiver: OTLPReceiver, tmp_path: Path, protocol: str, fast: bool
) -> None:
    """Records made through the OTel logs API (not our handler) reach the encoder as they are."""
    telemetry = _configure(otlp_receiver, protocol, fast, tmp_path)
    sanitized_before = _sanitized_total(telemetry, "log_record")
    logger = telemetry.logger_provider.get_logger("tests.invalid_text")
    logger.emit(body="fine")
    logger.emit(body=f"body {LONE}", attributes={"note": f"v{LONE}", f"k{LONE}": 1})
    assert telemetry.force_flush()

    records = {record.body: record for record in otlp_receiver.wait_for_logs(count=2)}
    assert records[f"body {REPLACED}"].attributes == {"note": f"v{REPLACED}", f"k{REPLACED}": 1}
    assert _sanitized_total(telemetry, "log_record") == sanitized_before + 1
    ti.shutdown()
    assert _warnings(tmp_path, "ERROR") == []
