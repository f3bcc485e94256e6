"""Trace correlation and request context on every record, isolated per task and thread."""

from __future__ import annotations

import asyncio
import threading

import pytest
from design_contracts import log_field_groups
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

import telemetry_infra as ti


@pytest.fixture
def finished_spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


@pytest.fixture(autouse=True)
def _no_leftover_context():
    ti.clear_request_context()
    yield
    ti.clear_request_context()


def test_ids_inside_a_span_are_the_spans(json_lines, finished_spans):
    tracer, _ = finished_spans
    with tracer.start_as_current_span("work") as span:
        ti.get_logger("t").info("inside")
    (line,) = json_lines()

    context = span.get_span_context()
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"
    assert line["trace_flags"] == "01"
    assert line["request_id"] == line["trace_id"]  # no explicit request id: the trace id
    fields = log_field_groups()  # docs/design.md, "Log records"
    assert list(line)[:11] == [*fields["record"], fields["request"][0], *fields["trace"]]


def test_nested_spans_give_each_record_its_own_span_id(json_lines, finished_spans):
    tracer, _ = finished_spans
    with tracer.start_as_current_span("outer") as outer:
        with tracer.start_as_current_span("inner") as inner:
            ti.get_logger("t").info("in inner")
        ti.get_logger("t").info("in outer")
    first, second = json_lines()
    assert first["span_id"] == f"{inner.get_span_context().span_id:016x}"
    assert second["span_id"] == f"{outer.get_span_context().span_id:016x}"
    assert first["trace_id"] == second["trace_id"]


def test_ids_passed_in_extra_win_and_leave_the_next_record_alone(json_lines, finished_spans):
    tracer, _ = finished_spans
    forwarded = {"trace_id": "a" * 32, "request_id": "upstream-7"}
    with tracer.start_as_current_span("work") as span:
        ti.get_logger("t").info("forwarded", extra=forwarded)
        ti.get_logger("t").info("own")
    first, second = json_lines()

    assert (first["trace_id"], first["request_id"]) == ("a" * 32, "upstream-7")
    assert "span_id" not in first  # the caller's trace id is not paired with our span id
    own = span.get_span_context()
    assert (second["trace_id"], second["span_id"]) == (f"{own.trace_id:032x}", f"{own.span_id:016x}")
    assert second["request_id"] == second["trace_id"]


def test_unsampled_span_says_so(json_lines):
    tracer = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test")
    with tracer.start_as_current_span("dropped"):
        ti.get_logger("t").info("inside an unsampled span")
    (line,) = json_lines()
    assert line["trace_flags"] == "00" and len(line["trace_id"]) == 32


def test_explicit_request_id_wins_over_the_trace_id(json_lines, finished_spans):
    tracer, _ = finished_spans
    ti.set_request_context(request_id="req-1", user_id="user123")
    with tracer.start_as_current_span("work"):
        ti.get_logger("t").info("processing")
    ti.clear_request_context()
    ti.get_logger("t").info("after clear")
    during, after = json_lines()

    assert (during["request_id"], during["user_id"]) == ("req-1", "user123")
    assert "request_id" not in after and "user_id" not in after


def test_set_request_context_changes_only_the_ids_given(json_lines):
    ti.set_request_context(request_id="req-1")
    ti.set_request_context(user_id="u-9")
    ti.get_logger("t").info("both")
    (line,) = json_lines()
    assert (line["request_id"], line["user_id"]) == ("req-1", "u-9")


def test_user_id_passed_in_extra_is_kept(json_lines):
    ti.set_request_context(request_id="req-1", user_id="from-context")
    ti.get_logger("t").info("User action", extra={"user_id": "u123", "action": "login"})
    (line,) = json_lines()
    assert (line["user_id"], line["action"]) == ("u123", "login")


def test_request_context_block_restores_the_previous_context(json_lines):
    ti.set_request_context(request_id="outer")
    with ti.request_context(request_id="inner", user_id="u1") as context:
        assert context.request_id == "inner"
        ti.get_logger("t").info("in block")
    ti.get_logger("t").info("after block")
    inside, after = json_lines()
    assert (inside["request_id"], inside["user_id"]) == ("inner", "u1")
    assert after["request_id"] == "outer" and "user_id" not in after


async def test_async_with_and_tasks_are_isolated(json_lines):
    async def handle(request_id: str) -> None:
        async with ti.request_context(request_id=request_id, user_id=f"user-{request_id}"):
            await asyncio.sleep(0.01)  # let the other tasks run in between
            ti.get_logger("t").info("handled", extra={"expected": request_id})

    await asyncio.gather(*(handle(f"r{n}") for n in range(20)))
    lines = json_lines()

    assert len(lines) == 20
    for line in lines:
        assert line["request_id"] == line["expected"] and line["user_id"] == f"user-{line['expected']}"
    assert ti.get_request_context().request_id is None


def test_threads_are_isolated(json_lines):
    barrier = threading.Barrier(8)

    def handle(request_id: str) -> None:
        ti.set_request_context(request_id=request_id)
        barrier.wait()  # every thread has set its id before any logs
        ti.get_logger("t").info("handled", extra={"expected": request_id})

    ti.set_request_context(request_id="main-thread")
    threads = [threading.Thread(target=handle, args=(f"t{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    lines = json_lines()
    assert len(lines) == 8 and all(line["request_id"] == line["expected"] for line in lines)
    assert ti.get_request_context().request_id == "main-thread"


def test_ids_are_set_on_the_active_span(finished_spans):
    tracer, exporter = finished_spans
    with tracer.start_as_current_span("request"):
        ti.set_request_context(request_id="req-7", user_id="u-7")
    with tracer.start_as_current_span("block"), ti.request_context(request_id="req-8"):
        pass
    first, second = exporter.get_finished_spans()
    assert first.attributes["request.id"] == "req-7" and first.attributes["enduser.id"] == "u-7"
    assert second.attributes["request.id"] == "req-8"
