"""A private ``redis-server`` on a free loopback port, to stage outages in tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from typing import Any

INSTALL_HINT = (
    "redis-server was not found on PATH. Install it, e.g. "
    "`apt-get install -y redis-server` (Debian/Ubuntu) or `brew install redis` (macOS), "
    "or set REDIS_SERVER_BIN to its path."
)


class RedisServerNotFound(RuntimeError):
    """No ``redis-server`` executable could be found."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _wait_for_port(host: str, port: int, timeout_s: float, up: bool) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                reachable = True
        except OSError:
            reachable = False
        if reachable is up:
            return True
        time.sleep(0.02)
    return False


class RedisServer:
    """A private ``redis-server`` process on a loopback port, started and owned by us.

    It keeps nothing on disk (``--save "" --appendonly no``). ``kill()`` and
    ``start()`` stage an outage on the same port; ``pause(seconds)`` makes it
    unreachable while it keeps its data (``CLIENT PAUSE``).
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        executable: str | None = None,
        extra_args: Sequence[str] = (),
        config_file: str | None = None,
    ):
        import os

        self.host = host
        self.extra_args = list(extra_args)
        self.config_file = config_file
        self.port = port or free_port(host)
        found = executable or os.environ.get("REDIS_SERVER_BIN") or shutil.which("redis-server")
        if not found:
            raise RedisServerNotFound(INSTALL_HINT)
        self.executable = found
        self._dir = tempfile.mkdtemp(prefix="ti-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        if self.running:
            return self
        args = [
            self.executable,
            *([self.config_file] if self.config_file else []),  # it must come first
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir,
            "--daemonize", "no",
            "--protected-mode", "no",
            "--loglevel", "warning",
            "--enable-debug-command", "local",
            *self.extra_args,
        ]  # fmt: skip
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not _wait_for_port(self.host, self.port, timeout_s, up=True):
            stderr = self._process.stderr  # a pipe: Popen(stderr=PIPE) above
            err = stderr.read().decode(errors="replace") if self._process.poll() and stderr else ""
            self.kill()
            raise RuntimeError(f"redis-server did not start on {self.host}:{self.port}: {err}")
        return self

    def kill(self) -> None:
        """SIGKILL the server (an abrupt outage); the port closes at once."""
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        process.wait(timeout=10)
        if process.stderr:
            process.stderr.close()
        _wait_for_port(self.host, self.port, 5.0, up=False)

    def restart(self) -> RedisServer:
        self.kill()
        return self.start()

    def client(self, **kwargs: Any) -> Any:
        """A synchronous ``redis.Redis`` client to this server (for assertions)."""
        import redis

        return redis.Redis(host=self.host, port=self.port, **kwargs)

    def pause(self, seconds: float) -> None:
        """Make every client wait ``seconds`` (``CLIENT PAUSE ... ALL``); data is kept."""
        with self.client(socket_timeout=2) as client:
            client.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")

    def unpause(self) -> None:
        with self.client(socket_timeout=2) as client:
            client.execute_command("CLIENT", "UNPAUSE")

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
