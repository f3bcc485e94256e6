"""An app run under the real ``opentelemetry-instrument`` (with opentelemetry-distro installed too).

telemetry_infra is registered as an OTel distro and configurator: the agent builds
telemetry through ``configure()``, the app's own ``configure()`` takes over, and the
auto-instrumentations (FastAPI, redis) feed our providers. Checked on the wire and on
``/metrics``: every span and record once, with the app's resource, cache series present,
one set of HTTP server series.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from servers import CLIENT, started, wait_for_answer

from telemetry_infra.testing import OTLPReceiver, free_port

pytestmark = pytest.mark.slow

APP = """
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI

import telemetry_infra as ti
from telemetry_infra.integrations.fastapi import instrument_app

ti.configure(service_name="instrumented-app", environment="production", console_logs=False)
cache = ti.CacheManager(name="items", namespace="instrumented-app")
log = ti.get_logger("api.items")


@asynccontextmanager
async def lifespan(_app):
    await cache.initialize()
    yield
    await cache.close()
    ti.shutdown(timeout_s=5)


app = FastAPI(lifespan=lifespan)
instrument_app(app)


@app.get("/items/{item_id}")
async def item(item_id: str) -> dict:
    if await cache.get(item_id) is None:
        await cache.set(item_id, {"id": item_id})
    log.info("item served", extra={"item_id": item_id})
    return {"id": item_id}
"""

PATHS = ["/items/1", "/items/1", "/items/1", "/items/2"]


def _instrument_command() -> str:
    found = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("opentelemetry-instrument is not installed (pip install -e '.[dev]')", pytrace=False)
    return found


def test_app_under_opentelemetry_instrument_exports_once_with_our_resource(
    otlp_receiver: OTLPReceiver, tmp_path: Path
) -> None:
    (tmp_path / "instrumented_app.py").write_text(APP)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.grpc_endpoint,
        OTEL_PYTHON_DISTRO="telemetry_infra",  # opentelemetry-distro is installed as well
        LOG_DIR=str(tmp_path / "logs"),
        PYTHONPATH=str(tmp_path),
    )
    command = [
        _instrument_command(),
        sys.executable,
        "-m",
        "uvicorn",
        "instrumented_app:app",
        "--port",
        str(port),
    ]
    stdout, stderr_file = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    # SIGTERM at the end: uvicorn runs the lifespan exit, ti.shutdown() flushes
    with started(command, env, tmp_path, stdout, stderr_file) as process:
        base = f"http://127.0.0.1:{port}"
        wait_for_answer(f"{base}/metrics", process, stderr_file, 30)
        for path in PATHS:
            assert CLIENT.get(base + path).status_code == 200
        exposition = CLIENT.get(f"{base}/metrics").text
    stderr = stderr_file.read_text()

    families = {family.name: family for family in text_string_to_metric_families(exposition)}
    http_families = sorted(name for name in families if name.startswith("http_server"))
    requests_counted = sum(
        sample.value
        for name in http_families
        for sample in families[name].samples
        if sample.name.endswith("_count") and "duration" in name
        and sample.labels.get("http_route", sample.labels.get("http_target")) == "/items/{item_id}"
    )  # fmt: skip

    time.sleep(0.5)  # the app flushed at exit; let the receiver store the last requests
    all_spans = otlp_receiver.spans()
    spans = [s for s in all_spans if s.kind == "SERVER"]
    records = [r for r in otlp_receiver.logs() if r.body == "item served"]
    duplicated = [span_id for span_id, n in Counter(s.span_id for s in all_spans).items() if n > 1]
    print(
        f"\nspans: {len(all_spans)} ({dict(Counter(s.name for s in all_spans))}); duplicated span ids: "
        f"{len(duplicated)}\nresources: {sorted({s.resource['service.name'] for s in all_spans})}, "
        f"records 'item served': {len(records)}, log resources: "
        f"{sorted({r.resource.get('service.name') for r in otlp_receiver.logs()})}\n/metrics: cache series "
        f"{sorted(n for n in families if n.startswith('cache_'))}\n/metrics: http series {http_families}, "
        f"requests counted for /items/{{item_id}}: {requests_counted}"
    )
    assert not duplicated
    assert len(spans) == len(PATHS)  # one SERVER span per request, not one per middleware
    assert len(records) == len(PATHS)  # each record exported once
    assert {s.resource["service.name"] for s in all_spans} == {"instrumented-app"}
    assert {r.resource["service.name"] for r in otlp_receiver.logs()} == {"instrumented-app"}
    assert len([s for s in all_spans if s.name == "cache.get"]) == len(PATHS)
    assert families["cache_hits"].samples and families["cache_misses"].samples
    assert requests_counted == len(PATHS)  # one set of HTTP server series
    assert "Traceback" not in stderr, stderr


SCRIPT = """
import logging
from opentelemetry import trace

if __import__("os").environ.get("CALL_CONFIGURE"):
    import telemetry_infra as ti
    ti.configure(console_logs=False)
with trace.get_tracer("script").start_as_current_span("scripted"):
    logging.getLogger("script").warning("scripted record")
"""


def _run_instrumented(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    (tmp_path / "script.py").write_text(SCRIPT)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [_instrument_command(), sys.executable, str(tmp_path / "script.py")],
        env={**clean, "LOG_DIR": str(tmp_path / "logs"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_agent_alone_configures_through_configure(otlp_receiver: OTLPReceiver, tmp_path: Path) -> None:
    """No configure() in the program: the agent's, from the environment, is the setup."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.grpc_endpoint,
        "OTEL_SERVICE_NAME": "agent-only",
        "OTEL_PYTHON_DISTRO": "telemetry_infra",
    }
    result = _run_instrumented(env, tmp_path)
    assert result.returncode == 0, result.stderr
    (span,) = otlp_receiver.wait_for_spans(lambda s: s.name == "scripted")
    (record,) = otlp_receiver.wait_for_logs(lambda r: r.body == "scripted record")
    assert span.resource["service.name"] == record.resource["service.name"] == "agent-only"
    assert record.trace_id == span.trace_id
    assert "scripted record" in (tmp_path / "logs" / "app.log").read_text()


def test_stock_distro_chosen_warns_in_the_log_with_the_fix(tmp_path: Path) -> None:
    env = {"OTEL_PYTHON_DISTRO": "distro", "OTEL_PYTHON_CONFIGURATOR": "configurator", "CALL_CONFIGURE": "1"}
    env.update(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none")
    result = _run_instrumented(env, tmp_path)
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "logs" / "app.log").read_text()
    assert log.count("OTEL_PYTHON_DISTRO=telemetry_infra") == 1, log
