"""``instrument_wsgi`` on plain PEP 3333 apps, called as a WSGI server calls them: streamed
bodies end the request at ``close()``, exceptions propagate with their span event,
exclusions, the user-id hook and the request id. Spans checked on the wire."""

from __future__ import annotations

import logging
import time

import pytest
from werkzeug.test import Client

import telemetry_infra as ti
from telemetry_infra.integrations.wsgi import instrument_wsgi


@pytest.fixture
def receiver(otlp_receiver):
    ti.configure(service_name="wsgi-test", otlp_endpoint=otlp_receiver.grpc_endpoint, setup_logs=False)
    return otlp_receiver


class ContextCapture(logging.Handler):
    """Keeps, for each record, the request context current when it was logged."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, dict]] = []

    def emit(self, record: logging.LogRecord) -> None:
        current = ti.get_request_context()
        self.seen.append(
            (record.getMessage(), {"request_id": current.request_id, "user_id": current.user_id})
        )


@pytest.fixture
def contexts():
    capture = ContextCapture()
    loggers = [logging.getLogger(name) for name in ("api.access", "api.stream")]
    for logger in loggers:
        logger.addHandler(capture)
    yield capture.seen
    for logger in loggers:
        logger.removeHandler(capture)


def streaming_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])

    def body():
        logging.getLogger("api.stream").warning("streaming chunk")
        yield b"one "
        time.sleep(0.2)
        yield b"two"

    return body()


def failing_app(environ, start_response):
    raise LookupError("no such thing")


def test_a_streamed_response_ends_its_span_when_closed(receiver, caplog, contexts):
    client = Client(instrument_wsgi(streaming_app))
    with caplog.at_level(logging.INFO):
        response = client.get("/stream", headers={"X-Request-ID": "stream-1"})
        assert response.headers["X-Request-ID"] == "stream-1"
        assert response.get_data() == b"one two"
        response.close()
    ti.get_telemetry().force_flush()
    (span,) = receiver.wait_for_spans(lambda s: s.kind == "SERVER")
    assert span.name == "GET /stream"
    (chunk,) = [context for message, context in contexts if message == "streaming chunk"]
    assert chunk["request_id"] == "stream-1", "the body is iterated inside the request's context"
    (access,) = [r for r in caplog.records if r.name == "api.access"]
    assert access.duration >= 0.2, "the access record ends with the body, not when the app returned"


def test_an_exception_is_recorded_on_the_span_and_re_raised(receiver, caplog):
    client = Client(instrument_wsgi(failing_app))
    with pytest.raises(LookupError, match="no such thing"):
        client.get("/things/1")
    ti.get_telemetry().force_flush()
    (span,) = receiver.wait_for_spans(lambda s: s.kind == "SERVER")
    assert span.attributes["error.type"] == "LookupError"
    assert [name for name, _ in span.events] == ["exception"]
    assert span.status_code == "ERROR"
    (access,) = [r for r in caplog.records if r.name == "api.access"]
    assert access.levelno == logging.ERROR and access.http_status == 500


def test_exclusions_metrics_path_and_user_id_hook(receiver, caplog, contexts):
    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"ok"]

    wrapped = instrument_wsgi(
        app,
        excluded_paths=["/health", "/static/*"],
        user_id_getter=lambda environ: environ.get("HTTP_X_USER"),
    )
    client = Client(wrapped)
    with caplog.at_level(logging.INFO):
        for path in ("/health", "/static/app.js", "/orders"):
            client.get(path, headers={"X-User": "ada"}).close()
        metrics = client.get("/metrics")
    assert metrics.status_code == 200 and b"http_server_request_duration_seconds" in metrics.get_data()
    ti.get_telemetry().force_flush()
    (span,) = receiver.wait_for_spans(lambda s: s.kind == "SERVER")
    assert span.name == "GET /orders"
    assert [r.http_route for r in caplog.records if r.name == "api.access"] == ["/orders"]
    (access,) = [context for message, context in contexts if message == "GET /orders 200"]
    assert access["user_id"] == "ada"
