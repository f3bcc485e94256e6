"""What exporting telemetry over OTLP costs: our encoders, our stack on the SDK path, a stock SDK stack.

    python benchmarks/export_cost.py [--requests 3000] [--rounds 5] [--load 1.0] [--micro-only] [--json PATH]

Workload per request: a SERVER span, a child ``cache.get`` span, two JSON log
records (file handler, production JSON) made inside the request span. An OTLP
receiver runs in its own process; every variant runs in a child process of its own,
the variants interleaved round by round. A child's cost is the CPU time of the
whole process (all threads: the export threads too) from just before the requests
until everything was flushed, divided by the requests.

Variants (``<variant>-<protocol>``):

- ``none``: ``configure()`` without an endpoint (the in-process floor);
- ``fast``: ``configure(endpoint, fast_export=True)``, our encoders (the default);
- ``ours-sdk``: ``configure(endpoint, fast_export=False)``, our stack on the SDK's encoders;
- ``stock``: ``configure()`` without an endpoint plus a stock SDK export stack:
  BatchSpanProcessor + BatchLogRecordProcessor + OTLP exporters + the SDK's LoggingHandler.

By default the requests run back to back: the process is busy all the time, the worst
case for a thread that must take the GIL back to send. ``--load 0.5`` is a process busy
half the time, as a service below its capacity is: after every 4 requests it waits as
long as they took (the same rule for every variant).

Export cost = variant - ``none`` (same round). Targets: ``fast`` <= 0.25x ``stock``
on both protocols with every span and record arriving; our encoder alone >= 4x the
SDK's (``encode_*(...).SerializeToString()``), per span and per log record (the
micro-benchmark at the end, in this process).

``--instructions`` counts what each variant executes per request, all threads, under
valgrind's callgrind (each variant run with ``--requests`` and with none, the difference
divided): unlike CPU time it does not move with the machine's load, and it leaves out
what the GIL's hand-overs cost (waiting is not executing). Needs ``valgrind``; a minute
or two per run.

``--why`` shows where the rest of ``fast``'s cost comes from: the same workload with the
sends answered at once (``+nosend``: the transport returns success without a network
call), with the log files formatted but not written (``+nowrite``: no ``write()``, so the
request loop never lets go of the GIL), and with both; for each, the export thread's
voluntary context switches per request (each one a wait for the GIL or for work).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from peer_rounds import PACED_GROUP, add_load_argument, idle_after, load_label
from receiver_process import Receiver

PROTOCOLS = {"grpc": "grpc", "http": "http/protobuf"}
VARIANTS = ("none", "fast-grpc", "fast-http", "ours-sdk-grpc", "ours-sdk-http", "stock-grpc", "stock-http")
WARMUP = 300
TARGET_EXPORT_RATIO = 0.25
TARGET_ENCODER_SPEEDUP = 4.0


# ------------------------------------------------------------------ workload


def run_variant(
    variant: str, endpoints: dict[str, str], requests: int, log_dir: str, load: float = 1.0
) -> dict[str, Any]:
    """Child: configure for ``variant``, run the workload, print CPU per request."""
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    import telemetry_infra as ti

    variant, *changes = variant.split("+")
    _apply(changes)
    kind, _, protocol = variant.rpartition("-")
    if variant == "none":
        kind, protocol = "none", "grpc"
    endpoint = None if kind in ("none", "stock") else endpoints[protocol]
    telemetry = ti.configure(
        service_name="export-cost",
        environment="production",
        log_dir=log_dir,
        console_logs=False,
        otlp_endpoint=endpoint,
        otlp_protocol=PROTOCOLS[protocol],
        fast_export=kind == "fast",
    )
    stock_handler = (
        attach_stock_stack(telemetry, PROTOCOLS[protocol], endpoints[protocol]) if kind == "stock" else None
    )

    tracer = trace.get_tracer("bench")
    log = logging.getLogger("bench")

    def request(n: int) -> None:
        attributes = {"http.request.method": "GET", "http.route": "/items/{id}", "url.path": f"/items/{n}"}
        with tracer.start_as_current_span(
            "GET /items/{id}", kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            key = f"item:{n % 500}"
            cache = {
                "cache.name": "items",
                "cache.backend": "redis",
                "cache.key": key,
                "cache.hit": n % 4 != 0,
            }
            with tracer.start_as_current_span("cache.get", attributes=cache):
                pass
            log.info("cache lookup", extra={"cache_key": key, "hit": n % 4 != 0})
            span.set_attribute("http.response.status_code", 200)
            log.info("request handled", extra={"status": 200, "duration_ms": 1.25})

    def flush() -> None:
        telemetry.force_flush(30)
        if stock_handler is not None:
            stock_handler.flush()

    for n in range(WARMUP):
        request(n)
    flush()
    switches_before = _export_thread_switches()
    started = time.process_time()
    if load >= 1:
        for n in range(requests):
            request(n)
    else:
        for first in range(0, requests, PACED_GROUP):
            busy_since = time.perf_counter()
            for n in range(first, min(first + PACED_GROUP, requests)):
                request(n)
            time.sleep(idle_after(time.perf_counter() - busy_since, load))
    flush()
    cpu = time.process_time() - started
    switches = (_export_thread_switches() - switches_before) / max(requests, 1)
    handler = telemetry._log_handler
    dropped = getattr(handler, "dropped", 0)
    fast_in_use = telemetry.fast_export
    ti.shutdown(30)
    return {
        "cpu_us": cpu / max(requests, 1) * 1e6,
        "handler_dropped": dropped,
        "fast_export": fast_in_use,
        "export_thread_switches": switches,
    }


def _apply(changes: Sequence[str]) -> None:
    """``--why``'s changes, in the child, before ``configure()``."""
    from telemetry_infra.logs import JsonFormatter, SharedRotatingFileHandler
    from telemetry_infra.otel.otlp_wire.transport import GrpcTransport, HttpTransport

    for change in changes:
        if change == "nosend":
            for transport in (GrpcTransport, HttpTransport):
                transport.send = lambda self, payload, count: True  # type: ignore[method-assign]
        elif change == "nowrite":

            def format_only(self: SharedRotatingFileHandler, record: logging.LogRecord) -> None:
                formatter = self.formatter
                if isinstance(formatter, JsonFormatter):
                    formatter.format_bytes(record)
                else:
                    self.format(record)

            SharedRotatingFileHandler.emit = format_only  # type: ignore[method-assign]
        else:
            raise SystemExit(f"unknown change {change!r}")


