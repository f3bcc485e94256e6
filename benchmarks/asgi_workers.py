"""A FastAPI app under ``uvicorn --workers 2``: latency with the package against without it.

    python benchmarks/asgi_workers.py [--requests 5000] [--concurrency 16] [--rounds 4]

Two servers run side by side, each ``uvicorn --workers 2`` on loopback:

* **plain**: the endpoint looks a key up in a dict and returns it;
* **instrumented**: the same app with ``configure(environment="production")`` (JSON
  logs to the console, sent to /dev/null, and to files), ``instrument_app`` (SERVER
  span, access record, ``http.server.request.duration``) and the lookup done by a
  memory ``CacheManager`` (span and metrics), with ``PROMETHEUS_MULTIPROC_DIR`` set.

The servers listen on Unix sockets: over loopback TCP (``--tcp``) uvicorn's
multi-worker mode answers no keep-alive request faster than ~40 ms whatever the app
does (its shared listening socket is made without ``IPPROTO_TCP``, so asyncio leaves
Nagle on and the response body waits for the client's delayed ACK), which hides any
difference between the two apps.

httpx sends ``--requests`` to each (at most ``--concurrency`` in flight, keep-alive
connections spread over both workers), in rounds that alternate the two servers so
machine noise hits both. Prints p50, p99, throughput and the workers' CPU time per
request (from /proc: the figure least moved by other load on the machine) per server
and their ratios, then scrapes
the instrumented server's ``/metrics`` once: the lookups it counts must equal the
lookups made, whichever worker served them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from telemetry_infra.testing import free_port

APP = textwrap.dedent(
    """
    import os

    from fastapi import FastAPI

    app = FastAPI()
    PRICES = {f"sku-{i}": i for i in range(100)}

    if os.environ.get("BENCH_INSTRUMENTED") == "1":
        import telemetry_infra as ti
        from telemetry_infra.integrations.fastapi import instrument_app

        ti.configure("bench-asgi", environment="production")
        cache = ti.CacheManager(redis_url=None, name="bench")

        @app.get("/price/{sku}")
        async def price(sku: str) -> dict:
            value = await cache.get(sku)
            if value is None:
                value = PRICES.get(sku)
                await cache.set(sku, value)
            return {"sku": sku, "price": value}

        instrument_app(app)
    else:

        @app.get("/price/{sku}")
        async def price(sku: str) -> dict:
            return {"sku": sku, "price": PRICES.get(sku)}
    """
)


class Server:
    def __init__(self, name: str, workdir: Path, instrumented: bool, tcp: bool) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.uds = None if tcp else str(workdir / "server.sock")
        env = {**os.environ, "BENCH_INSTRUMENTED": "1" if instrumented else "0"}
        if instrumented:
            shared = workdir / "multiproc"
            shared.mkdir()
            env.update(PROMETHEUS_MULTIPROC_DIR=str(shared), LOG_DIR=str(workdir / "logs"))
        argv = [sys.executable, "-m", "uvicorn", "bench_app:app", "--app-dir", str(workdir)]
        argv += ["--uds", self.uds] if self.uds else ["--port", str(self.port)]
        argv += ["--workers", "2", "--log-level", "warning"]
        self.process = subprocess.Popen(
            argv, cwd=workdir, env=env, stdout=subprocess.DEVNULL, start_new_session=True
        )
        self.latencies: list[float] = []
        self.elapsed = 0.0
        self.cpu_s = 0.0
        self.lookups = 0

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with self.client() as client:
                    client.get("/price/ready", timeout=2)
                self.lookups += 1  # a lookup too
                return
            except httpx.TransportError:
                time.sleep(0.2)
        raise SystemExit(f"{self.name} server did not start")

    def workers_cpu_s(self) -> float:
        """User + system CPU seconds the workers have used so far (Linux /proc)."""
        pid = self.process.pid
        total = 0
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / os.sysconf("SC_CLK_TCK")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, transport=httpx.HTTPTransport(uds=self.uds), timeout=10)

    def async_client(self, concurrency: int) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        transport = httpx.AsyncHTTPTransport(uds=self.uds, limits=limits)
        return httpx.AsyncClient(base_url=self.url, transport=transport, timeout=30)

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=20)


async def load(server: Server, requests: int, concurrency: int) -> None:
    async with server.async_client(concurrency) as client:
        queue = iter(range(requests))

        async def worker() -> None:
            for i in queue:
                started = time.perf_counter()
                response = await client.get(f"/price/sku-{i % 100}")
                server.latencies.append(time.perf_counter() - started)
                response.raise_for_status()
                server.lookups += 1

        started, cpu = time.perf_counter(), server.workers_cpu_s()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        server.elapsed += time.perf_counter() - started
        server.cpu_s += server.workers_cpu_s() - cpu


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if q < 100 else max(values)


def scrape_check(server: Server) -> tuple[float, float]:
    with server.client() as client:
        text = client.get("/metrics").text
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    lookups = sum(s.value for s in samples if s.name in ("cache_hits_total", "cache_misses_total"))
    requests = sum(
        s.value
        for s in samples
        if s.name == "http_server_request_duration_seconds_count"
        and s.labels.get("http_route") == "/price/{sku}"
    )
    return lookups, requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="requests sent to each server")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tcp", action="store_true", help="loopback TCP rather than a Unix socket")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "plain").mkdir()
        (Path(tmp) / "instrumented").mkdir()
        for sub in ("plain", "instrumented"):
            (Path(tmp) / sub / "bench_app.py").write_text(APP)
        plain = Server("plain", Path(tmp) / "plain", instrumented=False, tcp=args.tcp)
        ours = Server("instrumented", Path(tmp) / "instrumented", instrumented=True, tcp=args.tcp)
        try:
            for server in (plain, ours):
                server.wait_ready()
            asyncio.run(load(plain, 200, args.concurrency))  # warm-up, not measured
            asyncio.run(load(ours, 200, args.concurrency))
            for server in (plain, ours):
                server.latencies.clear()
                server.elapsed = server.cpu_s = 0.0
            per_round = args.requests // args.rounds
            for round_number in range(args.rounds):
                order = (plain, ours) if round_number % 2 == 0 else (ours, plain)
                for server in order:
                    asyncio.run(load(server, per_round, args.concurrency))
            time.sleep(0.2)
            counted, requests = scrape_check(ours)
        finally:
            plain.stop()
            ours.stop()

    sent = args.rounds * per_round
    over = "loopback TCP" if args.tcp else "a Unix socket"
    print(f"{sent} requests per server, concurrency {args.concurrency}, 2 uvicorn workers each, over {over}")
    print(f"{'':14}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}{'CPU µs/req':>12}")
    for server in (plain, ours):
        p50, p99 = percentile(server.latencies, 50), percentile(server.latencies, 99)
        rate, cpu = sent / server.elapsed, server.cpu_s / sent * 1e6
        print(f"{server.name:14}{p50 * 1000:>10.2f}{p99 * 1000:>10.2f}{rate:>10.0f}{cpu:>12.0f}")
    ratio50 = percentile(ours.latencies, 50) / percentile(plain.latencies, 50)
    ratio99 = percentile(ours.latencies, 99) / percentile(plain.latencies, 99)
    throughput, cpu = plain.elapsed / ours.elapsed, ours.cpu_s / plain.cpu_s
    print(f"{'ratio':14}{ratio50:>10.2f}{ratio99:>10.2f}{throughput:>10.2f}{cpu:>12.2f}")
    verdict = "OK" if counted == ours.lookups else "MISMATCH"
    print(f"scrape: {counted:.0f} lookups counted, {ours.lookups} made ({verdict})")
    print(f"        {requests:.0f} requests counted on /price/{{sku}}")
    if counted != ours.lookups:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
