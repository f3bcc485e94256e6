"""The telemetry-infra command, run as a user runs it: a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import telemetry_infra
from telemetry_infra.testing import OTLPReceiver, RedisServer, free_port


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != "REDIS_URL"}
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
    assert "will be created" in lines[2]
    assert not (tmp_path / "logs").exists()  # check creates nothing


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


PROTOCOLS = ["grpc", "http/protobuf"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_check_fails_for_a_port_that_does_not_speak_otlp(
    protocol: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{redis_server.host}:{redis_server.port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
    }
    result = _run("check", "--log-dir", str(tmp_path), env=env)
    assert result.returncode == 1, result.stdout
    (otlp,) = [line for line in result.stdout.splitlines() if line.startswith("otlp")]
    assert otlp.split()[1] == "FAIL" and "not an OTLP receiver" in otlp


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_check_fails_for_https_against_a_plaintext_receiver(
    protocol: str, otlp_receiver: OTLPReceiver, tmp_path: Path
) -> None:
    endpoint = otlp_receiver.endpoint(protocol).replace("http://", "https://")
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
    result = _run("check", "--log-dir", str(tmp_path), env=env)
    assert result.returncode == 1, result.stdout
    assert result.stdout.startswith("otlp     FAIL")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_check_passes_for_tls_receiver_and_sends_nothing_visible(
    protocol: str, tls_files, tmp_path: Path
) -> None:
    with OTLPReceiver(host="localhost", tls=tls_files.server(mutual=True)) as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint(protocol),
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_EXPORTER_OTLP_CERTIFICATE": tls_files.ca,
            "OTEL_EXPORTER_OTLP_CLIENT_KEY": tls_files.client_key,
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": tls_files.client_certificate,
        }
        result = _run("check", "--log-dir", str(tmp_path), env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "answers OTLP exports" in result.stdout
        assert receiver.requests == 3  # one empty export per signal
        assert not receiver.spans() and not receiver.logs() and not receiver.metric_points()


def test_check_reads_per_signal_endpoints(otlp_receiver: OTLPReceiver, tmp_path: Path) -> None:
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp_receiver.grpc_endpoint}
    result = _run("check", "--log-dir", str(tmp_path), env=env)
    assert result.returncode == 0, result.stdout
    assert (
        result.stdout.splitlines()[0]
        == f"otlp     ok    {otlp_receiver.grpc_endpoint} (grpc; traces) answers OTLP exports"
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_TRACES_SAMPLER", "bogus"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
        ("OTEL_BSP_SCHEDULE_DELAY", "-1"),
        ("OTEL_EXPORTER_PROMETHEUS_PORT", "http"),
        ("OTEL_LOGS_EXPORTER", "loki"),
        ("REDIS_URL", "localhost:6379"),
        ("LOG_LEVEL", "loud"),
    ],
)
def test_check_exits_2_for_any_malformed_setting(variable: str, value: str, tmp_path: Path) -> None:
    result = _run("check", "--log-dir", str(tmp_path), env={variable: value})
    assert result.returncode == 2, result.stdout
    assert variable in result.stderr and "Traceback" not in result.stderr


def test_check_warns_about_unsupported_variables(tmp_path: Path) -> None:
    result = _run("check", "--log-dir", str(tmp_path), env={"OTEL_TRACE_EXPORTER": "otlp"})
    assert result.returncode == 0
    assert "config   WARN  set but not supported (no effect): OTEL_TRACE_EXPORTER" in result.stdout


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_check_against_a_silent_endpoint_waits_one_timeout(
    protocol: str, silent_collector: str, tmp_path: Path
) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": silent_collector, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
    started = time.monotonic()
    result = _run("check", "--timeout", "1.5", "--log-dir", str(tmp_path), env=env)
    elapsed = time.monotonic() - started
    assert result.returncode == 1 and result.stdout.startswith("otlp     FAIL"), result.stdout
    assert elapsed < 4, f"check took {elapsed:.1f}s: the three signals were probed one after another"


@pytest.mark.parametrize("command", [[], ["check"], ["demo"]])
def test_help_is_plain_text(command: list[str]) -> None:
    result = _run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: telemetry-infra" in result.stdout
    for markup in ("``", ":class:", ":mod:", ":func:"):
        assert markup not in result.stdout, f"raw reST {markup!r} in --help:\n{result.stdout}"


def test_check_help_says_what_its_exit_codes_mean() -> None:
    result = _run("check", "--help")
    assert result.returncode == 0
    assert "exit codes:" in result.stdout and "1  something configured failed" in result.stdout


@pytest.mark.parametrize("usable", [True, False])
def test_check_says_whether_the_multiprocess_metrics_directory_can_be_used(
    usable: bool, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    directory = tmp_path / "multiproc" if usable else blocker / "multiproc"
    result = _run("check", "--log-dir", str(tmp_path), env={"PROMETHEUS_MULTIPROC_DIR": str(directory)})
    lines = result.stdout.splitlines()
    (start,) = [n for n, line in enumerate(lines) if line.startswith("metrics")]
    # the result's first line and its indented continuation (the cause, on a line of its own)
    following = [line for line in lines[start + 1 : start + 2] if line.startswith(" ")]
    line = " ".join([lines[start], *following])
    assert all(len(part) <= 160 for part in lines), result.stdout
    assert str(directory) in line and "PROMETHEUS_MULTIPROC_DIR" in line
    if usable:
        assert result.returncode == 0 and line.split()[1] == "ok", result.stdout
    else:
        assert result.returncode == 1 and line.split()[1] == "FAIL" and "not a directory" in line, (
            result.stdout
        )
