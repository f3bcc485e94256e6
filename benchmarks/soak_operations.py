"""The near cache under day-2 operations (issue 21): stale reads beyond the stated windows.

    python benchmarks/soak_operations.py [--seconds 8]

Private redis-server processes (and a private 3-primary Cluster) on loopback; nothing
else is touched. Each scenario prints how many reads it checked, how many returned a
value older than the window allows (must be 0), and hangs (must be 0):

1. TTL churn: 200,000 other keys carry TTLs (active expiry lags), keys are set with a
   0.2 s TTL by the manager and by an outside ``SET PX``; a read started 10 ms after a
   key's TTL ran out must not return its value.
2. Stalled loop: an outside writer bumps a version every 20 ms while the reader's loop
   is blocked for 1 s every 3 s; a read must not return a version older than one
   acknowledged 50 ms before the read began.
3. Cluster scale-out: a primary joins with no slots, a slot moves to it, an outside
   client writes there; same rule as 2.
4. ``asyncio.run(cache.get(...))`` per call, 200 calls in a thread: each must end.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Callable

import redis

import telemetry_infra as ti
from telemetry_infra.testing import RedisCluster, RedisServer

WINDOW_S = 0.05
TTL_S = 0.2
FAST = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5, "telemetry": False}


def result(name: str, reads: int, stale: int, hangs: int = 0, misses: int = 0) -> bool:
    verdict = "ok" if stale == 0 and hangs == 0 else "FAIL"
    print(
        f"{name:<46} reads {reads:>6}  stale beyond window {stale:>3}  hangs {hangs}  "
        f"misses {misses:>3}  {verdict}"
    )
    return verdict == "ok"


def block_the_loop(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(1000))


# -- 1. TTL churn ------------------------------------------------------------------------


async def ttl_churn(server: RedisServer, seconds: float) -> bool:
    with server.client() as client:
        client.eval("for i = 1, 200000 do redis.call('SET', 'other:' .. i, 'x', 'PX', 600000 + i) end", 0)
        cache = ti.CacheManager(server.url, namespace="churn", near_cache=True, **FAST)
        await cache.initialize()
        reads = stale = 0
        ends = time.monotonic() + seconds
        round_ = 0
        while time.monotonic() < ends:
            round_ += 1
            keys = [f"r{round_}-{i}" for i in range(20)]
            for index, key in enumerate(keys):
                if index % 2:
                    stored = f"churn:{key}"
                    client.set(stored, cache._codec.encode(stored, key), px=round(TTL_S * 1000))
                else:
                    await cache.set(key, key, ttl=TTL_S)
            expired_at = time.monotonic() + TTL_S + 0.01  # the last write's TTL, plus 10 ms
            while time.monotonic() < expired_at + 0.2:
                for key in keys:
                    started = time.monotonic()
                    value = await cache.get(key)
                    reads += 1
                    if started > expired_at and value is not None:
                        stale += 1
                await asyncio.sleep(0.002)
        await cache.close()
    return result("1. TTL churn, 200k TTL keys", reads, stale)


# -- 2 and 3: versions written outside, read near ----------------------------------------


class OutsideWriter:
    """Writes ``v1, v2, ...`` to one key every 20 ms from a thread; remembers the acks."""

    def __init__(self, write: Callable[[int], object]) -> None:
        self._write = write
        self.acked: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        version = 0
        while not self._stop.is_set():
            version += 1
            try:
                self._write(version)
            except (redis.RedisError, AttributeError):  # redis-py's cluster client, mid-move
                version -= 1
                continue
            self.acked.append((time.monotonic(), version))
            time.sleep(0.02)

    def newest_before(self, moment: float) -> int:
        newest = 0
        for acked_at, version in self.acked:
            if acked_at >= moment:
                break
            newest = version
        return newest

    def __enter__(self) -> OutsideWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def read_versions(
    cache: ti.CacheManager, writer: OutsideWriter, seconds: float, *, stall_every: float | None = None
) -> tuple[int, int, int]:
    """(reads, stale reads, misses): a miss (the node unavailable for a moment) is no stale value."""
    reads = stale = misses = 0
    ends = time.monotonic() + seconds
    next_stall = time.monotonic() + (stall_every or seconds + 1)
    while time.monotonic() < ends:
        if time.monotonic() >= next_stall:
            block_the_loop(1.0)
            next_stall = time.monotonic() + (stall_every or 0)
        started = time.monotonic()
        value = await cache.get("k")
        reads += 1
        if value is None:
            misses += 1
        elif int(value[1:]) < writer.newest_before(started - WINDOW_S):
            stale += 1
        await asyncio.sleep(0.002)
    return reads, stale, misses


async def stalled_loop(server: RedisServer, seconds: float) -> bool:
    # default socket_timeout (1 s): the channel is trusted ~3 s after a PING, longer than a stall
    cache = ti.CacheManager(server.url, namespace="stall", near_cache=True, telemetry=False)
    await cache.initialize()
    with server.client() as client:

        def write(version: int) -> None:
            client.set("stall:k", cache._codec.encode("stall:k", f"v{version}"))

        with OutsideWriter(write) as writer:
            reads, stale, misses = await read_versions(cache, writer, seconds, stall_every=3.0)
    await cache.close()
    return result("2. loop blocked 1 s every 3 s, outside writer", reads, stale, misses=misses)


async def cluster_scale_out(seconds: float) -> bool:
    from redis.crc import key_slot

    with RedisCluster(replicas=0) as cluster:
        cache = ti.CacheManager(cluster.url, namespace="scale", near_cache=True, probe_interval=1.0, **FAST)
        await cache.initialize()
        new_primary = await asyncio.to_thread(cluster.add_primary)
        outside = redis.RedisCluster(host=cluster.nodes[0].host, port=cluster.nodes[0].port)

        def write(version: int) -> None:
            outside.set("scale:k", cache._codec.encode("scale:k", f"v{version}"))

        with OutsideWriter(write) as writer:
            reading = asyncio.ensure_future(read_versions(cache, writer, seconds))
            await asyncio.sleep(seconds / 3)
            await asyncio.to_thread(cluster.move_slot, key_slot(b"scale:k"), new_primary)
            reads, stale, misses = await reading
        outside.close()
        await cache.close()
    return result("3. Cluster slot moved to a new primary", reads, stale, misses=misses)


# -- 4. asyncio.run per call ---------------------------------------------------------------


def asyncio_run_per_call(server: RedisServer, calls: int = 200) -> bool:
    cache = ti.CacheManager(server.url, namespace="runs", near_cache=True, **FAST)
    done = []

    def run() -> None:
        for _ in range(calls):
            asyncio.run(cache.get("k"))
            done.append(1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=60)
    hangs = int(thread.is_alive())
    return result(f"4. asyncio.run per call in a thread ({calls})", len(done), 0, hangs=hangs)


async def main(seconds: float) -> int:
    started = time.monotonic()
    print("near cache under operations (machine shared with other test runs: times vary)")
    with RedisServer() as churn_server:
        ok = await ttl_churn(churn_server, seconds)
    with RedisServer() as server:
        ok &= await stalled_loop(server, seconds)
        ok &= await asyncio.to_thread(asyncio_run_per_call, server)
    ok &= await cluster_scale_out(seconds)
    print(f"total {time.monotonic() - started:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of scenarios 1-3")
    raise SystemExit(asyncio.run(main(parser.parse_args().seconds)))