def _export_thread_switches() -> int:
    """The voluntary context switches of our export thread so far (0 without one, or off Linux)."""
    import threading

    for thread in threading.enumerate():
        if thread.name == "telemetry-otlp-export" and thread.native_id is not None:
            try:
                with open(f"/proc/self/task/{thread.native_id}/status", encoding="ascii") as status:
                    for line in status:
                        if line.startswith("voluntary_ctxt_switches:"):
                            return int(line.split()[1])
            except OSError:
                return 0
    return 0


def attach_stock_stack(telemetry: Any, protocol: str, endpoint: str) -> logging.Handler:
    """The stock SDK export pipeline on our (endpoint-less) providers."""
    from opentelemetry.sdk._logs import LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        spans, logs = (
            OTLPSpanExporter(endpoint=endpoint, insecure=True),
            OTLPLogExporter(endpoint=endpoint, insecure=True),
        )
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter  # type: ignore[assignment]
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # type: ignore[assignment]

        spans, logs = (
            OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"),
            OTLPLogExporter(endpoint=f"{endpoint}/v1/logs"),
        )
    telemetry.tracer_provider.add_span_processor(BatchSpanProcessor(spans))
    telemetry.logger_provider.add_log_record_processor(BatchLogRecordProcessor(logs))
    handler = LoggingHandler(logger_provider=telemetry.logger_provider)
    logging.getLogger().addHandler(handler)
    return handler


# ------------------------------------------------------------------ measuring


