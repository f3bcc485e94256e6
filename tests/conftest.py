"""Fixtures shared by the whole suite.

Redis is real: the suite starts its own ``redis-server`` on a free loopback port and
never touches a Redis it did not start. Telemetry is checked on the wire through an
in-process OTLP receiver.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import telemetry_infra
from telemetry_infra.testing import OTLPReceiver, RedisServer, RedisServerNotFound


def _start_redis() -> RedisServer:
    try:
        return RedisServer().start()
    except RedisServerNotFound as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _log_dir_outside_the_checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """configure()/setup_logging() without log_dir write to LOG_DIR: keep that out of the repo."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LOG_DIR", str(tmp_path_factory.mktemp("logs")))
        yield


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server shared by the session; tests must not stop it.

    Tests sharing it keep to their own key namespace; none may FLUSHALL it.
    """
    server = _start_redis()
    yield server
    server.close()


@pytest.fixture
def redis_restartable() -> Iterator[RedisServer]:
    """A private redis-server for this test alone: kill(), start(), pause() freely."""
    server = _start_redis()
    yield server
    server.close()


@pytest.fixture
def otlp_receiver() -> Iterator[OTLPReceiver]:
    """An in-process OTLP receiver (gRPC and HTTP) that decodes what arrives."""
    with OTLPReceiver() as receiver:
        yield receiver
        telemetry_infra.shutdown(timeout_s=2.0)  # flush while the receiver still listens


@pytest.fixture(autouse=True)
def _telemetry_shutdown() -> Iterator[None]:
    """Whatever a test configured is shut down after it, so tests never share exporters."""
    yield
    telemetry_infra.shutdown(timeout_s=2.0)
