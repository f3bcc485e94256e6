"""The telemetry-infra command, run as a user runs it: a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import telemetry_infra
from telemetry_infra.testing import OTLPReceiver, RedisServer, free_port


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("OTEL_EXPORTER_OTLP_ENDPOINT", "REDIS_URL")}
    return subprocess.run(
        [sys.executable, "-m", "telemetry_infra.cli", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_version() -> None:
    result = _run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"telemetry-infra {telemetry_infra.__version__}"


def test_check_reports_each_dependency_and_passes_when_all_answer(
    redis_server: RedisServer, otlp_receiver: OTLPReceiver, tmp_path: Path
) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.grpc_endpoint, "REDIS_URL": redis_server.url}
    result = _run("check", "--log-dir", str(tmp_path / "logs"), env=env)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line.split()[:2] for line in lines] == [["otlp", "ok"], ["redis", "ok"], ["logs", "ok"]]
    assert (tmp_path / "logs").is_dir()


def test_check_fails_when_something_configured_is_unreachable(tmp_path: Path) -> None:
    unwritable = tmp_path / "file-not-dir"
    unwritable.write_text("x")
    dead = f"127.0.0.1:{free_port()}"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{dead}", "REDIS_URL": f"redis://{dead}/0"}
    result = _run("check", "--log-dir", str(unwritable), env=env)
    assert result.returncode == 1
    statuses = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()}
    assert statuses == {"otlp": "FAIL", "redis": "FAIL", "logs": "FAIL"}


def test_check_without_configuration_says_what_would_happen(tmp_path: Path) -> None:
    result = _run("check", "--log-dir", str(tmp_path))
    assert result.returncode == 0
    assert "nothing is exported" in result.stdout and "in memory" in result.stdout


def test_bad_configuration_is_one_clear_line(tmp_path: Path) -> None:
    result = _run("check", "--log-dir", str(tmp_path), env={"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"})
    assert result.returncode == 2
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in result.stderr and "Traceback" not in result.stderr
