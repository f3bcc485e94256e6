"""What CacheManager costs on top of raw redis.asyncio, measured in one run.

    python benchmarks/cache_overhead.py [--rounds 15] [--iterations 300]

Starts a private redis-server (never touches yours). Every Redis case compares the
manager with raw ``redis.asyncio`` calls on the same bytes (the raw side reads and
writes exactly the payloads the manager stores). Rounds alternate raw and manager
so machine noise hits both; the table shows the best per-call time of each side,
their ratio, and the median of the per-round ratios.

Part 1 (issue 4) runs with telemetry off. Part 2 (issue 5) runs with
``configure()`` active and no network exporter; the raw side calls the original,
uninstrumented ``execute_command`` so it stays the floor. With Redis command spans off a
sampled operation's span is a leaf span (built when it ends, issue 25); with them on it
is the SDK's live span, parent of the command span.

Part 3 (issue 17, ``--parts 17``): near cache hits against a raw Redis GET in the same
run, telemetry off and on, and the invalidation latency on loopback: from the start of
another manager's ``set`` to the near tier having dropped the key.

Part 4 (issue 21, ``--parts 21``): what reading the key's TTL with its value costs the
near tier's misses (a fill writes ``GET`` and ``PTTL`` together on one connection; batches
and Cluster reads use a read-only Lua script), next to the ways of doing it raw, and that
get/set with the near tier on stay <= 1.15x raw.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from opentelemetry import context, trace

import telemetry_infra as ti
from telemetry_infra.testing import RedisServer, free_port

Call = Callable[[], Awaitable[object]]
Cleanup = Callable[[], Awaitable[None]]

# taken before configure() can instrument redis: the raw floor never carries spans
RAW_EXECUTE = aioredis.Redis.execute_command

VALUE = {"bbl": "1000010001", "violations": [{"id": i, "class": "B", "open": True} for i in range(12)]}
SMALL = {"bbl": "1000010001", "score": 7, "class": "B", "open": True, "updated": "2026-01-15T23:00:00Z"}
BATCH = 100
TTL = 300


@dataclass
class Case:
    name: str
    ours: Call
    raw: Call | None = None
    target: str = ""
    ours_times: list[float] = field(default_factory=list)
    raw_times: list[float] = field(default_factory=list)


async def per_call(call: Call, iterations: int) -> float:
    started = time.perf_counter()
    for _ in range(iterations):
        await call()
    return (time.perf_counter() - started) / iterations


async def measure(cases: list[Case], rounds: int, iterations: int) -> list[Case]:
    for case in cases:  # warm-up: connections, script cache, code paths
        await per_call(case.ours, 50)
        if case.raw:
            await per_call(case.raw, 50)
    for round_number in range(rounds):
        for case in cases:
            sides = [(case.ours, case.ours_times), (case.raw, case.raw_times)]
            for call, times in sides if round_number % 2 else reversed(sides):
                if call is not None:
                    times.append(await per_call(call, iterations))
    return cases


def report(title: str, cases: list[Case]) -> None:
    print(f"\n{title}")
    print(f"{'case':<44}{'raw µs':>9}{'ours µs':>9}{'ratio':>7}{'median':>8}  target")
    for case in cases:
        ours = min(case.ours_times) * 1e6
        if case.raw is None:
            print(f"{case.name:<44}{'':>9}{ours:>9.2f}{'':>7}{'':>8}  {case.target}")
            continue
        raw = min(case.raw_times) * 1e6
        paired = statistics.median(o / r for o, r in zip(case.ours_times, case.raw_times, strict=True))
        print(f"{case.name:<44}{raw:>9.1f}{ours:>9.1f}{ours / raw:>7.2f}{paired:>8.2f}  {case.target}")


@contextmanager
def inside(span: trace.Span) -> Iterator[None]:
    """Make ``span`` the current span for everything measured in the block."""
    token = context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        context.detach(token)


def unsampled_parent() -> trace.Span:
    return trace.NonRecordingSpan(
        trace.SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=trace.TraceFlags(0))
    )


class Bench:
    """A private Redis, a raw client, and the payloads both sides read and write."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.raw = aioredis.Redis.from_url(url)
        self.keys = [f"k{i}" for i in range(BATCH)]
        self.stored = [f"bench:{key}" for key in self.keys]
        self.payloads: dict[str, bytes] = {}

    def raw_call(self, *args: object) -> Call:
        return lambda: RAW_EXECUTE(self.raw, *args)

    async def manager(self, **options: object) -> ti.CacheManager:
        cache = ti.CacheManager(redis_url=self.url, namespace="bench", **options)
        await cache.initialize()
        for label, value in (("small", SMALL), ("1 KB", VALUE)):
            await cache.set(label, value, ttl=TTL)
            payload = await RAW_EXECUTE(self.raw, "GET", f"bench:{label}")
            assert payload is not None and len(payload) <= 1024
            self.payloads[label] = payload
        return cache

    def get_set_cases(self, cache: ti.CacheManager, labels: tuple[str, ...], target: str) -> list[Case]:
        cases = []
        for label in labels:
            payload = self.payloads[label]
            value = SMALL if label == "small" else VALUE
            size = f"{len(payload)} B"
            cases += [
                Case(f"get hit ({size})", lambda k=label: cache.get(k),
                     self.raw_call("GET", f"bench:{label}"), target),
                Case(f"set ttl ({size})", lambda v=value: cache.set("w", v, ttl=TTL),
                     self.raw_call("SET", "bench:w", payload, "EX", TTL), target),
            ]  # fmt: skip
        return cases

    def batch_cases(self, cache: ti.CacheManager) -> list[Case]:
        batch = {key: SMALL for key in self.keys}
        small = self.payloads["small"]

        async def raw_pipeline_set_ex() -> None:
            pipe = self.raw.pipeline(transaction=False)
            for key in self.stored:
                pipe.execute_command("SET", key, small, "EX", TTL)
            await pipe.execute()

        return [
            Case(f"mget 100 ({len(small)} B)", lambda: cache.mget(self.keys),
                 self.raw_call("MGET", *self.stored), "<= 1.3x"),
            Case("mset 100 ttl / pipeline of 100 SET EX", lambda: cache.mset(batch, ttl=TTL),
                 raw_pipeline_set_ex, "<= 0.5x"),
        ]  # fmt: skip


