"""How long ``/metrics`` takes under gunicorn recycling its workers, against a trivial endpoint.

    python benchmarks/scrape_latency.py [--requests 3000] [--threads 4] [--every 0.3]

A FastAPI app with ``configure()``, ``instrument_app`` and a memory ``CacheManager`` runs
under ``gunicorn -k uvicorn.workers.UvicornWorker -w 3 --max-requests 200
--max-requests-jitter 20`` with ``PROMETHEUS_MULTIPROC_DIR`` and the documented
``child_exit`` hook (docs/web.md). While ``--threads`` clients send ``--requests``
lookups (a new connection each), a scraper alternates ``GET /metrics`` (with
``X-Prometheus-Scrape-Timeout-Seconds: 1``, as a Prometheus with a 1 s timeout sends)
and ``GET /ready`` (the floor: an endpoint that does nothing, on the same server and
connections, so machine load hits both) every ``--every`` seconds. Then one worker is
SIGSTOPped and both are measured again.

Prints p50/p99/max of each and the ratio to the floor, how many counter or histogram
samples fell between consecutive scrapes, and the final request count against the
requests made.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from telemetry_infra.testing import free_port

APP = textwrap.dedent(
    """
    import os

    from fastapi import FastAPI

    import telemetry_infra as ti
    from telemetry_infra.integrations.fastapi import instrument_app

    ti.configure("bench-scrape", environment="production")
    cache = ti.CacheManager(redis_url=None, name="lookups")
    app = FastAPI()


    @app.get("/lookup/{key}")
    async def lookup(key: str) -> dict:
        if await cache.get(key) is None:
            await cache.set(key, key)
        return {"pid": os.getpid()}


    @app.get("/ready")
    async def ready() -> dict:
        return {"pid": os.getpid()}


    instrument_app(app)
    """
)
HOOKS = """
from telemetry_infra import mark_process_dead


def child_exit(server, worker):
    mark_process_dead(worker.pid)
"""
ROUTE = "/lookup/{key}"
Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def cumulative(text: str) -> Series:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        if family.type in ("counter", "histogram")
        for s in family.samples
    }


def requests_counted(series: Series) -> float:
    return sum(
        value
        for (name, labels), value in series.items()
        if name == "http_server_request_duration_seconds_count" and ("http_route", ROUTE) in labels
    )


def decreases(scrapes: list[Series]) -> int:
    return sum(
        1
        for before, after in itertools.pairwise(scrapes)
        for key, value in before.items()
        if after.get(key, 0.0) < value
    )


class Measured:
    def __init__(self) -> None:
        self.metrics: list[float] = []
        self.floor: list[float] = []
        self.scrapes: list[Series] = []

    def once(self, url: str) -> None:
        headers = {"Connection": "close", "X-Prometheus-Scrape-Timeout-Seconds": "1"}
        with httpx.Client(base_url=url, timeout=10, headers=headers) as client:
            began = time.perf_counter()
            response = client.get("/metrics")
            self.metrics.append(time.perf_counter() - began)
            self.scrapes.append(cumulative(response.text))
        with httpx.Client(base_url=url, timeout=10, headers={"Connection": "close"}) as client:
            began = time.perf_counter()
            client.get("/ready")
            self.floor.append(time.perf_counter() - began)


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def report(label: str, measured: Measured) -> None:
    metrics, floor = measured.metrics, measured.floor
    print(f"{label} ({len(metrics)} scrapes)")
    print(f"  {'':10}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for name, values in (("/metrics", metrics), ("/ready", floor)):
        print(
            f"  {name:10}{p(values, 50) * 1e3:>10.1f}{p(values, 99) * 1e3:>10.1f}{max(values) * 1e3:>10.1f}"
        )
    ratios = (p(metrics, 50) / p(floor, 50), p(metrics, 99) / p(floor, 99), max(metrics) / max(floor))
    print(f"  {'ratio':10}" + "".join(f"{r:>10.2f}" for r in ratios))


def worker_pids(master: int) -> list[int]:
    return [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--every", type=float, default=0.3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir, port = Path(tmp), free_port()
        (workdir / "bench_app.py").write_text(APP)
        (workdir / "gunicorn.conf.py").write_text(HOOKS)
        (workdir / "multiproc").mkdir()
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(workdir / "multiproc"), "LOG_DIR": str(workdir)}
        argv = [sys.executable, "-m", "gunicorn", "bench_app:app", "--chdir", tmp, "-c", "gunicorn.conf.py"]
        argv += ["-k", "uvicorn.workers.UvicornWorker", "-w", "3", "-b", f"127.0.0.1:{port}"]
        argv += ["--max-requests", "200", "--max-requests-jitter", "20"]
        server = subprocess.Popen(
            argv,
            cwd=tmp,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"{url}/ready", timeout=2)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise SystemExit("the server did not start") from None
                    time.sleep(0.2)

            def lookup(index: int) -> bool:
                try:
                    return httpx.get(
                        f"{url}/lookup/k{index % 13}", headers={"Connection": "close"}
                    ).is_success
                except httpx.TransportError:
                    return False

            recycling, stop = Measured(), threading.Event()

            def scraper() -> None:
                while not stop.wait(args.every):
                    recycling.once(url)

            thread = threading.Thread(target=scraper, daemon=True)
            thread.start()
            with ThreadPoolExecutor(args.threads) as pool:
                made = sum(pool.map(lookup, range(args.requests)))
            stop.set()
            thread.join()
            time.sleep(1.0)
            recycling.once(url)
            final = requests_counted(recycling.scrapes[-1])

            stopped = Measured()
            victim = worker_pids(server.pid)[0]
            os.kill(victim, signal.SIGSTOP)
            try:  # 15 scrapes: well within gunicorn's 30 s worker timeout, which kills a stopped worker
                for _ in range(15):
                    stopped.once(url)
                    time.sleep(args.every)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGCONT)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)

    load = os.getloadavg()[0]
    print(
        f"gunicorn -w 3 --max-requests 200 --max-requests-jitter 20, {args.requests} lookups, "
        f"load average {load:.1f} (2 cores, shared)"
    )
    report("while recycling under load", recycling)
    report("one worker SIGSTOPped, idle", stopped)
    print(f"samples that fell between scrapes: {decreases(recycling.scrapes) + decreases(stopped.scrapes)}")
    print(f"requests counted {final:.0f}, made {made}")


if __name__ == "__main__":
    main()
