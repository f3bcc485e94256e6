"""Near cache: hot keys from process memory, kept exact by Redis's invalidations.

Two managers on the private redis-server: A reads through its near tier, B (another
process, as far as Redis can tell) writes. Every test uses its own namespace.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

import pytest
from caches import NEAR_PROPAGATION_P99_S, wait_until
from caches import near_manager as manager

import telemetry_infra as ti
from telemetry_infra.testing import RedisServer, free_port

MISSING = object()


def get_calls(server) -> int:
    """How many GET/MGET commands the server has executed."""
    with server.client() as client:
        stats = client.info("commandstats")
    return sum(stats.get(name, {}).get("calls", 0) for name in ("cmdstat_get", "cmdstat_mget"))


async def heard(cache: ti.CacheManager) -> None:
    """Wait until ``cache`` has applied every invalidation Redis sent so far (a PING on its
    channel answers after them), so a test knows what its near tier may hold."""
    assert await cache._near.channel.sync()


async def test_hot_key_is_served_without_a_round_trip(redis_server, namespace):
    async with (
        manager(redis_server.url, namespace) as a,
        manager(redis_server.url, namespace, near=False) as b,
    ):
        await b.set("hot", {"rows": [1, 2, 3]})
        await heard(a)
        assert await a.get("hot") == {"rows": [1, 2, 3]}  # fills the near tier
        before = get_calls(redis_server)
        for _ in range(50):
            assert await a.get("hot") == {"rows": [1, 2, 3]}
        assert await a.mget(["hot"]) == {"hot": {"rows": [1, 2, 3]}}
        assert get_calls(redis_server) == before
        stats = a.get_stats()
        assert stats["near_hits"] == 51 and stats["hits"] >= 51


async def test_each_caller_gets_its_own_copy(redis_server, namespace):
    async with (
        manager(redis_server.url, namespace) as a,
        manager(redis_server.url, namespace, near=False) as b,
    ):
        await b.set("doc", {"tags": ["a"]})
        await heard(a)
        await a.get("doc")
        mine = await a.get("doc")
        mine["tags"].append("mutated")
        assert await a.get("doc") == {"tags": ["a"]}
        assert a.get_stats()["near_hits"] == 2


async def test_close_stops_the_channel_for_good(redis_server, namespace):
    a = manager(redis_server.url, namespace)
    await a.initialize()
    await a.close()
    with pytest.raises(ti.CacheClosedError):
        await a.get("k")
    await asyncio.sleep(0.05)
    with redis_server.client() as admin:
        names = [c["name"] for c in admin.client_list()]
    assert f"telemetry_infra-near:{namespace}" not in names


async def test_off_by_default(redis_server, namespace):
    async with ti.CacheManager(redis_url=redis_server.url, namespace=namespace) as a:
        await a.set("k", 1)
        await a.get("k")
        await a.get("k")
        assert a.get_stats()["near_hits"] == 0
        assert "near" not in await a.health_check()


async def test_another_process_write_is_seen_within_20ms_p99_and_reads_never_go_back(redis_server, namespace):
    async with (
        manager(redis_server.url, namespace) as a,
        manager(redis_server.url, namespace, near=False) as b,
    ):
        await b.set("counter", 0)
        assert await a.get("counter") == 0
        latencies = []
        last_returned = 0
        for version in range(1, 201):
            await a.get("counter")  # the old value is in the near tier
            written = time.perf_counter()
            await b.set("counter", version)
            while True:
                value = await a.get("counter")
                assert value >= last_returned, f"read {value} after having returned {last_returned}"
                last_returned = value
                if value == version:
                    break
                assert time.perf_counter() - written < 2.0, "B's write never reached A"
                await asyncio.sleep(0)
            latencies.append(time.perf_counter() - written)
        p99 = statistics.quantiles(latencies, n=100)[98]
        assert p99 < NEAR_PROPAGATION_P99_S, f"p99 {p99 * 1000:.1f} ms"
        assert a.get_stats()["near_hits"] > 0
        assert a.get_stats()["near_invalidations"] >= 200


async def test_own_write_is_echoed_once_then_served_from_memory(redis_server, namespace):
    """BCAST cannot tell our writes from others': the echo of our own write drops the
    first fill, the next read fills for good."""
    async with manager(redis_server.url, namespace) as a:
        await a.set("k", "v")
        await heard(a)  # the echo has arrived
        await a.get("k")
        before = get_calls(redis_server)
        assert await a.get("k") == "v"
        assert get_calls(redis_server) == before


async def test_own_writes_are_read_back_at_once(redis_server, namespace):
    """Even when the invalidation channel lags behind the data connections (separate
    connections: nothing orders them), our own writes never leave an older value near."""
    async with manager(redis_server.url, namespace) as a:
        a._near.tier.invalidate = lambda keys: None  # the echoes of our writes never arrive
        await a.mset({"x": 1, "y": 2, "z": 3})
        assert await a.mget(["x", "y", "z"]) == {"x": 1, "y": 2, "z": 3}
        await a.set("x", 10)
        assert await a.get("x") == 10
        await a.mset({"y": 20})
        assert await a.mget(["x", "y"]) == {"x": 10, "y": 20}
        assert await a.delete("y")
        assert await a.get("y", MISSING) is MISSING
        assert await a.get("z") == 3
        assert await a.clear("z*") == 1
        assert await a.get("z", MISSING) is MISSING
        assert await a.get("x") == 10


async def test_a_read_invalidated_in_flight_is_not_cached(redis_server, namespace):
    """The guide's race, forced: B's write, and its invalidation reaching A, fall between
    Redis executing A's GET and A receiving the reply."""
    async with (
        manager(redis_server.url, namespace) as a,
        manager(redis_server.url, namespace, near=False) as b,
    ):
        await b.set("k", "old")
        primary = a._failover.primary
        real_get = primary.get_expiring  # what fills the near tier
        invalidations = a.get_stats()["near_invalidations"]

        async def get_then_write_before_reply(key):
            payload = await real_get(key)  # executed by Redis: holds "old"
            await b.set("k", "new")
            deadline = time.monotonic() + 2
            while a.get_stats()["near_invalidations"] == invalidations:
                assert time.monotonic() < deadline, "the invalidation never reached A"
                await asyncio.sleep(0.001)
            return payload

        primary.get_expiring = get_then_write_before_reply
        try:
            assert await a.get("k") == "old"  # a read concurrent with the write may return either
        finally:
            primary.get_expiring = real_get
        assert await a.get("k") == "new"
        assert await a.get("k") == "new"