async def memory_managers(telemetry: bool) -> tuple[ti.CacheManager, ti.CacheManager]:
    memory = ti.CacheManager(redis_url=None, telemetry=telemetry)
    await memory.mset({"small": SMALL, "1 KB": VALUE})
    dead = ti.CacheManager(
        redis_url=f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2, telemetry=telemetry
    )
    await dead.initialize()
    assert dead.fallback_active
    await dead.set("small", SMALL)
    return memory, dead


async def issue_4(bench: Bench, rounds: int, iterations: int) -> list[Cleanup]:
    cache = await bench.manager(telemetry=False)
    await cache.mset({key: SMALL for key in bench.keys}, ttl=TTL)
    memory, dead = await memory_managers(telemetry=False)
    cases = bench.get_set_cases(cache, ("small", "1 KB"), "<= 1.15x")
    cases.insert(
        1, Case("get miss", lambda: cache.get("absent"), bench.raw_call("GET", "bench:absent"), "<= 1.15x")
    )
    cases += bench.batch_cases(cache)
    cases += [
        Case("memory backend get hit (small)", lambda: memory.get("small"), target="<= 3 µs"),
        Case("memory backend get hit (1 KB)", lambda: memory.get("1 KB"), target="(for information)"),
        Case("breaker open get hit (small)", lambda: dead.get("small"), target="<= 5 µs"),
    ]
    report(
        "Issue 4: CacheManager vs raw redis.asyncio, telemetry off", await measure(cases, rounds, iterations)
    )
    return [cache.close, memory.close, dead.close]


