"""docker-compose.yml: services, pinned images, DESIGN.md's host ports, mounts, start order."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from bundle_layout import DESIGN_FILE, REPO, compose_value, listening_ports, published_ports

# Which service serves each entry of DESIGN.md's "Bundle ports (host)", on which container port.
DESIGN_ENTRIES = {
    "OTLP gRPC": ("otel-collector", 4317),
    "OTLP HTTP": ("otel-collector", 4318),
    "Jaeger UI": ("jaeger", 16686),
    "Prometheus": ("prometheus", 9090),
    "Grafana": ("grafana", 3000),
    "Loki": ("loki", 3100),
    "Redis": ("redis", 6379),
    "app metrics": ("demo", 9464),
}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def design_ports() -> dict[str, int]:
    """``{"OTLP gRPC": 4317, ...}`` read from DESIGN.md's "Bundle ports (host)" section."""
    if not DESIGN_FILE.exists():
        pytest.skip(f"{DESIGN_FILE} is not beside the repository")
    section = (
        DESIGN_FILE.read_text(encoding="utf-8").split("## Bundle ports (host)", 1)[1].split("\n## ", 1)[0]
    )
    return {name.strip(): int(port) for name, port in re.findall(r"([A-Za-z][A-Za-z ]*?) (\d+)", section)}


def image_is_pinned(image: str) -> bool:
    _, _, tag = image.rpartition(":")
    return "/" not in tag and tag != "latest" and any(char.isdigit() for char in tag)


def test_services_of_the_stack(services: dict[str, Any]) -> None:
    assert set(services) == {"redis", "otel-collector", "jaeger", "prometheus", "loki", "grafana", "demo"}


def test_every_image_is_pinned_to_a_release(all_services: dict[str, Any]) -> None:
    for name, service in all_services.items():
        if "build" in service:
            continue
        assert image_is_pinned(service["image"]), f"{name}: {service['image']}"


def test_demo_image_builds_from_a_pinned_base() -> None:
    bases = re.findall(r"^FROM\s+(\S+)", (REPO / "Dockerfile").read_text(encoding="utf-8"), re.MULTILINE)
    assert bases
    assert all(image_is_pinned(base) for base in bases), bases


def test_demo_image_copies_files_that_exist() -> None:
    copies = re.findall(
        r"^COPY\s+(.+?)\s+\S+\s*$", (REPO / "Dockerfile").read_text(encoding="utf-8"), re.MULTILINE
    )
    sources = [source for line in copies for source in line.split()]
    assert sources
    missing = [source for source in sources if not (REPO / source).exists()]
    assert not missing, f"the demo image build would fail: {missing} missing from the repository"


def test_demo_runs_the_demo_command_forever() -> None:
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^RUN pip install \.", dockerfile, re.MULTILINE)
    assert 'CMD ["telemetry-infra", "demo", "--forever"]' in dockerfile


def test_host_ports_are_the_ones_design_fixes(services: dict[str, Any]) -> None:
    expected = design_ports()
    assert set(expected) == set(DESIGN_ENTRIES), "DESIGN.md lists ports this test does not map to a service"
    published = {
        (name, container): host for name, s in services.items() for host, container in published_ports(s)
    }
    assert sorted(published.values()) == sorted(expected.values())
    for entry, port in expected.items():
        assert published.get(DESIGN_ENTRIES[entry]) == port, entry


def test_mounted_files_exist_and_are_read_only(all_services: dict[str, Any]) -> None:
    mounts = [(name, volume) for name, s in all_services.items() for volume in s.get("volumes", [])]
    assert mounts
    for name, volume in mounts:
        source, target, mode = volume.split(":")
        assert source.startswith("./collector/"), f"{name}: config comes from collector/, not {source}"
        assert (REPO / source).exists(), f"{name}: {source} does not exist"
        assert mode == "ro", f"{name}: {target} is writable"


def test_depends_on_uses_conditions_a_service_can_meet(all_services: dict[str, Any]) -> None:
    for name, service in all_services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on without conditions"
        for dependency, spec in depends_on.items():
            assert dependency in all_services, f"{name} depends on unknown {dependency}"
            assert spec["condition"] in CONDITIONS
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in all_services[dependency], f"{dependency} has no healthcheck to pass"


def test_demo_starts_after_redis_and_collector(services: dict[str, Any]) -> None:
    assert set(services["demo"]["depends_on"]) == {"redis", "otel-collector"}


def test_demo_sends_to_the_collector_and_uses_the_bundled_redis(services: dict[str, Any]) -> None:
    environment = services["demo"]["environment"]
    otlp = urlsplit(compose_value(environment["OTEL_EXPORTER_OTLP_ENDPOINT"]))
    assert (otlp.hostname, otlp.port) == ("otel-collector", 4317)
    assert otlp.port in listening_ports(services["otel-collector"])
    redis = urlsplit(compose_value(environment["REDIS_URL"]))
    assert (redis.scheme, redis.hostname, redis.port, redis.path) == ("redis", "redis", 6379, "/0")
    assert redis.port in listening_ports(services["redis"])


def test_prometheus_runs_with_otlp_receiver_and_exemplar_storage(services: dict[str, Any]) -> None:
    command = services["prometheus"]["command"]
    assert "--web.enable-otlp-receiver" in command
    assert "--enable-feature=exemplar-storage" in command
    config_flag = next(flag for flag in command if flag.startswith("--config.file="))
    mounted = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    assert Path(mounted[config_flag.partition("=")[2]]).name == "prometheus.yaml"


def test_grafana_lets_anonymous_users_view_only(services: dict[str, Any]) -> None:
    environment = services["grafana"]["environment"]
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert environment["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


# The newest release of each image confirmed published (Docker Hub tags / GitHub releases);
# a pin above it may not exist and `docker compose pull` would fail.
CONFIRMED_RELEASES = {
    "grafana/loki": (3, 7, 6),
    "grafana/grafana": (13, 2, 0),
}


def test_images_are_pinned_to_confirmed_releases(services: dict[str, Any]) -> None:
    for service in services.values():
        name, _, tag = service.get("image", "").rpartition(":")
        if name in CONFIRMED_RELEASES:
            version = tuple(int(part) for part in tag.lstrip("v").split("-")[0].split("."))
            assert version <= CONFIRMED_RELEASES[name], f"{name}:{tag} is not a confirmed release"