async def test_readers_of_one_key_disagreeing_install_nothing(redis_server, namespace):
    """Two reads of one key in flight, a write between them: whichever reply comes last,
    the older value must not stay in the near tier once the newer one was returned."""
    async with (
        manager(redis_server.url, namespace) as a,
        manager(redis_server.url, namespace, near=False) as b,
    ):
        await b.set("k", "v1")
        primary = a._failover.primary
        real_get = primary.get_expiring  # what fills the near tier
        first_read_done = asyncio.Event()
        release_first = asyncio.Event()

        async def slow_first(key):
            payload = await real_get(key)
            if not first_read_done.is_set():
                first_read_done.set()
                await release_first.wait()  # "v1" is held back while the second read runs
            return payload

        primary.get_expiring = slow_first
        channel_invalidations = a._near.tier.invalidate
        a._near.tier.invalidate = lambda keys: None  # B's invalidation is still on its way
        try:
            old_reader = asyncio.ensure_future(a.get("k"))
            await first_read_done.wait()
            await b.set("k", "v2")
            assert await a.get("k") == "v2"
            release_first.set()
            assert await old_reader == "v1"
            assert await a.get("k") == "v2"  # not "v1" from the near tier
        finally:
            primary.get_expiring = real_get
            a._near.tier.invalidate = channel_invalidations


