"""Snapshots of workers that are gone never reach a scrape (PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry import metrics
from prometheus_client.parser import text_string_to_metric_families

import telemetry_infra as ti

hits = metrics.get_meter("telemetry_infra").create_counter("multiproc.test.hits")


def _stale_snapshot(directory: Path, pid: int, started: str | None, value: float) -> Path:
    path = directory / f"telemetry_infra_{pid}.json"
    family = ["counter", "", "", [[{"otel_scope_name": "telemetry_infra"}, value]]]
    path.write_text(
        json.dumps(
            {"pid": pid, "started": started, "answered": None, "families": {"multiproc_test_hits": family}}
        )
    )
    return path


def _hits(text: str) -> float:
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "multiproc_test_hits_total"
    )


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="start times come from /proc")
def test_dead_and_reused_pids_are_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    telemetry = ti.configure("multiproc", log_dir=tmp_path / "logs", setup_logs=False)
    hits.add(3)
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = _stale_snapshot(tmp_path, int(finished.stdout), None, 100)
    reused = _stale_snapshot(tmp_path, os.getppid(), "1", 1000)  # alive, but started at another time
    assert _hits(telemetry.prometheus_text()) == 3
    assert not dead.exists() and not reused.exists()


WORKER = """
import sys
from opentelemetry import metrics
import telemetry_infra as ti
ti.configure("multiproc", setup_logs=False)
hits = metrics.get_meter("telemetry_infra").create_counter("multiproc.test.hits")
for line in sys.stdin:  # one "add N" a line; each answered once counted
    hits.add(int(line))
    print("ok", flush=True)
"""


def test_a_scrape_asks_live_workers_for_what_they_counted_just_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    telemetry = ti.configure("multiproc", log_dir=tmp_path / "logs", setup_logs=False)
    hits.add(3)
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ,
    )
    try:
        for added in (5, 7):
            worker.stdin.write(f"{added}\n")
            worker.stdin.flush()
            assert worker.stdout.readline().strip() == "ok"
            assert _hits(telemetry.prometheus_text()) == 3 + (
                5 if added == 5 else 12
            )  # no waiting for a refresh
    finally:
        worker.stdin.close()
        worker.wait(timeout=10)
    assert _hits(telemetry.prometheus_text()) == 3  # it exited: its counts leave
