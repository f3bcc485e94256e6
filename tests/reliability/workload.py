"""A mixed cache workload whose every answer is checked, and the Redis faults staged under it.

Shared by ``tests/reliability`` (short runs) and ``benchmarks/soak.py`` (the long one).

Each worker owns its keys and writes values derived from the key and a version
number, so a read can be judged on its own: a value that was never written for
that key is *wrong*; a value older than the worker's last write or delete (a
deleted value coming back, for instance) is *stale*. A miss is always allowed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from telemetry_infra import CacheManager
from telemetry_infra.testing import RedisServer

__all__ = [
    "BreakerMonitor",
    "CheckedWorkload",
    "Fault",
    "ScenarioResult",
    "WorkloadFigures",
    "debug_sleep",
    "exported_lookups",
    "kill_and_restart",
    "pause_clients",
    "run_scenario",
]

SOCKET_TIMEOUT = 0.25
"""Redis socket timeout of the managers under test: outages must cost no more per call."""
PROBE_INTERVAL = 0.2
"""Breaker probe interval of the managers under test: recovery is bounded by it."""
KEYS_PER_WORKER = 8
DELETED = -1


def value_for(key: str, version: int) -> dict[str, Any]:
    """The only value ever written under ``key`` at ``version``."""
    return {"key": key, "version": version, "check": f"{key}#{version}"}


@dataclass
class WorkloadFigures:
    """What the workload did and every anomaly it saw."""

    ops: Counter[str] = field(default_factory=Counter)
    lookups: int = 0
    exceptions: list[str] = field(default_factory=list)
    wrong: list[tuple[str, Any]] = field(default_factory=list)
    stale: list[tuple[str, Any]] = field(default_factory=list)
    slowest_s: float = 0.0
    slow_calls: int = 0

    @property
    def total_ops(self) -> int:
        return sum(self.ops.values())


class _Worker:
    """One task: its own keys, the versions it wrote, the last thing it did to each key."""

    def __init__(self, index: int, figures: WorkloadFigures, seed: int) -> None:
        self.keys = [f"w{index}:k{j}" for j in range(KEYS_PER_WORKER)]
        self.written: dict[str, set[int]] = {key: set() for key in self.keys}
        self.latest: dict[str, int] = dict.fromkeys(self.keys, DELETED)
        self.version = 0
        self.figures = figures
        self.random = random.Random(seed)

    def check(self, key: str, value: Any) -> None:
        if value is None:
            return
        version = value.get("version") if isinstance(value, dict) else None
        if (
            not isinstance(version, int)
            or version not in self.written[key]
            or value != value_for(key, version)
        ):
            self.figures.wrong.append((key, value))
        elif version != self.latest[key]:
            self.figures.stale.append((key, value))

    def next_version(self, key: str) -> int:
        self.version += 1
        self.written[key].add(self.version)
        return self.version


class CheckedWorkload:
    """``workers`` tasks of get/set/mget/mset/delete against ``cache`` until stopped.

    No call may raise or take longer than ``call_bound_s``; both are counted, not raised.
    """

    def __init__(self, cache: CacheManager, workers: int, call_bound_s: float, seed: int = 8) -> None:
        self.cache = cache
        self.call_bound_s = call_bound_s
        self.figures = WorkloadFigures()
        self._workers = [_Worker(i, self.figures, seed + i) for i in range(workers)]
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(worker)) for worker in self._workers]

    async def stop(self) -> WorkloadFigures:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.figures

    async def verify_all(self) -> None:
        """Read every key once more (after recovery): every answer is checked."""
        for worker in self._workers:
            for key in worker.keys:
                worker.check(key, await self._timed("get", self.cache.get(key)))
            self.figures.lookups += len(worker.keys)

    async def _timed(self, operation: str, call: Awaitable[Any]) -> Any:
        started = time.perf_counter()
        try:
            return await call
        except Exception as exc:  # the property under test: nothing reaches the caller
            self.figures.exceptions.append(f"{operation}: {type(exc).__name__}: {exc}")
            return None
        finally:
            elapsed = time.perf_counter() - started
            self.figures.ops[operation] += 1
            self.figures.slowest_s = max(self.figures.slowest_s, elapsed)
            self.figures.slow_calls += elapsed > self.call_bound_s

    async def _run(self, worker: _Worker) -> None:
        while not self._stop.is_set():
            await self._step(worker)
            await asyncio.sleep(0)  # memory-only stretches never yield on their own

    async def _step(self, worker: _Worker) -> None:
        cache, pick, figures = self.cache, worker.random.random(), self.figures
        key = worker.random.choice(worker.keys)
        if pick < 0.35:
            figures.lookups += 1
            worker.check(key, await self._timed("get", cache.get(key)))
        elif pick < 0.55:
            version = worker.next_version(key)
            if await self._timed("set", cache.set(key, value_for(key, version), ttl=60)):
                worker.latest[key] = version
        elif pick < 0.70:
            keys = worker.random.sample(worker.keys, 3)
            figures.lookups += len(keys)
            found = await self._timed("mget", cache.mget(keys)) or {}
            for one in keys:
                worker.check(one, found.get(one))
        elif pick < 0.85:
            keys = worker.random.sample(worker.keys, 2)
            mapping = {one: value_for(one, worker.next_version(one)) for one in keys}
            if await self._timed("mset", cache.mset(mapping, ttl=60)):
                worker.latest.update((one, value["version"]) for one, value in mapping.items())
        else:
            await self._timed("delete", cache.delete(key))
            worker.latest[key] = DELETED


class BreakerMonitor:
    """Samples ``cache.fallback_active`` and tells how long recovery took after a fault."""

    def __init__(self, cache: CacheManager, period_s: float = 0.005) -> None:
        self.cache = cache
        self.period_s = period_s
        self.transitions: list[tuple[float, bool]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._sample())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _sample(self) -> None:
        state = self.cache.fallback_active
        self.transitions.append((time.monotonic(), state))
        while True:
            await asyncio.sleep(self.period_s)
            if self.cache.fallback_active != state:
                state = not state
                self.transitions.append((time.monotonic(), state))

    async def recovery_after(self, fault_end: float, timeout_s: float) -> float | None:
        """Seconds from ``fault_end`` until the breaker is closed (0 if it never opened);
        ``None`` if it is still open after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        # fallback_active is the cache's plain attribute: there is no event to wait on
        while self.cache.fallback_active and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(self.period_s)
        if self.cache.fallback_active:
            return None
        closes = [at for at, is_open in self.transitions if not is_open and at >= fault_end]
        return max(0.0, closes[-1] - fault_end) if closes else 0.0

    @property
    def times_opened(self) -> int:
        return sum(is_open for _, is_open in self.transitions)


