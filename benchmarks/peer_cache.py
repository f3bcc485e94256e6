"""Cache hot paths against aiocache and cashews, each with a named floor, in one run.

    python benchmarks/peer_cache.py [--rounds 9] [--per-round 3000] [--json PATH] [--markdown]

Starts a private redis-server (never touches yours). Rows:

* near hit (small dict / 1 KB dict) with ``configure()`` active, outside a trace: ours is
  ``CacheManager(near_cache=True)``, which decodes a fresh copy per hit; the peer is
  cashews ``client_side=True`` (it hands out its stored object). Floor: a dict lookup plus
  ``orjson.loads`` of the stored bytes.
* memory-backend hit with telemetry off (``CacheManager(redis_url=None, telemetry=False)``),
  floor ``cachetools.TTLCache`` + ``orjson.loads``; peers aiocache ``SimpleMemoryCache`` and
  cashews ``mem://`` (both hand out the stored object).
* a ``@cached`` hit on the memory backend vs aiocache's ``@cached`` and cashews' ``@cache``.

Only public API of each library. Time is the thread's CPU time of a loop of awaited calls
on one event loop; cases alternate within each round.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from cachetools import TTLCache
from peer_rounds import Case, Measure, Row, arguments, report, run_rows, timed

import telemetry_infra as ti
from telemetry_infra.testing import RedisServer

SMALL = {"bbl": "1000010001", "score": 7, "class": "B", "open": True, "updated": "2026-01-15T23:00:00Z"}
ONE_KB = {"bbl": "1000010001", "violations": [{"id": i, "class": "B", "open": True} for i in range(12)]}
TTL = 300


def awaited(loop: asyncio.AbstractEventLoop, call: Callable[[], Awaitable[object]]) -> Measure:
    """A :data:`Measure` awaiting ``call`` ``n`` times inside one task."""
    import time

    async def run(n: int) -> float:
        started = time.thread_time()
        for _ in range(n):
            await call()
        return time.thread_time() - started

    return lambda n: loop.run_until_complete(run(n))


def dict_and_loads(value: Any) -> Callable[[], object]:
    stored = {"key": orjson.dumps(value)}
    return lambda: orjson.loads(stored["key"])


def ttl_cache_and_loads(value: Any) -> Callable[[], object]:
    stored: TTLCache[str, bytes] = TTLCache(maxsize=10_000, ttl=TTL)
    stored["key"] = orjson.dumps(value)
    return lambda: orjson.loads(stored["key"])


async def near_rows(loop: asyncio.AbstractEventLoop, url: str) -> list[Row]:
    from cashews import Cache

    ours = ti.CacheManager(redis_url=url, namespace="peer", near_cache=True, name="near")
    await ours.initialize()
    cashews = Cache()
    cashews.setup(url, client_side=True)
    await cashews.init()
    rows = []
    for label, value, limit in (("small dict", SMALL, 0.6), ("1 KB dict", ONE_KB, 1.2)):
        await ours.set(label, value, ttl=TTL)
        await cashews.set(f"cashews:{label}", value, expire=TTL)
        for _ in range(50):  # until the near tiers serve it
            assert await ours.get(label) == value and await cashews.get(f"cashews:{label}") == value
            await asyncio.sleep(0.001)
        rows.append(
            Row(
                f"near hit, {label}, configure() active",
                [
                    Case("dict + orjson.loads", "floor", timed(dict_and_loads(value))),
                    Case(
                        "ours: near_cache=True (a fresh copy)",
                        "ours",
                        awaited(loop, functools.partial(ours.get, label)),
                    ),
                    Case(
                        "cashews client_side (its stored object)",
                        "peer",
                        awaited(loop, functools.partial(cashews.get, f"cashews:{label}")),
                    ),
                ],
                target_limit=limit,
            )
        )
    assert ours.get_stats()["near_items"] >= 2, "the near tier does not serve"
    return rows


async def memory_row(loop: asyncio.AbstractEventLoop) -> Row:
    from aiocache import SimpleMemoryCache
    from cashews import Cache

    ours = ti.CacheManager(redis_url=None, telemetry=False, name="memory")
    await ours.set("small", SMALL, ttl=TTL)
    aiocache = SimpleMemoryCache()
    await aiocache.set("small", SMALL, ttl=TTL)
    cashews = Cache()
    cashews.setup("mem://")
    await cashews.set("small", SMALL, expire=TTL)
    return Row(
        "memory-backend hit, small dict, telemetry off",
        [
            Case("TTLCache + orjson.loads", "floor", timed(ttl_cache_and_loads(SMALL))),
            Case(
                "ours: CacheManager(redis_url=None, telemetry=False)",
                "ours",
                awaited(loop, lambda: ours.get("small")),
            ),
            Case(
                "aiocache SimpleMemoryCache (its stored object)",
                "peer",
                awaited(loop, lambda: aiocache.get("small")),
            ),
            Case("cashews mem:// (its stored object)", "peer", awaited(loop, lambda: cashews.get("small"))),
        ],
        target_limit=1.3,
        target_reference="floor",
    )


async def cached_row(loop: asyncio.AbstractEventLoop) -> Row:
    from aiocache import cached as aiocache_cached
    from cashews import Cache

    manager = ti.CacheManager(redis_url=None, name="decorated")
    cashews = Cache()
    cashews.setup("mem://")

    @ti.cached(ttl=TTL)
    async def ours(item: int) -> dict[str, Any]:
        return SMALL

    @aiocache_cached(ttl=TTL)  # type: ignore[untyped-decorator]
    async def with_aiocache(item: int) -> dict[str, Any]:
        return SMALL

    @cashews(ttl=TTL)
    async def with_cashews(item: int) -> dict[str, Any]:
        return SMALL

    floor_store = ttl_cache_and_loads(SMALL)
    for call in (lambda: ours(7, _cache_manager=manager), lambda: with_aiocache(7), lambda: with_cashews(7)):
        await call()
    return Row(
        "@cached hit, memory backend, configure() active",
        [
            Case("TTLCache + orjson.loads", "floor", timed(floor_store)),
            Case(
                "ours: @cached (a fresh copy)", "ours", awaited(loop, lambda: ours(7, _cache_manager=manager))
            ),
            Case("aiocache @cached (its stored object)", "peer", awaited(loop, lambda: with_aiocache(7))),
            Case("cashews @cache (its stored object)", "peer", awaited(loop, lambda: with_cashews(7))),
        ],
        target_limit=1.0,
    )


def main() -> None:
    args = arguments(__doc__.splitlines()[0], rounds=9, per_round=3000).parse_args()
    loop = asyncio.new_event_loop()
    with RedisServer() as server, tempfile.TemporaryDirectory() as log_dir:
        ti.configure(
            service_name="peer-cache",
            log_dir=log_dir,
            console_logs=False,
            instrument_redis=False,
            capture_uncaught_exceptions=False,
        )
        logging.getLogger().setLevel(logging.WARNING)
        url = f"redis://127.0.0.1:{server.port}/0"
        rows = [
            *loop.run_until_complete(near_rows(loop, url)),
            loop.run_until_complete(memory_row(loop)),
            loop.run_until_complete(cached_row(loop)),
        ]
        run_rows(rows, args.rounds, args.per_round)
        ti.shutdown()
    report("peer_cache", rows, args)


if __name__ == "__main__":
    main()
