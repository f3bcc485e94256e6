"""Cost per log record relative to the stdlib floor, all measured in this one run.

    python benchmarks/logging_throughput.py [--records 20000] [--rounds 5]

The floor is ``logging.Formatter()`` (plain text) on a ``StreamHandler`` writing to a
file. Every case writes to the same kind of destination through the same handler
class; only the formatter, the filters and extra handlers differ. Time is the
calling thread's CPU time (``time.thread_time``), the best of several interleaved
rounds, so background export threads and a noisy machine weigh little (the median of
the per-round ratios is printed beside the best one); the wall time
per record is printed beside it, and for the OTLP case how many records arrived at
the receiver and how many the handler dropped (its queue was full).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from pythonjsonlogger.json import JsonFormatter as StockJsonFormatter

from telemetry_infra.logs import JsonFormatter, OTLPLogHandler, TraceCorrelationFilter
from telemetry_infra.testing import OTLPReceiver

TARGETS = (  # (what, measured case, baseline case, limit)
    ("package JSON + filter in a sampled span", "package JSON + filter, in span", "floor", 1.4),
    ("the filter alone", "package JSON + filter, in span", "package JSON, no filter, in span", 1.15),
    ("a call below the level", "call below the level", "floor", 0.03),
    ("OTLP export on (calling thread)", "package JSON + filter + OTLP export", "floor", 3.0),
)


EXTRA = {"duration": 0.0123, "records": 10, "bbl": "1012340001"}


class NaiveCorrelationFilter(logging.Filter):
    """What one writes first: ask OpenTelemetry for the span on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
            record.trace_flags = format(context.trace_flags, "02x")
        return True


class Case:
    """A named pipeline: handlers on a private logger, optionally inside a span."""

    def __init__(
        self,
        name: str,
        handlers: Callable[[str], list[logging.Handler]],
        in_span: bool = False,
        below_level: bool = False,
        settle: Callable[[], object] | None = None,
    ) -> None:
        self.name = name
        self._handlers = handlers
        self._in_span = in_span
        self._below_level = below_level
        self._settle = settle
        self.best = float("inf")
        self.best_wall = float("inf")
        self.times: list[float] = []  # per round, to pair with the baseline's round
        self.logged = 0
        self.dropped = 0

    def run(self, path: str, records: int, tracer: trace.Tracer) -> None:
        logger = logging.getLogger(f"bench.{self.name}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        handlers = self._handlers(path)
        for handler in handlers:
            logger.addHandler(handler)
        log = logger.debug if self._below_level else logger.info
        in_span = self._in_span
        span: AbstractContextManager = tracer.start_as_current_span("bench") if in_span else nullcontext()
        try:
            with span:
                started, started_wall = time.thread_time(), time.perf_counter()
                for n in range(records):
                    log("processed item %d", n, extra=EXTRA)
                elapsed, elapsed_wall = time.thread_time() - started, time.perf_counter() - started_wall
        finally:
            for handler in handlers:
                logger.removeHandler(handler)
                handler.close()
                self.dropped += getattr(handler, "dropped", 0)
            if self._settle is not None:  # no export backlog may weigh on the next case
                self._settle()
        self.best = min(self.best, elapsed / records)
        self.times.append(elapsed / records)
        self.best_wall = min(self.best_wall, elapsed_wall / records)
        self.logged += records


def _stream(path: str, formatter: logging.Formatter, *filters: logging.Filter) -> logging.Handler:
    handler = logging.StreamHandler(open(path, "a", encoding="utf-8"))  # noqa: SIM115 - closed by the case
    handler.setFormatter(formatter)
    for log_filter in filters:
        handler.addFilter(log_filter)
    return handler


class _ClosingStreamHandler(logging.StreamHandler):
    def close(self) -> None:
        self.stream.close()
        super().close()


@contextmanager
def _otlp_provider(receiver: OTLPReceiver) -> Iterator[LoggerProvider]:
    provider = LoggerProvider()
    exporter = OTLPLogExporter(endpoint=receiver.grpc_endpoint, insecure=True)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    try:
        yield provider
    finally:
        provider.shutdown()


def _cases(provider: LoggerProvider) -> list[Case]:
    def with_otlp(path: str) -> list[logging.Handler]:
        return [_stream(path, JsonFormatter(), TraceCorrelationFilter()), OTLPLogHandler(provider)]

    return [
        Case("floor", lambda path: [_stream(path, logging.Formatter())]),
        Case("stock python-json-logger + naive filter, in span",
             lambda path: [_stream(path, StockJsonFormatter(), NaiveCorrelationFilter())], in_span=True),
        Case("package JSON, no filter, in span", lambda path: [_stream(path, JsonFormatter())], in_span=True),
        Case("package JSON + filter, in span",
             lambda path: [_stream(path, JsonFormatter(), TraceCorrelationFilter())], in_span=True),
        Case("call below the level",
             lambda path: [_stream(path, JsonFormatter(), TraceCorrelationFilter())], below_level=True),
        Case("package JSON + filter + OTLP export", with_otlp, in_span=True, settle=provider.force_flush),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    logging.StreamHandler = _ClosingStreamHandler  # type: ignore[misc] - every case closes its file
    tracer = TracerProvider().get_tracer("benchmark")  # always-on sampler: spans are sampled
    with ExitStack() as stack, tempfile.TemporaryDirectory() as directory:
        receiver = stack.enter_context(OTLPReceiver())
        with _otlp_provider(receiver) as provider:
            cases = _cases(provider)
            for _ in range(args.rounds):
                for index, case in enumerate(cases):
                    case.run(os.path.join(directory, f"{index}.log"), args.records, tracer)
        _report(cases, arrived=len(receiver.logs()))


def _report(cases: list[Case], arrived: int) -> None:
    by_name = {case.name: case for case in cases}
    floor = by_name["floor"].best
    print(f"{'case':<52} {'us/record':>10} {'x floor':>8} {'wall us':>8}")
    for case in cases:
        wall = case.best_wall * 1e6
        print(f"{case.name:<52} {case.best * 1e6:>10.2f} {case.best / floor:>8.3f} {wall:>8.2f}")
    otlp = by_name["package JSON + filter + OTLP export"]
    print(
        f"\nOTLP case: {otlp.logged} records logged in a saturating loop, {arrived} arrived at the "
        f"receiver, {otlp.dropped} dropped by the handler (queue full)\n"
    )
    print(f"{'target (best / median of per-round ratios)':<52} {'ratio':>10} {'median':>8} {'limit':>8}  ok")
    for what, measured, baseline, limit in TARGETS:
        case, base = by_name[measured], by_name[baseline]
        ratio = case.best / base.best
        paired = statistics.median(c / b for c, b in zip(case.times, base.times, strict=True))
        ok = "yes" if ratio <= limit else "NO"
        print(f"{what:<52} {ratio:>10.3f} {paired:>8.3f} {limit:>8.2f}  {ok}")


if __name__ == "__main__":
    main()
