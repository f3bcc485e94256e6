"""The documentation site builds strictly, and a broken link fails it; README's links land."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")


def build(config_dir: Path, site_dir: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    config = config_dir / "mkdocs.yml"
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "--site-dir", str(site_dir)],
        cwd=cwd or config_dir,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_site_builds_strictly(tmp_path: Path) -> None:
    result = build(REPO, tmp_path / "site")
    assert result.returncode == 0, result.stderr
    for page in ("configuration", "cache", "design", "reliability", "changelog", "api"):
        assert (tmp_path / "site" / page / "index.html").exists(), page
    # The changelog page is CHANGELOG.md itself (included), not a copy that drifts.
    changelog = (tmp_path / "site" / "changelog" / "index.html").read_text(encoding="utf-8")
    entries = [line for line in (REPO / "CHANGELOG.md").read_text().splitlines() if line.startswith("- ")]
    shown = html.unescape(re.sub(r"<[^>]+>", "", changelog))
    assert re.sub(r"`([^`]*)`", r"\1", entries[-1][2:42]) in shown


def test_site_builds_from_another_working_directory(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    result = build(REPO, tmp_path / "site", cwd=elsewhere)

    assert result.returncode == 0, result.stderr
    # The changelog page includes CHANGELOG.md found beside mkdocs.yml, not in the working directory.
    changelog = (tmp_path / "site" / "changelog" / "index.html").read_text(encoding="utf-8")
    assert "0.2.0" in changelog
    assert (tmp_path / "site" / "api" / "index.html").exists()
    assert list(elsewhere.iterdir()) == []  # nothing written where the command ran


# What the home page's picture names: the telemetry lane, then the cache lane (issue #26).
MODEL_STAGES = (
    "request",
    "SERVER span",
    "trace_id span_id",
    "OTLP",
    "collector",
    "Jaeger",
    "Prometheus",
    "Loki",
    "Grafana",
    "caller",
    "near tier",
    "Redis",
    "Cluster",
    "Sentinel",
    "breaker",
    "memory fallback",
    "journal",
)


def nav_pages(entries: list[Any]) -> list[str]:
    """The pages named directly by ``entries`` (a section's own pages are not included)."""
    return [page for entry in entries for page in entry.values() if isinstance(page, str)]


def test_maintainers_pages_sit_under_development_and_users_pages_stay_on_top() -> None:
    from mkdocs.config import load_config

    nav = load_config(str(REPO / "mkdocs.yml"))["nav"]
    (development,) = [entry["Development"] for entry in nav if "Development" in entry]
    assert isinstance(development, list), "Development is one page, not a section of pages"

    assert {"development.md", "design.md", "reliability.md"} <= set(nav_pages(development))
    top = nav_pages(nav)
    assert not {"development.md", "design.md", "reliability.md"} & set(top)
    assert top[0] == "index.md"
    assert {"getting-started.md", "cache.md", "performance.md", "api.md", "changelog.md"} <= set(top)


def test_home_page_shows_the_model_as_an_svg_that_needs_no_network() -> None:
    index = (REPO / "docs" / "index.md").read_text(encoding="utf-8")
    (picture,) = re.findall(r"!\[[^\]]+\]\((assets/[^)]+\.svg)\)", index)
    svg = ElementTree.parse(REPO / "docs" / picture).getroot()

    labels = " ".join(text for text in svg.itertext() if text.strip())
    assert [stage for stage in MODEL_STAGES if stage not in labels] == []
    references = [value for element in svg.iter() for name, value in element.attrib.items() if "href" in name]
    assert all(value.startswith("#") for value in references), references  # nothing fetched from elsewhere
    assert "<script" not in (REPO / "docs" / picture).read_text(encoding="utf-8")


def test_a_link_to_a_missing_anchor_fails_the_build(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "docs", copy / "docs")
    for name in ("mkdocs.yml", "CHANGELOG.md"):
        shutil.copy(REPO / name, copy / name)
    (copy / "telemetry_infra").symlink_to(REPO / "telemetry_infra")
    (copy / "examples").symlink_to(REPO / "examples")  # the Sync code page includes the recipes
    with (copy / "docs" / "logging.md").open("a", encoding="utf-8") as page:
        page.write("\nSee [the cache](cache.md#no-such-section).\n")

    result = build(copy, tmp_path / "site")

    assert result.returncode != 0
    assert "no-such-section" in result.stderr


def test_readme_links_point_at_files_that_exist() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    targets = [target for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme) if "://" not in target]
    assert targets
    missing = [target for target in targets if not (REPO / target).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_readme_is_short_and_shows_the_test_command() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    assert "python -m pytest" in readme  # .ci/run runs the command README shows