async def test_redis_restart_leaves_no_stale_reads(redis_restartable, namespace):
    url = redis_restartable.url
    async with manager(url, namespace) as a, manager(url, namespace, near=False) as b:
        await b.mset({f"k{i}": f"old{i}" for i in range(20)})
        await heard(a)
        assert await a.mget([f"k{i}" for i in range(20)]) == {f"k{i}": f"old{i}" for i in range(20)}
        assert a.get_stats()["near_items"] == 20
        # in a thread, as Redis restarts beside a running service: A's loop runs meanwhile
        await asyncio.to_thread(redis_restartable.restart)  # empty again: nothing persists
        with redis_restartable.client() as other:
            other.set(f"{namespace}:k0", b"\xc1\x00" + b'"new0"')
        stale = 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            found = await a.mget([f"k{i}" for i in range(20)])
            stale += sum(1 for value in found.values() if value.startswith("old"))
            if found == {"k0": "new0"} and (await a.health_check())["near"]["tracking"]:
                break
            await asyncio.sleep(0.02)
        assert stale == 0
        assert await a.mget([f"k{i}" for i in range(20)]) == {"k0": "new0"}
        assert (await a.health_check())["status"] == "healthy"
        await a.get("k0")
        hits = a.get_stats()["near_hits"]
        assert await a.get("k0") == "new0"
        assert a.get_stats()["near_hits"] == hits + 1  # serving from memory again


async def test_invalidation_channel_dropped_flushes_and_recovers(redis_server, namespace):
    async with (
        manager(redis_server.url, namespace, probe_interval=1.0) as a,  # reconnects after 1 s
        manager(redis_server.url, namespace, near=False) as b,
    ):
        await b.set("k", "v1")
        await heard(a)
        assert await a.get("k") == "v1"
        assert await a.get("k") == "v1"
        kill_channel(redis_server, namespace)
        await asyncio.sleep(0.05)
        await b.set("k", "v2")  # its invalidation has nowhere to go
        hits = a.get_stats()["near_hits"]
        assert await a.get("k") == "v2"
        assert await a.get("k") == "v2"
        assert a.get_stats()["near_hits"] == hits  # Redis answers until the channel is back

        async def tracking_again():
            return (await a.health_check())["near"]["tracking"]

        await wait_until(tracking_again, 5)
        health = await a.health_check()
        assert health["status"] == "healthy" and health["near"]["flushes"] >= 2
        await a.get("k")
        assert await a.get("k") == "v2"
        await b.set("k", "v3")
        await wait_until(lambda: _equals(a, "k", "v3"), 1)


def kill_channel(server, name: str) -> None:
    """Close A's invalidation channel from the server side (named after its manager)."""
    with server.client() as admin:
        channels = [c for c in admin.client_list() if c["name"] == f"telemetry_infra-near:{name}"]
        assert len(channels) == 1 and "t" in channels[0]["flags"], channels
        admin.execute_command("CLIENT", "KILL", "ID", channels[0]["id"])


async def _equals(cache: ti.CacheManager, key: str, expected) -> bool:
    return await cache.get(key) == expected


async def test_breaker_open_drops_near_entries_at_once(redis_restartable, namespace):
    async with manager(redis_restartable.url, namespace, socket_timeout=0.2, failure_threshold=1) as a:
        await a.set("k", "v1")
        assert await a.get("k") == "v1"
        assert await a.get("k") == "v1"
        assert a.get_stats()["near_items"] == 1
        redis_restartable.pause(1.5)  # a read times out and opens the breaker
        assert await a.get("other", MISSING) is MISSING
        assert a.fallback_active
        assert a.get_stats()["near_items"] == 0
        assert await a.get("k", MISSING) is MISSING  # memory serves: no near copy of Redis
        hits = a.get_stats()["near_hits"]
        await wait_until(lambda: _not_fallback(a), 5)
        assert a.get_stats()["near_hits"] == hits


async def _not_fallback(cache: ti.CacheManager) -> bool:
    return not cache.fallback_active


