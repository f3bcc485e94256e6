"""benchmarks/reliability_report.py renders small tables into the docs page, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "reliability_report.py"


def tables(text: str) -> list[list[str]]:
    found, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            found.append(current)
            current = []
    return found


def test_report_renders_one_small_table_per_group_of_cases(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    sections = {
        "collector_faults": {
            "exit/grpc": {"exit_s": 5.1, "shutdown_timeout_s": 5.0},
            "exit/http": {"exit_s": 5.2, "shutdown_timeout_s": 5.0},
            "drops_counted": {"dropped_spans_exported": 2928, "spans": 6000},
        }
    }
    (results / "tests.json").write_text(json.dumps({"generated_at": "T", "sections": sections}))
    page = tmp_path / "reliability.md"
    page.write_text(
        "# Reliability\n\nkept\n\n<!-- reliability:begin -->\nold\n<!-- reliability:end -->\ntail\n"
    )

    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--results", str(results), "--page", str(page)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert run.returncode == 0, run.stderr
    text = page.read_text()
    assert text.startswith("# Reliability\n\nkept\n") and text.endswith("<!-- reliability:end -->\ntail\n")
    assert "old" not in text
    exits, drops = tables(text)
    assert exits[0] == "| case | exit s | shutdown timeout s |"
    assert exits[2:] == ["| exit/grpc | 5.1 | 5.0 |", "| exit/http | 5.2 | 5.0 |"]
    assert drops[2:] == [
        "| drops_counted | dropped spans exported | 2928 |",
        "| drops_counted | spans | 6000 |",
    ]
    assert not any("| - |" in line for table in (exits, drops) for line in table)
