"""The Prometheus side: exposition text, /metrics server, OpenMetrics exemplars, ASGI app."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from opentelemetry import metrics, trace
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

import telemetry_infra as ti
from telemetry_infra.otel.prometheus import metrics_asgi_app
from telemetry_infra.testing import free_port

tracer = trace.get_tracer("tests.prometheus")
meter = metrics.get_meter("telemetry_infra")
latency = meter.create_histogram("prom.test.duration", unit="s", description="test latency")
hits = meter.create_counter("prom.test.hits")


def _samples(text: str, parse=parse_prometheus) -> dict[str, list]:
    return {family.name: family.samples for family in parse(text)}


def test_exposition_parses_with_prometheus_names(tmp_path: Path) -> None:
    telemetry = ti.configure("prom", log_dir=tmp_path, setup_logs=False)
    hits.add(3, {"cache.name": "users"})
    latency.record(0.0007, {"cache.operation": "get"})
    families = _samples(telemetry.prometheus_text())
    (hit,) = [s for s in families["prom_test_hits"] if s.name == "prom_test_hits_total"]
    assert hit.value == 3 and hit.labels["cache_name"] == "users"
    buckets = {
        s.labels["le"]: s.value for s in families["prom_test_duration_seconds"] if s.name.endswith("_bucket")
    }
    assert buckets["0.0005"] == 0 and buckets["0.001"] == 1 and buckets["+Inf"] == 1
    (info,) = families["target_info"]
    assert info.labels["service_name"] == "prom"


def test_openmetrics_buckets_carry_the_trace_id_of_the_span(tmp_path: Path) -> None:
    telemetry = ti.configure("exemplars", log_dir=tmp_path, setup_logs=False)
    with tracer.start_as_current_span("slow-request") as span:
        latency.record(0.3, {"cache.operation": "mget"})
        trace_id = format(span.get_span_context().trace_id, "032x")
    latency.record(0.00002, {"cache.operation": "mget"})  # outside any span: no exemplar
    telemetry.force_flush()  # a collection by someone else must not swallow the exemplar
    telemetry.prometheus_text(openmetrics=True)
    families = _samples(telemetry.prometheus_text(openmetrics=True), parse_openmetrics)
    buckets = [s for s in families["prom_test_duration_seconds"] if s.name.endswith("_bucket")]
    with_exemplar = [s for s in buckets if s.exemplar is not None]
    assert [s.labels["le"] for s in with_exemplar] == ["0.5"]
    assert with_exemplar[0].exemplar.labels["trace_id"] == trace_id
    assert with_exemplar[0].exemplar.value == pytest.approx(0.3)


def test_metrics_port_serves_both_formats_on_loopback(tmp_path: Path) -> None:
    port = free_port()
    telemetry = ti.configure("served", prometheus_port=port, log_dir=tmp_path, setup_logs=False)
    assert telemetry.metrics_url == f"http://127.0.0.1:{port}/metrics"
    with tracer.start_as_current_span("req"):
        latency.record(0.002)
    plain = httpx.get(telemetry.metrics_url, timeout=5)
    assert plain.status_code == 200 and plain.headers["content-type"].startswith("text/plain")
    assert "prom_test_duration_seconds_bucket" in _samples(plain.text)["prom_test_duration_seconds"][0].name
    open_metrics = httpx.get(
        telemetry.metrics_url, headers={"Accept": "application/openmetrics-text"}, timeout=5
    )
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert " # {" in open_metrics.text  # an exemplar
    assert open_metrics.text.rstrip().endswith("# EOF")


def test_reconfigure_moves_the_server_and_frees_the_port(tmp_path: Path) -> None:
    port = free_port()
    ti.configure("first", prometheus_port=port, log_dir=tmp_path, setup_logs=False)
    ti.configure("second", prometheus_port=port, log_dir=tmp_path, setup_logs=False)
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'service_name="second"' in body
    ti.shutdown()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_asgi_app_follows_the_current_configuration(tmp_path: Path) -> None:
    app = metrics_asgi_app()
    ti.configure("asgi", log_dir=tmp_path, setup_logs=False)
    hits.add(1)

    async def scrape() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})

    response = asyncio.run(scrape())
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert "prom_test_hits_total" in response.text
