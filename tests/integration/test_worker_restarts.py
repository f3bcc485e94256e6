"""gunicorn recycling, killing and stopping its workers under load: every counter and
histogram series of /metrics only grows, the final counts equal the requests made, and
scrapes answer in time (PROMETHEUS_MULTIPROC_DIR with the documented ``child_exit`` hook)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from servers import CLIENT, Server, running

from telemetry_infra.testing import free_port

pytestmark = pytest.mark.slow

#: docs/web.md, "gunicorn hooks"
GUNICORN_CONF = """
from telemetry_infra import mark_process_dead


def child_exit(server, worker):
    mark_process_dead(worker.pid)
"""

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]
ROUTE = "/lookup/{key}"


def gunicorn(port: int, tmp_path: Path, *recycling: str) -> list[str]:
    (tmp_path / "gunicorn.conf.py").write_text(GUNICORN_CONF)
    return [
        *(sys.executable, "-m", "gunicorn", "workers_app:app", "--chdir", str(tmp_path)),
        *("-c", str(tmp_path / "gunicorn.conf.py"), "-k", "uvicorn.workers.UvicornWorker", "-w", "3"),
        *("-b", f"127.0.0.1:{port}", *recycling),
    ]


#: every worker recycled after 120-132 of its requests: about 13 recycles in WARM_UP + LOAD
RECYCLING = ("--max-requests", "120", "--max-requests-jitter", "12")


def cumulative_series(text: str) -> dict[SeriesKey, float]:
    """Every counter and histogram sample (``_total``, ``_bucket``, ``_count``, ``_sum``)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        if family.type in ("counter", "histogram")
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def requests_counted(series: dict[SeriesKey, float]) -> float:
    return sum(
        value
        for (name, labels), value in series.items()
        if name == "http_server_request_duration_seconds_count" and ("http_route", ROUTE) in labels
    )