Fault = Callable[[RedisServer, float], Awaitable[float]]
"""Stage a fault lasting about ``seconds``; return the ``time.monotonic()`` it ended at."""


async def kill_and_restart(server: RedisServer, seconds: float) -> float:
    """SIGKILL the server, keep it down ``seconds``, start it again (its data is gone)."""
    await asyncio.to_thread(server.kill)
    await asyncio.sleep(seconds)
    await asyncio.to_thread(server.start)
    return time.monotonic()


async def pause_clients(server: RedisServer, seconds: float) -> float:
    """``CLIENT PAUSE ... ALL``: unreachable for ``seconds`` while it keeps its data."""
    await asyncio.to_thread(server.pause, seconds)
    await asyncio.sleep(seconds)
    return time.monotonic()


async def debug_sleep(server: RedisServer, seconds: float) -> float:
    """``DEBUG SLEEP``: the server answers nothing for ``seconds`` (a slow Redis)."""

    def sleep() -> None:
        with server.client(socket_timeout=seconds + 5) as client:
            client.execute_command("DEBUG", "SLEEP", seconds)

    await asyncio.to_thread(sleep)
    return time.monotonic()


def exported_lookups(exposition: str, cache_name: str) -> int | None:
    """``cache_hits_total + cache_misses_total`` of one cache in a Prometheus exposition,
    or ``None`` when the cache exports no such counters."""
    from prometheus_client.parser import text_string_to_metric_families

    total, seen = 0.0, False
    for family in text_string_to_metric_families(exposition):
        if family.name not in ("cache_hits", "cache_misses"):
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("cache_name") == cache_name:
                total += sample.value
                seen = True
    return int(total) if seen else None


@dataclass
class ScenarioResult:
    """A workload run under faults: what it did, and how fast the cache recovered."""

    figures: WorkloadFigures
    faults: list[str]
    recoveries_s: list[float | None]
    times_opened: int
    duration_s: float


async def run_scenario(
    cache: CacheManager,
    server: RedisServer,
    faults: list[tuple[Fault, float]],
    *,
    workers: int,
    call_bound_s: float,
    quiet_s: float,
    recovery_timeout_s: float,
) -> ScenarioResult:
    """Run the workload, stage each fault after ``quiet_s`` of normal traffic, wait for
    recovery after each, then read every key once more."""
    started = time.monotonic()
    workload = CheckedWorkload(cache, workers, call_bound_s)
    monitor = BreakerMonitor(cache)
    monitor.start()
    workload.start()
    recoveries: list[float | None] = []
    for fault, seconds in faults:
        await asyncio.sleep(quiet_s)
        ended = await fault(server, seconds)
        recoveries.append(await monitor.recovery_after(ended, recovery_timeout_s))
    await asyncio.sleep(quiet_s)
    figures = await workload.stop()
    await workload.verify_all()
    await monitor.stop()
    return ScenarioResult(
        figures=figures,
        faults=[fault.__name__ for fault, _ in faults],
        recoveries_s=recoveries,
        times_opened=monitor.times_opened,
        duration_s=time.monotonic() - started,
    )