async def issue_5(bench: Bench, rounds: int, iterations: int) -> list[Cleanup]:
    tracer = trace.get_tracer("benchmarks.cache")
    labels = ("small", "1 KB")

    ti.configure(service_name="cache-benchmark", instrument_redis=False, setup_logs=False)
    cache = await bench.manager(name="bench")
    with tracer.start_as_current_span("request") as request, inside(request):
        spans_off = await measure(bench.get_set_cases(cache, labels, "<= 1.3x"), rounds, iterations)

    ti.configure(service_name="cache-benchmark", instrument_redis=True, setup_logs=False)
    with tracer.start_as_current_span("request") as request, inside(request):
        spans_on = await measure(bench.get_set_cases(cache, labels, "<= 1.9x"), rounds, iterations)
    with inside(unsampled_parent()):
        unsampled = await measure(bench.get_set_cases(cache, labels, "<= 1.3x"), rounds, iterations)
    memory, dead = await memory_managers(telemetry=True)
    outside = await measure(
        [Case("memory backend get hit, no trace (small)", lambda: memory.get("small"), target="<= 10 µs")],
        rounds,
        iterations,
    )
    report("Issue 5: configure() active, sampled, Redis command spans off", spans_off)
    report("Issue 5: configure() active, sampled, Redis command spans on", spans_on)
    report("Issue 5: configure() active, parent not sampled (Redis instrumentation on)", unsampled)
    report("Issue 5: configure() active, outside any trace", outside)
    return [cache.close, memory.close, dead.close]


async def issue_17(bench: Bench, rounds: int, iterations: int) -> list[Cleanup]:
    cleanups: list[Cleanup] = []
    tables: list[tuple[str, list[Case]]] = []
    tracer = trace.get_tracer("benchmarks.cache")
    for telemetry in (False, True):
        if telemetry:
            ti.configure(service_name="cache-benchmark", instrument_redis=False, setup_logs=False)
        near = await bench.manager(telemetry=telemetry, near_cache=True, name=f"near-{telemetry}")
        cleanups.append(near.close)
        await near.set("scalar", "a string value")
        await near._near.channel.sync()
        for label in ("small", "1 KB", "scalar"):  # fill the near tier
            await near.get(label)
        assert near.get_stats()["near_items"] == 3, "the near tier does not serve"
        target = "<= 12 µs" if telemetry else "<= 5 µs"
        cases = [
            Case(f"near get hit ({label} dict)", lambda k=label, near=near: near.get(k),
                 bench.raw_call("GET", f"bench:{label}"), target)
            for label in ("small", "1 KB")
        ] + [
            Case("near get hit (str: shared, not decoded)", lambda near=near: near.get("scalar"),
                 bench.raw_call("GET", "bench:scalar"), "(for information)")
        ]  # fmt: skip
        if not telemetry:
            tables.append(
                (
                    "Issue 17: near cache hits vs a Redis GET, telemetry off",
                    await measure(cases, rounds, iterations),
                )
            )
            continue
        tables.append(
            (
                "Issue 17: near cache hits vs a Redis GET, configure() active, outside a trace",
                await measure(cases, rounds, iterations),
            )
        )
        with tracer.start_as_current_span("request") as request, inside(request):
            assert trace.get_current_span().is_recording()
            sampled = await measure(
                bench_cases_fresh(cases, "(for information: a leaf span)"), rounds, iterations
            )
        tables.append(
            ("Issue 17: near cache hits vs a Redis GET, configure() active, sampled (a span each)", sampled)
        )
        ti.shutdown()
    for title, cases in tables:
        report(title, cases)
    cleanups.append(await invalidation_latency(bench))
    return cleanups


