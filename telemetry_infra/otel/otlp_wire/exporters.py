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
import threading
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from telemetry_infra.otel.otlp_wire.invalid_text import register_sanitized_counter
from telemetry_infra.otel.otlp_wire.logs import LogBatch, encode_logs, logs_with_valid_text
from telemetry_infra.otel.otlp_wire.spans import SpanBatch, encode_spans, with_valid_text
from telemetry_infra.otel.otlp_wire.transport import Transport, transport_for

__all__ = ["FastLogExporter", "FastSpanExporter", "ValidTextLogExporter", "ValidTextSpanExporter"]

_log = logging.getLogger(__name__)


class _Wrapper:
    """Around an SDK exporter: encodes and sends; on a surprise from its internals, uses its path for good."""

    _what = ""

    def __init__(self, exporter: Any, transport: Transport) -> None:
        self._exporter = exporter
        self._transport: Transport | None = transport
        #: ``True`` once a send went through the SDK's internals without a surprise: from then
        #: on callers need not keep a batch's SDK objects for the SDK's path.
        self.proven = False
        register_sanitized_counter()

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
            sent = transport.send(payload, count)
        except Exception as error:  # the SDK's internals changed under us
            self._transport = None
            _log.warning(
                "fast OTLP export of %s failed (%r); using the SDK's encoder from now on", self._what, error
            )
            return stock()
        self.proven = True
        return sent

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
        sent = self._send(lambda: encode_spans(spans), len(spans), lambda: self.export_stock(spans))
        return SpanExportResult.SUCCESS if sent else SpanExportResult.FAILURE

    def export_stock(self, spans: Sequence[ReadableSpan]) -> bool:
        """``spans`` the SDK's way; ``True`` once sent."""
        return export_spans_with_valid_text(self._exporter, spans) is SpanExportResult.SUCCESS

    def send_batch(self, batch: SpanBatch, stock: Callable[[], bool]) -> bool:
        """Send spans encoded by the caller; ``stock`` sends them the SDK's way instead."""
        return self._send(batch.encode, batch.count, stock)


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
            return export_logs_with_valid_text(self._exporter, batch) is LogRecordExportResult.SUCCESS

        sent = self._send(lambda: encode_logs(batch), len(batch), stock)
        return LogRecordExportResult.SUCCESS if sent else LogRecordExportResult.FAILURE


class _HeldEncodeErrors(logging.Filter):
    """Holds the SDK encoder's "Failed to encode" ERRORs while :func:`export_with_valid_text` runs.

    When the batch is then sent with valid text they would say something was lost; they
    are logged after all when the SDK sent the batch anyway (it leaves out an attribute
    it cannot encode) or when the batch could not be sent with valid text either.
    """

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        held = getattr(self._local, "held", None)
        if held is None or not str(record.msg).startswith("Failed to encode"):
            return True
        held.append(record)
        return False

    def __enter__(self) -> list[logging.LogRecord]:
        held: list[logging.LogRecord] = []
        self._local.held = held
        return held

    def __exit__(self, *exc: object) -> None:
        self._local.held = None


_held_encode_errors = _HeldEncodeErrors()
for _logger_name in (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",  # a batch of spans
    "opentelemetry.exporter.otlp.proto.http._log_exporter",  # a batch of log records
    "opentelemetry.exporter.otlp.proto.common._internal",  # an attribute
):
    logging.getLogger(_logger_name).addFilter(_held_encode_errors)


def export_with_valid_text(
    export: Callable[[Sequence[Any]], Any],
    batch: Sequence[Any],
    failure: Any,
    with_valid_text: Callable[[Sequence[Any]], tuple[list[Any], int]],
) -> Any:
    """``export(batch)``; should it fail on text that is not valid Unicode, again with it replaced.

    The SDK's encoder refuses such a batch before sending anything (the gRPC exporter
    raises, the HTTP one returns ``failure``), so a batch that holds such text and
    failed was never sent: sending its valid copy sends nothing twice.
    """
    with _held_encode_errors as held:
        try:
            result = export(batch)
        except UnicodeEncodeError:
            result = failure
    valid, replaced = ([], 0) if result is not failure else with_valid_text(batch)
    if replaced:
        return export(valid)
    for record in held:  # not ours to explain: said as the SDK said it
        logging.getLogger(record.name).handle(record)
    return result


class ValidTextSpanExporter(SpanExporter):
    """The SDK's span exporter (``fast_export=False``), made to send a batch holding invalid text.

    Alone, the SDK's encoder loses every span of a batch to one lone surrogate; this
    sends them all, that text replaced by U+FFFD and counted (see :mod:`.invalid_text`).
    """

    def __init__(self, exporter: SpanExporter) -> None:
        self._exporter = exporter
        register_sanitized_counter()

    @property
    def wrapped(self) -> SpanExporter:
        """The SDK exporter it sends through."""
        return self._exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return export_spans_with_valid_text(self._exporter, spans)

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._exporter.force_flush(timeout_millis)


class ValidTextLogExporter(LogRecordExporter):
    """The SDK's log exporter (``fast_export=False``), made to send a batch holding invalid text."""

    def __init__(self, exporter: LogRecordExporter) -> None:
        self._exporter = exporter
        register_sanitized_counter()

    @property
    def wrapped(self) -> LogRecordExporter:
        """The SDK exporter it sends through."""
        return self._exporter

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        return export_logs_with_valid_text(self._exporter, batch)

    def shutdown(self) -> None:
        self._exporter.shutdown()  # type: ignore[no-untyped-call]  # unannotated in the SDK's LogRecordExporter

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._exporter.force_flush(timeout_millis)


def export_spans_with_valid_text(exporter: SpanExporter, spans: Sequence[ReadableSpan]) -> SpanExportResult:
    """:func:`export_with_valid_text` for spans."""
    result: SpanExportResult = export_with_valid_text(
        exporter.export, spans, SpanExportResult.FAILURE, with_valid_text
    )
    return result


def export_logs_with_valid_text(
    exporter: LogRecordExporter, batch: Sequence[ReadableLogRecord]
) -> LogRecordExportResult:
    """:func:`export_with_valid_text` for log records."""
    result: LogRecordExportResult = export_with_valid_text(
        exporter.export, batch, LogRecordExportResult.FAILURE, logs_with_valid_text
    )
    return result
