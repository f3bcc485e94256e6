"""FastAPI (and Starlette): one call adds the middleware and, optionally, ``/metrics``."""

from __future__ import annotations

from typing import Any

from telemetry_infra.integrations.asgi import TelemetryMiddleware, UserIdGetter
from telemetry_infra.prometheus import metrics_asgi_app

__all__ = ["instrument_app"]


def instrument_app(
    app: Any,
    *,
    user_id_getter: UserIdGetter | None = None,
    request_id_header: str = "X-Request-ID",
    metrics_path: str | None = "/metrics",
    excluded_urls: str | None = None,
) -> Any:
    """Add :class:`TelemetryMiddleware` to a FastAPI/Starlette ``app`` and mount ``/metrics``.

    ``metrics_path=None`` leaves ``/metrics`` out. By default ``/metrics`` gets no span.
    An app that ``opentelemetry-instrument`` (FastAPIInstrumentor) already wrapped is
    unwrapped first: one SERVER span and one set of HTTP metrics per request. Returns the app.
    """
    if getattr(app, "_is_instrumented_by_opentelemetry", False):
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.uninstrument_app(app)
    if metrics_path:
        app.add_route(metrics_path, metrics_asgi_app(), include_in_schema=False)
        excluded_urls = ",".join(filter(None, (excluded_urls, metrics_path)))
    build_inner_stack = app.build_middleware_stack

    def build_middleware_stack() -> Any:
        # outermost, around Starlette's ServerErrorMiddleware, so a 500 it renders still
        # carries the X-Request-ID header and is the status the access record shows
        return TelemetryMiddleware(
            build_inner_stack(),
            user_id_getter=user_id_getter,
            request_id_header=request_id_header,
            excluded_urls=excluded_urls,
        )

    app.build_middleware_stack = build_middleware_stack
    app.middleware_stack = None  # rebuilt on the next request
    return app
