"""Histograms aggregated by us and exported through our own metric readers.

One ``Histogram.record()`` of the OTel SDK cleans and hashes the attributes, builds a
measurement and walks the reader storages: on a small machine that is 10-20 µs, more
than a whole in-memory cache hit. The cache's hot path instead records into a
:class:`HistogramSeries` it keeps per attribute set (a bisect and a few additions
under a lock), and every collection folds the series into the ``MetricsData`` that
our readers hand on, the OTLP exporter and the Prometheus bridge alike. What reaches
the wire is an ordinary cumulative OTel histogram with exemplars.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext

__all__ = [
    "SECONDS_BUCKETS",
    "HistogramSeries",
    "PreaggregatedHistogram",
    "WithPreaggregated",
    "add_preaggregated",
    "reset_all",
]

#: Buckets for our seconds histograms: 100 µs to 1 s. The SDK's defaults (0, 5, 10,
#: 25 ... 10000) are meant for milliseconds and would put every cache call in one bucket.
SECONDS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

_registry: list[PreaggregatedHistogram] = []
_registry_lock = threading.Lock()


class HistogramSeries:
    """One attribute set of a histogram: bucket counts, sum, min, max, newest exemplar per bucket."""

    __slots__ = (
        "_bounds",
        "_exemplars",
        "_lock",
        "attributes",
        "count",
        "counts",
        "max",
        "min",
        "start",
        "sum",
    )

    def __init__(self, attributes: Mapping[str, Any], bounds: Sequence[float]) -> None:
        self.attributes = dict(attributes)
        self._bounds = bounds
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.counts = [0] * (len(self._bounds) + 1)
        self.count = 0
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        #: bucket -> (value, time, span context) of its last sampled record; made Exemplars at export
        self._exemplars: dict[int, tuple[float, int, SpanContext]] = {}
        self.start = time.time_ns()

    def record(self, value: float, span_context: SpanContext | None = None) -> None:
        """Count ``value``; with a sampled ``span_context`` it becomes its bucket's exemplar."""
        index = bisect.bisect_left(self._bounds, value)
        with self._lock:
            self.counts[index] += 1
            self.count += 1
            self.sum += value
            if value < self.min:
                self.min = value
            if value > self.max:
                self.max = value
            if span_context is not None and span_context.trace_flags.sampled:
                self._exemplars[index] = (value, time.time_ns(), span_context)

    def point(self, now: int) -> HistogramDataPoint | None:
        with self._lock:
            if not self.count:
                return None
            return HistogramDataPoint(
                attributes=self.attributes,
                start_time_unix_nano=self.start,
                time_unix_nano=now,
                count=self.count,
                sum=self.sum,
                bucket_counts=list(self.counts),
                explicit_bounds=list(self._bounds),
                min=self.min,
                max=self.max,
                exemplars=[
                    Exemplar({}, value, at, context.span_id, context.trace_id)
                    for value, at, context in self._exemplars.values()
                ],
            )


class PreaggregatedHistogram:
    """A histogram whose series are kept by the instrumented code itself.

    Create it once; ask :meth:`series` once per attribute set and keep the result.
    """

    def __init__(
        self, name: str, *, unit: str, description: str, scope: str, bounds: Sequence[float] = SECONDS_BUCKETS
    ) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self.scope = InstrumentationScope(scope)
        self.bounds = tuple(bounds)
        self._series: dict[tuple[tuple[str, Any], ...], HistogramSeries] = {}
        self._lock = threading.Lock()
        with _registry_lock:
            _registry.append(self)

    def series(self, attributes: Mapping[str, Any]) -> HistogramSeries:
        key = tuple(sorted(attributes.items()))
        with self._lock:
            found = self._series.get(key)
            if found is None:
                found = self._series[key] = HistogramSeries(attributes, self.bounds)
            return found

    def metric(self, now: int) -> Metric | None:
        with self._lock:
            series = list(self._series.values())
        points = [point for point in (s.point(now) for s in series) if point is not None]
        if not points:
            return None
        data = Histogram(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE)
        return Metric(name=self.name, description=self.description, unit=self.unit, data=data)

    def reset(self) -> None:
        with self._lock:
            for series in self._series.values():
                series.reset()


def reset_all() -> None:
    """Start every histogram from zero (a new ``configure()`` is a new meter provider)."""
    with _registry_lock:
        histograms = list(_registry)
    for histogram in histograms:
        histogram.reset()


def add_preaggregated(data: MetricsData | None, resource: Resource) -> MetricsData:
    """``data`` with every pre-aggregated histogram added under its scope."""
    with _registry_lock:
        histograms = list(_registry)
    now = time.time_ns()
    extra: dict[InstrumentationScope, list[Metric]] = {}
    for histogram in histograms:
        metric = histogram.metric(now)
        if metric is not None:
            extra.setdefault(histogram.scope, []).append(metric)
    if data is None:
        data = MetricsData(resource_metrics=[])
    if not extra:
        return data
    resource_metrics = list(data.resource_metrics) or [ResourceMetrics(resource, [], "")]
    first = resource_metrics[0]
    scopes = list(first.scope_metrics)
    for scope, metrics in extra.items():
        index = next((i for i, s in enumerate(scopes) if s.scope.name == scope.name), None)
        if index is None:
            scopes.append(ScopeMetrics(scope, metrics, ""))
        else:
            scopes[index] = replace(scopes[index], metrics=[*scopes[index].metrics, *metrics])
    resource_metrics[0] = replace(first, scope_metrics=scopes)
    return MetricsData(resource_metrics=resource_metrics)


class WithPreaggregated(MetricExporter):
    """Wraps a metric exporter so each export also carries the pre-aggregated histograms."""

    def __init__(self, exporter: MetricExporter, resource: Resource) -> None:
        super().__init__(
            preferred_temporality=exporter._preferred_temporality,
            preferred_aggregation=exporter._preferred_aggregation,
        )
        self._exporter = exporter
        self._resource = resource

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        data = add_preaggregated(metrics_data, self._resource)
        return self._exporter.export(data, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._exporter.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._exporter.shutdown(timeout_millis=timeout_millis, **kwargs)
