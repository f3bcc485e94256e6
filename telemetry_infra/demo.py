"""``telemetry-infra demo``: a small simulated service that exercises everything.

Each simulated request is a SERVER trace with request context: a cache look-up for a
property (miss -> load -> set, later hits), logs on ``api.*`` and ``model.*``, and one
handled error. It runs on the embedded default (no collector, no Redis needed) and
exports wherever ``OTEL_EXPORTER_OTLP_ENDPOINT`` points.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

from telemetry_infra import CacheManager, get_logger, request_context
from telemetry_infra.cache.redis.check import error_cause
from telemetry_infra.settings import short_url

__all__ = ["DemoSummary", "ExportFailures", "TraceRecorder", "format_trace", "run_demo"]

#: Borough-block-lot ids the simulated clients ask for; few, so the cache gets hits.
PROPERTIES = [f"10{block:04d}{lot:04d}" for block in range(1, 5) for lot in range(1, 4)]
FAILING_PROPERTY = "1000000000"
NOT_EXPORTED = "nowhere: OTEL_EXPORTER_OTLP_ENDPOINT is not set (embedded default)"
_MAX_CAUSE = 120  # with its label, a printed line stays under 160 characters


@dataclass
class DemoSummary:
    requests: int = 0
    errors: int = 0
    trace_ids: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    backend: str = "memory"
    redis_error: str | None = None


class PropertyNotFound(LookupError):
    pass


async def _load_property(bbl: str) -> dict[str, Any]:
    log = get_logger("api.nyc_data_client")
    tracer = trace.get_tracer("telemetry_infra.demo")
    with tracer.start_as_current_span("GET nyc-data-api /properties", kind=trace.SpanKind.CLIENT) as span:
        span.set_attribute("bbl", bbl)
        await asyncio.sleep(random.uniform(0.002, 0.01))  # the "remote API"
        if bbl == FAILING_PROPERTY:
            raise PropertyNotFound(f"no property with BBL {bbl}")
    violations = random.randint(0, 12)
    log.info("API request successful", extra={"bbl": bbl, "records": violations})
    return {"bbl": bbl, "violations": violations, "fetched_at": time.time()}


def _score(record: dict[str, Any]) -> float:
    violations: int = record["violations"]
    risk = min(1.0, violations / 10)
    get_logger("model.risk").info("risk scored", extra={"bbl": record["bbl"], "risk": risk})
    return risk


async def _handle(cache: Any, tracer: trace.Tracer, bbl: str, summary: DemoSummary) -> None:
    log = get_logger("api.properties")
    with (
        tracer.start_as_current_span("GET /properties/{bbl}", kind=trace.SpanKind.SERVER) as span,
        request_context(request_id=str(uuid.uuid4()), user_id=f"user-{random.randint(1, 5)}"),
    ):
        span.set_attribute("http.route", "/properties/{bbl}")
        summary.requests += 1
        if len(summary.trace_ids) < 3:
            summary.trace_ids.append(format(span.get_span_context().trace_id, "032x"))
        record = await cache.get(f"property:{bbl}")
        if record is None:
            try:
                record = await _load_property(bbl)
            except PropertyNotFound:
                summary.errors += 1
                log.error("property lookup failed", exc_info=True, extra={"bbl": bbl})
                span.set_status(trace.StatusCode.ERROR, "property not found")
                return
            await cache.set(f"property:{bbl}", record, ttl=300)
        log.info("request served", extra={"bbl": bbl, "risk": _score(record)})


def _progress(out: TextIO, done: int, total: int | None, started: float) -> None:
    if not out.isatty() or time.monotonic() - started < 2:
        return
    of = f"/{total}" if total else ""
    out.write(f"\r  requests: {done}{of}")
    out.flush()


async def run_demo(
    requests: int = 50,
    *,
    redis_url: str | None = None,
    forever: bool = False,
    interval_s: float = 0.0,
    out: TextIO = sys.stdout,
) -> DemoSummary:
    """Simulate ``requests`` property look-ups (or run until cancelled with ``forever``)."""
    tracer = trace.get_tracer("telemetry_infra.demo")
    summary = DemoSummary()
    cache = CacheManager(redis_url=redis_url, namespace="telemetry-infra-demo", name="demo")
    await cache.initialize()
    await cache.clear()
    summary.backend = cache.get_stats()["backend"]
    if (
        redis_url and summary.backend == "memory"
    ):  # fell back: redis, redis-sentinel, redis-cluster did not answer
        summary.redis_error = (await cache.health_check())["redis"].get("error")
    started = time.monotonic()
    try:
        index = 0
        while forever or index < requests:
            bbl = FAILING_PROPERTY if index == requests // 2 else random.choice(PROPERTIES)
            await _handle(cache, tracer, bbl, summary)
            index += 1
            _progress(out, index, None if forever else requests, started)
            if interval_s:
                await asyncio.sleep(interval_s)
    finally:
        summary.stats = cache.get_stats()
        summary.backend = summary.stats["backend"]
        await cache.close()
    return summary


class TraceRecorder(SpanProcessor):
    """Keeps the spans of the first ``limit`` traces in memory, to print them as trees."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.spans: dict[int, list[ReadableSpan]] = {}

    def on_end(self, span: ReadableSpan) -> None:
        trace_id = span.context.trace_id
        if trace_id in self.spans or len(self.spans) < self.limit:
            self.spans.setdefault(trace_id, []).append(span)

    def traces(self) -> list[list[ReadableSpan]]:
        return list(self.spans.values())