def measure(
    rounds: int, requests: int, variants: Sequence[str] = VARIANTS, load: float = 1.0
) -> dict[str, list[dict[str, Any]]]:
    receiver = Receiver()
    results: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
    expected = (WARMUP + requests) * 2  # spans, and records
    try:
        with tempfile.TemporaryDirectory() as log_dir:
            for round_number in range(rounds):
                order = variants if round_number % 2 == 0 else tuple(reversed(variants))
                for variant in order:
                    receiver.clear()
                    child = subprocess.run(
                        [
                            *(sys.executable, __file__, "--child", variant),
                            *("--requests", str(requests), "--load", str(load)),
                        ],
                        env={
                            **os.environ,
                            "BENCH_ENDPOINTS": json.dumps(receiver.endpoints),
                            "BENCH_LOG_DIR": log_dir,
                        },
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    result = json.loads(child.stdout.strip().splitlines()[-1])
                    if variant != "none" and "nosend" not in variant:
                        result.update(receiver.settled_count("bench", expected, expected))
                    results[variant].append(result)
                    print(
                        f"  round {round_number + 1} {variant:>24}: {result['cpu_us']:7.1f} µs/request",
                        flush=True,
                    )
    finally:
        receiver.close()
    return results


INSTRUCTION_VARIANTS = ("none", "fast-grpc", "fast-http", "stock-grpc", "stock-http")


def count_instructions(requests: int, variants: Sequence[str] = VARIANTS) -> dict[str, float]:
    """Instructions per request of each variant (all threads), from two runs under callgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("--instructions needs valgrind (Debian: apt-get install valgrind)")
    receiver = Receiver()
    per_request: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory() as log_dir:
            env = {**os.environ, "BENCH_ENDPOINTS": json.dumps(receiver.endpoints), "BENCH_LOG_DIR": log_dir}
            for variant in variants:
                with_requests, without = (
                    _instructions(valgrind, variant, count, env) for count in (requests, 0)
                )
                per_request[variant] = (with_requests - without) / requests
                print(f"  {variant:>14}: {per_request[variant]:12,.0f} instructions/request", flush=True)
    finally:
        receiver.close()
    return per_request


def _instructions(valgrind: str, variant: str, requests: int, env: dict[str, str]) -> int:
    child = subprocess.run(
        [
            *(valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null"),
            *(sys.executable, __file__, "--child", variant, "--requests", str(requests)),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    collected = re.search(r"Collected\s*:\s*(\d+)", child.stderr)
    if collected is None:
        raise RuntimeError(f"no instruction count from callgrind: {child.stderr[-500:]}")
    return int(collected.group(1))


def report_instructions(per_request: dict[str, float]) -> None:
    floor = per_request["none"]
    print("\nInstructions per request (all threads), export cost = variant - none")
    for protocol in PROTOCOLS:
        ours, stock = per_request[f"fast-{protocol}"] - floor, per_request[f"stock-{protocol}"] - floor
        print(f"{protocol}: ours {ours:,.0f}, stock {stock:,.0f}: {ours / stock:.2f}x")


def report(results: dict[str, list[dict[str, Any]]], requests: int, load: float = 1.0) -> None:
    expected = (WARMUP + requests) * 2
    rounds = len(results["none"])
    floor = [r["cpu_us"] for r in results["none"]]
    print(
        f"\nCPU per request (all threads){load_label(load)}, median of {rounds} rounds; "
        "export cost = variant - none, per round"
    )
    print(f"{'variant':>14} {'µs/request':>11} {'export µs':>10} {'spans':>9} {'records':>9} {'counted':>8}")
    export: dict[str, float] = {}
    for variant in VARIANTS:
        rows = results[variant]
        cpu = statistics.median(r["cpu_us"] for r in rows)
        if variant == "none":
            print(f"{variant:>14} {cpu:11.1f}")
            continue
        export[variant] = statistics.median(r["cpu_us"] - f for r, f in zip(rows, floor, strict=True))
        spans = min(r["spans"] for r in rows)
        records = min(r["records"] for r in rows)
        counted = max(r["handler_dropped"] for r in rows)
        print(
            f"{variant:>14} {cpu:11.1f} {export[variant]:10.1f} "
            f"{spans / expected:9.1%} {records / expected:9.1%} {counted:8d}"
        )
    print(
        "(arrivals: the fewest of any round, of the spans/records made; counted: the most records "
        "our OTLP handler counted as dropped in a round)"
    )
    for protocol in PROTOCOLS:
        paired = [
            (f["cpu_us"] - n["cpu_us"]) / (s["cpu_us"] - n["cpu_us"])
            for f, s, n in zip(
                results[f"fast-{protocol}"], results[f"stock-{protocol}"], results["none"], strict=True
            )
        ]
        ratio = export[f"fast-{protocol}"] / export[f"stock-{protocol}"]
        complete = all(
            r["spans"] >= expected and r["records"] >= expected for r in results[f"fast-{protocol}"]
        )
        verdict = "met" if ratio <= TARGET_EXPORT_RATIO and complete else "NOT met"
        print(
            f"{protocol}: fast export cost = {ratio:.2f}x stock's "
            f"(per-round ratios {', '.join(f'{p:.2f}' for p in paired)}; "
            f"target <= {TARGET_EXPORT_RATIO}, all arriving): {verdict}"
        )


def result_rows(
    results: dict[str, list[dict[str, Any]]], requests: int, load: float = 1.0
) -> list[dict[str, Any]]:
    """The rows ``performance_report.py`` reads (the format of ``peer_rounds.Row.result``)."""
    expected = (WARMUP + requests) * 2
    rows = []
    for protocol in PROTOCOLS:
        cases = []
        for variant, name, role in (
            (f"fast-{protocol}", "ours (fast_export, the default)", "ours"),
            (f"ours-sdk-{protocol}", "ours with fast_export=False", "ours-sdk"),
            (
                f"stock-{protocol}",
                "stock SDK stack (batch processors, OTLP exporters, LoggingHandler)",
                "peer",
            ),
        ):
            costs = [
                r["cpu_us"] - n["cpu_us"] for r, n in zip(results[variant], results["none"], strict=True)
            ]
            delivered = all(r["spans"] >= expected and r["records"] >= expected for r in results[variant])
            cases.append(
                {
                    "name": name,
                    "role": role,
                    "best_us": min(costs),
                    "median_us": statistics.median(costs),
                    "x_floor": None,
                    "delivered": delivered,
                }
            )
        ours, stock = cases[0], cases[2]
        ratio = ours["median_us"] / stock["median_us"]
        rows.append(
            {
                "row": f"export CPU per request (2 spans + 2 records), {protocol}{load_label(load)}",
                "note": "CPU of the whole process, all threads, minus configure() without an endpoint",
                "rounds": len(results["none"]),
                "floor": "configure() without an endpoint (subtracted)",
                "floor_us": statistics.median(r["cpu_us"] for r in results["none"]),
                "cases": cases,
                "best_peer": stock["name"],
                "target": {
                    "reference": stock["name"],
                    "limit": TARGET_EXPORT_RATIO,
                    "ratio": ratio,
                    "paired_ratio": ratio,
                    "met": ratio <= TARGET_EXPORT_RATIO and ours["delivered"],
                },
            }
        )
    return rows


WHY_CHANGES = ("", "+nosend", "+nowrite", "+nosend+nowrite")
WHY_VARIANTS = (
    "none",
    "none+nowrite",
    *(f"fast-{protocol}{changes}" for protocol in PROTOCOLS for changes in WHY_CHANGES),
)


def report_why(results: dict[str, list[dict[str, Any]]]) -> None:
    rounds = len(results["none"])
    print(
        f"\nWhere fast export's cost comes from, median of {rounds} rounds (variant - none, per round; "
        "+nowrite variants - none+nowrite)"
    )
    print(f"{'variant':>24} {'export µs':>10} {'export thread switches/request':>31}")
    for variant, rows in results.items():
        if variant.startswith("none"):
            continue
        floor = results["none+nowrite" if "nowrite" in variant else "none"]
        cost = statistics.median(r["cpu_us"] - f["cpu_us"] for r, f in zip(rows, floor, strict=True))
        switches = statistics.median(r["export_thread_switches"] for r in rows)
        print(f"{variant:>24} {cost:10.1f} {switches:31.2f}")
    print(
        "(+nosend: sends answered at once; +nowrite: log lines formatted, not written, so the "
        "loop never releases the GIL)"
    )


# ------------------------------------------------------------- micro-benchmark


def _best(call: Callable[[], object], items: int, repeat: int = 7, number: int = 20) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(number):
            call()
        best = min(best, (time.perf_counter() - started) / number / items)
    return best * 1e6


def micro(batch: int = 512) -> None:
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs as sdk_encode_logs
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, set_span_in_context

    from telemetry_infra.otel.otlp_wire.logs import encode_log_record, encode_logs
    from telemetry_infra.otel.otlp_wire.spans import encode_spans

    resource = Resource.create({"service.name": "export-cost", "service.version": "1.0"})
    span_memory = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(span_memory))
    tracer = tracer_provider.get_tracer("bench")
    log_memory = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_memory))
    logger = logger_provider.get_logger("bench")
    values = []
    for n in range(batch // 2):
        attributes = {"http.request.method": "GET", "http.route": "/items/{id}", "url.path": f"/items/{n}"}
        with tracer.start_as_current_span(
            "GET /items/{id}", kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            cache = {
                "cache.name": "items",
                "cache.backend": "redis",
                "cache.key": f"item:{n}",
                "cache.hit": True,
            }
            with tracer.start_as_current_span("cache.get", attributes=cache):
                pass
            span.set_attribute("http.response.status_code", 200)
        context = span.get_span_context()
        for message, extra in (
            ("cache lookup", {"cache_key": f"item:{n}", "hit": True}),
            ("request handled", {"status": 200}),
        ):
            attributes = {
                "code.file.path": "/srv/app/handlers.py",
                "code.function.name": "handle",
                "code.line.number": 42,
                "request_id": f"{context.trace_id:032x}",
                **extra,
            }
            when = time.time_ns()
            logger.emit(
                timestamp=when,
                observed_timestamp=when,
                context=set_span_in_context(span),
                severity_number=9,
                severity_text="INFO",
                body=message,
                attributes=attributes,
            )
            values.append((when, when, 9, "INFO", message, attributes, context.trace_id, context.span_id, 1))
    spans = span_memory.get_finished_spans()
    records = log_memory.get_finished_logs()
    scope = records[0].instrumentation_scope

    def handler_path() -> bytes:  # what the OTLP handler does: plain values, no SDK record
        from telemetry_infra.otel.otlp_wire.logs import LogBatch

        batch_ = LogBatch()
        for value in values:
            batch_.add(resource, scope, encode_log_record(*value))
        return batch_.encode()

    rows = (
        (
            "per span",
            len(spans),
            lambda: encode_spans(spans),
            lambda: sdk_encode_spans(spans).SerializeToString(),
        ),
        (
            "per log record",
            len(records),
            lambda: encode_logs(records),
            lambda: sdk_encode_logs(records).SerializeToString(),
        ),
        (
            "per log record (handler)",
            len(values),
            handler_path,
            lambda: sdk_encode_logs(records).SerializeToString(),
        ),
    )
    print(f"\nEncoder alone, batches of {batch}: best of 7 x 20 (µs per item)")
    for name, items, ours, sdk in rows:
        ours_us, sdk_us = _best(ours, items), _best(sdk, items)
        speedup = sdk_us / ours_us
        verdict = "met" if speedup >= TARGET_ENCODER_SPEEDUP else "NOT met"
        print(
            f"{name:>26}: ours {ours_us:5.2f}  SDK {sdk_us:5.2f}  {speedup:4.1f}x (target >= 4x): {verdict}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    add_load_argument(parser)
    parser.add_argument("--micro-only", action="store_true")
    parser.add_argument("--why", action="store_true", help="where fast export's cost comes from")
    parser.add_argument("--instructions", action="store_true", help="instructions per request (valgrind)")
    parser.add_argument("--json", metavar="PATH", help="write the rows for performance_report.py")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        endpoints = json.loads(os.environ["BENCH_ENDPOINTS"])
        log_dir = os.environ["BENCH_LOG_DIR"]
        print(json.dumps(run_variant(args.child, endpoints, args.requests, log_dir, args.load)))
        return
    if args.instructions:
        report_instructions(count_instructions(args.requests, INSTRUCTION_VARIANTS))
        return
    if args.why:
        report_why(measure(args.rounds, args.requests, WHY_VARIANTS, args.load))
        return
    if not args.micro_only:
        results = measure(args.rounds, args.requests, load=args.load)
        report(results, args.requests, args.load)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as out:
                json.dump(
                    {"script": "export_cost", "rows": result_rows(results, args.requests, args.load)},
                    out,
                    indent=1,
                )
    micro()


if __name__ == "__main__":
    main()
