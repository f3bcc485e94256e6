"""examples/logging_integration.py runs to completion and writes what it promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "logging_integration.py"


def test_logging_example_runs_and_writes_json_logs(tmp_path):
    env = {**os.environ, "ENVIRONMENT": "production"}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), str(tmp_path)], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr

    records = [json.loads(line) for line in result.stdout.splitlines()]
    messages = [record["message"] for record in records]
    assert "Application started" in messages and "Done: see the log files" in messages

    processing = [record for record in records if record["message"] == "Processing request"]
    assert {record["user_id"] for record in processing} == {"user123", "user456"}
    assert all(
        len(record["trace_id"]) == 32 and record["request_id"] != record["trace_id"] for record in processing
    )
    timings = [record for record in records if "duration" in record]
    assert {record["function"] for record in timings} == {"fetch_violations", "process_batch"}
    assert all(record.get("api_key", "[REDACTED]") == "[REDACTED]" for record in records)
    assert "never-printed" not in result.stdout

    for name in ("app.log", "error.log", "api.log", "model.log"):
        assert (tmp_path / name).read_text().strip(), name
    errors = [json.loads(line)["message"] for line in (tmp_path / "error.log").read_text().splitlines()]
    assert errors == [
        next(m for m in messages if m.startswith("Exception in parse_inspection")),
        "Request failed",
    ]
