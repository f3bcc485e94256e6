"""A request's SERVER span is a light span where that is exact (``otel.light_spans``, issue 25):
the ASGI and WSGI middleware must hand the processors and the wire the same span a live SDK
span would be, field by field, with the app's own spans, links and records under it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import wsgiref.util
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, TraceFlags
from span_processors import WatchesStarts

import telemetry_infra as ti
from telemetry_infra.integrations.asgi import TelemetryMiddleware
from telemetry_infra.integrations.wsgi import TelemetryWSGIMiddleware
from telemetry_infra.otel.light_spans import LightSpan

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
LINKED = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
tracer = trace.get_tracer("tests.server")


def handle(path: str) -> tuple[int, type[trace.Span]]:
    """What the app does inside the request: its own span, an event, a link, an attribute,
    a record; ``/boom`` fails. Returns the status and the type of the current span."""
    current = trace.get_current_span()
    with tracer.start_as_current_span("app.work", attributes={"work.items": 3}):
        logging.getLogger("app").info("working", extra={"step": 1})
    current.add_event("app.checkpoint", {"checkpoint": "one"})
    current.add_link(LINKED, {"link.reason": "batch"})
    current.set_attribute("app.tenant", "t-1")
    if path == "/boom":
        raise RuntimeError("handler failed")
    return 200, type(current)


def asgi_app(seen: list[type[trace.Span]]) -> Callable[..., Any]:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        status, current = handle(scope["path"])
        seen.append(current)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return TelemetryMiddleware(app)


def call_asgi(app: Any, path: str, headers: dict[str, str]) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"a=1",
        "root_path": "",
        "headers": [(b"host", b"shop.test:8080"), (b"user-agent", b"tests")]
        + [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    async def run() -> None:
        with contextlib.suppress(RuntimeError):  # /boom: re-raised by the middleware, as to the server
            await app(scope, receive, send)

    asyncio.run(run())


def wsgi_app(seen: list[type[trace.Span]]) -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        status, current = handle(environ["PATH_INFO"])
        seen.append(current)
        start_response(f"{status} OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    return TelemetryWSGIMiddleware(app)


def call_wsgi(app: Any, path: str, headers: dict[str, str]) -> None:
    environ: dict[str, Any] = {"PATH_INFO": path, "QUERY_STRING": "a=1", "HTTP_HOST": "shop.test:8080"}
    environ["HTTP_USER_AGENT"] = "tests"
    environ.update({f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()})
    wsgiref.util.setup_testing_defaults(environ)
    with contextlib.suppress(RuntimeError):  # /boom
        body = app(environ, lambda status, headers, exc_info=None: None)
        list(body)
        getattr(body, "close", lambda: None)()


SERVERS = {"asgi": (asgi_app, call_asgi), "wsgi": (wsgi_app, call_wsgi)}
REQUESTS = [
    ("/items", {}),  # a new trace
    ("/items", {"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01", "tracestate": "v=1"}),  # remote parent
    ("/boom", {}),  # the app fails
    ("/items", {"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-00"}),  # remote parent not sampled
]


def comparable(span: ReadableSpan) -> dict[str, Any]:
    """Everything a processor or exporter reads, less what differs between two runs (ids, times)."""
    assert span.context is not None and span.start_time is not None and span.end_time is not None
    assert span.start_time <= span.end_time
    parent = span.parent
    attributes = dict(span.attributes or {})
    if attributes.get("request.id") == format(span.context.trace_id, "032x"):
        attributes["request.id"] = "the trace id"
    return {
        "name": span.name,
        "kind": span.kind,
        "flags": span.context.trace_flags,
        "trace_state": span.context.trace_state,
        "remote": span.context.is_remote,
        # a remote parent is the traceparent's; a local one, the server span (checked in run())
        "parent": None if parent is None else (parent.span_id, True) if parent.is_remote else "local",
        "trace": span.context.trace_id if parent is not None and parent.is_remote else "its own",
        "attributes": attributes,
        "dropped": (span.dropped_attributes, span.dropped_events, span.dropped_links),
        "status": (span.status.status_code, span.status.description),
        "events": [
            (event.name, {k: v for k, v in (event.attributes or {}).items() if k != "exception.stacktrace"})
            for event in span.events
        ],
        "links": [(link.context, dict(link.attributes or {})) for link in span.links],
        "resource": span.resource.attributes,
        "scope": span.instrumentation_scope,
    }


def run(server: str, exported: InMemorySpanExporter) -> tuple[list[dict[str, Any]], list[type[trace.Span]]]:
    """The requests through the middleware; each request's spans, server first, comparable."""
    make_app, call = SERVERS[server]
    seen: list[type[trace.Span]] = []
    app = make_app(seen)
    exported.clear()
    for path, headers in REQUESTS:
        call(app, path, headers)
    spans = list(exported.get_finished_spans())
    servers = [span for span in spans if span.kind is trace.SpanKind.SERVER]
    children = [span for span in spans if span.name == "app.work"]
    assert len(servers) == len(children) == 3  # the unsampled request exports nothing
    for server_span, child in zip(servers, children, strict=True):
        assert child.parent is not None and child.parent.span_id == server_span.context.span_id
        assert child.context.trace_id == server_span.context.trace_id
    return [comparable(span) for span in servers + children], seen


@pytest.mark.parametrize("fast_export", [True, False], ids=["fast-export", "sdk-encoders"])
@pytest.mark.parametrize("server", ["asgi", "wsgi"])
def test_the_server_span_is_light_and_equals_the_live_one(server, fast_export, otlp_receiver, tmp_path):
    telemetry = ti.configure(
        f"server-light-{server}",
        log_dir=tmp_path,
        console_logs=False,
        otlp_endpoint=otlp_receiver.grpc_endpoint,
        fast_export=fast_export,
        instrument_redis=False,
    )
    exported = InMemorySpanExporter()
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exported))  # silent until on_end
    light, light_seen = run(server, exported)

    watcher = WatchesStarts()
    telemetry.tracer_provider.add_span_processor(watcher)  # now every span is live
    live, live_seen = run(server, exported)

    # the current span in the app (/boom raised before it was noted): light unless not sampled
    assert light_seen == [LightSpan, LightSpan, trace.NonRecordingSpan]
    assert LightSpan not in live_seen and len(watcher.started) == 6  # the second run was live
    assert light == live
    boom = light[2]
    assert boom["status"][0].name == "ERROR" and [e[0] for e in boom["events"]][-1] == "exception"

    telemetry.force_flush()
    received = otlp_receiver.wait_for_spans(lambda s: s.kind == "SERVER", count=6)
    by_run = sorted(
        (
            s.name,
            sorted((k, "the trace id" if v == s.trace_id else v) for k, v in s.attributes.items()),
            s.status_code,
            s.status_message,
            [name for name, _ in s.events],
            s.scope,
        )
        for s in received
    )
    assert by_run[0::2] == by_run[1::2]  # each light span arrived as its live twin did
