"""Soak: 50 tasks of get/set/mget/mset/delete for 30 s under Redis and collector faults.

Starts its own redis-server (``telemetry_infra.testing.RedisServer``) and an OTLP
receiver that turns UNAVAILABLE halfway, kills and restarts Redis three times,
pauses it (``CLIENT PAUSE``) and slows it (``DEBUG SLEEP``), then prints the
figures and writes them to ``build/reliability/soak.json``::

    python benchmarks/soak.py [--seconds 30] [--workers 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "reliability"))

from workload import (  # noqa: E402
    PROBE_INTERVAL,
    SOCKET_TIMEOUT,
    debug_sleep,
    exported_lookups,
    kill_and_restart,
    pause_clients,
    run_scenario,
)

import telemetry_infra as ti  # noqa: E402
from telemetry_infra.testing import OTLPReceiver, RedisServer  # noqa: E402

FAULTS = [
    (kill_and_restart, 1.0),
    (pause_clients, 1.5),
    (kill_and_restart, 1.0),
    (debug_sleep, 1.0),
    (kill_and_restart, 1.0),
]


async def soak(seconds: float, workers: int, redis: RedisServer, otlp: OTLPReceiver) -> dict:
    fault_time = sum(duration for _, duration in FAULTS)
    quiet = max(0.5, (seconds - fault_time) / (len(FAULTS) + 1))
    telemetry = ti.configure(
        service_name="soak", otlp_endpoint=otlp.grpc_endpoint, log_dir=tempfile.mkdtemp(), console_logs=False,
        otlp_timeout_s=1.0, metric_export_interval_ms=1000,
    )  # fmt: skip
    cache = ti.CacheManager(
        redis_url=redis.url, name="soak", namespace="soak", socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT, probe_interval=PROBE_INTERVAL,
    )  # fmt: skip
    await cache.initialize()
    collector_fault = asyncio.get_running_loop().call_later(seconds / 2, setattr, otlp, "unavailable", True)
    result = await run_scenario(
        cache, redis, FAULTS, workers=workers, call_bound_s=SOCKET_TIMEOUT + 0.05, quiet_s=quiet,
        recovery_timeout_s=PROBE_INTERVAL + 5,
    )  # fmt: skip
    collector_fault.cancel()
    stats = cache.get_stats()
    await cache.close()
    exported = exported_lookups(telemetry.prometheus_text(), "soak")
    started = time.monotonic()
    ti.shutdown(timeout_s=2.0)
    shutdown_s = time.monotonic() - started
    figures = result.figures
    return {
        "duration_s": round(result.duration_s, 1),
        "workers": workers,
        "ops_held": figures.total_ops,
        "ops_per_second": round(figures.total_ops / result.duration_s),
        "ops_by_kind": dict(figures.ops),
        "lookups": figures.lookups,
        "redis_faults_injected": result.faults,
        "collector_fault": "UNAVAILABLE from the middle of the run on",
        "breaker_opened": result.times_opened,
        "recoveries_s": [None if r is None else round(r, 3) for r in result.recoveries_s],
        "recovery_bound_s": PROBE_INTERVAL + 1.0,
        "socket_timeout_s": SOCKET_TIMEOUT,
        "slowest_call_s": round(figures.slowest_s, 4),
        "calls_over_timeout_plus_50ms": figures.slow_calls,
        "exceptions": len(figures.exceptions),
        "exception_samples": figures.exceptions[:5],
        "wrong_values": len(figures.wrong),
        "stale_values": len(figures.stale),
        "stats_hits_plus_misses": stats["hits"] + stats["misses"],
        "exported_hits_plus_misses": exported,
        "journal_overflowed": stats["journal_overflowed"],
        "shutdown_s": round(shutdown_s, 3),
        "otlp_spans_received": len(otlp.spans()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--results", type=Path, default=ROOT / "build" / "reliability" / "soak.json")
    args = parser.parse_args()
    with RedisServer() as redis, OTLPReceiver() as otlp:
        figures = asyncio.run(soak(args.seconds, args.workers, redis, otlp))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(figures, indent=2))
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")
    lost = figures["exceptions"] + figures["wrong_values"] + figures["stale_values"]
    agree = figures["stats_hits_plus_misses"] == figures["lookups"]
    return 0 if lost == 0 and agree and None not in figures["recoveries_s"] else 1


if __name__ == "__main__":
    sys.exit(main())
