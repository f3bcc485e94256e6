"""Soak: 50 tasks of get/set/mget/mset/delete under Redis, collector and client faults.

Starts its own redis-server (``telemetry_infra.testing.RedisServer``) and an OTLP
receiver that turns UNAVAILABLE for the second half. One ``CacheManager`` serves two
event loops in sequence (``asyncio.run`` twice, as a worker that runs one loop per
job does):

* loop 1: kill + restart, ``CLIENT PAUSE``, one 200,000-item ``mset`` beside the
  workload, ``DEBUG SLEEP``;
* loop 2: an OOM window (``maxmemory`` + ``noeviction``: Redis answers and refuses
  writes), a stretch on a 2-connection pool (the workload moves to a second manager
  with ``max_connections=2``), kill + restart.

10% of the calls are cancelled at a random point. Another writer (its own manager)
stores entries in the same namespace all along. Every answer is checked (see
``tests/reliability/workload.py``); the figures are printed and written to
``build/reliability/soak.json``: wrong values, stale values, breaker openings while
Redis answered, entries of the other writer that vanished, per loop too::

    python benchmarks/soak.py [--seconds 36] [--workers 50] [--cancel-rate 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "reliability"))

from workload import (  # noqa: E402
    PROBE_INTERVAL,
    SOCKET_TIMEOUT,
    BreakerMonitor,
    CheckedWorkload,
    OtherWriter,
    debug_sleep,
    exported_lookups,
    kill_and_restart,
    openings_while_healthy,
    out_of_memory,
    pause_clients,
)

import telemetry_infra as ti  # noqa: E402
from telemetry_infra.testing import OTLPReceiver, RedisServer  # noqa: E402

NAMESPACE = "soak"
CALL_BOUND = SOCKET_TIMEOUT + 0.05
RECOVERY_BOUND = PROBE_INTERVAL + 1.0
BIG_MSET_ITEMS = 200_000
BIG_MSET_ESTIMATE_S = 2.5
OTHER_WRITER_PERIOD_S = 0.2
STOP_TIMEOUT_S = 5.0
"""A call still running this long after the workload is told to stop is stuck (reported)."""


Fault = Callable[[RedisServer, float], Awaitable[float]]


def manager(redis: RedisServer, name: str, **options: Any) -> ti.CacheManager:
    return ti.CacheManager(
        redis_url=redis.url, name=name, namespace=NAMESPACE, socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT, probe_interval=PROBE_INTERVAL, **options,
    )  # fmt: skip


def progress(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Loop:
    """What happened in one event loop."""

    steps: list[str] = field(default_factory=list)
    openings: list[float] = field(default_factory=list)
    unreachable: list[tuple[float, float]] = field(default_factory=list)

    @property
    def openings_while_healthy(self) -> int:
        return openings_while_healthy(self.openings, self.unreachable, 2 * SOCKET_TIMEOUT)


class Soak:
    """The run: one main manager and one workload across both loops."""

    def __init__(self, redis: RedisServer, workers: int, cancel_rate: float) -> None:
        self.redis = redis
        self.cache = manager(redis, "soak")
        self.workload = CheckedWorkload(self.cache, workers, CALL_BOUND, cancel_rate=cancel_rate)
        self.loops: list[Loop] = []
        self.recoveries: list[float | None] = []
        self.lost = 0
        self.big_mset: dict[str, Any] = {}
        self.side_stats: dict[str, dict[str, Any]] = {}
        self._loop = Loop()
        self._monitor: BreakerMonitor | None = None
        self._writer: OtherWriter | None = None

    async def run_loop(self, steps: list[Step], quiet_s: float, *, last: bool) -> None:
        self._loop = loop = Loop()
        self.loops.append(loop)
        if len(self.loops) == 1:
            await self.cache.initialize()
        other = manager(self.redis, "soak-other")
        await other.initialize()
        self._writer = writer = OtherWriter(other, self.redis, NAMESPACE)
        self._monitor = monitor = BreakerMonitor(self.cache)
        monitor.start()
        self.workload.start()
        writing = asyncio.create_task(self._keep_writing(writer))
        for step in steps:
            await asyncio.sleep(quiet_s)
            loop.steps.append(step.name)
            progress(f"loop {len(self.loops)}: {step.name}")
            await step.run(self, step.seconds)
        await asyncio.sleep(quiet_s)
        progress(f"loop {len(self.loops)}: stopping the workload")
        await self.workload.stop(timeout_s=STOP_TIMEOUT_S)
        writing.cancel()
        await asyncio.gather(writing, return_exceptions=True)
        self.lost += await writer.count_lost()
        if last:
            await self.workload.verify_all()
        await monitor.stop()
        loop.openings += monitor.openings
        self.side_stats["soak-other"] = other.get_stats()
        await other.close()
        if last:
            await self.cache.close()

    async def _keep_writing(self, writer: OtherWriter) -> None:
        while True:
            await writer.write()
            await asyncio.sleep(OTHER_WRITER_PERIOD_S)

    # -- steps ----------------------------------------------------------------------

    async def unreachable(self, fault: Fault, seconds: float) -> None:
        assert self._writer is not None and self._monitor is not None
        self.lost += await self._writer.count_lost()
        started = time.monotonic()
        ended = await fault(self.redis, seconds)
        self._loop.unreachable.append((started, ended))
        if fault is kill_and_restart:
            self._writer.forget()  # the server lost its data: nothing written before counts
        self.recoveries.append(await self._monitor.recovery_after(ended, RECOVERY_BOUND + 4))

    async def out_of_memory(self, seconds: float) -> None:
        await out_of_memory(self.redis, seconds)

    async def big_mset(self, _seconds: float) -> None:
        items = {f"bulk:{i}": i for i in range(BIG_MSET_ITEMS)}
        started = time.perf_counter()
        stored = await self.cache.mset(items, ttl=120)
        took = time.perf_counter() - started
        keys = [f"{NAMESPACE}:{key}" for key in items]

        def held() -> int:
            with self.redis.client(socket_timeout=10) as raw:
                return sum(raw.exists(*keys[i : i + 10_000]) for i in range(0, len(keys), 10_000))

        held_by_redis = await asyncio.to_thread(held)
        self.big_mset = {
            "items": len(items),
            "returned": stored,
            "seconds": round(took, 2),
            "held_by_redis": held_by_redis,
            "wrong_result": stored and held_by_redis != len(items),
        }

    async def narrow_pool(self, seconds: float) -> None:
        narrow = manager(self.redis, "soak-narrow", max_connections=2)
        await narrow.initialize()
        monitor = BreakerMonitor(narrow)
        monitor.start()
        self.workload.cache = narrow
        await asyncio.sleep(seconds)
        self.workload.cache = self.cache
        await asyncio.sleep(2 * CALL_BOUND)  # calls still running on it finish first
        await monitor.stop()
        self._loop.openings += monitor.openings
        self.side_stats["soak-narrow"] = narrow.get_stats()
        await narrow.close()


@dataclass
class Step:
    name: str
    seconds: float
    run: Callable[[Soak, float], Awaitable[None]]


def fault_step(fault: Fault, seconds: float) -> Step:
    return Step(fault.__name__, seconds, lambda soak, s: soak.unreachable(fault, s))


LOOP_1 = [
    fault_step(kill_and_restart, 1.0),
    fault_step(pause_clients, 1.5),
    Step(f"mset of {BIG_MSET_ITEMS} items", BIG_MSET_ESTIMATE_S, Soak.big_mset),
    fault_step(debug_sleep, 1.0),
]
LOOP_2 = [
    Step("out_of_memory", 1.5, Soak.out_of_memory),
    Step("2-connection pool", 3.0, Soak.narrow_pool),
    fault_step(kill_and_restart, 1.0),
]


def anomalies(soak: Soak) -> dict[str, int]:
    figures = soak.workload.figures
    return {
        "exceptions": len(figures.exceptions),
        "stuck_calls": figures.stuck_calls,
        "calls_over_timeout_plus_50ms": figures.slow_calls,
        "wrong_values": len(figures.wrong),
        "stale_values": len(figures.stale),
        "breaker_openings_while_healthy": sum(loop.openings_while_healthy for loop in soak.loops),
        "other_writer_entries_lost": soak.lost,
    }


def run(seconds: float, workers: int, cancel_rate: float, redis: RedisServer, otlp: OTLPReceiver) -> dict:
    steps_time = sum(step.seconds for step in LOOP_1 + LOOP_2)
    quiet = max(0.5, (seconds - steps_time) / (len(LOOP_1) + len(LOOP_2) + 2))
    telemetry = ti.configure(
        service_name="soak", otlp_endpoint=otlp.grpc_endpoint, log_dir=tempfile.mkdtemp(), console_logs=False,
        otlp_timeout_s=1.0, metric_export_interval_ms=1000,
    )  # fmt: skip
    soak = Soak(redis, workers, cancel_rate)
    started = time.monotonic()
    asyncio.run(soak.run_loop(LOOP_1, quiet, last=False))
    per_loop = {"loop_1": anomalies(soak)}
    otlp.unavailable = True  # the collector fails for the second half
    asyncio.run(soak.run_loop(LOOP_2, quiet, last=True))
    duration = time.monotonic() - started
    total = anomalies(soak)
    per_loop["loop_2"] = {name: total[name] - per_loop["loop_1"][name] for name in total}
    stats = soak.cache.get_stats()
    lookups_counted = stats["hits"] + stats["misses"]
    narrow = soak.side_stats.get("soak-narrow", {})
    lookups_counted += narrow.get("hits", 0) + narrow.get("misses", 0)
    exposition = telemetry.prometheus_text()
    exported = sum(exported_lookups(exposition, name) or 0 for name in ("soak", "soak-narrow"))
    shutdown_started = time.monotonic()
    ti.shutdown(timeout_s=2.0)
    shutdown_s = time.monotonic() - shutdown_started
    figures = soak.workload.figures
    return {
        "duration_s": round(duration, 1),
        "workers": workers,
        "event_loops": len(soak.loops),
        "ops_held": figures.total_ops,
        "ops_per_second": round(figures.total_ops / duration),
        "ops_by_kind": dict(figures.ops),
        "lookups": figures.lookups,
        "cancel_rate": cancel_rate,
        "calls_cancelled": figures.cancelled,
        "steps": {f"loop_{i}": loop.steps for i, loop in enumerate(soak.loops, 1)},
        "collector_fault": "UNAVAILABLE for the second loop",
        "breaker_opened": sum(len(loop.openings) for loop in soak.loops),
        "breaker_openings_while_healthy": sum(loop.openings_while_healthy for loop in soak.loops),
        "recoveries_s": [None if r is None else round(r, 3) for r in soak.recoveries],
        "recovery_bound_s": RECOVERY_BOUND,
        "socket_timeout_s": SOCKET_TIMEOUT,
        "slowest_call_s": round(figures.slowest_s, 4),
        "calls_over_timeout_plus_50ms": figures.slow_calls,
        "stuck_calls": figures.stuck_calls,
        "stuck_samples": figures.stuck_samples,
        "exceptions": len(figures.exceptions),
        "exception_samples": figures.exceptions[:5],
        "wrong_values": len(figures.wrong),
        "wrong_samples": [repr(sample) for sample in figures.wrong[:3]],
        "stale_values": len(figures.stale),
        "stale_samples": [repr(sample) for sample in figures.stale[:3]],
        "other_writer_entries_lost": soak.lost,
        "refused_writes": dict(figures.refused_writes),
        "big_mset": soak.big_mset,
        "per_loop": per_loop,
        "stats_hits_plus_misses": lookups_counted,
        "exported_hits_plus_misses": exported,
        "journal_overflowed": stats["journal_overflowed"],
        "shutdown_s": round(shutdown_s, 3),
        "otlp_spans_received": len(otlp.spans()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=36.0)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--cancel-rate", type=float, default=0.1)
    parser.add_argument("--results", type=Path, default=ROOT / "build" / "reliability" / "soak.json")
    args = parser.parse_args()
    with RedisServer() as redis, OTLPReceiver() as otlp:
        figures = run(args.seconds, args.workers, args.cancel_rate, redis, otlp)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(figures, indent=2))
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")
    bad = sum(
        figures[name]
        for name in (
            "exceptions", "wrong_values", "stale_values", "breaker_openings_while_healthy",
            "other_writer_entries_lost", "stuck_calls",
        )
    )  # fmt: skip
    agree = figures["stats_hits_plus_misses"] == figures["lookups"]
    big_mset_held = figures["big_mset"].get("returned") is True and not figures["big_mset"]["wrong_result"]
    return 0 if bad == 0 and agree and big_mset_held and None not in figures["recoveries_s"] else 1


if __name__ == "__main__":
    sys.exit(main())
