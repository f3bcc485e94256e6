"""A planned ``SENTINEL FAILOVER`` under concurrent readers and writers (issue 21, item 3).

The demoted primary keeps answering as a primary for seconds after the Sentinels named
another one: a manager that stays on it reads old versions and has its writes
acknowledged by a server whose data is about to be replaced. Checked here: no read
returns a version older than one acknowledged more than ``WINDOW_S`` before the read
began, every acknowledged write is on the primary the Sentinels name afterwards, and a
write made 1 s after the failover lands on the new primary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import redis
from topologies import planned_failover

from telemetry_infra.cache import CacheManager
from telemetry_infra.testing import RedisSentinel

pytestmark = pytest.mark.slow

#: How much older than the newest acknowledged version a read may be: the time for an
#: acknowledgement to reach the reader in this process (measured: under 5 ms) with room for
#: a machine loaded by other test runs.
WINDOW_S = 0.05
KEYS = [f"k{i}" for i in range(8)]
#: written by another manager, made after the failover (a worker started then): it finds
#: the new primary, so a manager still on the old one reads versions it will never see
OUTSIDE = "outside"


@dataclass
class Load:
    """One writer per key (versions 1, 2, 3... in order) and readers of every key."""

    cache: CacheManager
    acked: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    refused: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    reads: list[tuple[str, int, float]] = field(default_factory=list)
    stop: bool = False

    async def write(self, key: str, cache: CacheManager | None = None) -> None:
        version = 0
        while not self.stop:
            version += 1
            if await (cache or self.cache).set(key, version, ttl=300):
                self.acked.setdefault(key, []).append((version, time.monotonic()))
            else:
                self.refused.setdefault(key, []).append((version, time.monotonic()))
            await asyncio.sleep(0.002)

    async def read(self, offset: int) -> None:
        index = offset
        while not self.stop:
            key = OUTSIDE if index % 3 == 0 else KEYS[index % len(KEYS)]
            index += 1
            began = time.monotonic()
            value = await self.cache.get(key)
            self.reads.append((key, 0 if value is None else value, began))
            await asyncio.sleep(0)

    def stale_reads(self) -> list[tuple[str, int, int, float]]:
        """(key, version read, newer version acknowledged, seconds before the read).

        A miss after a refused write is no stale read: the write-safety policy makes the key
        read as a miss until Redis has dropped it (after the key's next acknowledged write).
        """
        stale = []
        for key, version, began in self.reads:
            if version == 0 and self._masked(key, began):
                continue
            newer = [(v, at) for v, at in self.acked.get(key, ()) if v > version and at < began - WINDOW_S]
            if newer:
                v, at = newer[-1]
                stale.append((key, version, v, began - at))
        return stale

    def _masked(self, key: str, began: float) -> bool:
        refusals = [at for _, at in self.refused.get(key, ()) if at < began]
        if not refusals:
            return False
        return not any(max(refusals) < at < began - WINDOW_S for _, at in self.acked.get(key, ()))

    async def lost_writes(self, primary: CacheManager) -> list[tuple[str, int, int | None]]:
        """Keys whose last acknowledged version (with no refused write after it) is not on ``primary``."""
        lost = []
        for key, acked in self.acked.items():
            last = acked[-1][0]
            if any(v > last for v, _ in self.refused.get(key, ())):
                continue  # a refused write after it may have removed it (write safety)
            held = await primary.get(key)
            if held != last:
                lost.append((key, last, held))
        return lost


def _named_primary(topology: RedisSentinel) -> CacheManager:
    """A manager reading the primary the Sentinels name now, directly (no Sentinel involved)."""
    host, port = topology.master_address()
    return CacheManager(f"redis://{host}:{port}/0", namespace="fo", telemetry=False)


@pytest.fixture
def topology() -> Iterator[RedisSentinel]:
    """A topology of its own for each test: after a failover the Sentinels take seconds to
    demote the old primary and resync it, longer than starting a new topology."""
    with RedisSentinel() as started:
        yield started


async def _failover_under_load(topology: RedisSentinel, near_cache: bool) -> None:
    cache = CacheManager(topology.url, namespace="fo", near_cache=near_cache, socket_timeout=1.0)
    await cache.initialize()
    load = Load(cache)
    tasks = [asyncio.create_task(load.write(key)) for key in KEYS]
    tasks += [asyncio.create_task(load.read(i)) for i in range(8)]
    await asyncio.sleep(1.0)
    await asyncio.to_thread(planned_failover, topology, until_demoted=False)
    switched_at = time.monotonic()
    await asyncio.sleep(1.0)
    late = await cache.set("late", "after", ttl=300)
    worker = CacheManager(topology.url, namespace="fo", telemetry=False)
    tasks.append(asyncio.create_task(load.write(OUTSIDE, worker)))
    await asyncio.sleep(2.0)
    load.stop = True
    await asyncio.gather(*tasks)
    await worker.close()

    stale = load.stale_reads()
    primary = _named_primary(topology)
    lost = await load.lost_writes(primary)
    late_held = await primary.get("late")
    await primary.close()
    acked_after = sum(1 for acked in load.acked.values() for _, at in acked if at > switched_at)
    print(
        f"near_cache={near_cache}: {len(load.reads)} reads, {len(stale)} stale, "
        f"{sum(map(len, load.acked.values()))} acknowledged writes ({acked_after} after the switch), "
        f"{sum(map(len, load.refused.values()))} refused, {len(lost)} lost"
    )
    await cache.close()
    assert stale == [], f"{len(stale)} of {len(load.reads)} reads were stale, e.g. {stale[:5]}"
    assert lost == [], f"acknowledged writes missing from the named primary: {lost}"
    assert late and late_held is not None, "a set() 1 s after the failover is not on the new primary"
    assert acked_after > 0, "no write was acknowledged after the failover"


async def test_sentinel_failover_under_load_near_cache_off(topology: RedisSentinel) -> None:
    await _failover_under_load(topology, near_cache=False)


async def test_sentinel_failover_under_load_near_cache_on(topology: RedisSentinel) -> None:
    await _failover_under_load(topology, near_cache=True)


async def test_sentinels_refusing_subscriptions_are_polled(topology: RedisSentinel) -> None:
    """Where the Sentinels refuse SUBSCRIBE (an ACL without channels), they are asked every
    ``probe_interval`` instead: a write made half a second after a planned failover lands
    on the new primary, not on the old one that still answers as a primary."""
    for node in [*topology.sentinels, *topology.data_nodes]:
        channels = "resetchannels" if node in topology.sentinels else "allchannels"
        with node.client() as client:
            client.execute_command("ACL", "SETUSER", "app", "on", ">pw", "~*", "+@all", channels)
    url = topology.url.replace("redis+sentinel://", "redis+sentinel://app:pw@")
    cache = CacheManager(url, namespace="fo", probe_interval=0.2)
    assert await cache.set("before", 1)
    host, port = topology.sentinel_addresses[0]
    app = redis.Redis(host, port, username="app", password="pw", socket_timeout=2)
    with app, app.pubsub() as pubsub, pytest.raises(redis.exceptions.NoPermissionError):
        pubsub.subscribe("+switch-master")  # what the manager's watch meets too
        pubsub.get_message(timeout=1)
    await asyncio.to_thread(planned_failover, topology, until_demoted=False)
    await asyncio.sleep(0.5)
    assert await cache.set("after", 2)
    primary = _named_primary(topology)
    assert await primary.get("after") == 2, "the write went to the demoted primary"
    await primary.close()
    await cache.close()
