"""``cache.sync``: the synchronous view, against a real redis-server: shared values with the
async API and other processes, many threads on one bounded pool, coroutines refused at
once, near hits in the caller's thread, a forked child, an outage, interpreter exit."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable

import pytest
from opentelemetry import trace

import telemetry_infra as ti

THREADS = 8
FAST = {"socket_timeout": 0.3, "socket_connect_timeout": 0.3, "probe_interval": 0.1, "failure_threshold": 1}
tracer = trace.get_tracer("tests.cache_sync")


def namespace() -> str:
    return f"sync-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def cache(redis_server):
    manager = ti.CacheManager(redis_url=redis_server.url, namespace=namespace(), max_connections=4)
    yield manager
    manager.sync.close()


def other_clients(watcher) -> list[dict]:
    """CLIENT LIST entries other than ``watcher``'s own connection."""
    me = watcher.client_id()
    return [client for client in watcher.client_list() if int(client["id"]) != me]


def test_values_cross_between_the_sync_view_the_async_api_and_another_process(cache, redis_server):
    assert cache.sync.set("user:1", {"name": "Ada"}, ttl=60) is True
    assert asyncio.run(cache.get("user:1")) == {"name": "Ada"}
    asyncio.run(cache.set("user:2", ["Grace", 1906]))
    assert cache.sync.get("user:2") == ["Grace", 1906]
    assert cache.sync.get("absent", "fallback") == "fallback"
    assert cache.sync.mset({"a": 1, "b": 2}) is True
    assert cache.sync.mget(["a", "b", "c"]) == {"a": 1, "b": 2}
    assert cache.sync.exists("a") is True
    assert cache.sync.delete("a") is True
    assert cache.sync.exists("a") is False
    script = textwrap.dedent(
        f"""
        import telemetry_infra as ti
        cache = ti.CacheManager(redis_url={redis_server.url!r}, namespace={cache._namespace.prefix[:-1]!r})
        print(cache.sync.get("user:1")["name"])
        cache.sync.set("from-child", 42)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Ada"
    assert cache.sync.get("from-child") == 42
    assert cache.sync.clear() == 4
    assert cache.sync.health_check()["status"] == "healthy"


def test_eight_threads_share_one_bounded_pool(redis_restartable):
    """8 threads x 300 operations: right answers, and never more connections than max_connections."""
    redis_server = redis_restartable  # a server of its own: every client on it is this cache's
    cache = ti.CacheManager(redis_url=redis_server.url, namespace=namespace(), max_connections=4)
    wrong: list[tuple[str, object]] = []
    peak: list[dict] = []
    stop = threading.Event()

    watcher_client = redis_server.client()

    def watch() -> None:
        while not stop.is_set():
            clients = other_clients(watcher_client)
            if len(clients) > len(peak):
                peak[:] = clients
            time.sleep(0.01)

    def work(thread: int) -> None:
        for n in range(300):
            key = f"t{thread}:{n % 5}"
            cache.sync.set(key, n)
            if (found := cache.sync.get(key)) != n:
                wrong.append((key, found))
            cache.sync.mget([f"t{thread}:{i}" for i in range(5)])

    watcher = threading.Thread(target=watch)
    watcher.start()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    stop.set()
    watcher.join()
    used, idle, maximum = cache.connection_usage()
    cache.sync.close()
    assert wrong == []
    watcher_client.close()
    assert 1 <= len(peak) <= cache.max_connections, "\n".join(map(str, peak))
    assert used + idle <= maximum == cache.max_connections
    assert cache.get_stats()["errors"] == 0


def test_from_a_coroutine_it_raises_at_once(cache):
    async def in_a_coroutine() -> str:
        with pytest.raises(RuntimeError, match=r"await cache\.get"):
            cache.sync.get("k")
        with pytest.raises(RuntimeError, match="event loop is running"):
            cache.sync.set("k", 1)
        return "raised"

    started = time.monotonic()
    assert asyncio.run(in_a_coroutine()) == "raised"
    cache.sync.set("k", 1)  # the view's own loop now runs: a coroutine there is refused too
    own_loop = cache.sync._runner.loop
    on_own_loop = asyncio.run_coroutine_threadsafe(in_a_coroutine(), own_loop)
    assert on_own_loop.result(timeout=5) == "raised"
    assert time.monotonic() - started < 5
    assert cache.sync.get("k") == 1


def test_near_hits_are_served_in_the_callers_thread_and_traced_under_its_span(redis_server, otlp_receiver):
    ti.configure(service_name="sync-near", otlp_endpoint=otlp_receiver.grpc_endpoint, setup_logs=False)
    cache = ti.CacheManager(redis_url=redis_server.url, namespace=namespace(), near_cache=True)
    try:
        cache.sync.set("hot", {"v": 1})
        deadline = time.monotonic() + 5
        while cache.get_stats()["near_items"] == 0 and time.monotonic() < deadline:
            cache.sync.get("hot")  # fills once the channel tracks
        # the view's loop is busy for 1 s: a near hit does not wait for it
        busy = asyncio.run_coroutine_threadsafe(asyncio.to_thread(time.sleep, 0), cache.sync._runner.loop)
        blocker = cache.sync._runner.loop.call_soon_threadsafe(time.sleep, 1.0)
        started = time.monotonic()
        with tracer.start_as_current_span("handler") as parent:
            assert cache.sync.get("hot") == {"v": 1}
        assert time.monotonic() - started < 0.5, "a near hit waited for the loop thread"
        busy.result(5)
        del blocker
        assert cache.get_stats()["near_hits"] >= 1
        ti.get_telemetry().force_flush()
        handler_id = format(parent.get_span_context().span_id, "016x")
        spans = otlp_receiver.wait_for_spans(
            lambda s: s.name == "cache.get" and s.attributes.get("cache.tier") == "near"
        )
        assert spans[0].parent_span_id == handler_id
    finally:
        cache.sync.close()


def test_redis_spans_of_a_hop_are_under_the_callers_span(redis_server, otlp_receiver):
    ti.configure(service_name="sync-spans", otlp_endpoint=otlp_receiver.grpc_endpoint, setup_logs=False)
    cache = ti.CacheManager(redis_url=redis_server.url, namespace=namespace())
    try:
        with tracer.start_as_current_span("task") as parent:
            cache.sync.set("k", 1)
            assert cache.sync.get("k") == 1
        ti.get_telemetry().force_flush()
        task_id = format(parent.get_span_context().span_id, "016x")
        spans = otlp_receiver.wait_for_spans(lambda s: s.name in ("cache.get", "cache.set"), count=2)
        assert {(s.name, s.parent_span_id, s.attributes["cache.backend"]) for s in spans} == {
            ("cache.get", task_id, "redis"),
            ("cache.set", task_id, "redis"),
        }
    finally:
        cache.sync.close()


def within(seconds: float, call: Callable[[], object], failure: str) -> None:
    """Run ``call`` in a daemon thread; fail the test (instead of hanging it) if it does not return."""
    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    caller.join(seconds)
    if caller.is_alive():
        pytest.fail(failure)


def _child(cache: ti.CacheManager) -> int:
    """In the forked child: the view works with connections of its own."""
    try:
        for n in range(50):
            cache.sync.set(f"child:{n}", n)
            if cache.sync.get(f"child:{n}") != n or cache.sync.get("parent") != "before fork":
                return 3
        return 0
    except BaseException:
        return 4


@pytest.mark.parametrize("near_cache", [False, True])
def test_a_forked_child_uses_the_view_and_the_parent_keeps_working(redis_server, near_cache):
    cache = ti.CacheManager(
        redis_url=redis_server.url, namespace=namespace(), near_cache=near_cache, socket_timeout=2.0
    )
    try:
        cache.sync.set("parent", "before fork")
        assert cache.sync.get("parent") == "before fork"
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit status
            os._exit(_child(cache))
        deadline = time.monotonic() + 20
        while (status := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        if status[0] == 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung using cache.sync")
        assert os.waitstatus_to_exitcode(status[1]) == 0, "the child's calls failed"
        after_child: list[object] = []

        def parent_calls() -> None:  # after the child exited: the parent's loop still hears its sockets
            for n in range(300):
                cache.sync.set("parent", n)
                after_child.append((cache.sync.get("parent") == n, cache.sync.get("child:7")))

        within(30, parent_calls, "the parent hung after the forked child exited")
        assert after_child == [(True, 7)] * 300
        assert cache.get_stats()["errors"] == 0 and not cache.fallback_active
    finally:
        within(10, cache.sync.close, "cache.sync.close() hung")


def test_an_outage_falls_back_to_memory_and_recovers(redis_restartable):
    cache = ti.CacheManager(redis_url=redis_restartable.url, namespace=namespace(), **FAST)
    try:
        assert cache.sync.set("k", "v1") is True
        redis_restartable.kill()
        assert cache.sync.set("k", "v2") is True  # memory took it, nothing raised
        assert cache.sync.get("k") == "v2"
        assert cache.fallback_active and cache.backend_name == "memory"
        assert cache.sync.health_check()["status"] == "degraded"
        redis_restartable.start()
        deadline = time.monotonic() + 10
        while cache.fallback_active and time.monotonic() < deadline:
            cache.sync.get("k")
            time.sleep(0.05)
        assert not cache.fallback_active, "never recovered after Redis came back"
        assert cache.sync.get("k") is None  # the outage's write was replayed as a removal: v1 never returns
        assert cache.sync.set("k", "v3") is True
        assert redis_restartable.client().get(cache._namespace.key("k")) is not None  # in Redis again
    finally:
        cache.sync.close()


def test_interpreter_exit_closes_the_loop_with_the_near_cache_on(redis_server):
    """At exit the view's loop (with the near cache's invalidation listener on it) is wound
    down and closed, quickly and quietly: no task destroyed pending, no unclosed resource."""
    script = textwrap.dedent(
        f"""
        import atexit
        state = {{}}
        # registered before telemetry_infra's own exit hook, so it runs after it
        atexit.register(lambda: print("closed" if state["runner"].loop.is_closed() else "left open",
                                      "ended" if not state["runner"].thread.is_alive() else "running"))
        import telemetry_infra as ti
        cache = ti.CacheManager(redis_url={redis_server.url!r}, namespace={namespace()!r}, near_cache=True)
        cache.sync.set("k", 1)
        assert cache.sync.get("k") == 1
        assert cache.sync.get("k") == 1
        state["runner"] = cache.sync._runner
        print("done")
        """
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["done", "closed", "ended"]
    assert time.monotonic() - started < 15
    for noise in ("Task was destroyed", "Traceback", "ResourceWarning", "Exception ignored"):
        assert noise not in done.stderr, done.stderr


def test_reads_are_answered_in_the_callers_thread_while_the_views_loop_is_busy(cache):
    """A Redis read does not queue behind the view's loop thread (busy with a slow write, a
    big batch): it runs in its caller's thread on its own connection."""
    cache.sync.set("k", "v")
    runner = cache.sync._runner
    busy = threading.Event()
    runner.loop.call_soon_threadsafe(lambda: (busy.set(), time.sleep(2.0)))  # beyond the 1.5 s bound
    assert busy.wait(5)
    started = time.monotonic()
    assert cache.sync.get("k") == "v"
    assert cache.sync.get("absent", "default") == "default"
    assert cache.sync.mget(["k", "absent"]) == {"k": "v"}
    assert cache.sync.exists("k") is True
    assert time.monotonic() - started < 1.5, "the reads waited for the view's loop thread"


