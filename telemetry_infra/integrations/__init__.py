"""Integrations with web frameworks. Import the one you need:

* :mod:`telemetry_infra.integrations.asgi` — ``TelemetryMiddleware`` for any ASGI app;
* :mod:`telemetry_infra.integrations.fastapi` — ``instrument_app(app)``;
* :mod:`telemetry_infra.integrations.wsgi` — ``instrument_wsgi(app)`` for Flask, Django and
  any WSGI app (no extra needed).

What they share (request id, user id hook, exclusions, route names, HTTP metrics, access
record) is :mod:`telemetry_infra.integrations.http_server`. The ASGI ones need the
``fastapi`` extra (``pip install "telemetry-infra[fastapi]"``).
"""
