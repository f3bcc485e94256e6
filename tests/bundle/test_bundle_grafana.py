"""Grafana provisioning: datasource uids and cross-links, and the cache dashboard."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from bundle_layout import PROVISIONING_DIR, listening_ports, load_yaml

DASHBOARD_TITLE = "telemetry_infra — cache and logs"


def uid_references(node: Any) -> Iterator[str]:
    """Every datasource uid ``node`` points at: ``datasourceUid`` keys and ``datasource.uid``."""
    if isinstance(node, list):
        for item in node:
            yield from uid_references(item)
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key == "datasourceUid":
            yield value
        elif key == "datasource" and isinstance(value, dict) and "uid" in value:
            yield value["uid"]
        else:
            yield from uid_references(value)


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def cache_dashboard(dashboards: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (dashboard,) = [d for d in dashboards.values() if d["title"] == DASHBOARD_TITLE]
    return dashboard


def queries(dashboard: dict[str, Any], datasource_type: str) -> list[dict[str, Any]]:
    return [
        target
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if target["datasource"]["type"] == datasource_type
    ]


def test_datasource_uids_are_fixed_and_unique(datasources: list[dict[str, Any]]) -> None:
    uids = [source.get("uid") for source in datasources]
    assert all(uids), "a datasource without a fixed uid gets a random one on every start"
    assert len(uids) == len(set(uids))
    assert {source["type"] for source in datasources} == {"prometheus", "jaeger", "loki"}


def test_every_uid_a_datasource_refers_to_exists(datasources: list[dict[str, Any]]) -> None:
    uids = {source["uid"] for source in datasources}
    references = set(uid_references(datasources))
    assert references
    assert references <= uids


def test_every_uid_a_dashboard_refers_to_exists(
    datasources: list[dict[str, Any]], dashboards: dict[str, dict[str, Any]]
) -> None:
    uids = {source["uid"] for source in datasources}
    types = {source["uid"]: source["type"] for source in datasources}
    assert dashboards
    for name, dashboard in dashboards.items():
        references = list(uid_references(dashboard))
        assert references, name
        assert set(references) <= uids, name
        for node in panels(dashboard):
            if isinstance(node.get("datasource"), dict):
                assert types[node["datasource"]["uid"]] == node["datasource"]["type"], node["title"]


def test_dashboard_uids_are_unique(dashboards: dict[str, dict[str, Any]]) -> None:
    uids = [dashboard["uid"] for dashboard in dashboards.values()]
    assert all(uids)
    assert len(uids) == len(set(uids))


def test_datasources_reach_compose_services(
    datasources: list[dict[str, Any]], services: dict[str, Any]
) -> None:
    for source in datasources:
        url = urlsplit(source["url"])
        assert url.hostname in services, source["name"]
        assert url.port in listening_ports(services[url.hostname]), source["name"]


def test_grafana_variables_are_escaped_from_provisioning_interpolation() -> None:
    """Grafana expands ``$VAR``/``${VAR}`` in provisioning files from its environment."""
    for path in PROVISIONING_DIR.rglob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        unescaped = re.findall(r"(?<!\$)\$\{__[^}]*\}", text)
        assert not unescaped, f"{path.name}: write {unescaped} as $$..."


def test_traces_link_to_logs_and_logs_and_exemplars_link_to_traces(datasources: list[dict[str, Any]]) -> None:
    by_type = {source["type"]: source for source in datasources}
    exemplar_links = by_type["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert [(link["name"], link["datasourceUid"]) for link in exemplar_links] == [
        ("trace_id", by_type["jaeger"]["uid"])
    ]
    traces_to_logs = by_type["jaeger"]["jsonData"]["tracesToLogsV2"]
    assert traces_to_logs["datasourceUid"] == by_type["loki"]["uid"]
    assert "trace_id=" in traces_to_logs["query"]
    assert "__trace.traceId" in traces_to_logs["query"]
    derived = by_type["loki"]["jsonData"]["derivedFields"]
    assert [(field["name"], field["datasourceUid"]) for field in derived] == [
        ("trace_id", by_type["jaeger"]["uid"])
    ]


def test_dashboard_provider_reads_the_folder_compose_mounts(services: dict[str, Any]) -> None:
    (provider_file,) = (PROVISIONING_DIR / "dashboards").glob("*.yaml")
    paths = {provider["options"]["path"] for provider in load_yaml(provider_file)["providers"]}
    targets = {volume.split(":")[1] for volume in services["grafana"]["volumes"] if "/dashboards:" in volume}
    assert paths <= targets


def test_cache_dashboard_has_a_service_variable_every_query_filters_on(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    dashboard = cache_dashboard(dashboards)
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert "service" in variables
    for target in queries(dashboard, "prometheus") + queries(dashboard, "loki"):
        assert '=~"$service"' in target["expr"], target["expr"]


def test_cache_dashboard_latency_panel_shows_p50_p95_p99_with_exemplars(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    latency = [
        target
        for target in queries(cache_dashboard(dashboards), "prometheus")
        if target["expr"].startswith("histogram_quantile(")
    ]
    quantiles = {re.match(r"histogram_quantile\(([\d.]+)", target["expr"]).group(1) for target in latency}
    assert quantiles == {"0.5", "0.95", "0.99"}
    assert all(target.get("exemplar") is True for target in latency)
    assert all("cache_operation" in target["expr"] for target in latency)


def test_cache_dashboard_shows_log_volume_and_recent_errors(dashboards: dict[str, dict[str, Any]]) -> None:
    dashboard = cache_dashboard(dashboards)
    loki_panels = {
        panel["type"] for panel in panels(dashboard) if panel.get("datasource", {}).get("type") == "loki"
    }
    assert {"timeseries", "logs"} <= loki_panels
    expressions = [target["expr"] for target in queries(dashboard, "loki")]
    assert any(expr.startswith("sum by (severity_text) (count_over_time(") for expr in expressions)
    assert any("ERROR" in expr and expr.startswith("{") for expr in expressions)
