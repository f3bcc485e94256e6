"""Integrations with web frameworks. Import the one you need:

* :mod:`telemetry_infra.integrations.asgi` — ``TelemetryMiddleware`` for any ASGI app;
* :mod:`telemetry_infra.integrations.fastapi` — ``instrument_app(app)``.

They need the ``fastapi`` extra (``pip install "telemetry-infra[fastapi]"``).
"""
