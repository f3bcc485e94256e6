"""The version pip reports is the one CHANGELOG.md's top section describes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# "## 0.2.0 — unreleased" or "## 0.2.0 — 2027-01-15"
CHANGELOG_HEADING = re.compile(r"^## (?P<version>\d+\.\d+\.\d+) — (?P<status>.+)$", re.M)
# PEP 440 pre-release and development forms: 0.2.0a1, 0.2.0rc2, 0.2.0.dev0, 0.2.0rc1.dev3
PRE_RELEASE = r"(?:(?:a|b|rc)\d+(?:\.dev\d+)?|\.dev\d+)"


def changelog_top() -> tuple[str, str]:
    match = CHANGELOG_HEADING.search((REPO / "CHANGELOG.md").read_text(encoding="utf-8"))
    assert match, "CHANGELOG.md has no '## X.Y.Z — status' heading"
    return match["version"], match["status"]


def pyproject_version() -> str:
    with (REPO / "pyproject.toml").open("rb") as file:
        return str(tomllib.load(file)["project"]["version"])


def test_pyproject_version_is_the_changelog_top_section() -> None:
    version, status = changelog_top()
    declared = pyproject_version()
    if status == "unreleased":
        assert re.fullmatch(re.escape(version) + PRE_RELEASE, declared), (
            f"CHANGELOG's top section is {version} (unreleased) but pyproject.toml says {declared}: "
            f"use a pre-release of it, e.g. {version}.dev0"
        )
    else:
        assert declared == version, f"CHANGELOG's top section is {version} ({status}); pyproject: {declared}"
