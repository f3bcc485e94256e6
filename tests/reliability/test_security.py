"""Security: forged pickle payloads, redaction in every output, namespace-bound clear(),
loopback-only listening sockets."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import telemetry_infra as ti
from telemetry_infra.testing import free_port

SECRETS = {"password": "hunter2-pw", "api_key": "sk-live-123", "Authorization": "Bearer tok-abc"}


class CreatesFile:
    """Unpickling it creates a file: proof that a payload was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def forged_payloads(body: bytes) -> dict[str, bytes]:
    header = bytes((0xC1, 0x01))  # "pickle" as the codec's header announces it
    return {
        "no signature": header + body,
        "zero signature": header + bytes(32) + body,
        "signature of body only": header + hashlib.sha256(body).digest() + body,
        "raw pickle": body,
    }


async def test_forged_pickle_payloads_are_never_unpickled(redis_server, tmp_path, figures):
    marker = tmp_path / "pwned"
    body = pickle.dumps(CreatesFile(str(marker)))
    raw = redis_server.client()
    async with ti.CacheManager(redis_url=redis_server.url, namespace="sec-pickle", serialization="pickle",
                               signing_key="the-real-key") as cache:  # fmt: skip
        async with ti.CacheManager(redis_url=redis_server.url, namespace="sec-pickle", serialization="pickle",
                                   signing_key="another-key") as other:  # fmt: skip
            await other.set("other-key", CreatesFile(str(marker)))  # signed, but not with our key
        cases = forged_payloads(body)
        for name, payload in cases.items():
            raw.set(f"sec-pickle:{name}", payload)
        for name in [*cases, "other-key"]:
            assert await cache.get(name, "miss") == "miss", name
        assert cache.get_stats()["errors"] == len(cases) + 1
    assert not marker.exists()
    figures.record("security", "forged_pickles", payloads=len(cases) + 1, unpickled=0)


def test_redaction_holds_in_console_files_and_otlp(tmp_path, otlp_receiver, figures):
    ti.configure(service_name="redaction", otlp_endpoint=otlp_receiver.grpc_endpoint, log_dir=tmp_path,
                 environment="production", setup_logs=True, console_logs=False)  # fmt: skip
    console = io.StringIO()
    from telemetry_infra.logs.setup import setup_logging

    setup_logging(log_dir=tmp_path, environment="production", stream=console)
    log = ti.get_logger("api.secrets")
    log.info("login", extra={**SECRETS, "nested": {"db": {"password": SECRETS["password"]}},
                             "headers": [{"Authorization": SECRETS["Authorization"]}]})  # fmt: skip
    ti.get_telemetry().force_flush(5.0)
    received = otlp_receiver.wait_for_logs(lambda r: r.body == "login")
    outputs = {"console": console.getvalue(), "otlp": repr(received)}
    outputs.update({f.name: f.read_text() for f in tmp_path.glob("*.log")})
    leaks = [
        (where, secret) for where, text in outputs.items() for secret in SECRETS.values() if secret in text
    ]
    figures.record("security", "redaction", outputs=sorted(outputs), secrets=len(SECRETS), leaks=len(leaks))
    assert "[REDACTED]" in outputs["console"] and "[REDACTED]" in outputs["app.log"]
    assert leaks == []


glob_names = st.text(alphabet="ab*?[]^\\-:", min_size=1, max_size=6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(namespace=glob_names, pattern=st.one_of(st.none(), glob_names))
def test_clear_never_deletes_outside_its_namespace(redis_server, figures, namespace, pattern):
    import asyncio

    neighbours = [f"{namespace}x:k", f"{namespace}:k".replace(":", "", 1) + ":k", "ab:k", "a:k", "other:k",
                  f"{namespace[:-1]}:k", "k"]  # fmt: skip
    raw = redis_server.client()
    prefix = f"sec-clear-{os.getpid()}:"
    outside = {prefix + key for key in neighbours if not (prefix + key).startswith(f"{prefix}{namespace}:")}

    async def scenario() -> None:
        async with ti.CacheManager(redis_url=redis_server.url, namespace=prefix + namespace) as cache:
            for key in outside:
                raw.set(key, "keep")
            await cache.set("inside", 1)
            await cache.clear(pattern)
            assert all(raw.get(key) == b"keep" for key in outside)
            if pattern is None:
                assert await cache.get("inside") is None
            await cache.clear()
        raw.delete(*outside) if outside else None

    asyncio.run(scenario())
    figures.record("security", "clear_in_namespace", examples=_bump("clear"))


_tried: dict[str, int] = {}


def _bump(name: str) -> int:
    _tried[name] = _tried.get(name, 0) + 1
    return _tried[name]


def listening_addresses() -> list[str]:
    """Addresses this process listens on (from /proc/net/tcp{,6} and our open sockets)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    addresses = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        if not os.path.exists(table):
            continue
        with open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                    continue
                host_hex = fields[1].split(":")[0]
                raw = bytes.fromhex(host_hex)
                words = b"".join(struct.pack("<I", w) for w in struct.unpack(f">{len(raw) // 4}I", raw))
                addresses.append(socket.inet_ntop(family, words))
    return addresses


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc")
def test_nothing_listens_beyond_loopback_unless_configured(tmp_path, figures):
    port = free_port()
    telemetry = ti.configure(service_name="binds", prometheus_port=port, log_dir=tmp_path, console_logs=False)
    assert telemetry.metrics_url == f"http://127.0.0.1:{port}/metrics"
    addresses = listening_addresses()
    figures.record("security", "listening_sockets", addresses=sorted(set(addresses)))
    assert addresses, "the metrics server should be listening"
    assert all(a.startswith("127.") or a == "::1" for a in addresses), addresses
