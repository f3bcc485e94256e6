"""FastAPI (and Starlette): one call adds the middleware and, optionally, ``/metrics``."""

from __future__ import annotations

from typing import Any, Unpack

from telemetry_infra.integrations.asgi import ExceptionRecorder, MiddlewareOptions, TelemetryMiddleware
from telemetry_infra.otel.prometheus import metrics_asgi_app

__all__ = ["instrument_app"]


def instrument_app(
    app: Any, *, metrics_path: str | None = "/metrics", **options: Unpack[MiddlewareOptions]
) -> Any:
    """Add :class:`TelemetryMiddleware` to a FastAPI/Starlette ``app`` and mount ``/metrics``.

    ``options`` are :class:`TelemetryMiddleware`'s keywords (``user_id_getter``,
    ``request_id_header``, ``excluded_urls``, ``excluded_paths``, ``log_excluded``,
    ``access_log``), checked here: a misspelt one is a ``TypeError`` now, not at the first
    request. ``metrics_path=None`` leaves ``/metrics`` out. The metrics path and
    ``excluded_paths`` (exact paths, or prefixes ending in ``*``) get no span and no
    metric, and no access record unless ``log_excluded``. An app that
    ``opentelemetry-instrument`` (FastAPIInstrumentor) already wrapped is unwrapped
    first, and FastAPI's own request telemetry (0.165 and later) is turned off for the app
    and the FastAPI apps mounted in it: one SERVER span and one set of HTTP metrics per
    request. Returns the app.
    """
    if getattr(app, "_is_instrumented_by_opentelemetry", False):
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.uninstrument_app(app)
    if unknown := sorted(options.keys() - MiddlewareOptions.__optional_keys__):
        raise TypeError(f"instrument_app() got an unexpected keyword argument {unknown[0]!r}")
    _turn_off_native_telemetry(app)
    if metrics_path:
        app.add_route(metrics_path, metrics_asgi_app(), include_in_schema=False)
        options["excluded_paths"] = (*options.get("excluded_paths", ()), metrics_path)
    build_inner_stack = app.build_middleware_stack

    def build_middleware_stack() -> Any:
        stack = build_inner_stack()
        # Starlette's ServerErrorMiddleware sends the 500 and only then re-raises: the
        # exception is recorded inside it, while the SERVER span is still current
        if hasattr(stack, "app") and hasattr(stack, "handler"):
            stack.app = ExceptionRecorder(stack.app)
        # outermost, around Starlette's ServerErrorMiddleware, so a 500 it renders still
        # carries the X-Request-ID header and is the status the access record shows
        return TelemetryMiddleware(stack, **options)

    app.build_middleware_stack = build_middleware_stack
    app.middleware_stack = None  # rebuilt on the next request
    return app


def _turn_off_native_telemetry(app: Any) -> None:
    """FastAPI 0.165 and later trace and measure requests themselves once global providers
    exist; the app runs that before its middleware stack, so before ours can mark the scope
    (``FASTAPI_TELEMETRY_SCOPE_KEY``): it is turned off in the app's own configuration."""
    config = getattr(app, "_telemetry", None)
    if isinstance(config, dict):
        config.update(tracing=False, metrics=False, logs=False)