async def issue_21(bench: Bench, rounds: int, iterations: int) -> list[Cleanup]:
    from telemetry_infra.cache.redis.node import _GET_EXPIRING

    # one entry held: reads alternating between two keys always miss the near tier and fill it
    near = await bench.manager(telemetry=False, near_cache=True, near_cache_size=1, name="near-21")
    await near.mset({"m0": SMALL, "m1": SMALL}, ttl=TTL)
    await near._near.channel.sync()
    small = bench.payloads["small"]
    sha = await bench.raw.script_load(_GET_EXPIRING)
    turn = iter(range(1 << 62))

    async def raw_get_pttl_written_together() -> object:
        connection = await bench.raw.connection_pool.get_connection()
        try:
            packed = connection.pack_commands((("GET", "bench:m0"), ("PTTL", "bench:m0")))
            await connection.send_packed_command(packed, check_health=False)
            return await connection.read_response(), await connection.read_response()
        finally:
            await bench.raw.connection_pool.release(connection)

    async def raw_get_pttl_pipeline() -> object:
        pipe = bench.raw.pipeline(transaction=False)
        pipe.execute_command("GET", "bench:m0")
        pipe.execute_command("PTTL", "bench:m0")
        return await pipe.execute()

    def alternating() -> Awaitable[object]:
        return near.get("m1" if next(turn) % 2 else "m0")

    cases = [
        Case("raw GET+PTTL in one write vs raw GET", raw_get_pttl_written_together,
             bench.raw_call("GET", "bench:m0"), "(the mechanism)"),
        Case("raw EVALSHA get+pttl vs raw GET", bench.raw_call("EVALSHA", sha, 1, "bench:m0"),
             bench.raw_call("GET", "bench:m0"), "(batches, Cluster)"),
        Case("raw redis-py pipeline GET+PTTL vs raw GET", raw_get_pttl_pipeline,
             bench.raw_call("GET", "bench:m0"), "(not chosen)"),
        Case(f"near miss + fill ({len(small)} B) vs raw GET", alternating,
             bench.raw_call("GET", "bench:m0"), "(for information)"),
        Case("near on: get miss (absent key)", lambda: near.get("absent"),
             bench.raw_call("GET", "bench:absent"), "<= 1.15x"),
        Case(f"near on: set ttl ({len(small)} B)", lambda: near.set("w", SMALL, ttl=TTL),
             bench.raw_call("SET", "bench:w", small, "EX", TTL), "<= 1.15x"),
    ]  # fmt: skip
    report(
        "Issue 21: the near tier reads each key's TTL with its value (telemetry off)",
        await measure(cases, rounds, iterations),
    )
    return [near.close]


def bench_cases_fresh(cases: list[Case], target: str) -> list[Case]:
    """The same calls, with no timings yet."""
    return [Case(case.name, case.ours, case.raw, target) for case in cases]


async def invalidation_latency(bench: Bench, updates: int = 500) -> Cleanup:
    """From the start of B's ``set`` to A's near tier having dropped the key (loopback)."""
    a = ti.CacheManager(redis_url=bench.url, namespace="bench", near_cache=True, telemetry=False)
    b = ti.CacheManager(redis_url=bench.url, namespace="bench", telemetry=False)
    await a.initialize()
    latencies = []
    for version in range(updates):
        await a._near.channel.sync()
        await a.get("latency")
        if await a.get("latency") != (version - 1 if version else None):
            raise AssertionError("the near tier serves a stale value")
        seen = a.get_stats()["near_invalidations"]
        started = time.perf_counter()
        await b.set("latency", version)
        while a.get_stats()["near_invalidations"] == seen:  # noqa: ASYNC110 (measured: no Event to wait on)
            await asyncio.sleep(0)
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1e6
    p99 = latencies[int(len(latencies) * 0.99)] * 1e6
    print(f"\nIssue 17: invalidation latency over {updates} updates (B's set start -> A dropped the key)")
    print(f"p50 {p50:.0f} µs   p99 {p99:.0f} µs   max {latencies[-1] * 1e6:.0f} µs")

    async def close() -> None:
        await a.close()
        await b.close()

    return close


async def main(rounds: int, iterations: int, parts: str) -> None:
    with RedisServer() as server:
        bench = Bench(server.url)
        cleanups: list[Cleanup] = []
        try:
            if "4" in parts.replace("17", "").replace("21", ""):
                cleanups += await issue_4(bench, rounds, iterations)
            if "5" in parts.replace("17", "").replace("21", ""):
                cleanups += await issue_5(bench, rounds, iterations)
            if "17" in parts:
                cleanups += await issue_17(bench, rounds, iterations)
            if "21" in parts:
                cleanups += await issue_21(bench, rounds, iterations)
        finally:
            for cleanup in cleanups:
                await cleanup()
            await bench.raw.aclose()
            ti.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument(
        "--parts", default="4,5,17,21", help="which issues' tables to run: 4, 5, 17, 21 (comma-separated)"
    )
    options = parser.parse_args()
    asyncio.run(main(options.rounds, options.iterations, options.parts))
