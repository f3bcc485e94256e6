"""`telemetry-infra check` and `demo` against real Sentinel and Cluster topologies: what they say is true.

Every line either command prints is short and names the host:port and the cause.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from telemetry_infra.testing import RedisCluster, RedisSentinel, free_port

MAX_LINE = 160


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != "REDIS_URL"}
    return subprocess.run(
        [sys.executable, "-m", "telemetry_infra.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _check(url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return _run("check", "--redis-url", url, "--timeout", "1", "--log-dir", str(tmp_path))


def _demo(url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return _run(
        "demo", "--requests", "10", "--redis-url", url, "--log-dir", str(tmp_path / "logs"), cwd=tmp_path
    )


def _redis_line(result: subprocess.CompletedProcess[str]) -> str:
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("redis")]
    return line


def _backend_line(result: subprocess.CompletedProcess[str]) -> str:
    (line,) = [line for line in result.stdout.splitlines() if line.strip().startswith("cache backend")]
    return line.strip().removeprefix("cache backend").strip()


def _assert_short(result: subprocess.CompletedProcess[str]) -> None:
    long_lines = [line for line in (result.stdout + result.stderr).splitlines() if len(line) > MAX_LINE]
    assert not long_lines, f"lines over {MAX_LINE} characters: {long_lines}"


@pytest.fixture(scope="module")
def sentinel_set() -> Iterator[RedisSentinel]:
    with RedisSentinel(replicas=0, sentinels=1) as started:
        yield started


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as started:
        yield started


def test_check_refuses_a_sentinel_given_as_plain_redis_and_names_the_url_to_use(
    sentinel_set: RedisSentinel, tmp_path: Path
) -> None:
    host, port = sentinel_set.sentinel_addresses[0]
    result = _check(f"redis://{host}:{port}/0", tmp_path)

    line = _redis_line(result)
    assert result.returncode == 1 and line.split()[1] == "FAIL", result.stdout
    assert f"{host}:{port} is a Sentinel" in line
    assert f"redis+sentinel://{host}:{port}/{sentinel_set.service_name}" in line
    _assert_short(result)


def test_check_refuses_a_cluster_node_given_as_plain_redis_and_names_the_url_to_use(
    cluster: RedisCluster, tmp_path: Path
) -> None:
    host, port = cluster.startup_nodes[0]
    result = _check(f"redis://{host}:{port}/0", tmp_path)

    line = _redis_line(result)
    assert result.returncode == 1 and line.split()[1] == "FAIL", result.stdout
    assert f"{host}:{port} is a Redis Cluster node" in line and f"redis+cluster://{host}:{port}" in line
    _assert_short(result)


@pytest.mark.parametrize(
    ("topology", "backend"), [("sentinel_set", "redis-sentinel"), ("cluster", "redis-cluster")]
)
def test_demo_reports_the_backend_it_used(
    topology: str, backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    result = _demo(request.getfixturevalue(topology).url, tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    used = _backend_line(result)
    assert used.startswith(f"{backend} (") and "fell back" not in used, used
    _assert_short(result)


def test_a_dead_sentinel_is_one_short_line_naming_it_and_the_cause(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    url = f"redis+sentinel://{dead}/mymaster/0"

    demo = _demo(url, tmp_path)
    backend = _backend_line(demo)
    assert demo.returncode == 0 and "fell back to memory" in backend, demo.stdout + demo.stderr
    assert dead in backend and "<" not in backend, backend  # no redis-py object dump
    _assert_short(demo)

    check = _check(url, tmp_path)
    line = _redis_line(check)
    assert check.returncode == 1 and dead in line and "refused" in line.lower(), line
    _assert_short(check)
