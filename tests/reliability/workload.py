"""A mixed cache workload whose every answer is checked, and the Redis faults staged under it.

Shared by ``tests/reliability`` (short runs) and ``benchmarks/soak.py`` (the long one).

Each worker owns its keys and writes values derived from the key and a version
number, so a read can be judged on its own: a value that was never written for
that key is *wrong*; a value older than the worker's last write or delete (a
deleted value coming back, for instance) is *stale*. A miss is always allowed.

What may be read after each call: after ``set``/``mset`` (True or False) only the
version just written (a refused write must not leave the previous one readable; an
unconfirmed one may still land); after ``delete`` (returned, or ``CacheWriteError``)
nothing; after a call cancelled half-way, or one that raised, the version before or
the one attempted. A share of the calls (``cancel_rate``) is cancelled at a random
point, as a request timeout or a client disconnect does.

``OtherWriter`` is another process writing its own entries into the same namespace:
entries it wrote that vanish while Redis kept its data are *lost* (a namespace wiped
on recovery, for instance).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from telemetry_infra import CacheManager, CacheWriteError
from telemetry_infra.testing import RedisServer

__all__ = [
    "UNREACHABLE_FAULTS",
    "BreakerMonitor",
    "CheckedWorkload",
    "Fault",
    "OtherWriter",
    "ScenarioResult",
    "WorkloadFigures",
    "debug_sleep",
    "exported_lookups",
    "kill_and_restart",
    "openings_while_healthy",
    "out_of_memory",
    "pause_clients",
    "run_scenario",
]

SOCKET_TIMEOUT = 0.25
"""Redis socket timeout of the managers under test: outages must cost no more per call."""
PROBE_INTERVAL = 0.2
"""Breaker probe interval of the managers under test: recovery is bounded by it."""
KEYS_PER_WORKER = 8
CANCEL_WITHIN_S = 0.003
"""A cancelled call is cancelled this long after it starts, at most (uniformly drawn)."""
CANCELLED = object()
REFUSED = object()
FAILED = object()


def value_for(key: str, version: int) -> dict[str, Any]:
    """The only value ever written under ``key`` at ``version``."""
    return {"key": key, "version": version, "check": f"{key}#{version}"}


@dataclass
class WorkloadFigures:
    """What the workload did and every anomaly it saw."""

    ops: Counter[str] = field(default_factory=Counter)
    lookups: int = 0
    cancelled: int = 0
    refused_writes: Counter[str] = field(default_factory=Counter)
    exceptions: list[str] = field(default_factory=list)
    stuck_calls: int = 0
    stuck_samples: list[str] = field(default_factory=list)
    wrong: list[tuple[str, Any]] = field(default_factory=list)
    stale: list[tuple[str, Any]] = field(default_factory=list)
    slowest_s: float = 0.0
    slow_calls: int = 0

    @property
    def total_ops(self) -> int:
        return sum(self.ops.values())


class _Worker:
    """One task: its own keys, the versions it wrote, the versions each key may show now."""

    def __init__(self, index: int, figures: WorkloadFigures, seed: int) -> None:
        self.keys = [f"w{index}:k{j}" for j in range(KEYS_PER_WORKER)]
        self.written: dict[str, set[int]] = {key: set() for key in self.keys}
        self.readable: dict[str, set[int]] = {key: set() for key in self.keys}
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
        elif version not in self.readable[key]:
            self.figures.stale.append((key, value))

    def wrote(self, key: str, version: int, outcome: Any) -> None:
        if outcome is CANCELLED or outcome is FAILED:
            self.readable[key].add(version)
        else:  # True, or False: a refused write must not leave the previous value readable
            self.readable[key] = {version}

    def deleted(self, key: str, outcome: Any) -> None:
        if outcome is not CANCELLED and outcome is not FAILED:
            self.readable[key] = set()

    def next_version(self, key: str) -> int:
        self.version += 1
        self.written[key].add(self.version)
        return self.version


class CheckedWorkload:
    """``workers`` tasks of get/set/mget/mset/delete against ``cache`` until stopped.

    No call may raise (but ``delete`` its documented ``CacheWriteError``) or take longer
    than ``call_bound_s``; both are counted, not raised. ``cache`` may be swapped while
    running, and the workload stopped and started again in another event loop.
    """

    def __init__(
        self, cache: CacheManager, workers: int, call_bound_s: float, seed: int = 8, cancel_rate: float = 0.0
    ) -> None:
        self.cache = cache
        self.call_bound_s = call_bound_s
        self.cancel_rate = cancel_rate
        self.figures = WorkloadFigures()
        self._workers = [_Worker(i, self.figures, seed + i) for i in range(workers)]
        self._stop: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._run(worker)) for worker in self._workers]

    async def stop(self, timeout_s: float | None = None) -> WorkloadFigures:
        """Let every worker finish its call; after ``timeout_s`` the workers still inside a
        call are counted in ``stuck_calls`` (their stacks in ``stuck_samples``) and cancelled."""
        assert self._stop is not None, "stop() before start()"
        self._stop.set()
        _, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
        for task in pending:
            self.figures.stuck_calls += 1
            if len(self.figures.stuck_samples) < 3:
                frames = task.get_stack()
                self.figures.stuck_samples.append(" <- ".join(
                    f"{frame.f_code.co_name}:{frame.f_lineno}" for frame in reversed(frames)
                ))  # fmt: skip
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return self.figures

    async def verify_all(self) -> None:
        """Read every key once more (after recovery): every answer is checked."""
        for worker in self._workers:
            for key in worker.keys:
                value = await self._timed("get", self.cache.get(key))
                if value is not FAILED:
                    self.figures.lookups += 1
                    worker.check(key, value)

    async def _timed(self, operation: str, call: Awaitable[Any], worker: _Worker | None = None) -> Any:
        """The call's result, or ``CANCELLED`` / ``REFUSED`` (``CacheWriteError``) / ``FAILED``."""
        started = time.perf_counter()
        try:
            if worker is not None and worker.random.random() < self.cancel_rate:
                return await asyncio.wait_for(call, worker.random.uniform(0, CANCEL_WITHIN_S))
            return await call
        except TimeoutError:  # only wait_for raises it: the cache swallows its own timeouts
            self.figures.cancelled += 1
            return CANCELLED
        except CacheWriteError:
            self.figures.refused_writes[operation] += 1
            return REFUSED
        except Exception as exc:  # the property under test: nothing else reaches the caller
            self.figures.exceptions.append(f"{operation}: {type(exc).__name__}: {exc}")
            return FAILED
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
            value = await self._timed("get", cache.get(key), worker)
            if value is not CANCELLED and value is not FAILED:
                figures.lookups += 1
                worker.check(key, value)
        elif pick < 0.55:
            version = worker.next_version(key)
            outcome = await self._timed("set", cache.set(key, value_for(key, version), ttl=60), worker)
            if outcome is False:
                figures.refused_writes["set"] += 1
            worker.wrote(key, version, outcome)
        elif pick < 0.70:
            keys = worker.random.sample(worker.keys, 3)
            found = await self._timed("mget", cache.mget(keys), worker)
            if found is not CANCELLED and found is not FAILED:
                figures.lookups += len(keys)
                for one in keys:
                    worker.check(one, found.get(one))
        elif pick < 0.85:
            keys = worker.random.sample(worker.keys, 2)
            mapping = {one: value_for(one, worker.next_version(one)) for one in keys}
            outcome = await self._timed("mset", cache.mset(mapping, ttl=60), worker)
            if outcome is False:
                figures.refused_writes["mset"] += 1
            for one, value in mapping.items():
                worker.wrote(one, value["version"], outcome)
        else:
            worker.deleted(key, await self._timed("delete", cache.delete(key), worker))


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

    @property
    def openings(self) -> list[float]:
        """When the breaker opened (``time.monotonic()``)."""
        return [at for at, is_open in self.transitions if is_open]


