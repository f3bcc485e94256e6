"""Fixtures for the integration tests: TLS certificates made by the test run, a silent
collector, a fresh interpreter configured by its environment alone, and a cache of the
test's own on the session's redis-server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import telemetry_infra as ti
from telemetry_infra.testing import RedisServer, ServerTLS


@dataclass(frozen=True)
class TLSFiles:
    """A private CA, a server certificate for localhost/127.0.0.1 and a client certificate."""

    ca: str
    server_certificate: str
    server_key: str
    client_certificate: str
    client_key: str

    def server(self, mutual: bool = False) -> ServerTLS:
        return ServerTLS(self.server_certificate, self.server_key, client_ca=self.ca if mutual else None)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _issue(directory: Path, name: str, usage: str) -> None:
    """Key and certificate ``<name>.pem`` signed by the CA in ``directory``."""
    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory
    )
    (directory / f"{name}.ext").write_text(
        f"subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
    )
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=directory,
    )  # fmt: skip


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    if shutil.which("openssl") is None:
        pytest.fail("the TLS tests need the openssl command to make their certificates", pytrace=False)
    directory = tmp_path_factory.mktemp("tls")
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=telemetry-infra test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    _issue(directory, "server", "serverAuth")
    _issue(directory, "client", "clientAuth")
    return TLSFiles(
        ca=str(directory / "ca.pem"),
        server_certificate=str(directory / "server.pem"),
        server_key=str(directory / "server.key"),
        client_certificate=str(directory / "client.pem"),
        client_key=str(directory / "client.key"),
    )


@pytest.fixture
def silent_collector() -> Iterator[str]:
    """An endpoint that accepts TCP connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


RunScript = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def run_script() -> RunScript:
    """``run_script(script, env, *args)``: ``python -c script *args`` with none of our OTEL_* variables."""

    def run(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        return subprocess.run(
            [sys.executable, "-c", script, *args],
            env={**clean, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


@pytest.fixture
def namespace() -> str:
    """A key namespace of this test's own on the shared redis-server."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def cache(redis_server: RedisServer, namespace: str) -> AsyncIterator[ti.CacheManager]:
    """An initialized manager in the test's own namespace; its keys are removed after the test."""
    manager = ti.CacheManager(redis_url=redis_server.url, namespace=namespace)
    await manager.initialize()
    yield manager
    await manager.clear()
    await manager.close()
