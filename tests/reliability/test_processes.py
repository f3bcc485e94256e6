"""Concurrency and processes: request context under threads and tasks; fork and spawn children."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import threading

import pytest
from children import log_trace_and_cache, spawned_child

import telemetry_infra as ti

THREADS = 4
TASKS = 25
RECORDS = 10


def test_threads_and_tasks_keep_their_own_request_context(tmp_path, figures):
    ti.configure(service_name="ctx", log_dir=tmp_path, environment="production", console_logs=False)
    log = ti.get_logger("reliability.context")
    cache = ti.CacheManager(memory_cache_size=THREADS * TASKS * 2)
    wrong_values: list[str] = []

    async def request(thread: int, task: int) -> None:
        request_id = f"t{thread}-r{task}"
        async with ti.request_context(request_id=request_id, user_id=f"u{task}"):
            for i in range(RECORDS):
                await cache.set(request_id, i)
                await asyncio.sleep(0)
                log.info("request %s step %d", request_id, i)
                if await cache.get(request_id) != i:
                    wrong_values.append(request_id)

    def thread_main(thread: int) -> None:
        async def all_tasks() -> None:
            await asyncio.gather(*(request(thread, task) for task in range(TASKS)))

        asyncio.run(all_tasks())

    threads = [threading.Thread(target=thread_main, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ti.shutdown()

    records = [json.loads(line) for line in (tmp_path / "app.log").read_text().splitlines()]
    ours = [r for r in records if r["logger_name"] == "reliability.context"]
    mixed = [r for r in ours if r["message"].split()[1] != r["request_id"]]
    figures.record("processes", "context_isolation", threads=THREADS, tasks=THREADS * TASKS,
                   records=len(ours), mixed_up=len(mixed), wrong_values=len(wrong_values))  # fmt: skip
    assert len(ours) == THREADS * TASKS * RECORDS
    assert mixed == [] and wrong_values == []


def _fork(work) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if work() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _fork_child_flushes(tag: str, redis_url: str):
    def work() -> bool:
        ok = log_trace_and_cache(tag, redis_url)
        return ti.get_telemetry().force_flush(5.0) and ok

    return work


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_forked_child_spans_are_exported_and_parent_unaffected(
    tmp_path, figures, otlp_receiver, redis_server, protocol
):
    endpoint = otlp_receiver.endpoint(protocol)
    ti.configure(
        service_name="forking",
        otlp_endpoint=endpoint,
        otlp_protocol=protocol,
        log_dir=tmp_path,
        console_logs=False,
    )
    assert log_trace_and_cache("parent-before", redis_server.url)
    assert _fork(_fork_child_flushes("child", redis_server.url)) == 0
    assert log_trace_and_cache("parent-after", redis_server.url)
    ti.get_telemetry().force_flush(5.0)
    names = {s.name for s in otlp_receiver.wait_for_spans(lambda s: s.name.endswith("-span"), count=3)}
    figures.record("processes", f"fork/{protocol}", child_exit=0, spans_received=sorted(names))
    assert {"parent-before-span", "child-span", "parent-after-span"} <= names


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_logs_are_exported(tmp_path, otlp_receiver, redis_server):
    ti.configure(service_name="forking", otlp_endpoint=otlp_receiver.grpc_endpoint, log_dir=tmp_path,
                 console_logs=False)  # fmt: skip
    assert _fork(_fork_child_flushes("child", redis_server.url)) == 0
    otlp_receiver.wait_for_logs(lambda r: r.body == "child log", timeout=3.0)


@pytest.mark.slow
def test_spawned_child_logs_caches_and_exports(tmp_path, figures, otlp_receiver, redis_server):
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        ok = pool.apply(spawned_child, (otlp_receiver.grpc_endpoint, redis_server.url, str(tmp_path)))
    assert ok
    otlp_receiver.wait_for_spans(lambda s: s.name == "spawned-span")
    otlp_receiver.wait_for_logs(lambda r: r.body == "spawned log")
    figures.record("processes", "spawn", cache_ok=ok, span_exported=True, log_exported=True)
