"""The `scale` layout: agents load-balance traces by trace id to tail-sampling gateways.

The same static checks as the single collector's config (pipelines wired, component
names valid for the pinned release, endpoints reaching services that listen), plus
what makes the layout correct: every span of a trace reaches one gateway, RED metrics
are counted before sampling, and the gateways keep errors, slow traces and a ratio.
"""

from __future__ import annotations

from typing import Any

import pytest
from bundle_layout import COLLECTOR_DIR, listening_ports, load_yaml, published_ports
from test_bundle_collector import (
    RENAMES,
    SECTIONS,
    component_type,
    defined,
    endpoints,
    host_and_port,
    pinned_release,
    pipelines,
)

LAYOUT = ("agent.yaml", "gateway.yaml")
# Renamed to lower_snake_case after the components the single collector uses.
LAYOUT_RENAMES = [*RENAMES, ("exporters", "loadbalancing", "load_balancing", (0, 153, 0))]


@pytest.fixture(scope="module", params=LAYOUT)
def config(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load_yaml(COLLECTOR_DIR / request.param)


@pytest.fixture(scope="module")
def agent() -> dict[str, Any]:
    return load_yaml(COLLECTOR_DIR / "agent.yaml")


@pytest.fixture(scope="module")
def gateway() -> dict[str, Any]:
    return load_yaml(COLLECTOR_DIR / "gateway.yaml")


def test_every_pipeline_component_is_defined_and_every_defined_one_used(config: dict[str, Any]) -> None:
    connectors = defined(config, "connectors")
    used: set[str] = set(config["service"].get("extensions", []))
    for name, pipeline in pipelines(config).items():
        assert set(pipeline["receivers"]) <= defined(config, "receivers") | connectors, name
        assert set(pipeline.get("processors", [])) <= defined(config, "processors"), name
        assert set(pipeline["exporters"]) <= defined(config, "exporters") | connectors, name
        used.update(pipeline["receivers"], pipeline.get("processors", []), pipeline["exporters"])
    for section in SECTIONS:
        assert not defined(config, section) - used, f"{section} defined but in no pipeline"


def test_memory_limiter_first_and_batch_last(config: dict[str, Any]) -> None:
    for name, pipeline in pipelines(config).items():
        processors = [component_type(p) for p in pipeline.get("processors", [])]
        assert processors[:1] == ["memory_limiter"], name
        assert processors[-1:] == ["batch"], name


def test_receivers_bind_all_interfaces(config: dict[str, Any]) -> None:
    bound = list(endpoints(config["receivers"])) + list(endpoints(config["extensions"]))
    assert bound and all(endpoint.startswith("0.0.0.0:") for endpoint in bound), bound


@pytest.mark.parametrize(
    ("section", "old", "new", "since"), LAYOUT_RENAMES, ids=[r[2] for r in LAYOUT_RENAMES]
)
def test_component_names_are_the_ones_the_pinned_release_knows(
    config: dict[str, Any], services: dict[str, Any], section: str, old: str, new: str, since: tuple
) -> None:
    types = {component_type(c) for c in defined(config, section)}
    if pinned_release(services) >= since:
        assert old not in types, f"{old} is a deprecated alias of {new} since {since}"
    else:
        assert new not in types, f"{new} does not exist before {since}"


def test_every_exporter_endpoint_reaches_a_service_that_listens(
    config: dict[str, Any], all_services: dict[str, Any]
) -> None:
    targets = list(endpoints(config["exporters"]))
    targets += (
        config["exporters"]
        .get("load_balancing", {})
        .get("resolver", {})
        .get("static", {})
        .get("hostnames", [])
    )
    assert targets
    for target in targets:
        host, port = host_and_port(target)
        assert host in all_services, f"{target}: {host} is not a compose service"
        assert port in listening_ports(all_services[host]), f"{host} does not listen on {port}"


def test_agents_route_whole_traces_to_every_gateway(
    agent: dict[str, Any], scale_services: dict[str, Any]
) -> None:
    balancer = agent["exporters"]["load_balancing"]
    assert balancer["routing_key"] == "traceID"
    assert "endpoint" not in balancer["protocol"]["otlp"]  # the resolver supplies it
    hostnames = balancer["resolver"]["static"]["hostnames"]
    gateways = {name for name, s in scale_services.items() if _config_of(s) == "gateway.yaml"}
    assert {host_and_port(h)[0] for h in hostnames} == gateways
    assert len(gateways) == 2
    (traces,) = [p for name, p in pipelines(agent).items() if name.partition("/")[0] == "traces"]
    assert "load_balancing" in traces["exporters"]


def test_red_metrics_are_counted_at_the_agent_before_sampling(
    agent: dict[str, Any], gateway: dict[str, Any]
) -> None:
    agent_pipelines = pipelines(agent)
    assert "span_metrics" in agent_pipelines["traces"]["exporters"]
    assert "span_metrics" in agent_pipelines["metrics"]["receivers"]
    assert not defined(gateway, "connectors"), "metrics from sampled spans would undercount"


def test_gateways_tail_sample_errors_slow_traces_and_a_ratio(gateway: dict[str, Any]) -> None:
    assert set(pipelines(gateway)) == {"traces"}
    traces = pipelines(gateway)["traces"]
    assert traces["processors"].index("tail_sampling") < traces["processors"].index("batch")
    sampling = gateway["processors"]["tail_sampling"]
    policies = {policy["type"]: policy for policy in sampling["policies"]}
    assert policies["status_code"]["status_code"]["status_codes"] == ["ERROR"]
    assert policies["latency"]["latency"]["threshold_ms"] > 0
    assert 0 < policies["probabilistic"]["probabilistic"]["sampling_percentage"] < 100
    assert set(policies) == {"status_code", "latency", "probabilistic"}, "any other policy would keep more"
    exporters = {host_and_port(e)[0] for e in endpoints(gateway["exporters"])}
    assert exporters == {"jaeger"}


def test_scale_profile_runs_two_agents_and_two_gateways_of_the_pinned_release(
    services: dict[str, Any], scale_services: dict[str, Any]
) -> None:
    configs = sorted(_config_of(s) for s in scale_services.values())
    assert configs == ["agent.yaml", "agent.yaml", "gateway.yaml", "gateway.yaml"]
    for name, service in scale_services.items():
        assert service["image"] == services["otel-collector"]["image"], name
        assert service["profiles"] == ["scale"], name


def test_agent_host_ports_clash_with_nothing(
    all_services: dict[str, Any], scale_services: dict[str, Any]
) -> None:
    host_ports = [host for s in all_services.values() for host, _ in published_ports(s)]
    assert len(host_ports) == len(set(host_ports)), sorted(host_ports)
    for name, service in scale_services.items():
        published = {container for _, container in published_ports(service)}
        if _config_of(service) == "agent.yaml":
            assert published == {4317, 4318}, name
        else:
            assert not published, f"{name}: gateways are reached by the agents only"


def test_layout_headers_name_the_pinned_release(services: dict[str, Any]) -> None:
    image = services["otel-collector"]["image"]
    for name in LAYOUT:
        assert image.rpartition(":")[2] in (COLLECTOR_DIR / name).read_text(encoding="utf-8"), name


def _config_of(service: dict[str, Any]) -> str:
    (volume,) = service["volumes"]
    return volume.split(":")[0].rpartition("/")[2]