async def test_near_cache_arguments_are_checked(redis_server):
    with pytest.raises(ValueError, match="near_cache_size"):
        ti.CacheManager(redis_server.url, near_cache=True, near_cache_size=0)
    with pytest.raises(ValueError, match="near_cache_max_ttl"):
        ti.CacheManager(redis_server.url, near_cache=True, near_cache_max_ttl=0)
    with pytest.raises(ValueError, match="near_cache_max_bytes"):
        ti.CacheManager(redis_server.url, near_cache=True, near_cache_max_bytes=0)
    with pytest.raises(TypeError, match="near_cache_size"):
        ti.CacheManager(redis_server.url, near_cache=True, near_cache_size=10.5)
    for url in ("redis+cluster://127.0.0.1:7000", "redis+sentinel://127.0.0.1:26379/mymaster"):
        assert ti.CacheManager(url, near_cache=True).get_stats()["near_items"] == 0  # accepted
    memory_only = ti.CacheManager(None, near_cache=True)  # already in process: nothing to add
    assert memory_only.get_stats()["near_items"] == 0


async def test_entries_live_at_most_near_cache_max_ttl(redis_server, namespace):
    async with (
        manager(redis_server.url, namespace, near_cache_max_ttl=0.1) as a,
        manager(redis_server.url, namespace, near=False) as b,
    ):
        await b.set("k", "v")
        await heard(a)
        await a.get("k")
        before = get_calls(redis_server)
        await a.get("k")
        assert get_calls(redis_server) == before
        await asyncio.sleep(0.15)
        await a.get("k")
        assert get_calls(redis_server) == before + 1


async def test_near_cache_size_bounds_entries(redis_server, namespace):
    async with (
        manager(redis_server.url, namespace, near_cache_size=5) as a,
        manager(redis_server.url, namespace, near=False) as b,
    ):
        await b.mset({f"k{i}": i for i in range(20)})
        await heard(a)
        await a.mget([f"k{i}" for i in range(20)])
        assert a.get_stats()["near_items"] == 5
        before = get_calls(redis_server)
        assert await a.mget([f"k{i}" for i in range(15, 20)]) == {f"k{i}": i for i in range(15, 20)}
        assert get_calls(redis_server) == before


async def test_near_cache_max_bytes_bounds_payloads(redis_server, namespace):
    async with (
        manager(redis_server.url, namespace, near_cache_max_bytes=2500, enable_compression=False) as a,
        manager(redis_server.url, namespace, near=False, enable_compression=False) as b,
    ):
        await b.mset({"big": "x" * 4000, **{f"k{i}": "y" * 1000 for i in range(4)}})
        await heard(a)
        assert await a.get("big") == "x" * 4000
        assert a.get_stats()["near_items"] == 0  # larger than the bound: not kept near
        for i in range(4):
            await a.get(f"k{i}")
        assert a.get_stats()["near_items"] == 2  # two ~1 KB payloads fit in 2500 bytes
        before = get_calls(redis_server)
        assert await a.mget(["k2", "k3"]) == {"k2": "y" * 1000, "k3": "y" * 1000}
        assert get_calls(redis_server) == before


async def test_flushdb_elsewhere_flushes_the_near_tier(redis_server, namespace):
    # a db of its own: FLUSHDB must not touch the other tests' keys
    url = redis_server.url.rsplit("/", 1)[0] + "/7"
    async with manager(url, namespace) as a:
        await a.set("k", "v")
        await a.get("k")
        with redis_server.client(db=7) as other:
            other.flushdb()
        await wait_until(lambda: _equals(a, "k", None), 1)


def test_listener_follows_the_event_loops(redis_server):
    """The channel runs on one loop; when that loop ends the tier is flushed, and the next
    loop's first miss starts it again there."""
    namespace = f"near-{uuid.uuid4().hex[:8]}"
    a = manager(redis_server.url, namespace)
    b = manager(redis_server.url, namespace, near=False)

    async def first() -> None:
        await b.set("k", "v1")
        await a.initialize()
        await a.get("k")
        await a.get("k")
        assert a.get_stats()["near_items"] == 1

    asyncio.run(first())
    assert a.get_stats()["near_items"] == 0  # its loop ended: nothing delivers invalidations

    async def second() -> None:
        await b.set("k", "v2")
        assert await a.get("k") == "v2"
        await wait_until(lambda: _tracking(a), 2)
        await heard(a)
        await a.get("k")
        hits = a.get_stats()["near_hits"]
        assert await a.get("k") == "v2"
        assert a.get_stats()["near_hits"] == hits + 1
        await a.close()
        await b.close()

    asyncio.run(second())


