"""Fixtures of the reliability suite, and the figures it reports.

Every test records what it tried (cases, faults, recovery times, anything lost)
through the ``figures`` fixture; at the end of the session they are written to
``build/reliability/tests.json`` (or ``$RELIABILITY_RESULTS_DIR``), from which
``benchmarks/reliability_report.py`` renders the figures of docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from telemetry_infra.testing import free_port

RESULTS_FILE = "tests.json"
_recorded: dict[str, dict[str, dict[str, Any]]] = {}


def results_dir(root: Path) -> Path:
    """Where the suite and the soak write their figures."""
    return Path(os.environ.get("RELIABILITY_RESULTS_DIR") or root / "build" / "reliability")


class Figures:
    """Figures of one test, merged into the session's results under ``section``."""

    def record(self, section: str, name: str, **values: Any) -> None:
        _recorded.setdefault(section, {})[name] = values


@pytest.fixture(scope="session")
def figures() -> Figures:
    return Figures()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _recorded:
        return
    target = results_dir(Path(str(session.config.rootpath)))
    target.mkdir(parents=True, exist_ok=True)
    document = {"generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "sections": _recorded}
    (target / RESULTS_FILE).write_text(json.dumps(document, indent=2, sort_keys=True, default=str))


# ------------------------------------------------------------------ collector faults


@pytest.fixture
def refusing_endpoint() -> str:
    """An OTLP endpoint where nothing listens: every connection is refused."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """An endpoint that accepts TCP connections and never sends a byte back."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    closing = threading.Event()

    def accept() -> None:
        while not closing.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            held.append(connection)

    threading.Thread(target=accept, name="silent-collector", daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    closing.set()
    listener.close()
    for connection in held:
        connection.close()