def test_a_sync_read_is_traced_and_counted_like_an_async_one(redis_server, otlp_receiver):
    ti.configure(service_name="sync-read-spans", otlp_endpoint=otlp_receiver.grpc_endpoint, setup_logs=False)
    cache = ti.CacheManager(redis_url=redis_server.url, namespace=namespace(), name=namespace())
    try:
        cache.sync.set("k", {"n": 1})
        with tracer.start_as_current_span("sync-caller") as sync_parent:
            assert cache.sync.get("k") == {"n": 1}
            assert cache.sync.get("absent") is None
        with tracer.start_as_current_span("async-caller") as async_parent:
            assert asyncio.run(cache.get("k")) == {"n": 1}
            assert asyncio.run(cache.get("absent")) is None
        ti.get_telemetry().force_flush()
        spans = otlp_receiver.wait_for_spans(lambda s: s.name == "cache.get", count=4)
        by_parent: dict[str, list[dict]] = {}
        for span in spans:
            by_parent.setdefault(span.parent_span_id, []).append(dict(span.attributes))
        sync_id = format(sync_parent.get_span_context().span_id, "016x")
        async_id = format(async_parent.get_span_context().span_id, "016x")
        assert by_parent[sync_id] == by_parent[async_id]
        first = by_parent[sync_id][0]
        assert first["cache.hit"] is True and first["cache.backend"] == "redis"
        sync_gets = [s for s in spans if s.parent_span_id == sync_id]
        redis_gets = otlp_receiver.wait_for_spans(
            lambda s: s.name == "GET" and s.parent_span_id in {g.span_id for g in sync_gets}, count=2
        )
        assert len(redis_gets) == 2  # the Redis command under each sync cache.get
        stats = cache.get_stats()
        assert (stats["hits"], stats["misses"], stats["errors"]) == (2, 2, 0)
    finally:
        cache.sync.close()


def test_reads_that_find_redis_gone_open_the_breaker_which_then_recovers(redis_restartable):
    """A breaker opened by reads in callers' threads probes from the view's loop: the cache goes
    back to Redis with no other call made."""
    cache = ti.CacheManager(
        redis_url=redis_restartable.url, namespace=namespace(), **{**FAST, "failure_threshold": 3}
    )
    try:
        assert cache.sync.set("k", "v1") is True
        assert cache.sync.get("k") == "v1"
        redis_restartable.kill()
        answers = [cache.sync.get("k", "default") for _ in range(3)]
        assert answers == ["default"] * 3  # nothing raised; memory holds nothing for k
        assert cache.fallback_active and cache.get_stats()["errors"] == 3
        redis_restartable.start()
        deadline = time.monotonic() + 10
        while cache.fallback_active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not cache.fallback_active, "the breaker never probed Redis again"
        assert cache.sync.set("k", "v2") is True and cache.sync.get("k") == "v2"
    finally:
        cache.sync.close()