async def _tracking(cache: ti.CacheManager) -> bool:
    return cache._near.tier.tracking


async def test_silent_channel_stops_serving(redis_restartable, namespace):
    """A channel whose PING goes unanswered (here the server is stuck in DEBUG SLEEP; a
    half-open connection looks the same) cannot vouch for the near tier: it is flushed
    without any data read having to fail first."""
    url = redis_restartable.url
    async with manager(url, namespace, socket_timeout=0.3, probe_interval=0.2) as a:
        with redis_restartable.client() as other:
            other.set(f"{namespace}:k", b'\xc1\x00"v"')
        await heard(a)
        assert await a.get("k") == "v"
        assert await a.get("k") == "v"
        assert a.get_stats()["near_items"] == 1

        def stall() -> None:
            with redis_restartable.client(socket_timeout=5) as admin:
                admin.execute_command("DEBUG", "SLEEP", "2.5")

        stalled = asyncio.ensure_future(asyncio.to_thread(stall))
        started = time.monotonic()
        while a.get_stats()["near_items"]:
            assert time.monotonic() - started < 2.4, "the silent channel was not noticed"
            await asyncio.sleep(0.02)
        assert "PING" in (a._near.channel.last_error or "")
        assert not a._near.tier.serving
        await stalled
        await wait_until(lambda: _tracking(a), 3)
        await heard(a)
        await a.get("k")
        assert await a.get("k") == "v"
        assert a.get_stats()["near_items"] == 1


async def test_a_thread_with_its_own_loop_is_served_and_kept_exact(redis_server, namespace):
    """The channel runs on this loop; another thread's loop reads the same near entries
    and sees another process's write once the channel has applied it."""
    async with (
        manager(redis_server.url, namespace) as a,
        manager(redis_server.url, namespace, near=False) as b,
    ):
        await b.set("k", "v1")
        await heard(a)
        assert await a.get("k") == "v1"

        def read_in_thread() -> tuple[object, int]:
            async def read() -> tuple[object, int]:
                before = a.get_stats()["near_hits"]
                value = await a.get("k")
                return value, a.get_stats()["near_hits"] - before

            return asyncio.run(read())

        assert await asyncio.to_thread(read_in_thread) == ("v1", 1)
        await b.set("k", "v2")
        await heard(a)
        value, _hits = await asyncio.to_thread(read_in_thread)
        assert value == "v2"
        assert a._near.tier.tracking  # the other loop's end did not stop this loop's channel


async def test_tls_and_password_reach_the_invalidation_channel(tls_files):
    """``rediss://`` with a password: the channel's RESP3 connection (HELLO 3 with AUTH)
    uses the URL's TLS settings and credentials like the data connections."""
    port = free_port()
    server = RedisServer(
        port=port,
        extra_args=[
            "--port", "0", "--tls-port", str(port),
            "--tls-cert-file", tls_files.server_certificate, "--tls-key-file", tls_files.server_key,
            "--tls-ca-cert-file", tls_files.ca, "--tls-auth-clients", "no",
            "--requirepass", "s3cret",
        ],
    ).start()  # fmt: skip
    try:
        url = f"rediss://:s3cret@127.0.0.1:{port}/0?ssl_ca_certs={tls_files.ca}"
        namespace = f"near-{uuid.uuid4().hex[:8]}"
        async with manager(url, namespace) as a, manager(url, namespace, near=False) as b:
            assert (await a.health_check())["near"]["tracking"]
            await b.set("k", "v1")
            await heard(a)
            assert await a.get("k") == "v1"
            assert await a.get("k") == "v1"
            assert a.get_stats()["near_hits"] == 1
            await b.set("k", "v2")
            await heard(a)
            assert await a.get("k") == "v2"
    finally:
        server.close()
