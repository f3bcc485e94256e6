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
def all_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every compose service, those of optional profiles (``--profile scale``) included."""
    return compose["services"]


@pytest.fixture(scope="session")
def services(all_services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services ``docker compose up`` starts (no profile)."""
    return {name: service for name, service in all_services.items() if not service.get("profiles")}


@pytest.fixture(scope="session")
def scale_services(all_services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The agents and gateways that ``docker compose --profile scale up`` adds."""
    return {name: s for name, s in all_services.items() if "scale" in s.get("profiles", [])}


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
