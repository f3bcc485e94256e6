"""Prove that an endpoint speaks OTLP: send it an empty export request, require an OTLP answer.

A TCP connect proves nothing (a Redis port accepts one, and so does a plaintext port
behind an ``https://`` URL); an empty ``Export`` is harmless to a collector and only an
OTLP receiver answers it with an ``Export*ServiceResponse``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from telemetry_infra.otel.otlp_tls import grpc_credentials, requests_session
from telemetry_infra.settings import OTLPExport

__all__ = ["probe", "probe_all"]

_SERVICES = {
    "traces": ("trace", "TraceService", "ExportTraceService"),
    "metrics": ("metrics", "MetricsService", "ExportMetricsService"),
    "logs": ("logs", "LogsService", "ExportLogsService"),
}


def _messages(signal: str) -> tuple[str, Any, Any]:
    """(gRPC method path, request class, response class) for a signal's Export call."""
    import importlib

    package, service, prefix = _SERVICES[signal]
    module = importlib.import_module(f"opentelemetry.proto.collector.{package}.v1.{package}_service_pb2")
    method = f"/opentelemetry.proto.collector.{package}.v1.{service}/Export"
    return method, getattr(module, f"{prefix}Request"), getattr(module, f"{prefix}Response")


def probe_all(exports: Mapping[str, OTLPExport], timeout_s: float) -> dict[str, str | None]:
    """:func:`probe` every signal's endpoint at once (a silent endpoint costs one timeout, not three)."""
    from concurrent.futures import ThreadPoolExecutor

    if not exports:
        return {}
    with ThreadPoolExecutor(max_workers=len(exports), thread_name_prefix="otlp-probe") as pool:
        futures = {
            signal: pool.submit(probe, export, min(timeout_s, export.timeout_s))
            for signal, export in exports.items()
        }
        return {signal: future.result() for signal, future in futures.items()}


def probe(export: OTLPExport, timeout_s: float) -> str | None:
    """``None`` when ``export``'s endpoint answers an empty export as OTLP; else what went wrong."""
    if export.protocol == "grpc":
        return _probe_grpc(export, timeout_s)
    return _probe_http(export, timeout_s)


def _probe_grpc(export: OTLPExport, timeout_s: float) -> str | None:
    import grpc

    method, request, response = _messages(export.signal)
    target = urlsplit(export.endpoint).netloc
    if export.tls:
        channel = grpc.secure_channel(target, grpc_credentials(export))
    else:
        channel = grpc.insecure_channel(target)
    try:
        call = channel.unary_unary(
            method, request_serializer=request.SerializeToString, response_deserializer=response.FromString
        )
        call(request(), timeout=timeout_s, metadata=[(k.lower(), v) for k, v in export.headers.items()])
        return None
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        return f"gRPC {code.name if code else 'error'}: {details}"
    finally:
        channel.close()


def _probe_http(export: OTLPExport, timeout_s: float) -> str | None:
    import requests

    _, request, response = _messages(export.signal)
    session = requests_session(export)
    headers = {**export.headers, "Content-Type": "application/x-protobuf"}
    try:
        answer = session.post(
            export.endpoint,
            data=request().SerializeToString(),
            headers=headers,
            timeout=timeout_s,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        session.close()
    content_type = answer.headers.get("Content-Type", "")
    if answer.status_code != 200:
        return f"HTTP {answer.status_code} {answer.reason} (an OTLP receiver answers 200)"
    if "protobuf" not in content_type:
        return f"HTTP 200 but not an OTLP response (Content-Type: {content_type or 'none'})"
    try:
        response.FromString(answer.content)
    except Exception as exc:  # protobuf's DecodeError
        return f"HTTP 200 but the body is not an OTLP export response: {exc}"
    return None
