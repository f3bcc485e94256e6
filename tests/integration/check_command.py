"""``telemetry-infra check`` run as a user runs it, for the topology test modules."""

from __future__ import annotations

import subprocess
import sys


def redis_check_lines(url: str) -> list[str]:
    """The ``redis`` lines of ``telemetry-infra check --redis-url url``."""
    result = subprocess.run(
        [sys.executable, "-m", "telemetry_infra.cli", "check", "--redis-url", url, "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return [line for line in result.stdout.splitlines() if line.startswith("redis")]