@dataclass
class Scrapes:
    """What a scraper saw: each scrape's series and how long it took."""

    series: list[dict[SeriesKey, float]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def decreases(self) -> list[tuple[SeriesKey, float, float]]:
        found = []
        for before, after in zip(self.series, self.series[1:], strict=False):
            for key, value in before.items():
                if key in after and after[key] < value:
                    found.append((key, value, after[key]))
                elif key not in after:
                    found.append((key, value, 0.0))
        return found

    def p99(self) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def scrape(server: Server, scrapes: Scrapes, headers: dict[str, str] | None = None) -> None:
    began = time.perf_counter()
    try:
        response = CLIENT.get(f"{server.url}/metrics", headers=headers or {})
        response.raise_for_status()
    except httpx.HTTPError as error:
        scrapes.failures.append(repr(error))
        return
    scrapes.seconds.append(time.perf_counter() - began)
    scrapes.series.append(cumulative_series(response.text))


@contextmanager
def scraping(server: Server, every_s: float = 0.3) -> Iterator[Scrapes]:
    scrapes, stop = Scrapes(), threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            scrape(server, scrapes)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield scrapes
    finally:
        stop.set()
        thread.join(timeout=30)


def make_requests(
    server: Server, count: int, threads: int = 4, per_second: float | None = None
) -> tuple[int, int]:
    """``count`` lookups, each on a new connection, at most ``per_second`` of them a second:
    (answered 200, failed on the way)."""
    began = time.monotonic()

    def one(index: int) -> bool:
        if per_second is not None:
            time.sleep(max(0.0, began + index / per_second - time.monotonic()))
        try:
            return server.get(f"/lookup/k{index % 13}").status_code == 200
        except httpx.TransportError:
            return False

    with ThreadPoolExecutor(threads) as pool:
        answered = sum(pool.map(one, range(count)))
    return answered, count - answered


def settled_count(server: Server, expected: int, timeout_s: float = 20) -> float:
    """The request count of the scrapes once it stops changing (or reaches ``expected``)."""
    deadline, seen = time.monotonic() + timeout_s, -1.0
    while time.monotonic() < deadline:
        counted = requests_counted(cumulative_series(server.get("/metrics").text))
        if counted in (expected, seen):
            return counted
        seen = counted
        time.sleep(0.5)
    return seen


def environment(tmp_path: Path) -> dict[str, str]:
    shared = tmp_path / "multiproc"
    shared.mkdir()
    return {
        "PROMETHEUS_MULTIPROC_DIR": str(shared),
        "LOG_DIR": str(tmp_path / "logs"),
        "ENVIRONMENT": "production",
    }


@dataclass
class RecyclingRun:
    """One gunicorn run recycling its workers under load, scraped every 0.3 s and, when
    Debian's ``prometheus`` is installed, by a real Prometheus every second."""

    scrapes: Scrapes
    made: int
    warm_up: int  # requests made before the window Prometheus's figures cover
    failed: int
    final: float
    recycles: int
    leftover_snapshots: list[str]
    prometheus: PrometheusFigures | None


@pytest.fixture(scope="module")
def recycling_run(tmp_path_factory: pytest.TempPathFactory) -> RecyclingRun:
    tmp_path = tmp_path_factory.mktemp("recycling")
    port, env = free_port(), environment(tmp_path)
    with running(gunicorn(port, tmp_path, *RECYCLING), port, tmp_path, env) as server:
        with prometheus_scraping(port, tmp_path) as prometheus:
            warm, failed = make_requests(server, WARM_UP)
            baseline = prometheus.wait_for_count(warm) if prometheus else None
            with scraping(server) as scrapes:  # busy workers, not a saturated machine
                made, failed_more = make_requests(server, LOAD, per_second=150)
            made, failed = made + warm, failed + failed_more
            final = settled_count(server, made)
            figures = prometheus.figures(baseline, final) if prometheus and baseline else None
        output = server.stdout.read_text() + server.stderr.read_text()
        leftover = sorted(p.name for p in Path(env["PROMETHEUS_MULTIPROC_DIR"]).glob("*.snapshot.json"))
    recycles = output.count("Maximum request limit")
    run = RecyclingRun(scrapes, made, warm, failed, final, recycles, leftover, figures)
    print(
        f"\nrecycles={run.recycles} scrapes={len(scrapes.seconds)} decreases={len(scrapes.decreases())} "
        f"final={final} made={made} failed={failed} scrape_p99={scrapes.p99():.3f}s "
        f"max={max(scrapes.seconds):.3f}s prometheus={figures}"
    )
    return run


WARM_UP, LOAD = 30, 1800


def test_recycled_workers_counts_stay_and_every_series_only_grows(recycling_run: RecyclingRun) -> None:
    run = recycling_run
    assert run.recycles >= 8, "the workers were not recycled: the test proves nothing"
    assert not run.scrapes.failures, run.scrapes.failures[:3]
    assert run.scrapes.decreases() == [], run.scrapes.decreases()[:5]
    assert run.made <= run.final <= run.made + run.failed
    assert run.scrapes.p99() < 2.0  # generous: a recycle stalls any request on a loaded machine; see
    # benchmarks/scrape_latency.py for /metrics against a trivial endpoint of the same server
    assert len(run.leftover_snapshots) <= 4, f"snapshots of exited workers stayed: {run.leftover_snapshots}"


def test_prometheus_sees_no_reset_and_the_increase_of_the_requests_made(recycling_run: RecyclingRun) -> None:
    if shutil.which("prometheus") is None:
        pytest.skip("Debian's prometheus package is not installed (.ci/run installs it): no real Prometheus")
    figures = recycling_run.prometheus
    assert figures is not None, "Prometheus never scraped the warm-up requests"
    assert figures.resets == 0, f"Prometheus saw {figures.resets} counter resets"
    assert (
        figures.delta == recycling_run.final - recycling_run.warm_up
    )  # last sample - first sample in the window
    # increase() extrapolates the delta to the window's edges (by at most the window / sampled span)
    assert figures.delta <= figures.increase <= figures.delta * figures.extrapolation_bound * 1.001


def test_a_killed_worker_keeps_its_counts_and_a_stopped_one_does_not_hold_scrapes(tmp_path: Path) -> None:
    port, env = free_port(), environment(tmp_path)
    with running(gunicorn(port, tmp_path), port, tmp_path, env) as server:
        scrapes = Scrapes()
        made = make_requests(server, 150)[0]
        scrape(server, scrapes)  # the workers write what they counted
        victim = max(server.worker_pids())
        os.kill(victim, signal.SIGKILL)  # no hook runs in the worker; gunicorn replaces it
        made += make_requests(server, 50)[0]
        scrape(server, scrapes)
        assert requests_counted(scrapes.series[-1]) == made, "the killed worker's requests were dropped"

        stopped = scrapes_while_stopped(server, min(server.worker_pids()))
        made += stopped.made
        final = settled_count(server, made)
    print(
        f"\nkill: before={requests_counted(scrapes.series[0])} after={requests_counted(scrapes.series[1])}; "
        f"stopped worker: scrape p99={stopped.scrapes.p99():.3f}s max={max(stopped.scrapes.seconds):.3f}s; "
        f"final={final} made={made}"
    )
    assert scrapes.decreases() == [] and stopped.scrapes.decreases() == []
    assert not stopped.scrapes.failures
    assert max(stopped.scrapes.seconds) < 1.0, "a stopped worker held the scrapes"
    assert final == made


@dataclass
class WhileStopped:
    scrapes: Scrapes
    made: int


def scrapes_while_stopped(server: Server, pid: int) -> WhileStopped:
    """Scrapes (with Prometheus's 1 s timeout header) and lookups while ``pid`` is SIGSTOPped."""
    scrapes, made = Scrapes(), 0
    os.kill(pid, signal.SIGSTOP)
    try:
        for _ in range(8):
            made += make_requests(server, 6, threads=2)[0]
            scrape(server, scrapes, {"X-Prometheus-Scrape-Timeout-Seconds": "1"})
    finally:
        os.kill(pid, signal.SIGCONT)
    return WhileStopped(scrapes, made)


# ---------------------------------------------------------------- a real Prometheus

PROMETHEUS_CONFIG = """
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: app
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""
REQUESTS = f'http_server_request_duration_seconds_count{{http_route="{ROUTE}"}}'
CUMULATIVE = re.compile(r".+_(total|count|bucket|sum)$")


@dataclass(frozen=True)
class PrometheusFigures:
    resets: float
    increase: float
    delta: float  # last - first sample of the window, summed over the series
    extrapolation_bound: float  # window / (last - first sample time): increase()'s largest factor
    up_failures: float  # scrapes that failed (up == 0), of
    scrapes: float
    slowest_scrape_s: float  # Prometheus's scrape_duration_seconds


@dataclass
class Prometheus:
    url: str

    def query(self, expression: str, at: float | None = None) -> list[dict[str, object]]:
        params = {"query": expression, **({"time": f"{at:.3f}"} if at else {})}
        answer = CLIENT.get(f"{self.url}/api/v1/query", params=params).json()
        assert answer["status"] == "success", answer
        return answer["data"]["result"]  # type: ignore[no-any-return]

    def scalar(self, expression: str, at: float | None = None) -> float:
        result = self.query(expression, at)
        return float(result[0]["value"][1]) if result else 0.0  # type: ignore[index]

    def cumulative_names(self) -> list[str]:
        """Names of the counter and histogram series Prometheus holds."""
        names = CLIENT.get(f"{self.url}/api/v1/label/__name__/values").json()["data"]
        return [name for name in names if CUMULATIVE.match(name)]

    def wait_for_count(self, count: int, timeout_s: float = 30) -> float | None:
        """Once Prometheus has sampled ``count`` requests, and a few more idle scrapes: the
        time from which a window's first sample holds exactly ``count``."""
        deadline = time.monotonic() + timeout_s
        while self.scalar(f"sum({REQUESTS})") != count:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.5)
        time.sleep(3.5)
        return time.time() - 2.5

    def figures(self, since: float, final: float, timeout_s: float = 30) -> PrometheusFigures:
        """What Prometheus says over the window from ``since`` to once it sampled ``final``."""
        deadline = time.monotonic() + timeout_s
        while self.scalar(f"sum({REQUESTS})") < final and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2.5)  # two more samples at the final value
        at = time.time()
        window = f"{int(at - since) + 1}s"
        samples = self.query(f"{REQUESTS}[{window}]", at)
        firsts = [float(series["values"][0][1]) for series in samples]  # type: ignore[index]
        lasts = [float(series["values"][-1][1]) for series in samples]  # type: ignore[index]
        times = [float(v[0]) for series in samples for v in series["values"]]  # type: ignore[union-attr,index]
        return PrometheusFigures(
            resets=sum(self.scalar(f"sum(resets({name}[{window}]))", at) for name in self.cumulative_names()),
            increase=self.scalar(f"sum(increase({REQUESTS}[{window}]))", at),
            delta=sum(lasts) - sum(firsts),
            extrapolation_bound=(int(at - since) + 1) / (max(times) - min(times)),
            up_failures=self.scalar(f'count_over_time((up{{job="app"}} == 0)[{window}:1s])', at),
            scrapes=self.scalar(f'count_over_time(up{{job="app"}}[{window}])', at),
            slowest_scrape_s=self.scalar(
                f'max_over_time(scrape_duration_seconds{{job="app"}}[{window}])', at
            ),
        )


@contextmanager
def prometheus_scraping(app_port: int, tmp_path: Path) -> Iterator[Prometheus | None]:
    """Debian's ``prometheus`` scraping ``/metrics`` of the app every second (``None``: not installed)."""
    binary = shutil.which("prometheus")
    if binary is None:
        yield None
        return
    config, port = tmp_path / "prometheus.yml", free_port()
    config.write_text(PROMETHEUS_CONFIG.replace("{port}", str(app_port)))
    argv = [
        *(binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}"),
        *(f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"),
    ]
    with (tmp_path / "prometheus.log").open("w") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        prometheus = Prometheus(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        while True:
            try:
                if CLIENT.get(f"{prometheus.url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, (
                tmp_path / "prometheus.log"
            ).read_text()
            time.sleep(0.3)
        yield prometheus
    finally:
        process.terminate()
        process.wait(timeout=20)
