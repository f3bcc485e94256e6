"""README's quick start, run as a user would paste it: against a real Redis and a collector."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from telemetry_infra.testing import OTLPReceiver, RedisServer

REPO = Path(__file__).resolve().parents[2]


def quick_start(document: Path) -> str:
    match = re.search(r"## Quick start\n+```python\n(.*?)```", document.read_text(encoding="utf-8"), re.S)
    assert match, f"{document.name} has no Quick start code block"
    return match.group(1)


def test_readme_quick_start_runs_and_exports_its_logs_and_cache_metrics(
    tmp_path: Path, redis_server: RedisServer, otlp_receiver: OTLPReceiver
) -> None:
    code = quick_start(REPO / "README.md")
    assert code == quick_start(REPO / "docs" / "getting-started.md"), "the two quick starts differ"
    script = tmp_path / "quick_start.py"
    script.write_text(
        code.replace("redis://localhost:6379/0", redis_server.url).replace(
            "http://localhost:4317", otlp_receiver.grpc_endpoint
        ),
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != "REDIS_URL"}
    env |= {"ENVIRONMENT": "production", "LOG_DIR": str(tmp_path / "logs")}

    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    (looked_up,) = [record for record in records if record["message"] == "looked up"]
    assert looked_up["result"] == {"bbl": "1000010001", "owner": "..."}
    assert looked_up["request_id"] == "req-1" and looked_up["user_id"] == "user123"
    assert not [record for record in records if record["level"] in ("WARNING", "ERROR")], records
    (exported,) = otlp_receiver.wait_for_logs(lambda record: record.body == "looked up")
    assert exported.attributes["request_id"] == "req-1"
    misses = otlp_receiver.wait_for_metric_points(lambda point: point.name == "cache.misses")
    assert misses[-1].value == 1  # the first lookup; its result was then cached
