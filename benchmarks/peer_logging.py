"""One JSON log record with 3 extra fields, in a sampled span, to a file: ours against the peers.

    python benchmarks/peer_logging.py [--rounds 7] [--per-round 5000] [--json PATH] [--markdown]

Every case writes the same fields to its own file: time (ISO 8601, UTC), level, logger
name, module, function, line, message, ``request_id``/``trace_id``/``span_id``/
``trace_flags`` of the current span, and the 3 extras. Floor: stdlib
``logging.Formatter()`` (plain text, message only) on a ``StreamHandler``. Peers: structlog
(orjson renderer, ``CallsiteParameterAdder``, a processor reading the span, ``BytesLogger``
on the file), loguru (``serialize=True``, a patcher for the span), python-json-logger (the
same fields, a filter reading the span). Ours: ``setup_logging()`` in production (JSON
files; the record goes to ``app.log``), and the formatter, filter and file handler alone.

The second row is an access record (logger ``api``): ours writes it to ``app.log`` and
``api.log``; the floor writes stdlib text to two files.

Time is the calling thread's CPU time; cases alternate within each round.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import orjson
from opentelemetry import context, trace
from opentelemetry.sdk.trace import TracerProvider
from peer_rounds import Case, Measure, Row, arguments, report, run_rows, timed

import telemetry_infra as ti
from telemetry_infra.logs import (
    JsonFormatter,
    SharedRotatingFileHandler,
    TraceCorrelationFilter,
    teardown_logging,
)

EXTRA = {"duration": 0.0123, "records": 10, "bbl": "1012340001"}
MESSAGE = "processed item"


def span_fields() -> dict[str, str]:
    """What a user's correlation hook writes for the current span (the peers' side)."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return {}
    trace_id = f"{span_context.trace_id:032x}"
    return {
        "request_id": trace_id,
        "trace_id": trace_id,
        "span_id": f"{span_context.span_id:016x}",
        "trace_flags": f"{span_context.trace_flags:02x}",
    }


class SpanFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.update(span_fields())
        return True


def private_logger(name: str, *handlers: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for handler in handlers:
        logger.addHandler(handler)
    return logger


def stdlib_case(name: str, role: str, directory: str, *handlers: Callable[[str], logging.Handler]) -> Case:
    logger = private_logger(f"bench.{role}.{len(name)}", *(make(directory) for make in handlers))
    return Case(name, role, timed(lambda: logger.info(MESSAGE, extra=EXTRA)))


def text_file(file_name: str) -> Callable[[str], logging.Handler]:
    def make(directory: str) -> logging.Handler:
        handler = logging.StreamHandler(open(os.path.join(directory, file_name), "a"))  # noqa: SIM115
        handler.setFormatter(logging.Formatter())
        return handler

    return make


def our_file(directory: str) -> logging.Handler:
    handler = SharedRotatingFileHandler(os.path.join(directory, "ours-alone.log"))
    handler.setFormatter(JsonFormatter())
    handler.addFilter(TraceCorrelationFilter())
    return handler


def json_logger_file(directory: str) -> logging.Handler:
    from pythonjsonlogger.orjson import OrjsonFormatter

    handler = logging.StreamHandler(open(os.path.join(directory, "pjl.log"), "a"))  # noqa: SIM115
    handler.setFormatter(
        OrjsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(module)s %(funcName)s %(lineno)d %(message)s",
            rename_fields={"asctime": "timestamp", "levelname": "level", "name": "logger_name"},
        )
    )
    handler.addFilter(SpanFilter())
    return handler


def structlog_case(directory: str) -> Case:
    import structlog

    def add_span(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event.update(span_fields())
        return event

    structlog.configure(
        processors=[
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
            structlog.processors.add_log_level,
            structlog.processors.CallsiteParameterAdder(
                [
                    structlog.processors.CallsiteParameter.MODULE,
                    structlog.processors.CallsiteParameter.FUNC_NAME,
                    structlog.processors.CallsiteParameter.LINENO,
                ]
            ),
            add_span,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.BytesLoggerFactory(open(os.path.join(directory, "structlog.log"), "ab")),  # noqa: SIM115
        cache_logger_on_first_use=True,
    )
    logger = structlog.get_logger(logger_name="bench.structlog")
    return Case(
        "structlog (orjson, call site, logger name)", "peer", timed(lambda: logger.info(MESSAGE, **EXTRA))
    )


def loguru_case(directory: str) -> Case:
    from loguru import logger

    logger.remove()
    logger.add(os.path.join(directory, "loguru.log"), serialize=True, level="INFO", enqueue=False)
    patched = logger.patch(lambda record: record["extra"].update(span_fields()))
    return Case("loguru (serialize=True)", "peer", timed(lambda: patched.info(MESSAGE, **EXTRA)))


def ours_setup_logging(directory: str) -> Callable[[str], Case]:
    ti.setup_logging(log_level="INFO", log_dir=directory, environment="production", console=False)

    def case(logger_name: str) -> Case:
        logger = logging.getLogger(logger_name)
        return Case(
            "ours: setup_logging() (app.log; error/api/model.log skip it)"
            if logger_name != "api"
            else "ours: setup_logging() (app.log and api.log)",
            "ours-setup" if logger_name != "api" else "ours",
            timed(lambda: logger.info(MESSAGE, extra=EXTRA)),
        )

    return case


@contextmanager
def in_sampled_span() -> Iterator[None]:
    tracer = TracerProvider().get_tracer("bench")  # the default sampler: every span sampled
    with tracer.start_as_current_span("request"):
        yield


def inside(measure: Measure, span_context: context.Context) -> Measure:
    def run(n: int) -> float:
        token = context.attach(span_context)
        try:
            return measure(n)
        finally:
            context.detach(token)

    return run


def rows(directory: str) -> list[Row]:
    ours = ours_setup_logging(directory)
    record = Row(
        "one JSON record (3 extras) in a sampled span, to a file",
        [
            stdlib_case("stdlib logging.Formatter() text", "floor", directory, text_file("floor.log")),
            stdlib_case(
                "ours: JsonFormatter + filter + file handler (one file, like the peers)",
                "ours",
                directory,
                our_file,
            ),
            ours("app.orders"),
            structlog_case(directory),
            loguru_case(directory),
            stdlib_case("python-json-logger (orjson) + span filter", "peer", directory, json_logger_file),
        ],
        target_limit=0.8,
        note=(
            "ours and the peers write one file; setup_logging() (for information) also passes the record "
            "by the error.log, api.log and model.log handlers, which skip it"
        ),
    )
    access = Row(
        "an access record (logger api) to app.log and api.log",
        [
            stdlib_case(
                "stdlib text to two files", "floor", directory, text_file("a.log"), text_file("b.log")
            ),
            ours("api"),
        ],
        note="formatted once, written twice",
    )
    return [record, access]


def main() -> None:
    args = arguments(__doc__.splitlines()[0], rounds=7, per_round=5000).parse_args()
    with tempfile.TemporaryDirectory() as directory, in_sampled_span():
        measured = rows(directory)
        span_context = context.get_current()
        for row in measured:
            for case in row.cases:
                case.measure = inside(case.measure, span_context)
        run_rows(measured, args.rounds, args.per_round)
        teardown_logging()
    report("peer_logging", measured, args)


if __name__ == "__main__":
    main()
