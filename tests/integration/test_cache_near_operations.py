"""The near cache stays exact under day-2 operations (issue 21, items 1, 2, 4, 5 and 8).

Real redis-server processes; a second manager (or a plain client) plays the other process.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

import pytest
from caches import near_manager as manager

import telemetry_infra as ti

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


async def caught_up(cache: ti.CacheManager) -> None:
    """Every invalidation Redis sent so far is applied and the near tier serves (a test's
    own blocking calls to a Redis client stall the loop, which then re-syncs first)."""
    assert await cache._near.channel.sync()
    deadline = time.monotonic() + 2
    while not cache._near.tier.serving:
        assert time.monotonic() < deadline, "the near tier does not serve again"
        await asyncio.sleep(0.005)


def block_the_loop(seconds: float) -> None:
    """A CPU-bound handler: the event loop runs nothing else meanwhile."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(1000))


def write_from_another_thread(url: str, namespace: str, key: str, value, after_s: float) -> threading.Thread:
    """Another client (its own manager, loop and thread) writes ``key`` ``after_s`` from now."""

    def write() -> None:
        time.sleep(after_s)

        async def store() -> None:
            async with manager(url, namespace, near=False) as other:
                assert await other.set(key, value)

        asyncio.run(store())

    thread = threading.Thread(target=write)
    thread.start()
    return thread


# -- item 2: a blocked loop does not serve its backlog ------------------------------------


async def test_a_loop_blocked_while_another_client_writes_does_not_serve_the_old_value(
    redis_server, namespace
):
    async with manager(redis_server.url, namespace) as a:
        stale = []
        for round_ in range(5):
            key = f"k{round_}"
            assert await a.set(key, "old")
            assert await a.get(key) == "old"
            assert await a.get(key) == "old"  # served near from now on
            hits = a.get_stats()["near_hits"]
            assert await a.get(key) == "old" and a.get_stats()["near_hits"] == hits + 1
            writer = write_from_another_thread(redis_server.url, namespace, key, "new", 0.1)
            block_the_loop(0.4)  # far beyond the near tier's 50 ms heartbeat window
            writer.join()  # the loop stays blocked until the write has landed
            first = await a.get(key)
            if first != "new":
                stale.append((round_, first))
        assert stale == [], f"the first read after the stall returned the old value: {stale}"


async def test_a_loop_blocked_while_redis_restarts_with_other_data_does_not_serve_the_old_value(
    redis_restartable, namespace
):
    server = redis_restartable
    async with manager(server.url, namespace) as a:
        assert await a.set("k", "old")
        assert await a.get("k") == "old"
        assert await a.get("k") == "old"
        # a handler blocks the loop while Redis restarts with other data
        server.kill()
        server.start()
        with server.client() as client:
            client.set(f"{namespace}:k", encoded(a, f"{namespace}:k", "other"))
        block_the_loop(0.2)
        assert await a.get("k") != "old"
        deadline = time.monotonic() + 5
        while await a.get("k") != "other":
            assert time.monotonic() < deadline, "the restarted server's value is never read"
            await asyncio.sleep(0.05)


# -- item 5: asyncio.run() per call ---------------------------------------------------------

_RUN_PER_CALL = """
import asyncio, sys, threading
import telemetry_infra as ti

cache = ti.CacheManager(redis_url=sys.argv[1], namespace=sys.argv[2], near_cache=True,
                        socket_timeout=0.5, socket_connect_timeout=0.5)

def calls():
    for i in range(100):
        asyncio.run(cache.get("k"))
    print("calls done", flush=True)

if sys.argv[3] == "thread":
    worker = threading.Thread(target=calls)
    worker.start()
    worker.join()
else:
    calls()
"""


