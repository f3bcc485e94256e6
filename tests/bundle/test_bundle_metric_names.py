"""Every metric and label the dashboard queries is one the package really produces.

A real workload runs in-process (CacheManager on a private redis-server, hits, misses,
a failing call, Redis killed so the manager falls back to memory and evicts). What the
package exported is then read twice:

* over OTLP, translated to Prometheus names the way Prometheus's OTLP receiver does with
  the ``translation_strategy`` in collector/prometheus.yaml (the bundle's path);
* from ``Telemetry.prometheus_text()`` (the path of users who scrape ``/metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import design_contracts
import pytest
from prometheus_client.parser import text_string_to_metric_families

import telemetry_infra as ti
from telemetry_infra.testing import OTLPReceiver, ReceivedMetricPoint, RedisServer, RedisServerNotFound

# PromQL words that look like metric names but are not.
PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
IDENTIFIER = re.compile(r"(?<![\w.:$])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")

# OTel unit -> the word Prometheus appends (UCUM subset the OTel semantic conventions use).
UNIT_WORDS = {
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "min": "minutes",
    "h": "hours",
    "d": "days",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "%": "percent",
}


# ------------------------------------------------------------------ PromQL, as the dashboard writes it


def promql_parts(expr: str) -> tuple[set[str], set[str]]:
    """``(metric names, label names)`` an expression reads."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    labels = {label for body in re.findall(r"\{([^}]*)\}", expr) for label in MATCHER_LABEL.findall(body)}
    labels |= {
        label.strip() for group in GROUPING.findall(expr) for label in group.split(",") if label.strip()
    }
    bare = GROUPING.sub(" ", re.sub(r"\[[^\]]*\]|\{[^}]*\}", " ", expr))
    bare = re.sub(r"\$\{?\w+\}?", " ", bare)
    names = {name for name in IDENTIFIER.findall(bare) if name.lower() not in PROMQL_KEYWORDS}
    return names, labels


def dashboard_promql(dashboards: dict[str, dict[str, Any]]) -> list[str]:
    expressions = []
    for dashboard in dashboards.values():
        variables = dashboard.get("templating", {}).get("list", [])
        expressions += [
            v["definition"] for v in variables if v.get("datasource", {}).get("type") == "prometheus"
        ]
        for panel in dashboard["panels"]:
            expressions += [
                t["expr"] for t in panel.get("targets", []) if t["datasource"]["type"] == "prometheus"
            ]
    return expressions


def label_values_parts(expr: str) -> tuple[set[str], set[str]]:
    """``label_values(metric, label)`` is Grafana's, not PromQL: split it by hand."""
    match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", expr)
    return ({match.group(1)}, {match.group(2)}) if match else promql_parts(expr)


def dashboard_reads(dashboards: dict[str, dict[str, Any]]) -> tuple[set[str], set[str]]:
    names: set[str] = set()
    labels: set[str] = set()
    for expr in dashboard_promql(dashboards):
        expr_names, expr_labels = label_values_parts(expr)
        names |= expr_names
        labels |= expr_labels
    assert names, "no metric name found in the dashboard's queries"
    return names, labels


# ------------------------------------------------------------------ OTLP -> Prometheus translation


def escape(name: str) -> str:
    """Prometheus label escaping: every character outside [a-zA-Z0-9_] becomes ``_``."""
    escaped = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    return f"key_{escaped}" if escaped[:1].isdigit() else escaped


def names_with_suffixes(point: ReceivedMetricPoint) -> set[str]:
    """Prometheus's ``UnderscoreEscapingWithSuffixes``: words joined by ``_``, unit and type suffixes."""
    words = [word for word in re.split(r"[^a-zA-Z0-9:]+", point.name) if word]
    unit = re.sub(r"\{[^}]*\}", "", point.unit).strip()
    main, _, per = unit.partition("/")
    for suffix in (
        UNIT_WORDS.get(main, main) if main != "1" else "",
        f"per_{UNIT_WORDS.get(per, per)}" if per else "",
    ):
        if suffix and suffix not in words:
            words.append(suffix)
    if point.kind == "gauge" and main == "1":
        words.append("ratio")
    if point.kind == "sum" and point.is_monotonic:
        words = [word for word in words if word != "total"] + ["total"]
    base = "_".join(words)
    return {f"{base}_bucket", f"{base}_sum", f"{base}_count"} if point.kind == "histogram" else {base}


