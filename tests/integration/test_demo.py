"""`telemetry-infra demo` and the FastAPI example, run as subprocesses the way a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from telemetry_infra.testing import OTLPReceiver, RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
_INHERITED_CONFIG = (
    *(name for name in os.environ if name.startswith("OTEL_")),
    "REDIS_URL",
    "OTEL_SERVICE_NAME",
    "LOG_DIR",
    "ENVIRONMENT",
)


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in _INHERITED_CONFIG}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env={**base, **env}, capture_output=True, text=True, timeout=120
    )


def _demo(tmp_path: Path, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
    return _run(
        ["-m", "telemetry_infra.cli", "demo", "--log-dir", str(tmp_path / "logs"), *extra], tmp_path, **env
    )


def _summary(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    lines = result.stdout.split("telemetry-infra demo: done", 1)[1].strip("\n").splitlines()
    return {line[:18].strip(): line[18:].strip() for line in lines}  # "  label           value"


def test_demo_runs_on_the_embedded_default(tmp_path: Path) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    result = _demo(tmp_path, "--requests", "30", REDIS_URL=dead_redis)
    assert result.returncode == 0, result.stderr
    summary = _summary(result)
    assert summary["requests"].startswith("30 (1 handled")
    assert summary["cache backend"].startswith("memory: Redis at") and "fell back" in summary["cache backend"]
    assert "embedded default" in summary["exported to"]
    hit_rate = int(summary["cache hit rate"].split("%")[0])
    assert 30 <= hit_rate < 100
    records = [json.loads(line) for line in (tmp_path / "logs" / "app.log").read_text().splitlines()]
    served = [r for r in records if r["message"] == "request served"]
    assert len(served) == 29
    assert all(len(r["trace_id"]) == 32 and r["request_id"] for r in served)
    shown = summary["traces"].split(", ")
    assert set(shown) <= {r.get("trace_id") for r in records}
    errors = (tmp_path / "logs" / "error.log").read_text().splitlines()
    assert len(errors) == 1 and "PropertyNotFound" in json.loads(errors[0])["exc_info"]
    assert (tmp_path / "logs" / "model.log").read_text().count("risk scored") == 29


def test_demo_uses_redis_when_it_answers(tmp_path: Path, redis_server: RedisServer) -> None:
    result = _demo(tmp_path, "--requests", "20", "--redis-url", redis_server.url)
    assert result.returncode == 0, result.stderr
    assert _summary(result)["cache backend"].startswith("redis (")


def test_demo_exports_request_traces_with_cache_spans_under_them(
    tmp_path: Path, otlp_receiver: OTLPReceiver
) -> None:
    result = _demo(tmp_path, "--requests", "10", OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.grpc_endpoint)
    assert result.returncode == 0, result.stderr
    assert _summary(result)["exported to"] == f"{otlp_receiver.grpc_endpoint} (all exports delivered)"
    assert "\n  trace " not in result.stdout  # exported: no tree unless --traces asks
    requests = otlp_receiver.wait_for_spans(lambda s: s.kind == "SERVER", count=10)
    assert {s.resource["service.name"] for s in requests} == {"telemetry-infra-demo"}
    by_id = {s.span_id: s for s in otlp_receiver.spans()}
    cache_gets = [s for s in otlp_receiver.spans() if s.name == "cache.get"]
    assert len(cache_gets) == 10
    assert all(by_id[s.parent_span_id].kind == "SERVER" for s in cache_gets)
    logs = otlp_receiver.wait_for_logs(lambda r: r.body == "request served", count=9)
    assert {r.trace_id for r in logs} <= {s.trace_id for s in requests}


def test_fastapi_example_runs_to_completion(tmp_path: Path) -> None:
    result = _run([str(ROOT / "examples" / "fastapi_app.py")], tmp_path)
    assert result.returncode == 0, result.stderr
    statuses = [line.split()[0] for line in result.stdout.splitlines() if line[:3].isdigit()]
    assert statuses == ["200", "200", "422", "200"]
    assert "cache_hits_total" in result.stdout


def test_demo_prints_a_request_trace_as_a_tree_on_the_embedded_default(tmp_path: Path) -> None:
    result = _demo(tmp_path, "--requests", "10", "--traces", "6")
    assert result.returncode == 0, result.stderr
    trees = result.stdout.split("telemetry-infra demo: done")[0].strip().split("\n\n")
    assert len(trees) == 6
    first = trees[0].splitlines()
    assert first[0].strip().startswith("trace ") and len(first[0].split()[1]) == 32
    assert first[1].strip().startswith("GET /properties/{bbl}") and first[1].rstrip().endswith("ms")
    assert "├─ cache.get" in first[2] and first[2].rstrip().endswith("miss, memory")
    failed = trees[5]  # the request for the missing property
    assert "GET /properties/{bbl}" in failed and "ERROR: property not found" in failed
    assert "└─ GET nyc-data-api /properties" in failed and "ERROR: PropertyNotFound" in failed
    default = _demo(tmp_path, "--requests", "3")
    assert default.stdout.count("\n  trace ") == 1


def test_demo_says_when_export_fails_and_does_not_wait_for_a_dead_endpoint(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = _demo(tmp_path, "--requests", "10", OTEL_EXPORTER_OTLP_ENDPOINT=dead)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stdout + result.stderr  # scripts and CI see the failure
    exported = result.stdout.split("exported to", 1)[1]
    assert exported.strip().startswith(f"{dead}: FAILED") and "UNAVAILABLE" in exported
    assert "hint: is the collector up?" in exported
    assert elapsed < 7, f"the demo took {elapsed:.1f}s against a dead endpoint"


def test_demo_exits_1_when_the_endpoint_is_not_an_otlp_receiver(tmp_path: Path) -> None:
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        result = _demo(
            tmp_path, "--requests", "5", OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{endpoint}: FAILED" in result.stdout
    assert all(len(line) <= 160 for line in result.stdout.splitlines())


def test_demo_help_says_what_its_exit_codes_mean(tmp_path: Path) -> None:
    result = _run(["-m", "telemetry_infra.cli", "demo", "--help"], tmp_path)
    assert "exit codes:" in result.stdout
    assert "1  an export failed" in result.stdout
