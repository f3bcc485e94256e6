"""Our own OTLP encoders, and the transport that sends their bytes through the SDK's exporters.

``configure(fast_export=True)`` (the default) exports spans and log records through
these: the bytes are the ones the SDK's encoders would produce (property-tested),
at a fraction of the cost, and every export goes through the SDK exporter that
``configure()`` built (its endpoint, headers, TLS, timeout, compression, retries).

- :mod:`.protobuf`: wire primitives, AnyValue/KeyValue, attributes
- :mod:`.grouping`: resource and scope nesting, encoded blocks reused
- :mod:`.spans`: ExportTraceServiceRequest from ReadableSpans
- :mod:`.logs`: ExportLogsServiceRequest from plain values, no SDK record objects
- :mod:`.transport`: sends encoded requests through an SDK OTLP exporter (gRPC or HTTP)
- :mod:`.exporters`: the span exporter and log sender built on them
"""

from telemetry_infra.otel.otlp_wire.exporters import FastLogExporter, FastSpanExporter
from telemetry_infra.otel.otlp_wire.logs import LogBatch, encode_log_record, encode_logs
from telemetry_infra.otel.otlp_wire.spans import encode_spans

__all__ = [
    "FastLogExporter",
    "FastSpanExporter",
    "LogBatch",
    "encode_log_record",
    "encode_logs",
    "encode_spans",
]
