"""Sentinel topologies that start fast, and a planned failover: shared by the Sentinel tests."""

from __future__ import annotations

import time

import redis

from telemetry_infra.testing import RedisSentinel


def role_of(address: tuple[str, int]) -> str:
    """``master`` or ``slave``: what the Redis at ``address`` says it is."""
    with redis.Redis(*address, socket_timeout=1) as client:
        return str(client.info("replication")["role"])


def planned_failover(topology: RedisSentinel, *, until_demoted: bool = True, timeout_s: float = 20.0) -> None:
    """``SENTINEL FAILOVER``; returns once the Sentinels name another primary (and, with
    ``until_demoted``, the old one answers as a replica).

    A topology shared by several tests may still be ending a previous failover: the command
    is refused (``INPROG``, ``NOGOODSLAVE``) until it did, and is asked again meanwhile.
    """
    old = topology.master_address()
    deadline = time.monotonic() + timeout_s
    with redis.Redis(*topology.sentinel_addresses[0], socket_timeout=2) as sentinel:
        while True:
            try:
                sentinel.execute_command("SENTINEL", "FAILOVER", topology.service_name)
                break
            except redis.ResponseError as refused:
                assert time.monotonic() < deadline, f"the Sentinels refuse a failover: {refused}"
                time.sleep(0.1)
    while topology.master_address() == old or (until_demoted and role_of(old) != "slave"):
        assert time.monotonic() < deadline, "the Sentinels did not move the primary"
        time.sleep(0.05)
