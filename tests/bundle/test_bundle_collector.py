"""The OpenTelemetry Collector config: pipelines wired, names valid for the pinned release."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from bundle_layout import COLLECTOR_DIR, listening_ports

SECTIONS = ("receivers", "processors", "exporters", "connectors", "extensions")

# Components renamed to lower_snake_case: (section, old name, new name, release of the rename).
# Before that release only the old name loads; from it on the old one is a deprecated alias.
RENAMES = [
    ("exporters", "otlp", "otlp_grpc", (0, 144, 0)),
    ("exporters", "otlphttp", "otlp_http", (0, 144, 0)),
    ("processors", "resourcedetection", "resource_detection", (0, 153, 0)),
    ("connectors", "spanmetrics", "span_metrics", (0, 151, 0)),
]


def component_type(component_id: str) -> str:
    """``otlp_grpc/jaeger`` -> ``otlp_grpc``: the part before the optional ``/name``."""
    return component_id.partition("/")[0]


def pipelines(config: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    return config["service"]["pipelines"]


def defined(config: dict[str, Any], section: str) -> set[str]:
    return set(config.get(section) or {})


def endpoints(node: Any) -> Iterator[str]:
    """Every ``endpoint`` value anywhere below ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "endpoint" and isinstance(value, str):
                yield value
            else:
                yield from endpoints(value)


def host_and_port(endpoint: str) -> tuple[str, int]:
    parts = urlsplit(endpoint if "://" in endpoint else f"tcp://{endpoint}")
    assert parts.hostname and parts.port, f"{endpoint!r} names no host and port"
    return parts.hostname, parts.port


def pinned_release(services: dict[str, Any]) -> tuple[int, ...]:
    image = services["otel-collector"]["image"]
    name, _, tag = image.rpartition(":")
    assert name.endswith("opentelemetry-collector-contrib"), image
    return tuple(int(part) for part in tag.lstrip("v").split("."))


def test_every_pipeline_component_is_defined(collector_config: dict[str, Any]) -> None:
    connectors = defined(collector_config, "connectors")
    for name, pipeline in pipelines(collector_config).items():
        assert set(pipeline["receivers"]) <= defined(collector_config, "receivers") | connectors, name
        assert set(pipeline.get("processors", [])) <= defined(collector_config, "processors"), name
        assert set(pipeline["exporters"]) <= defined(collector_config, "exporters") | connectors, name
    assert set(collector_config["service"].get("extensions", [])) <= defined(collector_config, "extensions")


def test_every_defined_component_is_used(collector_config: dict[str, Any]) -> None:
    used: set[str] = set(collector_config["service"].get("extensions", []))
    for pipeline in pipelines(collector_config).values():
        used.update(pipeline["receivers"], pipeline.get("processors", []), pipeline["exporters"])
    for section in SECTIONS:
        unused = defined(collector_config, section) - used
        assert not unused, f"{section} defined but in no pipeline: {sorted(unused)}"


def test_memory_limiter_first_and_batch_last_in_every_pipeline(collector_config: dict[str, Any]) -> None:
    for name, pipeline in pipelines(collector_config).items():
        processors = [component_type(p) for p in pipeline.get("processors", [])]
        assert processors[:1] == ["memory_limiter"], name
        assert processors[-1:] == ["batch"], name


def test_pipelines_cover_traces_metrics_and_logs(collector_config: dict[str, Any]) -> None:
    signals = {name.partition("/")[0] for name in pipelines(collector_config)}
    assert signals == {"traces", "metrics", "logs"}


def test_every_connector_leaves_one_pipeline_and_feeds_another(collector_config: dict[str, Any]) -> None:
    for connector in defined(collector_config, "connectors"):
        exported_by = {n for n, p in pipelines(collector_config).items() if connector in p["exporters"]}
        received_by = {n for n, p in pipelines(collector_config).items() if connector in p["receivers"]}
        assert exported_by, f"{connector} is an exporter in no pipeline"
        assert received_by, f"{connector} is a receiver in no pipeline"
        assert exported_by != received_by, f"{connector} loops inside {exported_by}"


def test_receivers_and_health_check_bind_all_interfaces(collector_config: dict[str, Any]) -> None:
    bound = list(endpoints(collector_config["receivers"])) + list(endpoints(collector_config["extensions"]))
    assert bound
    for endpoint in bound:
        assert endpoint.startswith("0.0.0.0:"), f"{endpoint} is unreachable from other containers"


def test_collector_publishes_the_ports_its_receivers_listen_on(
    collector_config: dict[str, Any], services: dict[str, Any]
) -> None:
    ports = {host_and_port(e)[1] for e in endpoints(collector_config["receivers"])}
    assert ports == {4317, 4318}
    assert ports <= listening_ports(services["otel-collector"])


def test_exporters_reach_compose_services_on_ports_they_listen_on(
    collector_config: dict[str, Any], services: dict[str, Any]
) -> None:
    reached = {}
    for exporter_id, settings in collector_config["exporters"].items():
        for endpoint in endpoints(settings):
            host, port = host_and_port(endpoint)
            assert host in services, f"{exporter_id}: {host} is not a compose service"
            assert port in listening_ports(services[host]), f"{exporter_id}: {host} does not listen on {port}"
            reached[exporter_id] = host
    assert set(reached.values()) == {"jaeger", "prometheus", "loki"}


def test_metrics_go_to_prometheus_otlp_receiver_and_logs_to_loki_otlp(
    collector_config: dict[str, Any],
) -> None:
    exporters = collector_config["exporters"]
    by_path = {
        urlsplit(s["endpoint"]).path: component_type(i)
        for i, s in exporters.items()
        if "://" in s.get("endpoint", "")
    }
    assert by_path == {"/api/v1/otlp": "otlp_http", "/otlp": "otlp_http"}


@pytest.mark.parametrize(("section", "old", "new", "since"), RENAMES, ids=[r[2] for r in RENAMES])
def test_component_names_are_the_ones_the_pinned_release_knows(
    collector_config: dict[str, Any], services: dict[str, Any], section: str, old: str, new: str, since: tuple
) -> None:
    types = {component_type(c) for c in defined(collector_config, section)}
    expected, other = (new, old) if pinned_release(services) >= since else (old, new)
    assert expected in types
    assert other not in types


def test_config_header_names_the_release_compose_pins(services: dict[str, Any]) -> None:
    header = (COLLECTOR_DIR / "otelcol-config.yaml").read_text(encoding="utf-8")
    assert services["otel-collector"]["image"] in header


@pytest.mark.parametrize(
    ("attribute", "deleted"),
    [
        ("http.request.header.authorization", True),
        ("db.password", True),
        ("api_key", True),
        ("x-api-key", True),
        ("oauth.access_token", True),
        ("http.response.header.set-cookie", True),
        ("cache.key", False),
        ("cache.keys.count", False),
        ("gen_ai.usage.input_tokens", False),
        ("user_id", False),
    ],
)
def test_secret_scrubbing_deletes_credential_attributes_only(
    collector_config: dict[str, Any], attribute: str, deleted: bool
) -> None:
    (action,) = collector_config["processors"]["attributes/scrub_secrets"]["actions"]
    assert action["action"] == "delete"
    # The collector matches with Go's RE2; this pattern uses only syntax RE2 and Python share.
    assert bool(re.search(action["pattern"], attribute)) is deleted
