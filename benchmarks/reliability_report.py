"""Render the documentation's Reliability page from the figures of the last reliability run.

Reads ``build/reliability/tests.json`` (written by ``python -m pytest tests/reliability``)
and ``build/reliability/soak.json`` (written by ``python benchmarks/soak.py``)::

    python benchmarks/reliability_report.py [--results build/reliability] [--page docs/reliability.md]

The figures go between the ``<!-- reliability:begin -->`` and ``<!-- reliability:end -->``
markers of the page; the text around them is left alone. Each area gets small tables: the
cases that record the same figures share one table with only those columns, and a case
whose figures no other case records is listed figure by figure; cases sharing many figures
get a column each.
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
#: More figures than this shared by several cases: one row per figure, one column per case.
WIDEST = 6
BEGIN, END = "<!-- reliability:begin -->", "<!-- reliability:end -->"


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_cell(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value) or "-"
    return "-" if value is None else str(value).replace("|", "\\|")


def _header(name: str) -> str:
    return name.replace("_", " ")


def _table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]


def _groups(rows: dict[str, dict[str, Any]]) -> list[tuple[list[str], list[str]]]:
    """``[(case names, figures they all record)]``, in the order cases first appear."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for case, figures in rows.items():
        used = tuple(sorted(name for name, value in figures.items() if value is not None))
        groups.setdefault(used, []).append(case)
    return [(cases, list(columns)) for columns, cases in groups.items()]


def area(rows: dict[str, dict[str, Any]]) -> list[str]:
    """One area's tables: shared figures in one table each, the rest figure by figure."""
    lines: list[str] = []
    singles: list[list[Any]] = []
    for cases, columns in _groups(rows):
        if len(cases) == 1:
            singles += [[cases[0], _header(name), rows[cases[0]][name]] for name in columns]
            continue
        if len(columns) > WIDEST:
            body = [[_header(name), *(rows[case][name] for case in cases)] for name in columns]
            lines += [*_table(["figure", *cases], body), ""]
            continue
        body = [[case, *(rows[case][name] for name in columns)] for case in cases]
        lines += [*_table(["case", *map(_header, columns)], body), ""]
    if singles:
        lines += [*_table(["case", "figure", "value"], singles), ""]
    return lines


def _soak(soak: dict[str, Any]) -> list[str]:
    lines = ["## Soak (`python benchmarks/soak.py`)", ""]
    return [*lines, *_table(["figure", "value"], [[_header(k), v] for k, v in soak.items()]), ""]


def render(tests: dict[str, Any] | None, soak: dict[str, Any] | None) -> str:
    lines: list[str] = []
    if soak:
        lines += _soak(soak)
    if tests:
        lines += [f"Test figures generated at {tests['generated_at']}.", ""]
        for section, rows in tests["sections"].items():
            lines += [f"## {SECTION_TITLES.get(section, section)}", "", *area(rows)]
    if not lines:
        lines = ["No figures yet: run `python -m pytest tests/reliability` and `benchmarks/soak.py`.", ""]
    return "\n".join(lines)


def replace_section(page: str, section: str) -> str:
    """``page`` with the text between the markers replaced by ``section``."""
    head, begin, rest = page.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise SystemExit(f"the page has no {BEGIN} ... {END} markers")
    return f"{head}{BEGIN}\n{section.rstrip()}\n{END}{tail}"


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "build" / "reliability")
    parser.add_argument("--page", type=Path, default=ROOT / "docs" / "reliability.md")
    args = parser.parse_args()
    section = render(_load(args.results / "tests.json"), _load(args.results / "soak.json"))
    args.page.write_text(replace_section(args.page.read_text(), section))
    print(f"updated the figures of {args.page}")


if __name__ == "__main__":
    main()