def openings_while_healthy(
    openings: list[float], unreachable: list[tuple[float, float]], grace_s: float
) -> int:
    """Breaker openings outside every window in which Redis was made unreachable (a window
    is ``(start, end)``, extended by ``grace_s`` for the calls still failing on dead sockets)."""
    return sum(not any(start <= at <= end + grace_s for start, end in unreachable) for at in openings)


class OtherWriter:
    """Another process (its own manager) writing its own entries into the namespace.

    ``write()`` stores a batch; the entries Redis confirmed are remembered. ``count_lost()``
    checks them on the server: any that vanished while Redis kept its data was wiped by
    someone else (call ``forget()`` when the server itself loses its data: a kill).
    """

    def __init__(self, cache: CacheManager, server: RedisServer, namespace: str, batch: int = 20) -> None:
        self.cache = cache
        self.server = server
        self.namespace = namespace
        self.batch = batch
        self.lost = 0
        self._written = 0
        self._held: set[str] = set()

    async def write(self) -> None:
        keys = [f"other:{self._written + i}" for i in range(self.batch)]
        self._written += self.batch
        stored = await self.cache.mset({key: value_for(key, 1) for key in keys}, ttl=600)
        if stored and not self.cache.fallback_active:
            self._held.update(f"{self.namespace}:{key}" for key in keys)

    def forget(self) -> None:
        self._held.clear()

    async def count_lost(self) -> int:
        """Entries written (and confirmed) since the last ``forget()`` that Redis no longer holds."""
        held = sorted(self._held)

        def missing() -> list[str]:
            with self.server.client(socket_timeout=5) as raw:
                pipe = raw.pipeline(transaction=False)
                for key in held:
                    pipe.exists(key)
                return [key for key, found in zip(held, pipe.execute(), strict=True) if not found]

        gone = await asyncio.to_thread(missing) if held else []
        self._held.difference_update(gone)
        self.lost += len(gone)
        return len(gone)


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


