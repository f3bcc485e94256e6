"""``CacheManager``'s connection arguments: checked once (``ConnectionOptions``), with errors naming them."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

import telemetry_infra as ti
from telemetry_infra.cache.redis.options import ConnectionOptions


@pytest.mark.parametrize(
    ("keyword", "value", "error"),
    [
        ("max_connections", 0, ValueError),
        ("max_connections", 2.5, TypeError),
        ("socket_timeout", 0, ValueError),
        ("socket_connect_timeout", -1, ValueError),
        ("pool_timeout", float("nan"), ValueError),
        ("pool_timeout", "5", TypeError),
        ("health_check_interval", -1, ValueError),
        ("health_check_interval", float("inf"), ValueError),
        ("health_check_interval", None, TypeError),
    ],
)
def test_a_bad_connection_argument_fails_at_construction_naming_it(keyword, value, error):
    with pytest.raises(error, match=keyword):
        ti.CacheManager("redis://127.0.0.1:1/0", **{keyword: value})


def test_seconds_may_be_timedeltas_and_zero_turns_health_checks_off():
    options = ConnectionOptions(socket_timeout=timedelta(milliseconds=250), health_check_interval=0)
    assert (options.socket_timeout, options.health_check_interval) == (0.25, 0.0)
    assert options.timeouts == {"socket_timeout": 0.25, "socket_connect_timeout": 1.0}


def test_options_are_frozen_and_a_share_of_the_pool_keeps_the_rest():
    options = ConnectionOptions(max_connections=8, pool_timeout=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.max_connections = 1  # type: ignore[misc]  # the point: it is frozen
    share = options.with_max_connections(6)
    assert (share.max_connections, share.pool_timeout, options.max_connections) == (6, 2.0, 8)
    with pytest.raises(ValueError, match="max_connections"):
        options.with_max_connections(0)
