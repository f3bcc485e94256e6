"""ASGI/FastAPI middleware through httpx against real apps; logs read from the real files."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import design_contracts
import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.responses import JSONResponse
from starlette.routing import Route

import telemetry_infra as ti
from telemetry_infra.integrations.asgi import TelemetryMiddleware
from telemetry_infra.integrations.fastapi import instrument_app
from telemetry_infra.testing import OTLPReceiver, RedisServer

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


def _records(log_dir: Path) -> list[dict]:
    ti.get_telemetry().force_flush()
    return [json.loads(line) for line in (log_dir / "app.log").read_text().splitlines()]


def _user_from_header(scope: dict) -> str | None:
    return dict(scope["headers"]).get(b"x-user-id", b"").decode() or None


def _fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict:
        await asyncio.sleep(0.01)  # let concurrent requests interleave
        ti.get_logger("api.items").info("item served", extra={"item": item_id})
        return {"item": item_id, "context": ti.get_request_context()}

    @app.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("handler failed")

    return instrument_app(app, user_id_getter=_user_from_header)


async def _get(app, path: str, **kwargs) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path, **kwargs)


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def configured(log_dir: Path, otlp_receiver: OTLPReceiver) -> OTLPReceiver:
    ti.configure(
        "asgi-test", environment="production", log_dir=log_dir, otlp_endpoint=otlp_receiver.grpc_endpoint
    )
    return otlp_receiver


async def test_incoming_traceparent_is_the_trace_and_the_request_id(
    configured: OTLPReceiver, log_dir: Path
) -> None:
    response = await _get(
        _fastapi_app(), "/items/7", headers={"traceparent": TRACEPARENT, "X-User-ID": "u-1"}
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == TRACE_ID
    assert response.json()["context"] == {"request_id": TRACE_ID, "user_id": "u-1"}
    served = [r for r in _records(log_dir) if r["message"] == "item served"]
    assert served[0]["trace_id"] == TRACE_ID and served[0]["request_id"] == TRACE_ID
    assert served[0]["user_id"] == "u-1"
    (span,) = configured.wait_for_spans(lambda s: s.kind == "SERVER")
    assert span.trace_id == TRACE_ID and span.parent_span_id == "b7ad6b7169203331"
    assert span.name == "GET /items/{item_id}" and span.attributes["http.route"] == "/items/{item_id}"


async def test_incoming_request_id_is_kept_and_returned(configured: OTLPReceiver, log_dir: Path) -> None:
    response = await _get(_fastapi_app(), "/items/1", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    (access,) = [r for r in _records(log_dir) if r["logger_name"] == "api.access"]
    assert access["request_id"] == "abc-123" and len(access["trace_id"]) == 32


async def test_access_record_has_method_route_status_and_duration(
    configured: OTLPReceiver, log_dir: Path
) -> None:
    await _get(_fastapi_app(), "/items/42")
    (access,) = [r for r in _records(log_dir) if r["logger_name"] == "api.access"]
    assert access["http_method"] == "GET" and access["http_route"] == "/items/{item_id}"
    assert access["http_status"] == 200 and access["level"] == "INFO"
    assert 0.01 <= access["duration"] < 5


async def test_fifty_concurrent_requests_keep_their_own_context(
    configured: OTLPReceiver, log_dir: Path
) -> None:
    app = _fastapi_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        responses = await asyncio.gather(
            *(
                client.get(f"/items/{i}", headers={"X-Request-ID": f"req-{i}", "X-User-ID": f"user-{i}"})
                for i in range(50)
            )
        )
    for i, response in enumerate(responses):
        assert response.json()["context"] == {"request_id": f"req-{i}", "user_id": f"user-{i}"}
    served = [r for r in _records(log_dir) if r["message"] == "item served"]
    assert len(served) == 50
    assert all(r["request_id"] == f"req-{r['item']}" and r["user_id"] == f"user-{r['item']}" for r in served)
    assert len({r["trace_id"] for r in served}) == 50


async def test_handler_exception_still_clears_context_and_logs_500(
    configured: OTLPReceiver, log_dir: Path
) -> None:
    response = await _get(_fastapi_app(), "/boom", headers={"X-Request-ID": "failing-1"})
    assert response.status_code == 500 and response.headers["x-request-id"] == "failing-1"
    assert (ti.get_request_context().request_id, ti.get_request_context().user_id) == (None, None)
    (access,) = [r for r in _records(log_dir) if r["logger_name"] == "api.access"]
    assert access["http_status"] == 500 and access["level"] == "ERROR"
    assert access["request_id"] == "failing-1"
    assert "RuntimeError: handler failed" in access["exc_info"]
    (span,) = configured.wait_for_spans(lambda s: s.kind == "SERVER")
    assert span.status_code == "ERROR"


async def test_plain_starlette_and_metrics_endpoint(configured: OTLPReceiver, log_dir: Path) -> None:
    async def hello(request) -> JSONResponse:
        return JSONResponse({"context": dataclasses.asdict(ti.get_request_context())})

    app = TelemetryMiddleware(Starlette(routes=[Route("/hello", hello)]), user_id_getter=_user_from_header)
    response = await _get(app, "/hello", headers={"X-User-ID": "starlette-user"})
    assert response.json()["context"]["user_id"] == "starlette-user"
    assert response.json()["context"]["request_id"] == response.headers["x-request-id"]
    metrics = await _get(_fastapi_app(), "/metrics", headers={"Accept": "application/openmetrics-text"})
    assert metrics.status_code == 200 and metrics.text.rstrip().endswith("# EOF")
    assert 'service_name="asgi-test"' in metrics.text


async def test_hostile_request_id_is_replaced_by_the_trace_id(
    configured: OTLPReceiver, log_dir: Path
) -> None:
    response = await _get(_fastapi_app(), "/items/1", headers={"X-Request-ID": "x" * 500})
    assert len(response.headers["x-request-id"]) == 32


# ------------------------------------------------------------------ issue 14: middleware fixes


class _HeaderAuth(AuthenticationBackend):
    """Starlette authentication: ``Authorization: User <name>``."""

    async def authenticate(self, conn):  # type: ignore[no-untyped-def]
        scheme, _, name = conn.headers.get("authorization", "").partition(" ")
        if scheme != "User" or not name:
            return None
        return AuthCredentials(["authenticated"]), SimpleUser(name)


def _authenticated_app(user_id_getter) -> FastAPI:  # type: ignore[no-untyped-def]
    app = FastAPI()
    app.add_middleware(AuthenticationMiddleware, backend=_HeaderAuth())

    @app.get("/me")
    async def me() -> dict:
        return {"ok": True}

    @app.get("/price/metrics")
    async def price_metrics() -> dict:
        return {"price": 1}

    return instrument_app(app, user_id_getter=user_id_getter)


async def test_user_from_starlette_authentication_reaches_span_and_access_record(
    configured: OTLPReceiver, log_dir: Path
) -> None:
    # the README's getter: the user Starlette's AuthenticationMiddleware put in the scope
    app = _authenticated_app(lambda scope: scope.get("user"))
    response = await _get(app, "/me", headers={"Authorization": "User alice"})
    assert response.status_code == 200
    (access,) = [r for r in _records(log_dir) if r["logger_name"] == "api.access"]
    assert access["user_id"] == "alice"
    (span,) = configured.wait_for_spans(lambda s: s.kind == "SERVER")
    assert span.attributes["enduser.id"] == "alice"


async def test_a_getter_that_raises_does_not_fail_the_request(
    configured: OTLPReceiver, log_dir: Path
) -> None:
    app = _authenticated_app(lambda scope: scope["user"].missing_attribute)
    response = await _get(app, "/me", headers={"Authorization": "User alice"})
    assert response.status_code == 200
    (access,) = [r for r in _records(log_dir) if r["logger_name"] == "api.access"]
    assert access["http_status"] == 200 and "user_id" not in access


async def test_only_the_metrics_path_itself_is_excluded(configured: OTLPReceiver, log_dir: Path) -> None:
    app = _authenticated_app(None)
    assert (await _get(app, "/price/metrics")).status_code == 200
    assert (await _get(app, "/metrics")).status_code == 200
    spans = configured.wait_for_spans(lambda s: s.kind == "SERVER")
    assert [s.attributes["http.route"] for s in spans] == ["/price/metrics"]
    routes = [r["http_route"] for r in _records(log_dir) if r["logger_name"] == "api.access"]
    assert routes == ["/price/metrics"]  # a scrape writes no access record


async def test_excluded_paths_are_configurable_and_can_be_logged(
    configured: OTLPReceiver, log_dir: Path
) -> None:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True}

    instrument_app(app, excluded_paths=["/health"], log_excluded=True)
    assert (await _get(app, "/health")).status_code == 200
    assert (await _get(app, "/metrics")).status_code == 200
    routes = [r["http_route"] for r in _records(log_dir) if r["logger_name"] == "api.access"]
    assert sorted(routes) == ["/health", "/metrics"]
    ti.get_telemetry().force_flush()
    assert not [s for s in configured.spans() if s.kind == "SERVER"]


async def test_unhandled_exception_is_an_exception_event_with_error_type(
    configured: OTLPReceiver, log_dir: Path
) -> None:
    response = await _get(_fastapi_app(), "/boom")
    assert response.status_code == 500
    (span,) = configured.wait_for_spans(lambda s: s.kind == "SERVER")
    assert span.status_code == "ERROR" and span.attributes["error.type"] == "RuntimeError"
    events = [attributes for name, attributes in span.events if name == "exception"]
    assert len(events) == 1 and events[0]["exception.message"] == "handler failed"


async def test_plain_asgi_exception_is_one_exception_event_with_error_type(
    configured: OTLPReceiver, log_dir: Path
) -> None:
    async def failing(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        raise KeyError("missing")

    response = await _get(TelemetryMiddleware(failing), "/anything")
    assert response.status_code == 500
    (span,) = configured.wait_for_spans(lambda s: s.kind == "SERVER")
    assert span.status_code == "ERROR" and span.attributes["error.type"] == "KeyError"
    assert [name for name, _ in span.events].count("exception") == 1


def _active_requests(exposition: str) -> float:
    families = text_string_to_metric_families(exposition)
    return sum(s.value for f in families if f.name == "http_server_active_requests" for s in f.samples)


async def test_default_exposition_of_an_instrumented_app_passes_promtool(
    configured: OTLPReceiver, log_dir: Path, redis_server: RedisServer
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    app = FastAPI()
    cache = ti.CacheManager(redis_url=redis_server.url, name="lint")

    @app.get("/prices/{sku}")
    async def price(sku: str) -> dict:
        return {"price": await cache.get(sku)}

    @app.get("/inflight")
    async def inflight() -> float:
        return _active_requests(ti.get_telemetry().prometheus_text())

    instrument_app(app)
    async with cache:
        for sku in ("a", "b"):
            assert (await _get(app, f"/prices/{sku}")).status_code == 200
        exposition = (await _get(app, "/metrics")).text
    done = await asyncio.to_thread(
        subprocess.run, [promtool, "check", "metrics"], input=exposition, text=True, capture_output=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    requests = {
        sample.labels["http_route"]: sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "http_server_request_duration_seconds_count"
    }
    assert requests == {"/prices/{sku}": 2}  # stable semconv, seconds, by route; /metrics not counted
    assert "db_client_connections_usage{" in exposition
    assert _active_requests(exposition) == 0  # all answered; the scrape itself is excluded
    assert (await _get(app, "/inflight")).json() == 1  # counted while it runs


async def test_http_metrics_are_the_ones_design_names(configured: OTLPReceiver, log_dir: Path) -> None:
    """docs/design.md's HTTP instruments, their attributes over OTLP and their Prometheus names."""
    app = _fastapi_app()
    assert (await _get(app, "/items/3")).status_code == 200
    assert (await _get(app, "/boom")).status_code == 500  # error.type
    exposition = ti.get_telemetry().prometheus_text()
    ti.get_telemetry().force_flush()
    section = "HTTP server and log export telemetry names"
    design = {
        name: attributes
        for name, attributes in design_contracts.metric_attributes(section).items()
        if name.startswith("http.")
    }
    assert design
    exposed = {s.name for family in text_string_to_metric_families(exposition) for s in family.samples}
    for name, attributes in design.items():
        assert set(design_contracts.metrics(section)[name]) <= exposed, name
        points = configured.wait_for_metric_points(lambda p, name=name: p.name == name)
        seen = {key for point in points for key in point.attributes}
        assert seen == set(attributes), f"{name}: attributes {sorted(seen)}, design says {sorted(attributes)}"


