"""The contracts of docs/design.md, read from its tables: the one source tests check against.

``tests/`` is on ``sys.path`` (pytest's rootdir conftest lives there), so any test imports
this module as ``design_contracts``. A table that is missing or malformed fails the test that
reads it: the design page and the code change together.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

DESIGN_FILE = Path(__file__).resolve().parents[1] / "docs" / "design.md"

_CODE = re.compile(r"`([^`]+)`")


@cache
def _text() -> str:
    return DESIGN_FILE.read_text(encoding="utf-8")


def section(title: str) -> str:
    """The text under ``## <title>`` up to the next ``## `` heading."""
    parts = re.split(r"^## ", _text(), flags=re.MULTILINE)
    for part in parts[1:]:
        heading, _, body = part.partition("\n")
        if heading.strip() == title:
            return body
    raise LookupError(f"{DESIGN_FILE} has no section '## {title}'")


def tables(title: str) -> list[list[dict[str, str]]]:
    """Every Markdown table of a section, as rows of ``{column header: cell}``."""
    found: list[list[dict[str, str]]] = []
    lines = [line.strip() for line in section(title).splitlines()]
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = _cells(lines[i])
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(dict(zip(header, _cells(lines[i]), strict=True)))
                i += 1
            found.append(rows)
        else:
            i += 1
    if not found:
        raise LookupError(f"section '## {title}' of {DESIGN_FILE} has no table")
    return found


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def code_words(cell: str) -> list[str]:
    """The space-separated names inside a cell's code spans: "`a b` (`c`)" -> ["a", "b", "c"]."""
    return [word for span in _CODE.findall(cell) for word in span.split()]


def expand_braces(name: str) -> list[str]:
    """``x_{bucket,sum,count}`` -> ``["x_bucket", "x_sum", "x_count"]``."""
    match = re.fullmatch(r"(.*)\{([^}]*)\}(.*)", name)
    if not match:
        return [name]
    head, alternatives, tail = match.groups()
    return [f"{head}{alternative}{tail}" for alternative in alternatives.split(",")]


def log_field_groups() -> dict[str, list[str]]:
    """``{"record": ["timestamp", ...], "request": [...], "trace": [...], ...}`` in order."""
    (rows,) = tables("Log records")
    return {row["group"]: code_words(row["fields"]) for row in rows}


def cache_spans() -> dict[str, list[str]]:
    """``{"cache.get": ["cache.name", ...], ...}``."""
    spans, _ = tables("Cache telemetry names")
    return {code_words(row["span"])[0]: code_words(row["attributes"]) for row in spans}


def metrics(title: str) -> dict[str, list[str]]:
    """``{OTel instrument name: [Prometheus sample names]}`` of a section's metric table."""
    rows = next(table for table in tables(title) if "OTel instrument" in table[0])
    return {
        code_words(row["OTel instrument"])[0]: [
            name for word in code_words(row["Prometheus"]) for name in expand_braces(word)
        ]
        for row in rows
    }


def metric_attributes(title: str) -> dict[str, list[str]]:
    """``{OTel instrument name: [attribute names]}`` of a section's metric table."""
    rows = next(table for table in tables(title) if "OTel instrument" in table[0])
    return {code_words(row["OTel instrument"])[0]: code_words(row["attributes"]) for row in rows}


def cache_metrics() -> dict[str, list[str]]:
    return metrics("Cache telemetry names")


def bundle_ports() -> dict[str, tuple[str, int, int]]:
    """``{"OTLP gRPC": ("otel-collector", 4317 (host), 4317 (container)), ...}``."""
    (rows,) = tables("Bundle ports (host)")
    return {
        row["what"]: (code_words(row["compose service"])[0], int(row["port"]), int(row["container port"]))
        for row in rows
    }
