"""A FastAPI app run by real ``uvicorn --workers`` / ``gunicorn -k uvicorn.workers.UvicornWorker``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import httpx

APP = textwrap.dedent(
    """
    import os

    from fastapi import FastAPI

    import telemetry_infra as ti
    from telemetry_infra.integrations.fastapi import instrument_app

    ti.configure("workers-app")
    cache = ti.CacheManager(redis_url=None, name="lookups")
    app = FastAPI()


    @app.get("/lookup/{key}")
    async def lookup(key: str) -> dict:
        if await cache.get(key) is None:
            await cache.set(key, key)
        ti.get_logger("api.lookup").info("looked up", extra={"key": key})
        return {"pid": os.getpid()}


    @app.get("/ready")
    async def ready() -> dict:
        return {"pid": os.getpid()}


    @app.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("handler failed")


    instrument_app(app)
    """
)


#: One client for every test (making one costs ~50 ms of TLS set-up); a new connection each
#: request all the same, so the kernel spreads requests over the workers.
CLIENT = httpx.Client(timeout=10, headers={"Connection": "close"})


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    stdout: Path
    stderr: Path

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        """GET ``path`` (or a full URL) on a new connection."""
        return CLIENT.get(httpx.URL(self.url).join(path), **kwargs)  # type: ignore[arg-type]

    def worker_pids(self) -> set[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return {int(pid) for pid in children}


def command(server: str, port: int, app_dir: Path, workers: int = 2) -> list[str]:
    if server == "uvicorn":
        return [
            *(sys.executable, "-m", "uvicorn", "workers_app:app", "--app-dir", str(app_dir)),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
        ]
    preload = ["--preload"] if server == "gunicorn-preload" else []
    return [
        *(sys.executable, "-m", "gunicorn", "workers_app:app", "--chdir", str(app_dir), *preload),
        *("-k", "uvicorn.workers.UvicornWorker", "-w", str(workers), "-b", f"127.0.0.1:{port}"),
    ]


@contextmanager
def started(
    argv: list[str], env: dict[str, str], cwd: Path, stdout: Path, stderr: Path
) -> Iterator[subprocess.Popen[str]]:
    """``argv`` run in a session of its own (``stderr`` may be ``stdout``); at the end SIGTERM
    to its whole group (workers flush their telemetry on it), SIGKILL after 20 s."""
    with stdout.open("w") as out, stderr.open("w") if stderr != stdout else nullcontext(out) as err:
        process = subprocess.Popen(
            argv, stdout=out, stderr=err, text=True, env=env, cwd=cwd, start_new_session=True
        )
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for_answer(url: str, process: subprocess.Popen[str], stderr: Path, timeout_s: float = 60) -> None:
    """Until ``url`` answers at all; fails with the server's ``stderr`` if it exits or stays silent."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            CLIENT.get(url, timeout=5)
            return
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{process.args!r} did not start:\n{stderr.read_text()}") from None
            time.sleep(0.1)


@contextmanager
def running(
    argv: list[str], port: int, tmp_path: Path, env: dict[str, str], ready: float = 60
) -> Iterator[Server]:
    (tmp_path / "workers_app.py").write_text(APP)
    stdout, stderr = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with started(argv, {**os.environ, **env}, tmp_path, stdout, stderr) as process:
        server = Server(process, f"http://127.0.0.1:{port}", stdout, stderr)
        wait_for_answer(f"{server.url}/ready", process, stderr, ready)
        yield server