def _span_note(span: ReadableSpan) -> str:
    attributes = span.attributes or {}
    notes = []
    if "cache.hit" in attributes:
        notes.append("hit" if attributes["cache.hit"] else "miss")
    if attributes.get("cache.backend"):
        notes.append(str(attributes["cache.backend"]))
    if span.status.status_code is trace.StatusCode.ERROR:
        notes.append(f"ERROR: {span.status.description}" if span.status.description else "ERROR")
    return ", ".join(notes)


def format_trace(spans: Sequence[ReadableSpan]) -> list[str]:
    """One trace as an indented tree: span name, duration, cache hit/miss, error."""
    children: dict[int | None, list[ReadableSpan]] = {}
    ids = {span.context.span_id for span in spans}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        parent = span.parent.span_id if span.parent and span.parent.span_id in ids else None
        children.setdefault(parent, []).append(span)
    lines = [f"trace {format(spans[0].context.trace_id, '032x')}"]

    def walk(parent: int | None, prefix: str) -> None:
        kids = children.get(parent, [])
        for index, span in enumerate(kids):
            last = index == len(kids) - 1
            millis = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
            connector = "" if parent is None else ("└─ " if last else "├─ ")
            label = f"{prefix}{connector}{span.name}"
            lines.append(f"{label:<52} {millis:8.2f} ms  {_span_note(span)}".rstrip())
            walk(span.context.span_id, "" if parent is None else prefix + ("   " if last else "│  "))

    walk(None, "")
    return lines


