"""Every file of the bundle parses, and the promtool / docker checks where those tools exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from bundle_layout import COLLECTOR_DIR, COMPOSE_FILE, REPO, load_yaml

BUNDLE_YAML = [COMPOSE_FILE, *sorted(COLLECTOR_DIR.rglob("*.yaml")), *sorted(COLLECTOR_DIR.rglob("*.yml"))]
BUNDLE_JSON = sorted(COLLECTOR_DIR.rglob("*.json"))


@pytest.mark.parametrize("path", BUNDLE_YAML, ids=lambda p: str(p.relative_to(REPO)))
def test_yaml_file_parses_to_a_mapping(path: Path) -> None:
    assert isinstance(load_yaml(path), dict)


@pytest.mark.parametrize("path", BUNDLE_JSON, ids=lambda p: str(p.relative_to(REPO)))
def test_json_file_parses_to_an_object(path: Path) -> None:
    assert isinstance(json.loads(path.read_text(encoding="utf-8")), dict)


def test_bundle_has_the_files_the_stack_mounts() -> None:
    names = {str(path.relative_to(REPO)) for path in BUNDLE_YAML + BUNDLE_JSON}
    assert {
        "docker-compose.yml",
        "collector/otelcol-config.yaml",
        "collector/prometheus.yaml",
        "collector/loki-config.yaml",
    } <= names
    assert any(name.startswith("collector/grafana/provisioning/datasources/") for name in names)
    assert any(name.startswith("collector/grafana/provisioning/dashboards/") for name in names)
    assert any(name.startswith("collector/dashboards/") for name in names)


def _promtool_major(promtool: str) -> int:
    version = subprocess.run([promtool, "--version"], capture_output=True, text=True, timeout=30)
    match = re.search(r"version (\d+)\.", version.stdout + version.stderr)
    assert match, f"cannot read the version of {promtool}"
    return int(match.group(1))


def test_promtool_accepts_prometheus_config(tmp_path: Path) -> None:
    """``promtool check config`` passes (Debian's ``prometheus`` package provides promtool).

    Debian 12 ships promtool 2.42, which predates the ``otlp`` section of Prometheus 3
    (the bundle pins v3). With such a promtool everything else in the file is still
    checked, on a copy without that one section.
    """
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    config_path = COLLECTOR_DIR / "prometheus.yaml"
    if _promtool_major(promtool) < 3:
        config = load_yaml(config_path)
        config.pop("otlp")
        config_path = tmp_path / "prometheus-without-otlp.yaml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = subprocess.run(
        [promtool, "check", "config", str(config_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _docker_engine_answers() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        info = subprocess.run([docker, "info"], capture_output=True, timeout=15)
    except subprocess.TimeoutExpired:
        return False
    return info.returncode == 0


def test_docker_compose_accepts_the_file() -> None:
    if not _docker_engine_answers():
        pytest.skip("no docker engine answers `docker info`")
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
