"""OTLP over TLS and mutual TLS, on gRPC and HTTP, against a receiver with test-made certificates."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import certifi
import pytest

from telemetry_infra.testing import OTLPReceiver

EMIT = """
import logging, sys
import telemetry_infra as ti
from opentelemetry import trace

telemetry = ti.configure("tls-app", log_dir=sys.argv[1], console_logs=False)
with trace.get_tracer("app").start_as_current_span("over-tls"):
    logging.getLogger("app").warning("sent over tls")
print("flushed", telemetry.force_flush(timeout_s=8))
ti.shutdown(timeout_s=2)
"""

PROTOCOLS = ["grpc", "http/protobuf"]


@pytest.fixture
def run_app(run_script: Any) -> Callable[..., subprocess.CompletedProcess]:
    def run(env: dict[str, str], log_dir: Path) -> subprocess.CompletedProcess:
        return run_script(EMIT, env, str(log_dir))

    return run


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_https_endpoint_with_a_private_ca(run_app: Any, protocol: str, tls_files, tmp_path: Path) -> None:
    with OTLPReceiver(host="localhost", tls=tls_files.server()) as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint(protocol),
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_EXPORTER_OTLP_CERTIFICATE": tls_files.ca,
            "OTEL_METRICS_EXPORTER": "none",
            # set in many images; requests would let it override the configured CA
            "REQUESTS_CA_BUNDLE": certifi.where(),
        }
        result = run_app(env, tmp_path)
        assert result.returncode == 0, result.stderr
        (span,) = receiver.wait_for_spans(lambda s: s.name == "over-tls")
        assert receiver.wait_for_logs(lambda r: r.body == "sent over tls")
        assert span.resource["service.name"] == "tls-app"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_mutual_tls_with_per_signal_client_certificate(
    run_app: Any, protocol: str, tls_files, tmp_path: Path
) -> None:
    with OTLPReceiver(host="localhost", tls=tls_files.server(mutual=True)) as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint(protocol),
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_EXPORTER_OTLP_CERTIFICATE": tls_files.ca,
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY": tls_files.client_key,
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE": tls_files.client_certificate,
            "OTEL_EXPORTER_OTLP_TIMEOUT": "1000",
            "OTEL_METRICS_EXPORTER": "none",
        }
        result = run_app(env, tmp_path)
        assert result.returncode == 0, result.stderr
        assert receiver.wait_for_spans(lambda s: s.name == "over-tls")
        # logs had no client certificate: the receiver refused them
        assert not receiver.logs()


def test_configure_arguments_for_tls(tls_files, tmp_path: Path) -> None:
    from opentelemetry import trace

    import telemetry_infra as ti

    with OTLPReceiver(host="localhost", tls=tls_files.server(mutual=True)) as receiver:
        telemetry = ti.configure(
            "tls-args",
            otlp_endpoint=receiver.grpc_endpoint,
            otlp_certificate=tls_files.ca,
            otlp_client_key=tls_files.client_key,
            otlp_client_certificate=tls_files.client_certificate,
            log_dir=tmp_path,
            setup_logs=False,
        )
        with trace.get_tracer("tests").start_as_current_span("argued"):
            pass
        telemetry.force_flush(timeout_s=5)
        assert receiver.wait_for_spans(lambda s: s.name == "argued")
        ti.shutdown(timeout_s=2)
