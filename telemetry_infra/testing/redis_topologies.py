"""Local Redis Cluster and Sentinel topologies made of private ``redis-server`` processes.

Shipped in :mod:`telemetry_infra.testing` for users' tests and ours: every process
listens on a loopback port that was free, keeps nothing on disk and is killed on
``close()``. Both topologies can ``kill_primary()`` to stage a failover and wait
until they agree on the promoted replica.

Replication is asynchronous and a replica whose link says ``up`` may not stream
writes yet, so before a primary is killed a marker is written on it and ``WAIT``
ensures a replica has it: writes acknowledged before ``kill_primary()`` survive.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from telemetry_infra.testing.redis_server import INSTALL_HINT, RedisServer, RedisServerNotFound, free_port

__all__ = ["RedisCluster", "RedisSentinel"]

#: A cluster node's bus listens on its client port + 10000 (fixed by Redis).
_BUS_OFFSET = 10_000


def _wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception as exc:  # nodes starting or failing over answer errors for a while
            last_error = exc
        time.sleep(0.05)
    detail = f" (last error: {last_error!r})" if last_error else ""
    raise TimeoutError(f"{what} did not happen within {timeout_s:.1f} s{detail}")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _role(server: RedisServer) -> str:
    with server.client(socket_timeout=1) as client:
        return _text(client.info("replication")["role"])


def _replicas_in_sync(servers: list[RedisServer]) -> bool:
    for server in servers:
        with server.client(socket_timeout=1) as client:
            info = client.info("replication")
        if _text(info["role"]) == "slave" and _text(info.get("master_link_status")) != "up":
            return False
    return True


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _cluster_port(host: str, taken: set[int]) -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = free_port(host)
        bus = port + _BUS_OFFSET
        if bus <= 65535 and not {port, bus} & taken and _port_free(host, bus):
            return port
    raise RuntimeError(f"no free (port, port + {_BUS_OFFSET}) pair found on {host}")


def _redis_cli() -> str:
    found = shutil.which("redis-cli")
    if not found:
        raise RedisServerNotFound(INSTALL_HINT.replace("redis-server was", "redis-cli was"))
    return found


def _wait_replicated(primary: RedisServer, marker_key: str, timeout_s: float) -> None:
    """Write ``marker_key`` on ``primary`` and wait until one replica acknowledged it."""
    with primary.client(socket_timeout=2) as client:
        client.set(marker_key, b"1", px=60_000)
        deadline = time.monotonic() + timeout_s
        while client.execute_command("WAIT", 1, 200) < 1:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no replica of {primary.host}:{primary.port} acknowledged a write")
        client.delete(marker_key)


def key_in_slot(slot: int, prefix: str = "ti-marker") -> str:
    """A key whose hash slot is ``slot`` (hash tags searched by counting)."""
    from redis.crc import key_slot

    index = 0
    while key_slot(f"{{{index}}}".encode()) != slot:
        index += 1
    return f"{prefix}:{{{index}}}"


class RedisCluster:
    """A Redis Cluster of ``primaries`` primaries with ``replicas`` replicas each.

    Six processes by default (3 + 3), created with ``redis-cli --cluster create`` on
    free loopback ports. ``url`` is the ``redis+cluster://`` URL naming every node.
    """

    def __init__(
        self,
        primaries: int = 3,
        replicas: int = 1,
        host: str = "127.0.0.1",
        node_timeout_ms: int = 1000,
    ) -> None:
        if primaries < 3:
            raise ValueError(f"a Redis Cluster needs at least 3 primaries, got {primaries}")
        self.host = host
        self._replicas = replicas
        self._node_args = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms),
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        self._taken: set[int] = set()
        self.nodes: list[RedisServer] = []
        for _ in range(primaries * (1 + replicas)):
            self.nodes.append(self._new_node())

    def _new_node(self) -> RedisServer:
        port = _cluster_port(self.host, self._taken)
        self._taken.update((port, port + _BUS_OFFSET))
        return RedisServer(port=port, host=self.host, extra_args=self._node_args)

    @property
    def url(self) -> str:
        """``redis+cluster://host:port,...`` naming every node as a seed."""
        return "redis+cluster://" + ",".join(f"{node.host}:{node.port}" for node in self.nodes)

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(node.host, node.port) for node in self.nodes]

    def start(self, timeout_s: float = 30.0) -> RedisCluster:
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"{node.host}:{node.port}" for node in self.nodes]
            command = [_redis_cli(), "--cluster", "create", *addresses]
            command += ["--cluster-replicas", str(self._replicas), "--cluster-yes"]
            created = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
            if created.returncode != 0:
                raise RuntimeError(
                    f"redis-cli --cluster create failed:\n{created.stdout[-2000:]}{created.stderr}"
                )
            self.wait_until_healthy(timeout_s)
        except BaseException:
            self.close()
            raise
        return self

    def running_nodes(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.running]

    def primaries(self) -> list[RedisServer]:
        """The running nodes that are primaries now."""
        return [node for node in self.running_nodes() if _role(node) == "master"]

    def _slot_owners(self) -> dict[tuple[str, int], list[tuple[int, int]]]:
        """``{(host, port): [(first_slot, last_slot), ...]}`` as a running node sees it."""
        with self.running_nodes()[0].client(socket_timeout=1) as client:
            ranges = client.execute_command("CLUSTER", "SLOTS")
        owners: dict[tuple[str, int], list[tuple[int, int]]] = {}
        for first, last, primary, *_replicas in ranges:
            owners.setdefault((_text(primary[0]), int(primary[1])), []).append((int(first), int(last)))
        return owners

    def primary_for(self, key: str) -> RedisServer:
        """The running primary serving ``key``'s hash slot."""
        from redis.crc import key_slot

        slot = key_slot(key.encode())
        for address, ranges in self._slot_owners().items():
            if any(first <= slot <= last for first, last in ranges):
                return self._node(address)
        raise RuntimeError(f"no primary serves the slot of {key!r}")

    def _node(self, address: tuple[str, int]) -> RedisServer:
        for node in self.nodes:
            if (node.host, node.port) == address:
                return node
        raise RuntimeError(f"{address} is not a node of this cluster")

    def wait_until_healthy(self, timeout_s: float = 30.0) -> None:
        """Every running node says ``cluster_state:ok`` and every replica streams writes."""

        def healthy() -> bool:
            for node in self.running_nodes():
                with node.client(socket_timeout=1) as client:
                    if "cluster_state:ok" not in _text(client.execute_command("CLUSTER", "INFO")):
                        return False
            return _replicas_in_sync(self.running_nodes())

        _wait_until(healthy, timeout_s, "cluster_state:ok on every node with replicas in sync")
        for address, ranges in self._slot_owners().items():
            if self._replicas:
                _wait_replicated(self._node(address), key_in_slot(ranges[0][0]), timeout_s)

    def kill_primary(
        self, key: str | None = None, *, wait: bool = True, timeout_s: float = 20.0
    ) -> RedisServer:
        """SIGKILL the primary serving ``key`` (the first primary if ``None``); return it.

        With ``wait``, return once a replica took over its slots and every running
        node says ``cluster_state:ok``. ``restart(node)`` brings it back as a replica.
        """
        owners = self._slot_owners()
        victim = self.primary_for(key) if key is not None else self._node(next(iter(owners)))
        ranges = owners[(victim.host, victim.port)]
        if self._replicas:
            _wait_replicated(victim, key_in_slot(ranges[0][0]), timeout_s)
        victim.kill()
        if wait:
            _wait_until(
                lambda: self._taken_over(victim, ranges[0][0]),
                timeout_s,
                f"failover of {victim.host}:{victim.port}",
            )
        return victim

    def _taken_over(self, victim: RedisServer, slot: int) -> bool:
        for node in self.running_nodes():
            with node.client(socket_timeout=1) as client:
                if "cluster_state:ok" not in _text(client.execute_command("CLUSTER", "INFO")):
                    return False
        owner = next(
            address
            for address, ranges in self._slot_owners().items()
            if any(first <= slot <= last for first, last in ranges)
        )
        return owner != (victim.host, victim.port)

    def add_primary(self, timeout_s: float = 20.0) -> RedisServer:
        """Start a node, join it to the cluster (``CLUSTER MEET``) as a primary owning no slot
        (scale-out; ``move_slot`` gives it some), and wait until every node knows it."""
        node = self._new_node().start()
        self.nodes.append(node)
        with self.running_nodes()[0].client(socket_timeout=1) as client:
            client.execute_command("CLUSTER", "MEET", node.host, node.port)
        with node.client(socket_timeout=1) as client:
            node_id = _text(client.execute_command("CLUSTER", "MYID"))

        def known_everywhere() -> bool:
            for member in self.running_nodes():
                with member.client(socket_timeout=1) as client:
                    listing = _text(client.execute_command("CLUSTER", "NODES"))
                if not any(
                    line.startswith(node_id) and "handshake" not in line for line in listing.splitlines()
                ):
                    return False
            with node.client(socket_timeout=1) as client:  # it has the slot map too
                return "cluster_state:ok" in _text(client.execute_command("CLUSTER", "INFO"))

        _wait_until(known_everywhere, timeout_s, f"every node knows {node.host}:{node.port}")
        return node

    def move_slot(self, slot: int, target: RedisServer) -> None:
        """Move ``slot`` (and its keys, ``MIGRATE``) to the primary ``target``, the way
        ``redis-cli --cluster reshard`` does: IMPORTING/MIGRATING, keys, then ``SETSLOT NODE``."""
        source = self._slot_owner(slot)
        with target.client(socket_timeout=2) as to, source.client(socket_timeout=2) as origin:
            target_id = _text(to.execute_command("CLUSTER", "MYID"))
            source_id = _text(origin.execute_command("CLUSTER", "MYID"))
            to.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            origin.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while keys := origin.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                origin.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
            for node in (target, source, *self.primaries()):
                with node.client(socket_timeout=2) as client:
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def _slot_owner(self, slot: int) -> RedisServer:
        for address, ranges in self._slot_owners().items():
            if any(first <= slot <= last for first, last in ranges):
                return self._node(address)
        raise RuntimeError(f"no primary serves slot {slot}")

    def restart(self, node: RedisServer, timeout_s: float = 20.0) -> None:
        """Start a killed node again; it rejoins (as a replica after a failover)."""
        node.start()
        self.wait_until_healthy(timeout_s)

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisSentinel:
    """A primary, ``replicas`` replicas and ``sentinels`` Sentinels monitoring them.

    ``url`` is ``redis+sentinel://host:port,.../<service_name>/0`` naming every
    Sentinel. ``kill_primary()`` stages a failover and waits until every Sentinel
    names the promoted replica.
    """

    def __init__(
        self,
        service_name: str = "mymaster",
        replicas: int = 1,
        sentinels: int = 3,
        host: str = "127.0.0.1",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> None:
        self.service_name = service_name
        self.host = host
        # A primary waits repl-diskless-sync-delay (5 s by default) for more replicas before it
        # sends one its data; every node can be promoted, so none waits.
        sync_at_once = ["--repl-diskless-sync-delay", "0"]
        self.primary = RedisServer(host=host, extra_args=sync_at_once)
        replica_args = [*sync_at_once, "--replicaof", host, str(self.primary.port)]
        self.data_nodes = [
            self.primary,
            *(RedisServer(host=host, extra_args=replica_args) for _ in range(replicas)),
        ]
        self._dir = Path(tempfile.mkdtemp(prefix="ti-sentinel-"))
        quorum = sentinels // 2 + 1
        config = (
            "sentinel resolve-hostnames no\n"
            f"sentinel monitor {service_name} {host} {self.primary.port} {quorum}\n"
            f"sentinel down-after-milliseconds {service_name} {down_after_ms}\n"
            f"sentinel failover-timeout {service_name} {failover_timeout_ms}\n"
        )
        self.sentinels: list[RedisServer] = []
        for index in range(sentinels):
            path = self._dir / f"sentinel-{index}.conf"  # Sentinels rewrite their config file
            path.write_text(config)
            self.sentinels.append(RedisServer(host=host, config_file=str(path), extra_args=["--sentinel"]))

    @property
    def url(self) -> str:
        seeds = ",".join(f"{node.host}:{node.port}" for node in self.sentinels)
        return f"redis+sentinel://{seeds}/{self.service_name}/0"

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(node.host, node.port) for node in self.sentinels]

    def start(self, timeout_s: float = 30.0) -> RedisSentinel:
        try:
            for node in [*self.data_nodes, *self.sentinels]:
                node.start()
            self._wait_for_agreement(self.primary, timeout_s)
            _wait_until(lambda: _replicas_in_sync(self.data_nodes), timeout_s, "replicas in sync")
            if len(self.data_nodes) > 1:
                _wait_replicated(self.primary, "ti-marker", timeout_s)
        except BaseException:
            self.close()
            raise
        return self

    def master_address(self) -> tuple[str, int]:
        """The primary that the first running Sentinel names."""
        for sentinel in self.sentinels:
            if sentinel.running:
                return self._named_by(sentinel)
        raise RuntimeError("no Sentinel is running")

    def _named_by(self, sentinel: RedisServer) -> tuple[str, int]:
        with sentinel.client(socket_timeout=1) as client:
            host, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name)
        return _text(host), int(port)

    def current_primary(self) -> RedisServer:
        address = self.master_address()
        for node in self.data_nodes:
            if (node.host, node.port) == address:
                return node
        raise RuntimeError(f"the Sentinels name {address}, which is not a node of this topology")

    def _wait_for_agreement(self, primary: RedisServer, timeout_s: float) -> None:
        expected = (primary.host, primary.port)

        def agreed() -> bool:
            running = [sentinel for sentinel in self.sentinels if sentinel.running]
            return (
                all(self._named_by(sentinel) == expected for sentinel in running)
                and _role(primary) == "master"
            )

        _wait_until(agreed, timeout_s, f"every Sentinel naming {expected[0]}:{expected[1]} as primary")

    def kill_primary(self, *, wait: bool = True, timeout_s: float = 20.0) -> RedisServer:
        """SIGKILL the current primary; with ``wait``, return once a replica was promoted."""
        victim = self.current_primary()
        if len(self.data_nodes) > 1:
            _wait_replicated(victim, "ti-marker", timeout_s)
        victim.kill()
        if wait:
            self.wait_for_failover(victim, timeout_s)
        return victim

    def wait_for_failover(self, victim: RedisServer, timeout_s: float = 20.0) -> RedisServer:
        """Wait until the Sentinels name a primary other than ``victim``; return it."""
        _wait_until(
            lambda: self.master_address() != (victim.host, victim.port),
            timeout_s,
            f"a Sentinel failover away from {victim.host}:{victim.port}",
        )
        promoted = self.current_primary()
        self._wait_for_agreement(promoted, timeout_s)
        return promoted

    def restart(self, node: RedisServer) -> None:
        """Start a killed data node again; the Sentinels turn it into a replica."""
        node.start()

    def close(self) -> None:
        for node in [*self.sentinels, *self.data_nodes]:
            node.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisSentinel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
