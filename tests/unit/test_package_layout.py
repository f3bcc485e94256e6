"""The package's module graph: every OpenTelemetry plumbing module imports alone, no import cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "telemetry_infra"
# The import paths docs/design.md documents.
DOCUMENTED_PATHS = {
    "telemetry_infra": ["metrics_asgi_app", "mark_process_dead", "configure", "CacheManager"],
    "telemetry_infra.integrations.fastapi": ["instrument_app"],
    "telemetry_infra.integrations.asgi": ["TelemetryMiddleware"],
    "telemetry_infra.integrations.wsgi": ["instrument_wsgi"],
    "telemetry_infra.logs": ["SERVER_LOG_CONFIG", "install_exception_hooks"],
    "telemetry_infra.testing": ["OTLPReceiver", "RedisServer", "RedisCluster", "RedisSentinel"],
}


def module_name(path: Path) -> str:
    return "telemetry_infra." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(
        ".__init__"
    )


OTEL_MODULES = sorted(module_name(path) for path in (PACKAGE / "otel").rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every ``telemetry_infra`` module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
        elif isinstance(node, ast.ImportFrom) and node.module:  # relative: resolve against the package
            base = module_name(path).split(".")[: -node.level if path.name != "__init__.py" else None]
            if path.name == "__init__.py" and node.level > 1:
                base = base[: -(node.level - 1)]
            found.add(".".join([*base, node.module]))
    return {name for name in found if name.startswith("telemetry_infra.")}


def module_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imported_modules(path) & modules.keys() for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in visiting:
            return [*visiting[visiting.index(node) :], node]
        if node in done:
            return None
        visiting.append(node)
        for target in sorted(graph[node]):
            if cycle := visit(target):
                return cycle
        visiting.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        if cycle := visit(node):
            return cycle
    return None


def test_no_import_cycle_between_modules() -> None:
    assert find_cycle(module_graph()) is None


@pytest.mark.parametrize("module", OTEL_MODULES)
def test_each_otel_module_imports_alone(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("module", "names"), DOCUMENTED_PATHS.items())
def test_documented_import_paths_still_work(module: str, names: list[str]) -> None:
    code = f"from {module} import {', '.join(names)}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
