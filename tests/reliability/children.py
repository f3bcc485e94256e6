"""Code run in child processes (importable by ``multiprocessing`` spawn)."""

from __future__ import annotations

import asyncio

from opentelemetry import trace

import telemetry_infra as ti


def log_trace_and_cache(tag: str, redis_url: str | None) -> bool:
    """One span, one log record and a cache round trip; True when the cache answered right."""

    async def cache_round_trip() -> bool:
        async with ti.CacheManager(redis_url=redis_url, namespace=f"child-{tag}") as cache:
            await cache.set("k", tag)
            return await cache.get("k") == tag

    with trace.get_tracer("reliability.children").start_as_current_span(f"{tag}-span"):
        ti.get_logger("reliability.children").info("%s log", tag)
        return asyncio.run(cache_round_trip())


def spawned_child(endpoint: str, redis_url: str, log_dir: str) -> bool:
    """A spawned process configures itself, works, and flushes on shutdown."""
    ti.configure(service_name="spawned", otlp_endpoint=endpoint, log_dir=log_dir, console_logs=False)
    ok = log_trace_and_cache("spawned", redis_url)
    ti.shutdown(timeout_s=5.0)
    return ok
