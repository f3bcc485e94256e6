"""The OpenTelemetry plumbing behind ``configure()``.

Everything here wires the OpenTelemetry SDK for the rest of the package; none of it is
public API (``telemetry_infra`` re-exports what is):

- :mod:`.setup`: ``configure()`` / ``shutdown()``: resource, providers, exporters, readers
- :mod:`.switchable_providers`: the global tracer/meter providers a later ``configure()`` swaps
- :mod:`.current_context`: the current context and span in one look-up (every record, every cache call)
- :mod:`.light_spans`: spans built when they end, without a live SDK span
- :mod:`.preaggregated`: histograms aggregated on the hot path, exported as OTel points
- :mod:`.prometheus`: the Prometheus exposition (scrape text, HTTP server, ASGI app)
- :mod:`.prometheus_multiprocess`: one ``/metrics`` for several workers
- :mod:`.otlp_tls`, :mod:`.otlp_probe`: OTLP TLS credentials; the endpoint probe of ``check``
- :mod:`.distro`: the ``opentelemetry-instrument`` distro and configurator entry points
- :mod:`.otlp_wire`: our own OTLP encoders over the SDK's transport

Dependencies point one way: ``setup`` imports the others; none of them imports ``setup``.
"""