# ------------------------------------------------------------------ issue 25: FastAPI's own telemetry


def _items_app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict:
        return {"item": item_id}

    return app


async def _server_spans_and_duration_points(
    receiver: OTLPReceiver, app, paths: list[str]
) -> tuple[list, list]:  # type: ignore[no-untyped-def]
    for path in paths:
        assert (await _get(app, path)).status_code == 200
    ti.get_telemetry().force_flush()
    points = receiver.wait_for_metric_points(lambda p: p.name == "http.server.request.duration")
    return [s for s in receiver.spans() if s.kind == "SERVER"], points


async def test_a_fastapi_app_wrapped_in_the_middleware_has_one_server_span_per_request(
    configured: OTLPReceiver, log_dir: Path
) -> None:
    # FastAPI >= 0.165 starts its own SERVER span and duration histogram once global providers exist
    app = TelemetryMiddleware(_items_app())
    spans, points = await _server_spans_and_duration_points(configured, app, ["/items/1", "/items/2"])
    assert sorted(s.name for s in spans) == ["GET /items/{item_id}"] * 2
    assert {p.scope for p in points} == {"telemetry_infra.asgi"}
    assert sum(p.count for p in points) == 2


async def test_instrument_app_has_one_server_span_per_request_in_mounted_fastapi_apps(
    configured: OTLPReceiver, log_dir: Path
) -> None:
    app = _items_app()
    app.mount("/v2", _items_app())
    instrument_app(app)
    spans, points = await _server_spans_and_duration_points(configured, app, ["/items/1", "/v2/items/2"])
    assert len(spans) == 2 and len({s.trace_id for s in spans}) == 2
    assert {p.scope for p in points} == {"telemetry_infra.asgi"}
    assert sum(p.count for p in points) == 2