TRANSLATIONS: dict[str, Callable[[ReceivedMetricPoint], set[str]]] = {
    "UnderscoreEscapingWithSuffixes": names_with_suffixes,
}


# ------------------------------------------------------------------ the workload


@dataclass(frozen=True)
class Exported:
    points: list[ReceivedMetricPoint]
    exposition: str


async def run_workload(redis: RedisServer, telemetry: ti.Telemetry) -> None:
    cache = ti.CacheManager(redis_url=redis.url, memory_cache_size=2)
    await cache.initialize()
    try:
        await cache.set("bundle:a", {"v": 1})
        await cache.get("bundle:a")
        await cache.get("bundle:a")
        await cache.get("bundle:missing")
        await cache.mset({"bundle:b": 1, "bundle:c": 2})
        await cache.mget(["bundle:a", "bundle:b", "bundle:absent"])
        await cache.exists("bundle:a")
        await cache.delete("bundle:c")
        with contextlib.suppress(Exception):
            await cache.set("bundle:unencodable", object())
        redis.kill()
        for i in range(6):  # Redis is gone: errors, fallback to memory, evictions from a 2-entry LRU
            await cache.set(f"bundle:fallback:{i}", i)
            await cache.get(f"bundle:fallback:{i}")
        assert telemetry.force_flush(), "metrics were not exported within the flush timeout"
    finally:
        await cache.close()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    if not hasattr(ti, "CacheManager"):
        pytest.fail("telemetry_infra.CacheManager is not exported yet (cache issues)", pytrace=False)
    try:
        redis = RedisServer().start()
    except RedisServerNotFound as exc:
        pytest.fail(str(exc), pytrace=False)
    with redis, OTLPReceiver() as otlp:
        log_dir: Path = tmp_path_factory.mktemp("bundle-logs")
        telemetry = ti.configure(
            service_name="bundle-test", otlp_endpoint=otlp.grpc_endpoint, log_dir=log_dir
        )
        try:
            asyncio.run(run_workload(redis, telemetry))
            # Flushed above; give the receiver a moment in case the last batch is still landing.
            # Nothing arriving at all is left for the checks below to report, name by name.
            with contextlib.suppress(AssertionError):
                otlp.wait_for_metric_points(lambda p: p.name == "cache.operation.duration", timeout=5)
            yield Exported(points=otlp.metric_points(), exposition=telemetry.prometheus_text())
        finally:
            ti.shutdown()


def stored_by_prometheus(exported: Exported, prometheus_config: dict[str, Any]) -> tuple[set[str], set[str]]:
    """``(series names, label names)`` Prometheus's OTLP receiver would store from the package."""
    otlp = prometheus_config["otlp"]
    strategy = otlp.get("translation_strategy", "UnderscoreEscapingWithSuffixes")
    assert strategy in TRANSLATIONS, f"teach this test Prometheus's {strategy} translation"
    names = {name for point in exported.points for name in TRANSLATIONS[strategy](point)}
    labels = {escape(key) for point in exported.points for key in point.attributes}
    labels |= {escape(key) for key in otlp.get("promote_resource_attributes", [])} | {"job", "instance", "le"}
    return names, labels


# ------------------------------------------------------------------ the checks


@pytest.mark.parametrize(
    ("expr", "names", "labels"),
    [
        (
            'sum by (le, op) (rate(a_bucket{s=~"$service"}[$__rate_interval]))',
            {"a_bucket"},
            {"le", "op", "s"},
        ),
        ("histogram_quantile(0.99, b_bucket) / on (x) c_total * 1e-3", {"b_bucket", "c_total"}, {"x"}),
        ('max by (n) (d{k="v{1}"}) or e', {"d", "e"}, {"n", "k"}),
    ],
)
def test_promql_reader_finds_metric_and_label_names(expr: str, names: set[str], labels: set[str]) -> None:
    assert promql_parts(expr) == (names, labels)


