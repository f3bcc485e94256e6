"""examples/cache_usage.py runs to completion against a real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cache_usage.py"


def test_cache_example_runs_against_redis(redis_server):
    env = {**os.environ, "REDIS_URL": redis_server.url}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "backend in use: redis" in done.stdout
    for section in (
        "basic operations",
        "batch operations",
        "compression",
        "pattern-based clearing",
        "@cached",
        "cache warming",
        "health check",
        "fallback",
        "serialization modes",
        "near cache",
    ):
        assert f"== {section}" in done.stdout
    assert "function ran 1 time(s)" in done.stdout
    assert "reader sees price 2; near hits=" in done.stdout
    with redis_server.client() as raw:
        assert list(raw.scan_iter(match="example:*")) == []
