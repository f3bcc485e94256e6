"""Render README.md's "Reliability" section from the figures of the last reliability run.

Reads ``build/reliability/tests.json`` (written by ``python -m pytest tests/reliability``)
and ``build/reliability/soak.json`` (written by ``python benchmarks/soak.py``)::

    python benchmarks/reliability_report.py [--results build/reliability] [--readme README.md]

The section is the text between the ``<!-- reliability:begin -->`` and
``<!-- reliability:end -->`` markers; nothing else in the README changes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

SECTION_TITLES = {
    "redis_faults": "Redis faults under a mixed workload (tests, 20 tasks, a few seconds each)",
    "collector_faults": "Collector faults (traced + logged workload)",
    "hostile_input": "Hostile input",
    "processes": "Concurrency and processes",
    "security": "Security",
}


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_cell(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value) or "-"
    return "-" if value is None else str(value)


def _table(rows: dict[str, dict[str, Any]]) -> list[str]:
    columns = sorted({column for row in rows.values() for column in row})
    lines = ["| case | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(_cell(row.get(column)) for column in columns) + " |")
    return lines


def _soak(soak: dict[str, Any]) -> list[str]:
    lines = ["### Soak (`python benchmarks/soak.py`)", "", "| figure | value |", "|---|---|"]
    lines += [f"| {name} | {_cell(value)} |" for name, value in soak.items()]
    return [*lines, ""]


def render(tests: dict[str, Any] | None, soak: dict[str, Any] | None) -> str:
    lines = [
        "## Reliability",
        "",
        "Produced by the suite itself: `python -m pytest tests/reliability` and `python benchmarks/soak.py`",
        "write their figures to `build/reliability/`; `python benchmarks/reliability_report.py` renders this",
        "page. Nothing here is typed by hand.",
        "",
    ]
    if soak:
        lines += _soak(soak)
    if tests:
        lines += [f"Test figures generated at {tests['generated_at']}.", ""]
        for section, rows in tests["sections"].items():
            lines += [f"### {SECTION_TITLES.get(section, section)}", "", *_table(rows), ""]
    return "\n".join(lines)


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "build" / "reliability")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args()
    section = render(_load(args.results / "tests.json"), _load(args.results / "soak.json"))
    args.readme.write_text(replace_section(args.readme.read_text(), section))
    print(f"updated the Reliability section of {args.readme}")


BEGIN, END = "<!-- reliability:begin -->", "<!-- reliability:end -->"


def replace_section(readme: str, section: str) -> str:
    """``readme`` with the text between the markers replaced by ``section``."""
    head, begin, rest = readme.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise SystemExit(f"README has no {BEGIN} ... {END} markers")
    return f"{head}{BEGIN}\n{section.rstrip()}\n{END}{tail}"


if __name__ == "__main__":
    main()
