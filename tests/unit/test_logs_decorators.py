"""@log_execution_time and @log_exceptions on every kind of callable."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import telemetry_infra as ti


def _timed_forms():
    custom = ti.get_logger("custom.timing")

    @ti.log_execution_time
    def plain(x):
        return x * 2

    @ti.log_execution_time(logger=custom)
    async def coroutine(x):
        return x * 2

    @ti.log_execution_time
    def generator(x):
        yield x
        yield x

    @ti.log_execution_time()
    async def async_generator(x):
        yield x
        yield x

    return plain, coroutine, generator, async_generator


async def _call(func, arg):
    result = func(arg)
    if hasattr(result, "__await__"):
        return await result
    if hasattr(result, "__anext__"):
        return [item async for item in result]
    if hasattr(result, "__next__"):
        return list(result)
    return result


@pytest.mark.parametrize("form", range(4), ids=["sync", "coroutine", "generator", "async_generator"])
async def test_execution_time_is_logged_for_every_kind(json_lines, form):
    func = _timed_forms()[form]
    result = await _call(func, 21)
    (line,) = json_lines()

    assert result in (42, [21, 21])
    assert line["function"] == func.__qualname__
    assert isinstance(line["duration"], float) and 0 <= line["duration"] < 60
    assert line["outcome"] == "success"
    assert line["logger_name"] == ("custom.timing" if form == 1 else __name__)
    # The record points at the code that called the function, not at our wrapper.
    assert line["module"] == "test_logs_decorators" and line["function_name"] in ("_call", "<listcomp>")


def test_wraps_keeps_the_function_identity():
    plain, coroutine, *_ = _timed_forms()
    assert plain.__name__ == "plain" and coroutine.__name__ == "coroutine"
    assert plain.__qualname__.endswith("_timed_forms.<locals>.plain")
    assert plain.__wrapped__(3) == 6


def test_timing_is_logged_when_the_call_raises(json_lines):
    @ti.log_execution_time
    def broken():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        broken()
    (line,) = json_lines()
    assert line["outcome"] == "error" and line["function"].endswith("broken")


def test_timing_a_generator_closed_early_still_logs(json_lines):
    @ti.log_execution_time
    def endless():
        while True:
            yield 1

    numbers = endless()
    next(numbers)
    numbers.close()
    (line,) = json_lines()
    assert line["function"].endswith("endless")


def _failing_forms(**options):
    decorate = ti.log_exceptions(**options) if options else ti.log_exceptions

    @decorate
    def plain():
        raise ValueError("plain failed")

    @decorate
    async def coroutine():
        raise ValueError("coroutine failed")

    return plain, coroutine


@pytest.mark.parametrize("form", [0, 1], ids=["sync", "coroutine"])
async def test_exceptions_are_logged_and_reraised(json_lines, form):
    func = _failing_forms()[form]
    with pytest.raises(ValueError):
        await _call(lambda _: func(), None)
    (line,) = json_lines()

    assert line["level"] == "ERROR"
    assert line["function"] == func.__qualname__
    assert "ValueError" in line["message"] and "failed" in line["message"]
    assert line["exc_info"].startswith("Traceback") and "raise ValueError" in line["exc_info"]


@pytest.mark.parametrize("form", [0, 1], ids=["sync", "coroutine"])
async def test_reraise_false_returns_none(json_lines, form):
    func = _failing_forms(reraise=False, logger=ti.get_logger("quiet"))[form]
    assert await _call(lambda _: func(), None) is None
    (line,) = json_lines()
    assert line["logger_name"] == "quiet" and line["level"] == "ERROR"


def test_exception_is_recorded_on_the_active_span(json_lines):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    plain, _ = _failing_forms(reraise=False)

    with provider.get_tracer("t").start_as_current_span("operation"):
        plain()
    (span,) = exporter.get_finished_spans()

    assert span.status.status_code is StatusCode.ERROR
    (event,) = span.events
    assert event.name == "exception" and event.attributes["exception.type"] == "ValueError"
    assert json_lines()[0]["span_id"] == f"{span.context.span_id:016x}"


def test_stacked_decorators_from_the_seed(json_lines):
    @ti.log_execution_time
    @ti.log_exceptions
    def fetch_data(property_id: str) -> dict:
        return {"id": property_id}

    assert fetch_data("p1") == {"id": "p1"}
    (line,) = json_lines()
    assert line["function"].endswith("fetch_data") and line["level"] == logging.getLevelName(logging.INFO)
