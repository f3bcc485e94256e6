"""SDK-compatible exporters that encode with :mod:`telemetry_infra.otel.otlp_wire` and send through the SDK.

:meth:`FastSpanExporter.wrap` and :meth:`FastLogExporter.wrap` take an OTLP exporter
that is already built (gRPC or HTTP) and return ours around it, or the exporter
itself when its SDK's internals are not the ones :mod:`.transport` knows (one
warning). Should a send still fail in a way that says those internals changed
(an exception where the SDK returns a result), the exporter warns once, sends the
batch the SDK's way and stays on it: no batch is lost to the fast path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from telemetry_infra.otel.otlp_wire.logs import LogBatch, encode_logs
from telemetry_infra.otel.otlp_wire.spans import encode_spans
from telemetry_infra.otel.otlp_wire.transport import Transport, transport_for

__all__ = ["FastLogExporter", "FastSpanExporter"]

_log = logging.getLogger(__name__)


class _Wrapper:
    """Around an SDK exporter: encodes and sends; on a surprise from its internals, uses its path for good."""

    _what = ""

    def __init__(self, exporter: Any, transport: Transport) -> None:
        self._exporter = exporter
        self._transport: Transport | None = transport

    @property
    def wrapped(self) -> Any:
        """The SDK exporter it sends through."""
        return self._exporter

    @property
    def fast(self) -> bool:
        """``False`` once it fell back to the SDK's path."""
        return self._transport is not None

    def _send(self, encode: Callable[[], bytes], count: int, stock: Callable[[], bool]) -> bool:
        transport = self._transport
        if transport is None:
            return stock()
        try:
            payload = encode()
        except Exception as error:  # what the SDK's encoder refuses as well
            _log.error("Failed to encode %s batch: %s", self._what, error)
            return False
        try:
            return transport.send(payload, count)
        except Exception as error:  # the SDK's internals changed under us
            self._transport = None
            _log.warning(
                "fast OTLP export of %s failed (%r); using the SDK's encoder from now on", self._what, error
            )
            return stock()

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


class FastSpanExporter(_Wrapper, SpanExporter):
    """A span exporter that encodes with :func:`~.spans.encode_spans` and sends through ``exporter``."""

    _what = "spans"

    @classmethod
    def wrap(cls, exporter: SpanExporter) -> SpanExporter:
        """Ours around ``exporter``, or ``exporter`` itself when its SDK is not one we know."""
        transport = transport_for(exporter)
        return exporter if transport is None else cls(exporter, transport)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        def stock() -> bool:
            return self._exporter.export(spans) is SpanExportResult.SUCCESS

        sent = self._send(lambda: encode_spans(spans), len(spans), stock)
        return SpanExportResult.SUCCESS if sent else SpanExportResult.FAILURE


class FastLogExporter(_Wrapper, LogRecordExporter):
    """A log exporter that encodes with :mod:`~.logs` and sends through ``exporter``.

    As a LogRecordExporter it serves the logger provider's batch processor; our
    OTLP log handler uses :meth:`send_batch` with records it encoded itself.
    """

    _what = "logs"

    def __init__(self, exporter: LogRecordExporter, transport: Transport, resource: Resource) -> None:
        super().__init__(exporter, transport)
        self.resource = resource

    @classmethod
    def wrap(cls, exporter: LogRecordExporter, resource: Resource) -> FastLogExporter | None:
        """Ours around ``exporter``, or ``None`` when its SDK is not one we know."""
        transport = transport_for(exporter)
        return None if transport is None else cls(exporter, transport, resource)

    def send_batch(self, batch: LogBatch, stock: Callable[[], bool]) -> bool:
        """Send records encoded by the caller; ``stock`` sends them the SDK's way instead."""
        return self._send(batch.encode, batch.count, stock)

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        def stock() -> bool:
            return self._exporter.export(batch) is LogRecordExportResult.SUCCESS

        sent = self._send(lambda: encode_logs(batch), len(batch), stock)
        return LogRecordExportResult.SUCCESS if sent else LogRecordExportResult.FAILURE
