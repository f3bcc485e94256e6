"""Where the bundled stack's files live and how to read them (shared by tests/bundle)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COLLECTOR_DIR = REPO / "collector"
PROVISIONING_DIR = COLLECTOR_DIR / "grafana" / "provisioning"
DASHBOARDS_DIR = COLLECTOR_DIR / "dashboards"
COMPOSE_FILE = REPO / "docker-compose.yml"

# `${VAR:-default}` in a compose value: the value compose uses when VAR is unset.
_COMPOSE_DEFAULT = re.compile(r"\$\{\w+:-([^}]*)\}")


def load_yaml(path: Path) -> Any:
    """Parse one YAML file; a syntax error fails the test that needs it."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def compose_value(value: Any) -> str:
    """A compose string with every ``${VAR:-default}`` replaced by its default."""
    return _COMPOSE_DEFAULT.sub(r"\1", str(value))


def published_ports(service: dict[str, Any]) -> list[tuple[int, int]]:
    """``(host port, container port)`` for every port a compose service publishes."""
    pairs = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            pairs.append((int(compose_value(entry["published"])), int(entry["target"])))
            continue
        host, _, container = compose_value(entry).rpartition(":")
        pairs.append((int(host.rpartition(":")[2]), int(container.partition("/")[0])))
    return pairs


def listening_ports(service: dict[str, Any]) -> set[int]:
    """Container ports other services may reach: the published ones and ``expose``."""
    exposed = {int(str(port).partition("/")[0]) for port in service.get("expose", [])}
    return exposed | {container for _, container in published_ports(service)}