async def test_server_span_has_the_stable_http_attributes_and_excluded_urls_get_none(
    configured: OTLPReceiver, log_dir: Path
) -> None:
    app = TelemetryMiddleware(_items_app(), excluded_urls="healthz,/items/9")
    headers = {"user-agent": "probe/1.0", "traceparent": TRACEPARENT}
    assert (await _get(app, "/items/5?q=1", headers=headers)).status_code == 200
    assert (await _get(app, "/items/9")).status_code == 200  # excluded: no span, still served
    ti.get_telemetry().force_flush()
    (span,) = [s for s in configured.spans() if s.kind == "SERVER"]
    assert span.trace_id == TRACE_ID and span.scope == "telemetry_infra.asgi"
    expected = {
        "http.request.method": "GET",
        "http.route": "/items/{item_id}",
        "http.response.status_code": 200,
        "url.path": "/items/5",
        "url.query": "q=1",
        "url.scheme": "http",
        "server.address": "test",
        "user_agent.original": "probe/1.0",
        "network.protocol.version": "1.1",
    }
    assert {key: span.attributes.get(key) for key in expected} == expected
    assert "client.address" in span.attributes


def test_instrument_app_refuses_a_misspelt_keyword_when_called_not_at_the_first_request() -> None:
    app = FastAPI()
    with pytest.raises(TypeError, match="unexpected keyword argument 'request_id_headr'"):
        instrument_app(app, request_id_headr="X-Correlation-ID")
    assert not [route for route in app.routes if getattr(route, "path", None) == "/metrics"]


def test_instrument_app_passes_on_every_middleware_keyword() -> None:
    import inspect

    from telemetry_infra.integrations.asgi import MiddlewareOptions

    parameters = inspect.signature(TelemetryMiddleware).parameters.values()
    keywords = {parameter.name for parameter in parameters if parameter.kind is parameter.KEYWORD_ONLY}
    assert keywords == MiddlewareOptions.__optional_keys__
