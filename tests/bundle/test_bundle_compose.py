"""docker-compose.yml: services, pinned images, docs/design.md's host ports, mounts, start order."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bundle_layout import REPO, compose_value, listening_ports, published_ports
from design_contracts import bundle_ports

CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


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


def test_demo_image_gets_the_files_pyproject_names() -> None:
    """``pip install .`` in the image needs the readme and license files pyproject.toml names."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    needed = [project["readme"], *project.get("license-files", [])]
    copies = re.findall(r"^COPY\s+(.+?)\s+\S+\s*$", (REPO / "Dockerfile").read_text(encoding="utf-8"), re.M)
    copied = {source for line in copies for source in line.split()}
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    }
    for name in needed:
        assert name in copied, f"Dockerfile does not COPY {name}, which pyproject.toml names"
        assert name in allowed, f".dockerignore keeps {name} out of the build context"


def test_demo_runs_the_demo_command_forever() -> None:
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^RUN pip install \.", dockerfile, re.MULTILINE)
    assert 'CMD ["telemetry-infra", "demo", "--forever"]' in dockerfile


def test_host_ports_are_the_ones_design_fixes(services: dict[str, Any]) -> None:
    expected = bundle_ports()  # docs/design.md, "Bundle ports (host)"
    assert expected, "docs/design.md lists no bundle ports"
    published = {
        (name, container): host for name, s in services.items() for host, container in published_ports(s)
    }
    assert sorted(published.values()) == sorted(host for _, host, _ in expected.values())
    for entry, (service, host, container) in expected.items():
        assert published.get((service, container)) == host, entry


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
