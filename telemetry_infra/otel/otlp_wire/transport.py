"""Sending already-encoded OTLP requests through an SDK exporter that ``configure()`` built.

Nothing of OTLP's transport is implemented twice: the exporter's endpoint, headers,
TLS credentials, timeout, compression, retries with backoff and its own metrics
all apply, because the bytes go through the exporter's own code.

- gRPC (``OTLPExporterMixin``): its ``_export`` retry loop runs unchanged. The
  exporter's stub is swapped for one of the same service method whose request
  serializer lets bytes through, and its ``_translate_data``/``_count_data`` hooks
  pass an :class:`EncodedRequest` through; anything else still takes the SDK's
  path, so the exporter keeps working for SDK batches too.
- HTTP: the encoded bytes go to the exporter's ``_client.export``, the method its
  own ``export`` calls with what ``encode_*(...).SerializeToString()`` returns (the
  same session, headers, compression, retries), inside its metrics and size check.

:func:`transport_for` checks those internals first; an SDK whose exporter does not
have them gets ``None`` and a warning, and ``configure()`` uses the SDK's own path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["EncodedRequest", "GrpcTransport", "HttpTransport", "Transport", "transport_for"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EncodedRequest:
    """A serialized Export*ServiceRequest and how many spans or records it holds."""

    payload: bytes
    count: int


class Transport(Protocol):
    def send(self, payload: bytes, count: int) -> bool:
        """Export ``payload`` (``count`` items) with the exporter's retries; ``True`` once accepted."""
        ...

    def shutdown(self) -> None: ...


def _pass_bytes(request: Any) -> bytes:
    return request if request.__class__ is bytes else request.SerializeToString()


class _MethodRecorder:
    """Stands in for a channel while a generated stub declares its method."""

    def __init__(self) -> None:
        self.declared: list[tuple[str, dict[str, Any]]] = []

    def unary_unary(self, method: str, **options: Any) -> None:
        self.declared.append((method, options))


def _bytes_stub_class(stub_class: Any) -> Any:
    """A stub class like ``stub_class`` whose ``Export`` also takes pre-serialized bytes."""
    recorder = _MethodRecorder()
    stub_class(recorder)
    if len(recorder.declared) != 1 or "request_serializer" not in recorder.declared[0][1]:
        raise TypeError(f"{stub_class!r} does not declare one unary method")
    method, options = recorder.declared[0]
    options = {**options, "request_serializer": _pass_bytes}

    class BytesStub:
        __slots__ = ("Export",)

        def __init__(self, channel: Any) -> None:
            self.Export = channel.unary_unary(method, **options)

    BytesStub.__name__ = f"Bytes{getattr(stub_class, '__name__', 'Stub')}"
    return BytesStub


class GrpcTransport:
    """Sends encoded requests through an ``OTLPExporterMixin`` exporter's retry loop."""

    REQUIRED = ("_export", "_translate_data", "_count_data", "_stub", "_channel", "_client", "_result")

    def __init__(self, exporter: Any) -> None:
        missing = [name for name in self.REQUIRED if not hasattr(exporter, name)]
        if missing:
            raise TypeError(f"{type(exporter).__name__} lacks {', '.join(missing)}")
        stub_class = _bytes_stub_class(exporter._stub)
        translate, count = exporter._translate_data, exporter._count_data
        success = exporter._result.SUCCESS
        self._exporter = exporter
        self._success = success

        def translate_data(data: Any) -> Any:
            return data.payload if data.__class__ is EncodedRequest else translate(data)

        def count_data(data: Any) -> int:
            return data.count if data.__class__ is EncodedRequest else count(data)

        exporter._translate_data = translate_data
        exporter._count_data = count_data
        exporter._stub = stub_class  # the mixin builds its client from it again when it reconnects
        exporter._client = stub_class(exporter._channel)

    def send(self, payload: bytes, count: int) -> bool:
        return self._exporter._export(EncodedRequest(payload, count)) is self._success

    def shutdown(self) -> None:
        self._exporter.shutdown()


class HttpTransport:
    """Sends encoded requests through an OTLP/HTTP exporter's client (session, retries, compression)."""

    REQUIRED = ("_client", "_metrics", "_shutdown")

    def __init__(self, exporter: Any) -> None:
        missing = [name for name in self.REQUIRED if not hasattr(exporter, name)]
        if missing or not callable(getattr(exporter._client, "export", None)):
            raise TypeError(f"{type(exporter).__name__} lacks {', '.join(missing) or '_client.export'}")
        self._exporter = exporter
        self._max_request_size = getattr(exporter, "_max_request_size", 0) or 0

    def send(self, payload: bytes, count: int) -> bool:
        exporter = self._exporter
        if exporter._shutdown:
            _log.warning("Exporter already shutdown, ignoring batch")
            return False
        with exporter._metrics.export_operation(count) as result:
            if 0 < self._max_request_size < len(payload):
                _log.warning(
                    "Dropping a batch of %d: serialized size %d bytes exceeds max_request_size %d bytes.",
                    count,
                    len(payload),
                    self._max_request_size,
                )
                result.error = ValueError(f"request of {len(payload)} bytes exceeds max_request_size")
                return False
            outcome = exporter._client.export(payload)
            if not outcome.success:
                result.error = outcome.error
                if outcome.status_code is not None:
                    result.error_attrs = {"http.response.status_code": outcome.status_code}
                return False
        return True

    def shutdown(self) -> None:
        self._exporter.shutdown()


_warned = False


def _is_grpc_exporter(exporter: Any) -> bool:
    try:
        from opentelemetry.exporter.otlp.proto.grpc.exporter import OTLPExporterMixin
    except ImportError:  # pragma: no cover - the gRPC exporter is a dependency
        return False
    return isinstance(exporter, OTLPExporterMixin)


def _transport_class(exporter: Any) -> type[GrpcTransport] | type[HttpTransport] | None:
    if _is_grpc_exporter(exporter):
        return GrpcTransport
    try:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:  # pragma: no cover - the HTTP exporter is a dependency
        return None
    return HttpTransport if isinstance(exporter, (OTLPSpanExporter, OTLPLogExporter)) else None


def _warn_once(reason: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        _log.warning("fast OTLP export unavailable (%s); exporting with the SDK's own encoders", reason)


def transport_for(exporter: Any) -> Transport | None:
    """A transport through ``exporter``, or ``None`` (with one warning) when its SDK is not one we know."""
    kind = _transport_class(exporter)
    if kind is None:
        _warn_once(f"{type(exporter).__name__} is not an OTLP exporter we know")
        return None
    try:
        return kind(exporter)
    except Exception as error:  # any surprise in the SDK's internals: its own path
        _warn_once(f"this opentelemetry-exporter-otlp's internals differ: {error}")
        return None
