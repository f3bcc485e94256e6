"""Several processes sharing PROMETHEUS_MULTIPROC_DIR: exited workers' counts stay in the
sums, once; scrapes answer within their budget; unusable or shared directories are said."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from opentelemetry import metrics
from prometheus_client.parser import text_string_to_metric_families

import telemetry_infra as ti
from telemetry_infra import mark_process_dead, metrics_asgi_app
from telemetry_infra.testing import free_port

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="start times come from /proc")

hits = metrics.get_meter("telemetry_infra").create_counter("multiproc.test.hits")

WORKER = """
import sys
from opentelemetry import metrics
import telemetry_infra as ti
ti.configure(sys.argv[1], setup_logs=False)
hits = metrics.get_meter("telemetry_infra").create_counter("multiproc.test.hits")
busy = metrics.get_meter("telemetry_infra").create_up_down_counter("multiproc.test.busy")  # a gauge
for line in sys.stdin:  # one "add N" a line; each answered once counted
    hits.add(int(line))
    busy.add(1)
    print("ok", flush=True)
"""


class Worker:
    """Another process of a service (``python -c WORKER``) sharing the directory."""

    def __init__(self, service: str = "multiproc") -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER, service],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ,
        )
        self.pid = self.process.pid

    def add(self, value: int) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{value}\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "ok"

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def exit(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert self.process.wait(timeout=10) == 0


@contextmanager
def workers(count: int, service: str = "multiproc") -> Iterator[list[Worker]]:
    started = [Worker(service) for _ in range(count)]
    try:
        yield started
    finally:
        for worker in started:
            if worker.process.poll() is None:
                os.kill(worker.pid, signal.SIGCONT)
                worker.kill()


def _hits(text: str) -> float:
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "multiproc_test_hits_total"
    )


def _gauge_pids(text: str) -> set[str]:
    return {
        s.labels["pid"]
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "multiproc_test_busy"
    }


def _snapshots(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.snapshot.json"))


@pytest.fixture
def shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    directory = tmp_path / "multiproc"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    yield directory


def test_a_scrape_asks_live_workers_and_keeps_what_exited_workers_counted(shared: Path) -> None:
    telemetry = ti.configure("multiproc", log_dir=shared.parent / "logs", setup_logs=False)
    hits.add(3)
    with workers(1) as (worker,):
        worker.add(5)
        assert _hits(telemetry.prometheus_text()) == 8
        worker.add(7)
        assert _hits(telemetry.prometheus_text()) == 15
        worker.add(2)  # no scrape saw these: its shutdown collects them
        worker.exit()  # a graceful exit archives its counts itself
    assert _hits(telemetry.prometheus_text()) == 17
    assert len(_snapshots(shared)) == 1  # ours; the exited worker's went into the archive


def test_a_killed_worker_is_archived_once_whoever_notices_it(shared: Path) -> None:
    telemetry = ti.configure("multiproc", log_dir=shared.parent / "logs", setup_logs=False)
    hits.add(3)
    with workers(2) as (killed, marked):
        killed.add(5)
        marked.add(11)
        assert _hits(telemetry.prometheus_text()) == 19
        assert _gauge_pids(telemetry.prometheus_text()) == {str(killed.pid), str(marked.pid)}
        killed.kill()  # SIGKILL: no hook runs; the scrape finds it dead
        marked.kill()
        mark_process_dead(marked.pid)  # gunicorn's child_exit hook
        assert _hits(telemetry.prometheus_text()) == 19
        mark_process_dead(killed.pid)  # after the scrape archived it: no second count
        mark_process_dead(marked.pid)
        assert _hits(telemetry.prometheus_text()) == 19
        assert not _gauge_pids(telemetry.prometheus_text())  # the gauges of exited workers go
    assert len(_snapshots(shared)) == 1
    assert len(list(shared.glob("*.archive.json"))) == 1


def test_workers_archived_at_once_from_several_processes_are_all_counted(shared: Path) -> None:
    telemetry = ti.configure("multiproc", log_dir=shared.parent / "logs", setup_logs=False)
    with workers(6) as started:
        for value, worker in enumerate(started, start=1):
            worker.add(value)
        assert _hits(telemetry.prometheus_text()) == sum(range(1, 7))  # their snapshots now hold it
        for worker in started:
            worker.kill()
        pids = [str(worker.pid) for worker in started]
        marking = "import sys; from telemetry_infra import mark_process_dead as m\n"
        marking += "for pid in sys.argv[1:]: m(int(pid))"
        markers = [  # each marks every worker, all at the same time: two merges collide
            subprocess.Popen([sys.executable, "-c", marking, *pids[i:], *pids[:i]], env=os.environ)
            for i in range(0, 6, 2)
        ]
        assert all(marker.wait(timeout=60) == 0 for marker in markers)
    assert _hits(telemetry.prometheus_text()) == sum(range(1, 7))
    assert len(_snapshots(shared)) == 1


def test_a_reused_pid_is_not_taken_for_the_worker_that_had_it(shared: Path) -> None:
    telemetry = ti.configure("multiproc", log_dir=shared.parent / "logs", setup_logs=False)
    with workers(1) as (worker,):
        worker.add(5)
        assert _hits(telemetry.prometheus_text()) == 5
        worker.kill()
        (snapshot,) = (path for path in _snapshots(shared) if f".{worker.pid}." in path.name)
        stored = json.loads(snapshot.read_text())
        stored["pid"] = os.getppid()  # a live process now has the pid, started at another time
        renamed = snapshot.with_name(snapshot.name.replace(f".{worker.pid}.", f".{os.getppid()}."))
        renamed.write_text(json.dumps(stored))
        snapshot.unlink()
        assert _hits(telemetry.prometheus_text()) == 5
        assert not renamed.exists()


SLEEPER = "import time; time.sleep(60)"


def _not_answering_worker(shared: Path, value: int) -> subprocess.Popen[bytes]:
    """A live process whose snapshot (``value`` hits) never answers a scrape's request."""
    with workers(1) as (worker,):
        worker.add(value)
        ti.get_telemetry().prometheus_text()  # type: ignore[union-attr]  # its snapshot holds it now
        worker.kill()
        (snapshot,) = (path for path in _snapshots(shared) if f".{worker.pid}." in path.name)
        stored = json.loads(snapshot.read_text())
    sleeper = subprocess.Popen([sys.executable, "-c", SLEEPER])
    stat = Path(f"/proc/{sleeper.pid}/stat").read_text()
    stored.update(pid=sleeper.pid, started=stat[stat.rfind(")") + 2 :].split()[19])
    snapshot.with_name(snapshot.name.replace(f".{worker.pid}.", f".{sleeper.pid}.")).write_text(
        json.dumps(stored)
    )
    snapshot.unlink(missing_ok=True)
    return sleeper


