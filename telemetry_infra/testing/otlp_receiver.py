"""An in-process OTLP endpoint (gRPC and HTTP/protobuf) that decodes what arrives into plain Python values."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    status_code: str
    status_message: str
    events: list[tuple[str, dict[str, Any]]]
    transport: str


@dataclass(frozen=True)
class ReceivedMetricPoint:
    name: str
    kind: str  # "sum" | "gauge" | "histogram"
    unit: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    value: float | None = None
    is_monotonic: bool = False
    count: int = 0
    sum: float = 0.0
    bucket_counts: list[int] = field(default_factory=list)
    explicit_bounds: list[float] = field(default_factory=list)
    exemplars: list[dict[str, Any]] = field(default_factory=list)
    transport: str = ""


@dataclass(frozen=True)
class ReceivedLogRecord:
    body: Any
    severity_text: str
    severity_number: int
    trace_id: str
    span_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    transport: str


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _attributes(key_values: Any) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in key_values}


def _hex(raw: bytes) -> str:
    return raw.hex() if raw else ""


_SPAN_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_STATUS_CODES = {0: "UNSET", 1: "OK", 2: "ERROR"}


def _decode_spans(request: Any, transport: str) -> list[ReceivedSpan]:
    spans = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        name=span.name,
                        trace_id=_hex(span.trace_id),
                        span_id=_hex(span.span_id),
                        parent_span_id=_hex(span.parent_span_id),
                        kind=_SPAN_KINDS.get(span.kind, str(span.kind)),
                        attributes=_attributes(span.attributes),
                        resource=resource,
                        scope=scope_spans.scope.name,
                        status_code=_STATUS_CODES.get(span.status.code, str(span.status.code)),
                        status_message=span.status.message,
                        events=[(event.name, _attributes(event.attributes)) for event in span.events],
                        transport=transport,
                    )
                )
    return spans


def _exemplars(point: Any) -> list[dict[str, Any]]:
    return [
        {
            "trace_id": _hex(exemplar.trace_id),
            "span_id": _hex(exemplar.span_id),
            "value": exemplar.as_double if exemplar.HasField("as_double") else exemplar.as_int,
        }
        for exemplar in point.exemplars
    ]


def _number(point: Any) -> float:
    return point.as_double if point.HasField("as_double") else float(point.as_int)


def _decode_metric(
    metric: Any, resource: dict[str, Any], scope: str, transport: str
) -> list[ReceivedMetricPoint]:
    kind = metric.WhichOneof("data")
    common = {
        "name": metric.name,
        "unit": metric.unit,
        "resource": resource,
        "scope": scope,
        "transport": transport,
    }
    if kind in ("sum", "gauge"):
        data = getattr(metric, kind)
        monotonic = kind == "sum" and data.is_monotonic
        return [
            ReceivedMetricPoint(
                kind=kind,
                attributes=_attributes(point.attributes),
                value=_number(point),
                is_monotonic=monotonic,
                exemplars=_exemplars(point),
                **common,
            )
            for point in data.data_points
        ]
    if kind == "histogram":
        return [
            ReceivedMetricPoint(
                kind=kind,
                attributes=_attributes(point.attributes),
                count=point.count,
                sum=point.sum,
                bucket_counts=list(point.bucket_counts),
                explicit_bounds=list(point.explicit_bounds),
                exemplars=_exemplars(point),
                **common,
            )
            for point in metric.histogram.data_points
        ]
    return []


def _decode_metrics(request: Any, transport: str) -> list[ReceivedMetricPoint]:
    points = []
    for resource_metrics in request.resource_metrics:
        resource = _attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                points.extend(_decode_metric(metric, resource, scope_metrics.scope.name, transport))
    return points


def _decode_logs(request: Any, transport: str) -> list[ReceivedLogRecord]:
    records = []
    for resource_logs in request.resource_logs:
        resource = _attributes(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                records.append(
                    ReceivedLogRecord(
                        body=_any_value(record.body),
                        severity_text=record.severity_text,
                        severity_number=record.severity_number,
                        trace_id=_hex(record.trace_id),
                        span_id=_hex(record.span_id),
                        attributes=_attributes(record.attributes),
                        resource=resource,
                        scope=scope_logs.scope.name,
                        transport=transport,
                    )
                )
    return records


T = TypeVar("T")


@dataclass(frozen=True)
class ServerTLS:
    """PEM files for a TLS receiver: its certificate and key, and the CA of accepted clients.

    With ``client_ca`` set, clients must present a certificate it signed (mutual TLS).
    """

    certificate: str
    private_key: str
    client_ca: str | None = None

    def read(self) -> tuple[bytes, bytes, bytes | None]:
        def read(path: str) -> bytes:
            with open(path, "rb") as file:
                return file.read()

        return (
            read(self.certificate),
            read(self.private_key),
            read(self.client_ca) if self.client_ca else None,
        )

    def ssl_context(self) -> Any:
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certificate, self.private_key)
        if self.client_ca:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.client_ca)
        return context


class _QuietHTTPServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that fails the TLS handshake or hangs up is the client's problem


class OTLPReceiver:
    """An in-process OTLP endpoint: gRPC and HTTP/protobuf, traces, metrics and logs.

    Point an exporter at :attr:`grpc_endpoint` or :attr:`http_endpoint`; read what
    arrived with :meth:`spans`, :meth:`metric_points`, :meth:`logs`, or wait for it
    with the ``wait_for_*`` methods. Set :attr:`unavailable` to answer every export
    with gRPC ``UNAVAILABLE`` / HTTP 503 (a collector in trouble). With ``tls`` both
    ports speak TLS only (mutual TLS when it names a client CA) and the endpoints are
    ``https://``; use a ``host`` the certificate names.
    """

    def __init__(self, host: str = "127.0.0.1", tls: ServerTLS | None = None) -> None:
        self.host = host
        self.tls = tls
        self.unavailable = False
        self._lock = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self._points: list[ReceivedMetricPoint] = []
        self._logs: list[ReceivedLogRecord] = []
        self.requests = 0
        self._grpc_server: Any = None
        self._http_server: ThreadingHTTPServer | None = None
        self.grpc_port = 0
        self.http_port = 0

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def grpc_endpoint(self) -> str:
        return f"{self.scheme}://{self.host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"{self.scheme}://{self.host}:{self.http_port}"

    def endpoint(self, protocol: str) -> str:
        """The endpoint for an OTLP protocol name: ``grpc`` or ``http/protobuf``."""
        return self.grpc_endpoint if protocol == "grpc" else self.http_endpoint

    # -- storing -------------------------------------------------------------

    def _store(self, kind: str, request: Any, transport: str) -> None:
        if kind == "traces":
            self._add(self._spans, _decode_spans(request, transport))
        elif kind == "metrics":
            self._add(self._points, _decode_metrics(request, transport))
        else:
            self._add(self._logs, _decode_logs(request, transport))

    def _add(self, target: list[T], decoded: list[T]) -> None:
        """One request's items in, and wake whoever waits for them."""
        with self._lock:
            self.requests += 1
            target.extend(decoded)
            self._lock.notify_all()

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def metric_points(self) -> list[ReceivedMetricPoint]:
        with self._lock:
            return list(self._points)

    def logs(self) -> list[ReceivedLogRecord]:
        with self._lock:
            return list(self._logs)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
            self._points.clear()
            self._logs.clear()
            self.requests = 0

    def _wait(
        self,
        source: Callable[[], list[T]],
        predicate: Callable[[T], bool] | None,
        count: int,
        timeout: float,
        what: str,
    ) -> list[T]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = [item for item in source() if predicate is None or predicate(item)]
                remaining = deadline - time.monotonic()
                if len(found) >= count or remaining <= 0:
                    break
                self._lock.wait(min(remaining, 0.05))
        if len(found) < count:
            raise AssertionError(f"expected {count} matching {what} within {timeout}s, got {len(found)}")
        return found

    def wait_for_spans(
        self, predicate: Callable[[ReceivedSpan], bool] | None = None, count: int = 1, timeout: float = 10.0
    ) -> list[ReceivedSpan]:
        """Wait until at least ``count`` spans match; return every match."""
        return self._wait(lambda: self._spans, predicate, count, timeout, "spans")

    def wait_for_metric_points(
        self,
        predicate: Callable[[ReceivedMetricPoint], bool] | None = None,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[ReceivedMetricPoint]:
        return self._wait(lambda: self._points, predicate, count, timeout, "metric points")

    def wait_for_logs(
        self,
        predicate: Callable[[ReceivedLogRecord], bool] | None = None,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[ReceivedLogRecord]:
        return self._wait(lambda: self._logs, predicate, count, timeout, "log records")

    # -- serving -------------------------------------------------------------

    def start(self) -> OTLPReceiver:
        self._start_grpc()
        self._start_http()
        return self

    def _start_grpc(self) -> None:
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        receiver = self

        def handler(kind: str, response: Any) -> Callable[[Any, Any, Any], Any]:
            def export(_servicer: Any, request: Any, context: Any) -> Any:
                if receiver.unavailable:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "receiver set unavailable")
                receiver._store(kind, request, "grpc")
                return response()

            return export

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        servicers = (
            (trace_service_pb2_grpc, "TraceService", "traces", trace_service_pb2.ExportTraceServiceResponse),
            (metrics_service_pb2_grpc, "MetricsService", "metrics",
             metrics_service_pb2.ExportMetricsServiceResponse),
            (logs_service_pb2_grpc, "LogsService", "logs", logs_service_pb2.ExportLogsServiceResponse),
        )  # fmt: skip
        for module, service, kind, response in servicers:
            base = getattr(module, f"{service}Servicer")
            servicer = type(f"_{service}", (base,), {"Export": handler(kind, response)})()
            getattr(module, f"add_{service}Servicer_to_server")(servicer, server)
        if self.tls is None:
            self.grpc_port = server.add_insecure_port(f"{self.host}:0")
        else:
            certificate, key, client_ca = self.tls.read()
            credentials = grpc.ssl_server_credentials(
                [(key, certificate)], root_certificates=client_ca, require_client_auth=client_ca is not None
            )
            self.grpc_port = server.add_secure_port(f"{self.host}:0", credentials)
        server.start()
        self._grpc_server = server

    def _start_http(self) -> None:
        import gzip

        from google.protobuf.message import Message
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
            ExportLogsServiceRequest,
            ExportLogsServiceResponse,
        )
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceRequest,
            ExportMetricsServiceResponse,
        )
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        routes: dict[str, tuple[str, type[Message], type[Message]]] = {
            "/v1/traces": ("traces", ExportTraceServiceRequest, ExportTraceServiceResponse),
            "/v1/metrics": ("metrics", ExportMetricsServiceRequest, ExportMetricsServiceResponse),
            "/v1/logs": ("logs", ExportLogsServiceRequest, ExportLogsServiceResponse),
        }
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                route = routes.get(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if route is None:
                    self._answer(404, b"")
                    return
                if receiver.unavailable:
                    self._answer(503, b"")
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                kind, request_type, response_type = route
                receiver._store(kind, request_type.FromString(body), "http")
                self._answer(200, response_type().SerializeToString())

            def _answer(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        server = _QuietHTTPServer((self.host, 0), Handler)
        server.daemon_threads = True
        if self.tls is not None:  # handshakes happen in the handler threads, on first read
            server.socket = self.tls.ssl_context().wrap_socket(server.socket, server_side=True)
        self.http_port = server.server_address[1]
        threading.Thread(target=server.serve_forever, name="otlp-http-receiver", daemon=True).start()
        self._http_server = server

    def stop(self) -> None:
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None)
            self._grpc_server = None
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
