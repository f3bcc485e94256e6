"""The Cache page's first example, saved as a script and run as its text says: against a real Redis."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from telemetry_infra.testing import RedisServer

PAGE = Path(__file__).resolve().parents[2] / "docs" / "cache.md"
NAMESPACE = "myapp"  # the example's namespace; this test clears it from the shared server
# a keyword argument whose name starts with "_" (such as `_cache_manager=`) reads as private API
PRIVATE_KEYWORD = re.compile(r"[(,]\s*(_\w+)\s*=")


def quick_start_examples() -> list[str]:
    section = re.search(r"^## Quick start\n(.*?)^## ", PAGE.read_text(encoding="utf-8"), re.S | re.M)
    assert section, "docs/cache.md has no Quick start section"
    examples = re.findall(r"```python\n(.*?)```", section.group(1), re.S)
    assert examples, "the Quick start shows no python example"
    return examples


def first_example() -> str:
    return quick_start_examples()[0]


@pytest.fixture
def example_keys_removed(redis_server: RedisServer) -> Iterator[None]:
    yield
    with redis_server.client() as raw:
        for key in raw.scan_iter(match=f"{NAMESPACE}:*"):
            raw.delete(key)


def test_quick_start_uses_only_public_keywords() -> None:
    assert [PRIVATE_KEYWORD.findall(example) for example in quick_start_examples()] == [[]]


@pytest.mark.usefixtures("example_keys_removed")
def test_first_example_runs_as_a_script_against_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    code = first_example()
    assert "redis://localhost:6379/0" in code
    script = tmp_path / "quick_start.py"
    script.write_text(code.replace("redis://localhost:6379/0", redis_server.url), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != "REDIS_URL"}

    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["{'data': 'value'}", "{'key1': 'val1', 'key2': 'val2'}"]
    assert lines.count("computing value") == 1  # the second call was served by the cache
    assert lines.count("{'param': 'value'}") == 2
    assert lines[-1].startswith("backend: redis, hit rate: ")
    with redis_server.client() as raw:  # the batch really went to Redis, under the example's namespace
        assert raw.exists(f"{NAMESPACE}:key1", f"{NAMESPACE}:key2") == 2
        assert not raw.exists(f"{NAMESPACE}:key")  # deleted by the example