@pytest.mark.parametrize("where", ["main-thread", "thread"])
def test_asyncio_run_per_call_never_hangs(redis_server, namespace, where):
    """Celery style: a manager made outside any loop, then ``asyncio.run(cache.get(...))`` per
    call; each loop's teardown must end (it hung in 8 of 9 runs)."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _RUN_PER_CALL, redis_server.url, namespace, where],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"100 asyncio.run() calls hung in loop teardown ({exc.stdout!r})")
    assert done.returncode == 0, done.stderr
    assert "calls done" in done.stdout


# -- item 1: near entries end with the key's Redis TTL ----------------------------------


def encoded(cache: ti.CacheManager, key: str, value) -> bytes:
    """The payload ``cache`` stores for ``value`` (what an outside writer would SET)."""
    return cache._codec.encode(key, value)


def many_keys_with_ttls(server, count: int = 200_000) -> None:
    """``count`` other keys with long TTLs: Redis's active expiry samples them, finds few
    expired, and so reaches an expired key of ours late (only its invalidation ends it)."""
    with server.client() as client:
        client.eval(
            "for i = 1, tonumber(ARGV[1]) do redis.call('SET', 'other:' .. i, 'x', 'PX', 600000 + i) end",
            0,
            count,
        )


async def reads_after(cache: ti.CacheManager, key: str, expires_at: float, until: float) -> list:
    """What ``key`` reads as between ``expires_at`` (+10 ms) and ``until`` (monotonic)."""
    served = []
    while time.monotonic() < until:
        value = await cache.get(key)
        if time.monotonic() > expires_at + 0.01:
            served.append(value)
        await asyncio.sleep(0.005)
    return served


@pytest.mark.parametrize("writer", ["own-set", "outside-set-px"])
async def test_near_entries_end_at_the_redis_ttl_while_active_expiry_lags(
    redis_restartable, namespace, writer
):
    server = redis_restartable
    many_keys_with_ttls(server)
    async with manager(server.url, namespace) as a:
        if writer == "own-set":
            assert await a.set("k", "v", ttl=0.3)
        else:
            with server.client() as client:
                client.set(f"{namespace}:k", encoded(a, f"{namespace}:k", "v"), px=300)
        # Once the write is answered its TTL has started: from here + 0.3 s Redis holds nothing.
        # (Taken before the write, a slow write would make Redis still hold the key legitimately.)
        started = time.monotonic()
        await caught_up(a)  # the write's invalidation is in: the next read fills
        assert await a.get("k") == "v"
        near_hits = a.get_stats()["near_hits"]
        assert await a.get("k") == "v" and a.get_stats()["near_hits"] == near_hits + 1  # served near
        served = await reads_after(a, "k", started + 0.3, started + 1.5)
        stale = [value for value in served if value is not None]
        assert served and stale == [], f"{len(stale)} of {len(served)} reads after the TTL returned the value"
        hits = a.get_stats()["near_hits"]
        assert await a.get("k") is None and a.get_stats()["near_hits"] == hits


async def test_a_key_expiring_during_client_pause_write_is_not_served_near(redis_restartable, namespace):
    server = redis_restartable
    async with manager(server.url, namespace) as a:
        with server.client() as client:
            client.set(f"{namespace}:k", encoded(a, f"{namespace}:k", "v"), px=300)
            started = time.monotonic()
            await caught_up(a)
            assert await a.get("k") == "v"
            assert await a.get("k") == "v"
            client.execute_command("CLIENT", "PAUSE", 1600, "WRITE")  # no expiry, no invalidation
            try:
                served = await reads_after(a, "k", started + 0.3, started + 1.5)
            finally:
                client.execute_command("CLIENT", "UNPAUSE")
        stale = [value for value in served if value is not None]
        assert served and stale == [], (
            f"{len(stale)} of {len(served)} reads during the pause returned the value"
        )


async def test_mget_fills_expire_with_the_redis_ttl(redis_restartable, namespace):
    server = redis_restartable
    many_keys_with_ttls(server, 50_000)
    async with manager(server.url, namespace) as a:
        assert await a.mset({"short": 1}, ttl=0.3)
        started = time.monotonic()  # after the write: its TTL has started
        assert await a.mset({"long": 2}, ttl=60)
        assert await a.mget(["short", "long"]) == {"short": 1, "long": 2}
        assert await a.mget(["short", "long"]) == {"short": 1, "long": 2}
        await asyncio.sleep(started + 0.35 - time.monotonic())
        assert await a.mget(["short", "long"]) == {"long": 2}


# -- item 4: Cluster scale-out ------------------------------------------------------------


async def test_a_slot_moved_to_a_new_primary_is_not_served_stale(namespace):
    """A primary joins with no slots, a slot moves to it (MIGRATE + SETSLOT) and an outside
    client writes there: A's near tier must never serve a value older than one the new node
    acknowledged 50 ms earlier (it served them until the 1 s slot-map watcher caught up)."""
    from redis.crc import key_slot

    from telemetry_infra.testing import RedisCluster

    with RedisCluster(replicas=0) as cluster:
        # the slot map is watched every probe_interval (1 s by default): the window to close
        a = manager(cluster.url, namespace, probe_interval=1.0)
        try:
            await a.initialize()
            new_primary = await asyncio.to_thread(cluster.add_primary)
            await asyncio.sleep(1.2)  # the watcher has read the map since: nothing changed for it
            stored = f"{namespace}:k"
            assert await a.set("k", "v0")
            await caught_up(a)
            assert await a.get("k") == "v0" and await a.get("k") == "v0"
            await asyncio.to_thread(cluster.move_slot, key_slot(stored.encode()), new_primary)
            stale = []
            with new_primary.client() as outside:
                for version in range(1, 25):
                    assert await a.get("k") is not None  # a read right after the move may fill
                    outside.set(stored, encoded(a, stored, f"v{version}"))
                    await asyncio.sleep(0.05)
                    if (value := await a.get("k")) != f"v{version}":
                        stale.append((version, value))
            assert stale == [], f"stale near reads after the slot move: {stale}"
        finally:
            await a.close()


# -- item 8: SWAPDB -----------------------------------------------------------------------


async def test_swapdb_is_not_announced_so_near_entries_live_until_near_cache_max_ttl(
    redis_restartable, namespace
):
    """Redis 7 sends no invalidation on SWAPDB (it does on FLUSHDB/FLUSHALL): the entries of
    the swapped db stay near until ``near_cache_max_ttl`` (or their key's TTL), as documented."""
    server = redis_restartable
    async with manager(server.url, namespace, near_cache_max_ttl=1.0) as a:
        with server.client(db=1) as client:  # tracking is per key name, whatever the db
            client.set(f"{namespace}:k", encoded(a, f"{namespace}:k", "db1"), ex=3600)
        assert await a.set("k", "db0")
        await caught_up(a)
        started = time.monotonic()
        assert await a.get("k") == "db0" and await a.get("k") == "db0"
        with server.client() as client:
            client.execute_command("SWAPDB", 0, 1)
        await caught_up(a)
        assert await a.get("k") == "db0"  # still near: nothing told us
        await asyncio.sleep(started + 1.05 - time.monotonic())
        assert await a.get("k") == "db1"  # near_cache_max_ttl bounds it
