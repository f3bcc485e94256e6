"""TLS material for OTLP clients, from the resolved settings: one place for exporters and probes."""

from __future__ import annotations

from typing import Any

from telemetry_infra.settings import OTLPExport

__all__ = ["grpc_credentials", "requests_session"]


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as file:
        return file.read()


def grpc_credentials(export: OTLPExport) -> Any:
    """Credentials for an ``https://`` endpoint: the configured CA (else the system's), client cert."""
    import grpc

    return grpc.ssl_channel_credentials(
        root_certificates=_read(export.certificate),
        private_key=_read(export.client_key),
        certificate_chain=_read(export.client_certificate),
    )


def requests_session(export: OTLPExport) -> Any:
    """A requests session that verifies with the configured CA even when REQUESTS_CA_BUNDLE is set.

    requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's own ``verify``
    (psf/requests#3829); many base images set them, and the configured CA would be ignored.
    """
    import requests

    class PinnedCASession(requests.Session):
        def merge_environment_settings(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            settings: dict[str, Any] = super().merge_environment_settings(*args, **kwargs)
            if export.certificate:
                settings["verify"] = export.certificate
            return settings

    session = PinnedCASession()
    if export.certificate:
        session.verify = export.certificate
    if export.client_certificate and export.client_key:
        session.cert = (export.client_certificate, export.client_key)
    return session
