"""Soak: a Sentinel failover under load, planned (``SENTINEL FAILOVER``) and by SIGKILL of the
primary, with the near cache off and on (issue 21, item 3).

Each run starts its own Sentinel set (``telemetry_infra.testing.RedisSentinel``: primary,
replica, 3 Sentinels). A manager runs one writer per key (versions 1, 2, 3... in order)
and readers of every key; after the switch a worker started then (its own manager)
writes a key the readers read too. Every call is bounded; the figures:

* stale reads: a read returning a version older than one acknowledged by Redis more than
  ``WINDOW_S`` before the read began (under SIGKILL a miss is allowed: the outage policy
  makes keys written in memory read as misses after recovery);
* acknowledged writes lost: a key whose last write was acknowledged by Redis (not by
  memory during an outage) and is not on the primary the Sentinels name afterwards
  (under SIGKILL, writes acknowledged less than ``REPLICATION_LOSS_S`` before the kill may
  be lost: replication is asynchronous);
* hangs: calls that did not return within ``HANG_S``;
* the announcement latency: from a ``+switch-master`` heard on our own subscription to the
  manager's watch switching (same process, both threads).

    python benchmarks/soak_failover.py        # about a minute; exits 1 unless all are 0
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from telemetry_infra.cache import CacheManager
from telemetry_infra.testing import RedisSentinel

WINDOW_S = 0.05
REPLICATION_LOSS_S = 0.5
HANG_S = 5.0
KEYS = [f"k{i}" for i in range(8)]
OUTSIDE = "outside"
NAMESPACE = "soakfo"
TIMEOUTS = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5, "probe_interval": 0.2}


@dataclass
class Write:
    version: int
    at: float
    acked: bool
    on_redis: bool  # False: memory took it (outage)


@dataclass
class Load:
    cache: CacheManager
    writes: dict[str, list[Write]] = field(default_factory=dict)
    reads: list[tuple[str, int, float]] = field(default_factory=list)
    hangs: int = 0
    stop: bool = False

    async def bounded(self, call: Awaitable[Any]) -> Any:
        try:
            return await asyncio.wait_for(call, HANG_S)
        except TimeoutError:
            self.hangs += 1
            return None

    async def write(self, key: str, cache: CacheManager | None = None) -> None:
        cache = cache or self.cache
        version = 0
        while not self.stop:
            version += 1
            before = cache.fallback_active
            acked = bool(await self.bounded(cache.set(key, version, ttl=300)))
            on_redis = not (before or cache.fallback_active)
            self.writes.setdefault(key, []).append(Write(version, time.monotonic(), acked, on_redis))
            await asyncio.sleep(0.002)

    async def read(self, offset: int) -> None:
        index = offset
        while not self.stop:
            key = OUTSIDE if index % 3 == 0 else KEYS[index % len(KEYS)]
            index += 1
            began = time.monotonic()
            value = await self.bounded(self.cache.get(key))
            self.reads.append((key, 0 if value is None else value, began))
            await asyncio.sleep(0)

    def stale_reads(self, misses_allowed: bool) -> int:
        stale = 0
        for key, version, began in self.reads:
            if version == 0 and (misses_allowed or self._masked(key, began)):
                continue
            newest = max(
                (
                    w.version
                    for w in self.writes.get(key, ())
                    if w.acked and w.on_redis and w.at < began - WINDOW_S
                ),
                default=0,
            )
            stale += newest > version
        return stale

    def _masked(self, key: str, began: float) -> bool:
        """A refused write makes the key read as a miss until its next acknowledged write."""
        writes = [w for w in self.writes.get(key, ()) if w.at < began]
        refusals = [w.at for w in writes if not w.acked]
        if not refusals:
            return False
        return not any(w.acked and max(refusals) < w.at < began - WINDOW_S for w in writes)

    async def lost_writes(self, primary: CacheManager, killed_at: float | None) -> int:
        lost = 0
        for key, writes in self.writes.items():
            last = writes[-1]
            if not (last.acked and last.on_redis):
                continue  # refused, or taken by memory: the write-safety policy may remove the key
            if killed_at is not None and killed_at - REPLICATION_LOSS_S < last.at < killed_at:
                continue
            lost += await primary.get(key) != last.version
        return lost


class SwitchHeard:
    """Our own subscription to every Sentinel: when ``+switch-master`` was first heard."""

    def __init__(self, topology: RedisSentinel) -> None:
        self.at: float | None = None
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._listen, args=address, daemon=True)
            for address in topology.sentinel_addresses
        ]
        for thread in self._threads:
            thread.start()

    def _listen(self, host: str, port: int) -> None:
        with redis.Redis(host, port, socket_timeout=2) as client, client.pubsub() as pubsub:
            pubsub.subscribe("+switch-master")
            while not self._stop.is_set():
                message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
                if message is not None and self.at is None:
                    self.at = time.monotonic()

    def close(self) -> None:
        self._stop.set()


async def planned_failover(topology: RedisSentinel) -> float | None:
    with redis.Redis(*topology.sentinel_addresses[0], socket_timeout=2) as sentinel:
        await asyncio.to_thread(sentinel.execute_command, "SENTINEL", "FAILOVER", topology.service_name)
    return None


async def kill_primary(topology: RedisSentinel) -> float | None:
    await asyncio.to_thread(topology.kill_primary, wait=False)
    return time.monotonic()


async def run(
    near_cache: bool, operation: Callable[[RedisSentinel], Awaitable[float | None]]
) -> dict[str, Any]:
    with RedisSentinel() as topology:
        old = topology.master_address()
        heard = SwitchHeard(topology)
        cache = CacheManager(topology.url, namespace=NAMESPACE, near_cache=near_cache, **TIMEOUTS)
        await cache.initialize()
        load = Load(cache)
        tasks = [asyncio.create_task(load.write(key)) for key in KEYS]
        tasks += [asyncio.create_task(load.read(i)) for i in range(8)]
        await asyncio.sleep(1.0)
        started = time.monotonic()
        killed_at = await operation(topology)
        while await asyncio.to_thread(_named, topology) in (old, None):
            if time.monotonic() - started > 30:
                raise RuntimeError("the Sentinels did not move the primary within 30 s")
            await asyncio.sleep(0.05)
        switched_s = time.monotonic() - started
        worker = CacheManager(topology.url, namespace=NAMESPACE, telemetry=False, **TIMEOUTS)
        tasks.append(asyncio.create_task(load.write(OUTSIDE, worker)))
        await asyncio.sleep(3.0)
        load.stop = True
        await asyncio.gather(*tasks)
        heard.close()
        watch = cache._failover.primary.watch  # type: ignore[union-attr]
        latency_ms = None
        if heard.at is not None and watch.switched_at is not None:
            latency_ms = (watch.switched_at - heard.at) * 1000
        primary = _direct(topology)
        lost = await load.lost_writes(primary, killed_at)
        await primary.close()
        await worker.close()
        await cache.close()
        acked = sum(1 for writes in load.writes.values() for w in writes if w.acked)
        refused = sum(1 for writes in load.writes.values() for w in writes if not w.acked)
        return {
            "switch_s": switched_s,
            "reads": len(load.reads),
            "stale": load.stale_reads(misses_allowed=killed_at is not None),
            "acked": acked,
            "refused": refused,
            "lost": lost,
            "hangs": load.hangs,
            "latency_ms": latency_ms,
        }


def _named(topology: RedisSentinel) -> tuple[str, int] | None:
    try:
        return topology.master_address()
    except Exception:
        return None


def _direct(topology: RedisSentinel) -> CacheManager:
    host, port = topology.master_address()
    return CacheManager(f"redis://{host}:{port}/0", namespace=NAMESPACE, telemetry=False)


async def main() -> int:
    began = time.monotonic()
    print(f"stale = a read older than a version Redis acknowledged > {WINDOW_S * 1000:.0f} ms before it")
    print(
        f"{'operation':<18} {'near':<5} {'switch s':>8} {'reads':>7} {'stale':>6} "
        f"{'acked':>6} {'refused':>7} {'lost':>5} {'hangs':>5} {'heard->followed ms':>19}"
    )
    bad = 0
    for name, operation in (("SENTINEL FAILOVER", planned_failover), ("SIGKILL primary", kill_primary)):
        for near in (False, True):
            r = await run(near, operation)
            latency = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.2f}"
            print(
                f"{name:<18} {'on' if near else 'off':<5} {r['switch_s']:>8.2f} {r['reads']:>7} "
                f"{r['stale']:>6} {r['acked']:>6} {r['refused']:>7} {r['lost']:>5} {r['hangs']:>5} "
                f"{latency:>19}",
                flush=True,
            )
            bad += r["stale"] + r["lost"] + r["hangs"]
    print(f"total {time.monotonic() - began:.0f} s; stale + lost + hangs = {bad}")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
