"""``telemetry-infra check`` for Redis URLs of every topology: each node asked, nothing written.

* one node: PING;
* Cluster: every seed node answers PING and says ``cluster_state:ok``;
* Sentinel: every Sentinel answers and names the service's primary; that primary
  answers PING (with the URL's credentials and database) and says it is a primary.
"""

from __future__ import annotations

import re
from typing import Any

import redis

from telemetry_infra.cache.redis.urls import RedisTarget
from telemetry_infra.settings import short_url

__all__ = ["error_cause", "probe_redis_target"]


def probe_redis_target(target: RedisTarget, timeout_s: float) -> tuple[bool, str]:
    """``(ok, detail)`` for ``target``; the detail names every node that failed, one line each."""
    if target.topology == "cluster":
        return _probe_cluster(target, timeout_s)
    if target.topology == "sentinel":
        return _probe_sentinel(target, timeout_s)
    client = redis.Redis.from_url(target.url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        return False, f"{target.redacted()} does not answer PING: {error_cause(exc)}"
    try:
        wrong_topology = _wrong_topology(client)
    except redis.RedisError:  # INFO refused (an ACL): it answered PING as a data node does
        wrong_topology = None
    finally:
        client.close()
    if wrong_topology:
        return False, wrong_topology
    return True, f"{target.redacted()} answers PING"


def _wrong_topology(client: redis.Redis) -> str | None:
    """What to use instead, when a plain ``redis://`` URL names a Sentinel or a Cluster node.

    Both answer PING, yet a cache on such a URL fails every command: a Sentinel knows
    no ``SET``, a Cluster node answers ``MOVED`` for most keys.
    """
    kwargs = client.connection_pool.connection_kwargs
    where = kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
    mode = client.info("server").get("redis_mode")
    if mode == "sentinel":
        names = sorted(_text(name) for name in client.sentinel_masters())
        service = names[0] if len(names) == 1 else "<service>"
        known = f" (it monitors: {', '.join(names[:3])})" if len(names) > 1 else ""
        return f"{where} is a Sentinel, not a data node: use redis+sentinel://{where}/{service}{known}"
    if mode == "cluster":
        return f"{where} is a Redis Cluster node: use redis+cluster://{where}"
    return None


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
        return client.execute_command(*command)  # type: ignore[no-untyped-call]  # unannotated in redis-py
    finally:
        client.close()


def _probe_cluster(target: RedisTarget, timeout_s: float) -> tuple[bool, str]:
    failures = []
    for host, port in target.nodes:
        try:
            info = _ask(target, host, port, timeout_s, "CLUSTER", "INFO")
        except redis.RedisError as exc:
            failures.append(f"{host}:{port} does not answer ({_node_cause(exc, host, port)})")
            continue
        text = info.decode() if isinstance(info, bytes) else str(info)
        if "cluster_state:ok" not in text:
            failures.append(f"{host}:{port} reports cluster_state:fail")
    if failures:
        return False, f"{short_url(target.redacted())}: " + "\n".join(failures)
    return True, f"{short_url(target.redacted())}: {len(target.nodes)} seed node(s) answer, cluster_state:ok"


def _probe_sentinel(target: RedisTarget, timeout_s: float) -> tuple[bool, str]:
    failures = []
    named: set[tuple[str, int]] = set()
    for host, port in target.nodes:
        try:
            reply = _ask(
                target, host, port, timeout_s, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", target.service_name
            )
        except redis.RedisError as exc:
            failures.append(f"Sentinel {host}:{port} does not answer ({_node_cause(exc, host, port)})")
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
        return False, f"{short_url(target.redacted())}: " + "\n".join(failures)
    host, port = named.pop()
    where = short_url(target.redacted())
    return True, f"{where}: {len(target.nodes)} Sentinel(s) name primary {host}:{port}, which answers"


def _primary_failures(target: RedisTarget, host: str, port: int, timeout_s: float) -> list[str]:
    try:
        role = _ask(target, host, port, timeout_s, "ROLE", db=target.db)
    except redis.RedisError as exc:
        return [f"primary {host}:{port} does not answer ({_node_cause(exc, host, port)})"]
    if _text(role[0]) != "master":
        return [f"{host}:{port}, named primary by the Sentinels, is a {_text(role[0])}"]
    return []


_OBJECT_REPR = re.compile(r"<[^<>]*>")
_ADDRESS_TUPLE = re.compile(r"\s*\('[^']*', \d+\)")
_MAX_CAUSE = 100


def error_cause(error: BaseException | str, limit: int = _MAX_CAUSE) -> str:
    """An error's message short enough for one printed line: no object dumps, at most ``limit`` chars.

    redis-py puts the reprs of whole clients and pools into some messages (over 900
    characters for a dead Sentinel); what is left names the address and the cause.
    """
    text = str(error)
    while (shorter := _OBJECT_REPR.sub("", text)) != text:
        text = shorter
    text = _ADDRESS_TUPLE.sub("", " ".join(text.split()))
    text = re.sub(r"\s*:\s*-\s*", ": ", text)
    text = re.sub(r"\.?,\s*-\s*", "; ", text)
    text = re.sub(r"(?<=[:;] )(?:\w+:)?\w+Error: ", "", text).strip(" :-,")  # nested errors' class names
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _node_cause(error: BaseException, host: str, port: int) -> str:
    """The cause of a node's error, for a line that names the node already."""
    return error_cause(str(error).replace(f" connecting to {host}:{port}.", ":"))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
