"""``telemetry-infra check`` for Redis URLs of every topology: each node asked, nothing written.

* one node: PING;
* Cluster: every seed node answers PING and says ``cluster_state:ok``;
* Sentinel: every Sentinel answers and names the service's primary; that primary
  answers PING (with the URL's credentials and database) and says it is a primary.
"""

from __future__ import annotations

from typing import Any

import redis

from telemetry_infra.cache.redis_urls import RedisTarget

__all__ = ["probe_redis_target"]


def probe_redis_target(target: RedisTarget, timeout_s: float) -> tuple[bool, str]:
    """``(ok, detail)`` for ``target``; the detail names every node that failed."""
    if target.topology == "cluster":
        return _probe_cluster(target, timeout_s)
    if target.topology == "sentinel":
        return _probe_sentinel(target, timeout_s)
    client = redis.Redis.from_url(target.url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        client.ping()
    except redis.RedisError as exc:
        return False, f"{target.redacted()} does not answer PING: {exc}"
    finally:
        client.close()
    return True, f"{target.redacted()} answers PING"


def _node_client(target: RedisTarget, host: str, port: int, timeout_s: float, **extra: Any) -> redis.Redis:
    return redis.Redis(
        host,
        port,
        username=target.username,
        password=target.password,
        ssl=target.tls,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        **extra,
    )


def _ask(target: RedisTarget, host: str, port: int, timeout_s: float, *command: Any, **extra: Any) -> Any:
    client = _node_client(target, host, port, timeout_s, **extra)
    try:
        return client.execute_command(*command)
    finally:
        client.close()


def _probe_cluster(target: RedisTarget, timeout_s: float) -> tuple[bool, str]:
    failures = []
    for host, port in target.nodes:
        try:
            info = _ask(target, host, port, timeout_s, "CLUSTER", "INFO")
        except redis.RedisError as exc:
            failures.append(f"{host}:{port} does not answer ({exc})")
            continue
        text = info.decode() if isinstance(info, bytes) else str(info)
        if "cluster_state:ok" not in text:
            failures.append(f"{host}:{port} reports cluster_state:fail")
    if failures:
        return False, f"{target.redacted()}: " + "; ".join(failures)
    return True, f"{target.redacted()}: {len(target.nodes)} seed node(s) answer, cluster_state:ok"


def _probe_sentinel(target: RedisTarget, timeout_s: float) -> tuple[bool, str]:
    failures = []
    named: set[tuple[str, int]] = set()
    for host, port in target.nodes:
        try:
            reply = _ask(
                target, host, port, timeout_s, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", target.service_name
            )
        except redis.RedisError as exc:
            failures.append(f"Sentinel {host}:{port} does not answer ({exc})")
            continue
        if not reply:
            failures.append(f"Sentinel {host}:{port} knows no service {target.service_name!r}")
            continue
        named.add((_text(reply[0]), int(reply[1])))
    if len(named) > 1:
        failures.append(
            "the Sentinels name different primaries: " + ", ".join(f"{h}:{p}" for h, p in sorted(named))
        )
    for host, port in sorted(named):
        failures.extend(_primary_failures(target, host, port, timeout_s))
    if not named and not failures:
        failures.append("no Sentinel named a primary")
    if failures:
        return False, f"{target.redacted()}: " + "; ".join(failures)
    host, port = named.pop()
    return (
        True,
        f"{target.redacted()}: {len(target.nodes)} Sentinel(s) name primary {host}:{port}, which answers",
    )


def _primary_failures(target: RedisTarget, host: str, port: int, timeout_s: float) -> list[str]:
    try:
        role = _ask(target, host, port, timeout_s, "ROLE", db=target.db)
    except redis.RedisError as exc:
        return [f"primary {host}:{port} does not answer ({exc})"]
    if _text(role[0]) != "master":
        return [f"{host}:{port}, named primary by the Sentinels, is a {_text(role[0])}"]
    return []


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
