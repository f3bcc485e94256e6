"""``telemetry-infra check`` run as a user runs it, for the topology test modules."""

from __future__ import annotations

import subprocess
import sys


def redis_check_lines(*urls: str) -> list[list[str]]:
    """For each url, the ``redis`` lines of ``telemetry-infra check --redis-url url`` (the
    checks run at the same time: each is a Python start-up, most of its time)."""
    checks = [
        subprocess.Popen(
            [sys.executable, "-m", "telemetry_infra.cli", "check", "--redis-url", url, "--timeout", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for url in urls
    ]
    outputs = [check.communicate(timeout=60)[0] for check in checks]
    return [[line for line in output.splitlines() if line.startswith("redis")] for output in outputs]
