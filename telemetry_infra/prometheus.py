"""Documented import path kept: ``from telemetry_infra.prometheus import metrics_asgi_app``.

The exposition lives in :mod:`telemetry_infra.otel.prometheus`.
"""

from telemetry_infra.otel.prometheus import MetricsApp, PrometheusBridge, metrics_asgi_app, serve_metrics

__all__ = ["MetricsApp", "PrometheusBridge", "metrics_asgi_app", "serve_metrics"]
