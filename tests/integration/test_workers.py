"""Real servers with two workers: one /metrics answers for all of them (PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from servers import Server, command, running

from telemetry_infra.testing import free_port

pytestmark = pytest.mark.slow

LOOKUPS = 120


def _samples(text: str) -> list:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def _lookups_counted(text: str) -> float:
    return sum(s.value for s in _samples(text) if s.name in ("cache_hits_total", "cache_misses_total"))


def _lookups(server: Server, count: int) -> Counter[int]:
    """``count`` lookups, each on a new connection; how many each worker pid served."""
    return Counter(server.get(f"/lookup/k{i % 7}").json()["pid"] for i in range(count))


def _wait_for_workers(server: Server, workers: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len({server.get("/ready").json()["pid"] for _ in range(4 * workers)}) < workers:
        assert time.monotonic() < deadline, f"{workers} workers never answered"


@pytest.mark.parametrize("server_kind", ["uvicorn", "gunicorn", "gunicorn-preload"])
def test_one_scrape_counts_the_lookups_of_every_worker(server_kind: str, tmp_path: Path) -> None:
    port, metrics_port, shared = free_port(), free_port(), tmp_path / "multiproc"
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(shared),
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port),
        "ENVIRONMENT": "production",
        "LOG_DIR": str(tmp_path / "logs"),
    }
    with running(command(server_kind, port, tmp_path), port, tmp_path, env) as server:
        _wait_for_workers(server, 2)
        served = _lookups(server, LOOKUPS)
        assert len(served) == 2, f"the kernel gave every connection to one worker: {served}"

        for _ in range(3):  # whichever worker answers, on the mount and on the port
            assert _lookups_counted(server.get("/metrics").text) == LOOKUPS
        by_port = server.get(
            f"http://127.0.0.1:{metrics_port}/metrics", headers={"Accept": "application/openmetrics-text"}
        )
        families = {f.name: f.samples for f in parse_openmetrics(by_port.text)}
        exemplars = [s.exemplar for s in families["cache_operation_duration_seconds"] if s.exemplar]
        assert exemplars and all(len(e.labels["trace_id"]) == 32 for e in exemplars)  # survive the merge
        assert (
            sum(
                s.value
                for s in families["cache_hits"] + families["cache_misses"]
                if s.name.endswith("_total")
            )
            == LOOKUPS
        )
        requests = [
            s
            for s in families["http_server_request_duration_seconds"]
            if s.name.endswith("_count") and s.labels["http_route"] == "/lookup/{key}"
        ]
        assert sum(s.value for s in requests) == LOOKUPS
        fallback_pids = {s.labels["pid"] for s in families["cache_fallback_active"]}
        # gauges stay per process: each worker's, and with --preload the master's (it configured too)
        assert fallback_pids - {str(server.process.pid)} == {str(pid) for pid in served}

        crashed = server.stderr.read_text() + server.stdout.read_text()
        assert "Address already in use" not in crashed and "Traceback" not in crashed


def test_a_killed_workers_counts_stay_and_the_port_is_taken_over(tmp_path: Path) -> None:
    port, metrics_port, shared = free_port(), free_port(), tmp_path / "multiproc"
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared), "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port)}
    with running(command("uvicorn", port, tmp_path), port, tmp_path, env) as server:
        _wait_for_workers(server, 2)
        served = _lookups(server, 60)
        assert _lookups_counted(server.get("/metrics").text) == 60  # both snapshots hold their lookups
        victim, _ = served
        os.kill(victim, signal.SIGKILL)  # no hook runs: a scrape archives what it counted
        deadline = time.monotonic() + 30
        while True:  # the port answers again (taken over if the victim held it), the victim's lookups kept
            try:
                text = server.get(f"http://127.0.0.1:{metrics_port}/metrics").text
                if not list(shared.glob(f"*.{victim}.*.snapshot.json")):
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the dead worker's snapshot was never archived"
            time.sleep(0.1)
        assert _lookups_counted(text) == 60


def test_without_the_directory_a_taken_port_is_a_warning_not_a_crash_loop(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    env = {"OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port), "ENVIRONMENT": "production"}
    with running(command("uvicorn", port, tmp_path), port, tmp_path, env) as server:
        _wait_for_workers(server, 2)
        pids = server.worker_pids()
        time.sleep(2)  # a crash loop would have replaced a worker by now
        assert server.worker_pids() == pids
        assert server.get(f"http://127.0.0.1:{metrics_port}/metrics").status_code == 200
    output = server.stdout.read_text() + server.stderr.read_text()
    assert "Address already in use" not in output
    (warning,) = [line for line in output.splitlines() if "already in use" in line]
    assert "OTEL_EXPORTER_PROMETHEUS_PORT" in warning and "PROMETHEUS_MULTIPROC_DIR" in warning
