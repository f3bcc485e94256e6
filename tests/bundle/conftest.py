"""The bundled stack's files, parsed once per session, for the checks in tests/bundle."""

from __future__ import annotations

import json
from typing import Any

import pytest
from bundle_layout import COLLECTOR_DIR, COMPOSE_FILE, DASHBOARDS_DIR, PROVISIONING_DIR, load_yaml


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="session")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="session")
def collector_config() -> dict[str, Any]:
    return load_yaml(COLLECTOR_DIR / "otelcol-config.yaml")


@pytest.fixture(scope="session")
def prometheus_config() -> dict[str, Any]:
    return load_yaml(COLLECTOR_DIR / "prometheus.yaml")


@pytest.fixture(scope="session")
def datasources() -> list[dict[str, Any]]:
    found = []
    for path in sorted((PROVISIONING_DIR / "datasources").glob("*.y*ml")):
        found.extend(load_yaml(path).get("datasources", []))
    return found


@pytest.fixture(scope="session")
def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text(encoding="utf-8")) for path in DASHBOARDS_DIR.glob("*.json")}