async def _timed_scrape(headers: dict[str, str], metrics_url: str | None) -> tuple[float, float]:
    """One scrape of the ``/metrics`` mount (ASGI) or, with ``metrics_url``, of the port."""
    transport = None if metrics_url else httpx.ASGITransport(app=metrics_asgi_app())
    async with httpx.AsyncClient(transport=transport, base_url=metrics_url or "http://test") as client:
        began = time.perf_counter()
        response = await client.get("/metrics", headers=headers)
        return time.perf_counter() - began, _hits(response.text)


@pytest.mark.parametrize("served_by", ["mount", "port"])
async def test_a_worker_that_does_not_answer_costs_a_share_of_the_scrape_timeout(
    served_by: str, shared: Path
) -> None:
    port = free_port() if served_by == "port" else None
    telemetry = ti.configure(
        "multiproc", log_dir=shared.parent / "logs", setup_logs=False, prometheus_port=port
    )
    metrics_url = telemetry.metrics_url.removesuffix("/metrics") if port else None
    hits.add(3)
    sleeper = _not_answering_worker(shared, 5)
    try:
        elapsed, counted = await _timed_scrape({"X-Prometheus-Scrape-Timeout-Seconds": "0.2"}, metrics_url)
        assert counted == 8  # its last snapshot counts
        assert 0.09 < elapsed < 0.6, f"a 0.2 s scrape timeout waited {elapsed:.3f} s"
        elapsed, counted = await _timed_scrape({}, metrics_url)
        assert counted == 8
        assert elapsed < 0.75, f"without a scrape timeout the scrape took {elapsed:.3f} s"
    finally:
        sleeper.kill()
        sleeper.wait()
        telemetry.shutdown()


def test_a_stopped_worker_is_not_waited_for_and_its_snapshot_counts(shared: Path) -> None:
    telemetry = ti.configure("multiproc", log_dir=shared.parent / "logs", setup_logs=False)
    hits.add(3)
    with workers(1) as (worker,):
        worker.add(5)
        assert _hits(telemetry.prometheus_text()) == 8
        os.kill(worker.pid, signal.SIGSTOP)
        began = time.perf_counter()
        assert _hits(telemetry.prometheus_text()) == 8
        assert time.perf_counter() - began < 0.5


def test_another_services_files_are_never_added_to_ours(
    shared: Path, caplog: pytest.LogCaptureFixture
) -> None:
    telemetry = ti.configure("multiproc", log_dir=shared.parent / "logs", setup_logs=False)
    hits.add(3)
    with caplog.at_level(logging.WARNING, "telemetry_infra.otel.prometheus"), workers(2, "billing") as pair:
        live, exited = pair
        live.add(77_777)
        exited.add(1_000)
        telemetry.prometheus_text()  # asks billing's workers too? it must not
        time.sleep(0.2)
        exited.kill()
        mark_process_dead(exited.pid)  # into billing's archive, not ours
        assert _hits(telemetry.prometheus_text()) == 3
        assert _hits(telemetry.prometheus_text()) == 3
    (warning,) = [r.getMessage() for r in caplog.records if "shared by services" in r.getMessage()]
    assert "'multiproc'" in warning and "'billing'" in warning and "PROMETHEUS_MULTIPROC_DIR" in warning


UNUSABLE = """
import telemetry_infra as ti
from opentelemetry import metrics
telemetry = ti.configure("multiproc", environment="development")
metrics.get_meter("telemetry_infra").create_counter("multiproc.test.hits").add(4)
print("EXPOSITION")
print(telemetry.prometheus_text())
"""


def test_an_unusable_directory_is_an_error_naming_the_variable_and_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    directory = blocker / "multiproc"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory), "LOG_DIR": str(tmp_path / "logs")}
    run = subprocess.run(
        [sys.executable, "-c", UNUSABLE], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    logs, exposition = run.stdout.split("EXPOSITION\n")
    assert _hits(exposition) == 4  # its own exposition still answers
    output = logs + run.stderr
    (error,) = [line for line in output.splitlines() if "PROMETHEUS_MULTIPROC_DIR" in line]
    assert "ERROR" in error and str(directory) in error and "not a directory" in error