class ExportFailures(logging.Handler):
    """Counts the exports the SDK's OTLP exporters report as failed, and keeps the last error."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.failed = 0
        self.error: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Failed to export"):
            self.failed += 1
        if self.error is None or message.startswith("Transient error"):
            self.error = message.split(" encountered while exporting")[0].removeprefix("Transient error ")


def _export_failed(
    telemetry: Any, failures: ExportFailures, probe_errors: dict[str, str], flushed: bool
) -> bool:
    """Whether something meant for an OTLP endpoint did not reach it (the demo then exits 1)."""
    return bool(telemetry.settings.otlp) and bool(probe_errors or failures.failed or not flushed)


def _export_lines(
    telemetry: Any, failures: ExportFailures, probe_errors: dict[str, str], flushed: bool
) -> list[str]:
    settings = telemetry.settings
    if not settings.otlp:
        return [NOT_EXPORTED]
    endpoints = sorted({export.base_endpoint for export in settings.otlp.values()})
    where = ", ".join(short_url(endpoint) for endpoint in endpoints)
    if not _export_failed(telemetry, failures, probe_errors, flushed):
        return [f"{where} (all exports delivered)"]
    error = next(iter(probe_errors.values()), None) or failures.error or "it did not answer in time"
    if failures.failed:
        outcome = f"{failures.failed} export(s) failed"
    elif probe_errors:
        outcome = "nothing delivered, it does not answer OTLP"
    else:
        outcome = "not everything was delivered before the demo stopped waiting"
    return [
        f"{where}: FAILED, {outcome}",
        f"cause: {error_cause(error, _MAX_CAUSE)}",
        "hint: is the collector up? `docker compose up -d`, then `telemetry-infra check`",
    ]


def _backend_lines(summary: DemoSummary, redis_url: str | None) -> list[str]:
    if not redis_url:
        return ["memory: no REDIS_URL / --redis-url given"]
    where = short_url(redis_url)
    if summary.backend != "memory":  # what was really used: redis, redis-sentinel or redis-cluster
        return [f"{summary.backend} ({where})"]
    cause = error_cause(summary.redis_error or "no answer", _MAX_CAUSE)
    return [f"memory: Redis at {where} did not answer, fell back to memory", f"cause: {cause}"]


def _print_summary(
    summary: DemoSummary, telemetry: Any, redis_url: str | None, out: TextIO, exported: list[str]
) -> None:
    settings = telemetry.settings
    stats = summary.stats
    lines = [
        "",
        "telemetry-infra demo: done",
        f"  requests        {summary.requests} ({summary.errors} handled, logged at ERROR)",
        f"  cache hit rate  {stats.get('hit_rate', 0.0):.0%} ({stats.get('hits', 0)} hits, "
        f"{stats.get('misses', 0)} misses)",
        *_labelled("cache backend", _backend_lines(summary, redis_url)),
        f"  traces          {', '.join(summary.trace_ids)}",
        *_labelled("exported to", exported),
        f"  logs            {Path(settings.log_dir).resolve()} (app.log, error.log, api.log, model.log)",
    ]
    if telemetry.metrics_url:
        lines.append(f"  metrics         {telemetry.metrics_url}")
    out.write("\n".join(lines) + "\n")


def _labelled(label: str, values: list[str]) -> list[str]:
    """``  label           first value``, then the other values under the first."""
    return [f"  {label if index == 0 else '':<16}{value}" for index, value in enumerate(values)]


def _probe_endpoints(telemetry: Any) -> dict[str, str]:
    """Errors of the OTLP endpoints that do not answer an empty export within a second."""
    from telemetry_infra.otel.otlp_probe import probe_all

    results = probe_all(telemetry.settings.otlp, timeout_s=1.0)
    return {signal: error for signal, error in results.items() if error is not None}


def main(args: Any) -> int:
    """Entry point for ``telemetry-infra demo`` (``args`` from the CLI parser)."""
    import telemetry_infra as ti

    redis_url = args.redis_url or os.environ.get("REDIS_URL")
    interval = args.interval if args.interval is not None else (0.2 if args.forever else 0.0)
    telemetry = ti.configure(
        service_name=os.environ.get("OTEL_SERVICE_NAME") or "telemetry-infra-demo",
        environment=os.environ.get("ENVIRONMENT") or "production",
        log_dir=args.log_dir,
        console_logs=args.verbose,
    )
    failures = ExportFailures()
    logging.getLogger("opentelemetry.exporter").addHandler(failures)
    probe_errors = _probe_endpoints(telemetry)
    shown = args.traces if args.traces is not None else (0 if telemetry.settings.exports("traces") else 1)
    recorder = TraceRecorder(shown)
    if shown and isinstance(telemetry.tracer_provider, SdkTracerProvider):  # the SDK's when enabled
        telemetry.tracer_provider.add_span_processor(recorder)
    try:
        summary = asyncio.run(
            run_demo(args.requests, redis_url=redis_url, forever=args.forever, interval_s=interval)
        )
    except KeyboardInterrupt:
        ti.shutdown(timeout_s=1 if probe_errors else 5)
        return 0
    # an endpoint that did not answer the probe gets one second, not the exporters' retries
    flushed = ti.shutdown(timeout_s=1 if probe_errors else 5)
    for spans in recorder.traces():
        sys.stdout.write("\n" + "\n".join("  " + line for line in format_trace(spans)) + "\n")
    exported = _export_lines(telemetry, failures, probe_errors, flushed)
    _print_summary(summary, telemetry, redis_url, sys.stdout, exported)
    logging.getLogger("opentelemetry.exporter").removeHandler(failures)
    return 1 if _export_failed(telemetry, failures, probe_errors, flushed) else 0