@pytest.mark.parametrize(
    ("part", "what"), [(0, "metric names"), (1, "label names")], ids=["metrics", "labels"]
)
def test_dashboard_reads_only_what_prometheus_stores_from_the_package(
    exported: Exported,
    prometheus_config: dict[str, Any],
    dashboards: dict[str, dict[str, Any]],
    part: int,
    what: str,
) -> None:
    stored = stored_by_prometheus(exported, prometheus_config)[part]
    wanted = dashboard_reads(dashboards)[part]
    assert wanted <= stored, f"{what} queried but never produced: {sorted(wanted - stored)}"


def test_dashboard_metrics_are_in_the_packages_own_exposition(
    exported: Exported, dashboards: dict[str, dict[str, Any]]
) -> None:
    exposed = {
        sample.name
        for family in text_string_to_metric_families(exported.exposition)
        for sample in family.samples
    }
    wanted, _ = dashboard_reads(dashboards)
    assert wanted <= exposed, f"queried but not exposed for scraping: {sorted(wanted - exposed)}"


def test_design_cache_metrics_are_exported_with_their_attributes(exported: Exported) -> None:
    """Every cache instrument docs/design.md names arrives over OTLP, with the attributes it lists."""
    for name, attributes in design_contracts.metric_attributes("Cache telemetry names").items():
        points = [point for point in exported.points if point.name == name]
        assert points, f"{name} (docs/design.md) was not exported"
        seen = {key for point in points for key in point.attributes}
        assert seen == set(attributes), f"{name}: attributes {sorted(seen)}, design says {sorted(attributes)}"


def test_design_cache_metrics_are_in_the_exposition(exported: Exported) -> None:
    """Every Prometheus name of docs/design.md's cache metrics is scraped from /metrics."""
    exposed = {
        sample.name
        for family in text_string_to_metric_families(exported.exposition)
        for sample in family.samples
    }
    wanted = {name for names in design_contracts.cache_metrics().values() for name in names}
    assert wanted <= exposed, f"named in docs/design.md but not exposed: {sorted(wanted - exposed)}"


# ------------------------------------------------------------------ Grafana: traces to metrics


def span_metrics_points(collector_config: dict[str, Any]) -> list[ReceivedMetricPoint]:
    """What the collector's span_metrics connector emits, as its configuration shapes it."""
    connector = collector_config["connectors"]["span_metrics"]
    namespace = connector.get("namespace", "traces.span.metrics")
    unit = (connector.get("histogram") or {}).get("unit", "ms")  # the connector's default unit
    keys = ["service.name", "span.name", "span.kind", "status.code"]
    keys += [dimension["name"] for dimension in connector.get("dimensions", [])]
    common: dict[str, Any] = {"attributes": dict.fromkeys(keys, ""), "resource": {}, "scope": "span_metrics"}
    return [
        ReceivedMetricPoint(name=f"{namespace}.calls", kind="sum", unit="", is_monotonic=True, **common),
        ReceivedMetricPoint(name=f"{namespace}.duration", kind="histogram", unit=unit, **common),
    ]


def test_trace_to_metrics_queries_read_what_prometheus_stores(
    exported: Exported,
    prometheus_config: dict[str, Any],
    collector_config: dict[str, Any],
    datasources: list[dict[str, Any]],
) -> None:
    (jaeger,) = [source for source in datasources if source["type"] == "jaeger"]
    links = jaeger["jsonData"]["tracesToMetrics"]
    assert links["queries"], "trace to metrics has no queries: Grafana would show a link to nothing"
    produced = Exported(exported.points + span_metrics_points(collector_config), exported.exposition)
    stored_names, stored_labels = stored_by_prometheus(produced, prometheus_config)
    tags = [tag.get("value") or tag["key"] for tag in links["tags"]]
    assert set(tags) <= stored_labels
    for query in links["queries"]:
        expr = query["query"].replace("$$__tags", ", ".join(f'{tag}=""' for tag in tags))
        names, labels = promql_parts(expr.replace("$${__span.name}", "x"))
        assert names and names <= stored_names, f"{query['name']}: {sorted(names - stored_names)}"
        assert labels <= stored_labels, f"{query['name']}: {sorted(labels - stored_labels)}"