async def out_of_memory(server: RedisServer, seconds: float) -> float:
    """``maxmemory`` 1 byte with ``noeviction`` for ``seconds``: Redis answers and refuses
    every write with ``OOM`` (the breaker must stay closed)."""

    def configure(maxmemory: int) -> None:
        with server.client(socket_timeout=5) as client:
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", maxmemory)

    await asyncio.to_thread(configure, 1)
    await asyncio.sleep(seconds)
    await asyncio.to_thread(configure, 0)
    return time.monotonic()


async def debug_sleep(server: RedisServer, seconds: float) -> float:
    """``DEBUG SLEEP``: the server answers nothing for ``seconds`` (a slow Redis)."""

    def sleep() -> None:
        with server.client(socket_timeout=seconds + 5) as client:
            client.execute_command("DEBUG", "SLEEP", seconds)

    await asyncio.to_thread(sleep)
    return time.monotonic()


UNREACHABLE_FAULTS = frozenset({"kill_and_restart", "pause_clients", "debug_sleep"})
"""Faults during which the breaker should open; after any other, an opening is a defect."""


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
    openings_while_healthy: int = 0


async def run_scenario(
    cache: CacheManager,
    server: RedisServer,
    faults: list[tuple[Fault, float]],
    *,
    workers: int,
    call_bound_s: float,
    quiet_s: float,
    recovery_timeout_s: float,
    cancel_rate: float = 0.0,
) -> ScenarioResult:
    """Run the workload, stage each fault after ``quiet_s`` of normal traffic, wait for
    recovery after each, then read every key once more."""
    started = time.monotonic()
    workload = CheckedWorkload(cache, workers, call_bound_s, cancel_rate=cancel_rate)
    monitor = BreakerMonitor(cache)
    monitor.start()
    workload.start()
    recoveries: list[float | None] = []
    unreachable: list[tuple[float, float]] = []
    for fault, seconds in faults:
        await asyncio.sleep(quiet_s)
        fault_started = time.monotonic()
        ended = await fault(server, seconds)
        if fault.__name__ in UNREACHABLE_FAULTS:
            unreachable.append((fault_started, ended))
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
        openings_while_healthy=openings_while_healthy(monitor.openings, unreachable, 2 * SOCKET_TIMEOUT),
    )
