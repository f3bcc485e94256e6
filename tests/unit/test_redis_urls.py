"""Cluster and Sentinel URLs: what they name, and a clear error for every malformed one."""

from __future__ import annotations

import re

import pytest

from telemetry_infra.cache.redis.urls import parse_redis_url


@pytest.mark.parametrize(
    "url",
    ["redis://localhost:6379/0", "rediss://user:pw@cache.internal:6380/2", "unix:///run/redis.sock?db=1"],
)
def test_one_node_urls_are_left_to_redis_py(url: str) -> None:
    target = parse_redis_url(url)
    assert (target.topology, target.url, target.backend_name) == ("redis", url, "redis")
    assert target.tls is url.startswith("rediss")


def test_cluster_url_names_every_seed_node_with_default_port() -> None:
    target = parse_redis_url("redis+cluster://10.0.0.1:7000,10.0.0.2,[::1]:7002")
    assert target.topology == "cluster" and target.backend_name == "redis-cluster"
    assert target.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002))
    assert (target.db, target.tls, target.service_name) == (0, False, None)


def test_tls_cluster_with_credentials() -> None:
    target = parse_redis_url("rediss+cluster://app:s%40cret@node-a:7000,node-b:7001")
    assert target.tls and target.nodes == (("node-a", 7000), ("node-b", 7001))
    assert (target.username, target.password) == ("app", "s@cret")


def test_sentinel_url_with_service_db_and_default_sentinel_port() -> None:
    target = parse_redis_url("redis+sentinel://:pw@s1:26380,s2/mymaster/3")
    assert target.topology == "sentinel" and target.backend_name == "redis-sentinel"
    assert target.nodes == (("s1", 26380), ("s2", 26379))
    assert (target.service_name, target.db, target.username, target.password) == ("mymaster", 3, None, "pw")
    assert parse_redis_url("rediss+sentinel://s1:26379/cache").db == 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("localhost:6379", "must be a URL"),
        ("memcached://localhost", "unknown scheme 'memcached://'"),
        ("redis+cluster://", "at least one host:port"),
        ("redis+cluster://a:7000,,b:7001", "empty entry"),
        ("redis+cluster://a:70000", "invalid port '70000'"),
        ("redis+cluster://a:x", "invalid port 'x'"),
        ("redis+cluster://:7000", "has no host"),
        ("redis+cluster://a:7000/1", "one database, 0"),
        ("redis+cluster://a:7000?db=1", "no query"),
        ("redis+sentinel://s1:26379", "needs the service name"),
        ("redis+sentinel://s1:26379/mymaster/x", "must be a number, got 'x'"),
        ("redis+sentinel://s1:26379/mymaster/0/extra", "/service_name[/db]"),
        ("redis+sentinel://[::1:26379/m", "is not a valid URL"),
        ("redis+cluster://[::1]x", "is not host:port"),
    ],
)
def test_malformed_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_redis_url(url)


def test_password_never_appears_in_errors_or_redacted_form() -> None:
    with pytest.raises(ValueError) as raised:
        parse_redis_url("redis+sentinel://u:hunter2@s1/m?x=1")
    assert "hunter2" not in str(raised.value) and "***" in str(raised.value)
    target = parse_redis_url("redis+sentinel://u:hunter2@s1:26379/m")
    assert target.redacted() == "redis+sentinel://u:***@s1:26379/m"
