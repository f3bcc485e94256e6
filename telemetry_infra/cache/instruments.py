"""Spans and metrics for cache operations; the only cache module that knows OpenTelemetry.

Spans (kind INTERNAL) are named ``cache.<operation>`` and are made only inside a
trace that records: a cache call outside any trace, or under a parent that was not
sampled, costs no span (a parent-based sampler would drop it anyway). The Redis
command spans of opentelemetry-instrumentation-redis nest under them.

Counters are not incremented per call: every manager keeps plain integers
(``CacheStats``) and one set of observable instruments reads all of them at
collection time, so exported values are exact and the hot path stays cheap.

The duration histogram is aggregated here (:mod:`telemetry_infra.otel.preaggregated`: a
bisect and a few additions, where the SDK's ``record()`` costs more than a memory
hit) and exported by our readers; a sampled operation's span becomes the exemplar of
its bucket. Span attributes learnt during the call are set in one ``set_attributes``
at the end (each separate ``set_attribute`` takes the span's lock and re-validates).

A cache span is a light span (:mod:`telemetry_infra.otel.light_spans`) wherever that is
exact: the same span on the wire, recorded without the SDK's live span; the Redis
command spans nest under it as under a live one.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextvars import Token
from typing import Any, Protocol

from opentelemetry import context, metrics, trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode

from telemetry_infra.cache.stats import CacheStats
from telemetry_infra.otel.current_context import current_span
from telemetry_infra.otel.light_spans import LightSpan, LightSpansOf
from telemetry_infra.otel.preaggregated import HistogramSeries, PreaggregatedHistogram

__all__ = ["KEY_ATTRIBUTE_LIMIT", "NO_TELEMETRY", "CacheTelemetry", "NoTelemetry", "Observed", "Operation"]

KEY_ATTRIBUTE_LIMIT = 128
OPERATIONS = ("get", "set", "delete", "exists", "clear", "mget", "mset")
REDIS_BACKENDS = frozenset({"redis", "redis-cluster", "redis-sentinel"})
BACKENDS = (*sorted(REDIS_BACKENDS), "memory", "closed")
#: reads whose spans say which tier answered (``cache.tier``: ``near``, ``redis`` or ``memory``)
TIERED = frozenset(("get", "mget"))

_tracer = trace.get_tracer("telemetry_infra.cache")
_SPAN_NAMES = {operation: f"cache.{operation}" for operation in OPERATIONS}
_meter = metrics.get_meter("telemetry_infra.cache")
_perf_counter = time.perf_counter


class _NoOperation:
    """What ``operation()`` returns when telemetry is off: does nothing, allocates nothing."""

    __slots__ = ()

    def __enter__(self) -> _NoOperation:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set(self, name: str, value: Any) -> None:
        return None

    def fail(self, exc: BaseException) -> None:
        return None

    def served_near(self) -> None:
        return None


_NO_OPERATION = _NoOperation()


class NoTelemetry:
    """``CacheTelemetry``'s stand-in with telemetry off: every record is a no-op."""

    __slots__ = ()

    def operation(self, name: str, key: str | None = None) -> _NoOperation:
        return _NO_OPERATION

    def near_hit(self, key: str, started: float) -> None:
        return None

    def memory_hit(self, key: str, started: float, item_size: int) -> None:
        return None

    def outage(self, exc: BaseException) -> None:
        return None

    def breaker_changed(self, is_open: bool, cause: BaseException | None) -> None:
        return None

    def untraced(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def background_context(self) -> contextvars.Context:
        return contextvars.copy_context()


NO_TELEMETRY = NoTelemetry()


def _recording_span() -> trace.Span | None:
    """The current span if it records (a sampled trace), else None."""
    span = current_span()
    if span is not None and span.is_recording():
        return span
    return None


_light_spans = LightSpansOf(_tracer)


class _RedisCommandSpans:
    """Whether opentelemetry-instrumentation-redis traces Redis commands now (``configure()``
    switches it; so does ``opentelemetry-instrument``): a cache span has children then."""

    def __init__(self) -> None:
        self._instrumentor: Any = None
        self._missing = False

    def __call__(self) -> bool:
        instrumentor = self._instrumentor
        if instrumentor is None:
            if self._missing:
                return False
            try:
                from opentelemetry.instrumentation.redis import RedisInstrumentor
            except ImportError:
                self._missing = True
                return False
            instrumentor = self._instrumentor = RedisInstrumentor()
        traced: bool = instrumentor.is_instrumented_by_opentelemetry
        return traced


_redis_command_spans = _RedisCommandSpans()


def _suppressed() -> context.Context:
    """The current OTel context with instrumentations (the Redis command spans) switched off."""
    return context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True)


class _Operation:
    """One timed operation; a span when the current trace records."""

    __slots__ = ("_attributes", "_key", "_name", "_near", "_span", "_started", "_telemetry", "_token")

    def __init__(self, telemetry: CacheTelemetry, name: str, key: str | None) -> None:
        self._telemetry = telemetry
        self._name = name
        self._near = False
        self._span: trace.Span | None = None
        self._token: Token[Context] | None
        parent = _recording_span()
        if parent is not None:
            self._key = key
            self._span = span = telemetry.start_span(name, key, parent=parent)
            self._attributes: dict[str, Any] = {}
            self._token = context.attach(trace.set_span_in_context(span))
        elif telemetry.backend_name() in REDIS_BACKENDS:
            # No cache span, so no Redis command span either: an orphan GET would be a
            # trace of its own, and an unsampled one still costs its instrumentation.
            self._token = context.attach(_suppressed())
        else:
            self._token = None
        self._started = _perf_counter()

    def __enter__(self) -> _Operation:
        return self

    def set(self, name: str, value: Any) -> None:
        """Note a span attribute (``cache.hit``, ``cache.item_size``, ...) if there is a span."""
        if self._span is not None:
            self._attributes[name] = value

    def served_near(self) -> None:
        """The near tier answered: ``cache.tier=near``, and its own duration series."""
        self._near = True

    def fail(self, exc: BaseException) -> None:
        """The operation failed (raised, or degraded to its empty result)."""
        span = self._span
        if span is not None:
            self._attributes["error.type"] = type(exc).__name__
            span.set_status(Status(StatusCode.ERROR, str(exc) or type(exc).__name__))
            span.record_exception(exc)

    def __exit__(self, exc_type: Any, exc: BaseException | None, _tb: Any) -> None:
        elapsed = _perf_counter() - self._started
        telemetry = self._telemetry
        backend = telemetry.backend_name()
        series = telemetry.durations["near" if self._near else backend][self._name]
        span = self._span
        if span is None:
            series.record(elapsed)
            if self._token is not None:
                context.detach(self._token)
            return
        if exc is not None:
            self.fail(exc)
        attributes = self._attributes
        attributes["cache.backend"] = backend
        if self._name in TIERED:  # which tier answered: near, Redis (any topology) or memory
            attributes["cache.tier"] = (
                "near" if self._near else "redis" if backend in REDIS_BACKENDS else backend
            )
        if backend in REDIS_BACKENDS and telemetry.server_of is not None:
            self._set_server(telemetry.server_of)
        series.record(elapsed, span.get_span_context())  # the exemplar points at this operation
        _end(span, self._attributes)
        if self._token is not None:  # always set alongside the span
            context.detach(self._token)

    def _set_server(self, server_of: Callable[[str | None], tuple[str, int] | None]) -> None:
        """``server.address``/``server.port`` of the node serving the key (one node, the
        Sentinels' primary, or the Cluster node of the key's slot; none for a batch across
        a Cluster's nodes)."""
        try:
            address = server_of(self._key if self._name not in _KEYLESS else None)
        except Exception:
            return
        if address is not None:
            self._attributes["server.address"], self._attributes["server.port"] = address


_KEYLESS = frozenset({"clear", "mget", "mset"})


def _end(span: trace.Span, attributes: dict[str, Any]) -> None:
    """Set ``attributes`` (ours, valid values) on ``span`` and end it."""
    if type(span) is LightSpan:
        span.end_with(attributes)
        return
    span.set_attributes(attributes)
    span.end()


Operation = _Operation | _NoOperation


class CacheTelemetry:
    """Spans and metrics of one manager, told apart from others by ``cache.name``."""

    def __init__(
        self,
        name: str,
        stats: CacheStats,
        backend_name: Callable[[], str],
        observed: Observed,
        *,
        hash_keys: bool = False,
        near: bool = False,
        server_of: Callable[[str | None], tuple[str, int] | None] | None = None,
    ) -> None:
        self.name = name
        self.backend_name = backend_name
        #: the address of the Redis node serving a key (None: the operation's only node)
        self.server_of = server_of
        self.hash_keys = hash_keys
        duration = _instruments().duration
        self.durations = {
            backend: {
                op: duration.series({"cache.name": name, "cache.operation": op, "cache.backend": backend})
                for op in OPERATIONS
            }
            for backend in BACKENDS
        }
        # near hits: a few µs, they would hide the Redis round trips in the redis series
        self.durations["near"] = (
            {}
            if not near
            else {
                op: duration.series(
                    {
                        "cache.name": name,
                        "cache.operation": op,
                        "cache.backend": "redis",
                        "cache.tier": "near",
                    }
                )
                for op in TIERED
            }
        )
        self._near_get = self.durations["near"].get("get") or duration.series(
            {"cache.name": name, "cache.operation": "get", "cache.backend": "redis", "cache.tier": "near"}
        )
        self._memory_get = self.durations["memory"]["get"]
        self._pending_events: list[tuple[str, dict[str, str]]] = []
        _instruments().register(name, stats, observed)

    def operation(self, name: str, key: str | None = None) -> _Operation:
        return _Operation(self, name, key)

    def start_span(
        self,
        name: str,
        key: str | None,
        start_time: int | None = None,
        *,
        parent: trace.Span,
    ) -> trace.Span:
        """The ``cache.<name>`` span, child of the recording span ``parent`` (the current one),
        with pending breaker events; a light span where the tracer allows one, else a live one."""
        attributes: dict[str, Any] = {"cache.name": self.name}
        if key is not None:
            attributes["cache.key"] = self.key_attribute(key)
        name = _SPAN_NAMES[name]
        spans = _light_spans()
        span = None if spans is None else spans.start(name, attributes, parent.get_span_context(), start_time)
        if span is None:
            span = _tracer.start_span(
                name, kind=SpanKind.INTERNAL, attributes=attributes, start_time=start_time
            )
        if self._pending_events:
            self.drain_events(span)
        return span

    def near_hit(self, key: str, started: float) -> None:
        """A ``get`` the near tier answered; see :meth:`_hit_in_place`."""
        self._hit_in_place(key, started, self._near_get, {"cache.tier": "near"})

    def memory_hit(self, key: str, started: float, item_size: int) -> None:
        """A ``get`` the memory backend of a manager without Redis answered; see :meth:`_hit_in_place`."""
        self._hit_in_place(
            key, started, self._memory_get, {"cache.tier": "memory", "cache.item_size": item_size}
        )

    def _hit_in_place(
        self, key: str, started: float, series: HistogramSeries, attributes: dict[str, Any]
    ) -> None:
        """A ``get`` hit answered without an ``await``, ``started`` at this ``perf_counter()``
        time: its duration in ``series``; its span (back-dated to ``started``) only inside a
        sampled trace. No per-call object and no context change otherwise."""
        elapsed = _perf_counter() - started
        parent = _recording_span()
        if parent is None:
            series.record(elapsed)
            return
        span = self.start_span("get", key, time.time_ns() - int(elapsed * 1e9), parent=parent)
        backend = self.backend_name()
        attributes = {**attributes, "cache.hit": True, "cache.backend": backend}
        if backend in REDIS_BACKENDS and self.server_of is not None:
            with contextlib.suppress(Exception):
                address = self.server_of(key)
                if address is not None:
                    attributes["server.address"], attributes["server.port"] = address
        series.record(elapsed, span.get_span_context())
        _end(span, attributes)

    @contextlib.contextmanager
    def untraced(self) -> Iterator[None]:
        """Outside a recording span, Redis commands (a PING) make no orphan span of their own."""
        if trace.get_current_span().is_recording():
            yield
            return
        token = context.attach(_suppressed())
        try:
            yield
        finally:
            context.detach(token)

    def background_context(self) -> contextvars.Context:
        """A fresh context for background tasks (the breaker's probe): no parent, no command spans."""
        fresh = contextvars.Context()
        fresh.run(lambda: context.attach(_suppressed()))
        return fresh

    def key_attribute(self, key: str) -> str:
        """``cache.key`` as exported: hashed if asked (personal data), else truncated."""
        if self.hash_keys:
            return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:32]
        if len(key) > KEY_ATTRIBUTE_LIMIT:
            return key[: KEY_ATTRIBUTE_LIMIT - 1] + "…"
        return key

    def outage(self, exc: BaseException) -> None:
        """Redis failed and memory served: an exception event on the current span."""
        span = trace.get_current_span()
        if span.is_recording():
            span.record_exception(exc, attributes={"cache.fallback": True})

    def breaker_changed(self, is_open: bool, cause: BaseException | None) -> None:
        """Breaker transitions become span events (on the next operation if none is current)."""
        name = "cache.fallback.opened" if is_open else "cache.fallback.closed"
        attributes = {"cache.name": self.name}
        if cause is not None:
            attributes["error.type"] = type(cause).__name__
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(name, attributes)
        else:
            self._pending_events.append((name, attributes))

    def drain_events(self, span: trace.Span) -> None:
        while self._pending_events:
            name, attributes = self._pending_events.pop(0)
            span.add_event(name, attributes)


def _usage_by_node(observed: Observed) -> Iterable[tuple[tuple[str, int] | None, tuple[int, int, int]]]:
    """``observed``'s pool usage per Cluster node, or once with node None for a single pool."""
    by_node = observed.connection_usage_by_node()
    if by_node is not None:
        return by_node.items()
    usage = observed.connection_usage()
    return () if usage is None else ((None, usage),)


class Observed(Protocol):
    """What the gauges read from a live manager (held weakly)."""

    name: str

    @property
    def fallback_active(self) -> bool: ...

    def connection_usage(self) -> tuple[int, int, int] | None:
        """``(used, idle, max)`` pool connections, or None without Redis."""
        ...

    def connection_usage_by_node(self) -> dict[tuple[str, int], tuple[int, int, int]] | None:
        """The same per node where each node has a pool of its own (a Cluster), else None."""
        ...


class _Instruments:
    """The process-wide instruments; each manager registers its counters once.

    Counters read ``CacheStats`` objects, which are kept after their manager is
    gone so a counter never goes backwards; gauges read only live managers.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: list[tuple[str, CacheStats]] = []
        self._live: weakref.WeakSet[Any] = weakref.WeakSet()
        self.duration = PreaggregatedHistogram(
            "cache.operation.duration",
            unit="s",
            description="Duration of cache operations",
            scope="telemetry_infra.cache",
        )
        counters = (
            ("cache.hits", self._hits, "{hit}", "Lookups that found a value"),
            ("cache.misses", self._misses, "{miss}", "Lookups that found nothing"),
            ("cache.errors", self._errors, "{error}", "Failed cache operations"),
            ("cache.evictions", self._evictions, "{entry}", "Memory entries evicted for room"),
            ("cache.near.hits", self._near_hits, "{hit}", "Lookups answered by the near cache"),
            ("cache.near.misses", self._near_misses, "{miss}", "Near cache lookups that went to Redis"),
            (
                "cache.near.invalidations",
                self._near_invalidations,
                "{key}",
                "Keys Redis said changed, dropped from the near cache",
            ),
        )
        for name, callback, unit, description in counters:
            _meter.create_observable_counter(name, [callback], unit=unit, description=description)
        _meter.create_observable_gauge(
            "cache.fallback.active", [self._fallback], description="1 while memory serves instead of Redis"
        )
        # semconv's db.client.connection.count under its earlier name: a Prometheus gauge
        # may not end in _count (promtool), and this one is db_client_connections_usage
        pool_gauges = (
            ("db.client.connections.usage", self._connection_count, "Redis connections of the pool by state"),
            ("db.client.connection.max", self._connection_max, "Maximum Redis connections of the pool"),
        )
        for name, callback, description in pool_gauges:
            _meter.create_observable_up_down_counter(
                name, [callback], unit="{connection}", description=description
            )

    def register(self, name: str, stats: CacheStats, observed: Observed) -> None:
        with self._lock:
            self._stats.append((name, stats))
            self._live.add(observed)

    def _totals(self, read: Callable[[CacheStats], int]) -> dict[str, int]:
        with self._lock:
            entries = list(self._stats)
        totals: dict[str, int] = {}
        for name, stats in entries:
            totals[name] = totals.get(name, 0) + read(stats)
        return totals

    def _observed(self) -> list[Observed]:
        with self._lock:
            return list(self._live)

    def _hits(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"cache.name": name}) for name, n in self._totals(lambda s: s.hits).items()]

    def _misses(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"cache.name": name}) for name, n in self._totals(lambda s: s.misses).items()]

    def _near_hits(self, _options: CallbackOptions) -> Iterable[Observation]:
        return self._per_name(lambda s: s.near_hits)

    def _near_misses(self, _options: CallbackOptions) -> Iterable[Observation]:
        return self._per_name(lambda s: s.near_misses)

    def _near_invalidations(self, _options: CallbackOptions) -> Iterable[Observation]:
        return self._per_name(lambda s: s.near_invalidations)

    def _per_name(self, read: Callable[[CacheStats], int]) -> list[Observation]:
        return [Observation(n, {"cache.name": name}) for name, n in self._totals(read).items()]

    def _evictions(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(n, {"cache.name": name, "cache.backend": "memory"})
            for name, n in self._totals(lambda s: s.evictions).items()
        ]

    def _errors(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            entries = list(self._stats)
        totals: dict[tuple[str, str], int] = {}
        for name, stats in entries:
            for error_type, n in list(stats.errors_by_type.items()):
                totals[name, error_type] = totals.get((name, error_type), 0) + n
        return [
            Observation(n, {"cache.name": name, "error.type": kind}) for (name, kind), n in totals.items()
        ]

    def _fallback(self, _options: CallbackOptions) -> Iterable[Observation]:
        active: dict[str, int] = {}
        for observed in self._observed():
            active[observed.name] = max(active.get(observed.name, 0), int(observed.fallback_active))
        return [Observation(value, {"cache.name": name}) for name, value in active.items()]

    def _pools(self) -> dict[tuple[str, tuple[str, int] | None], tuple[int, int, int]]:
        """Usage by (cache name, node): node None for a single pool, ``(host, port)`` per Cluster node."""
        pools: dict[tuple[str, tuple[str, int] | None], tuple[int, int, int]] = {}
        for observed in self._observed():
            for node, usage in _usage_by_node(observed):
                used, idle, most = pools.get((observed.name, node), (0, 0, 0))
                pools[observed.name, node] = (used + usage[0], idle + usage[1], most + usage[2])
        return pools

    @staticmethod
    def _pool_attributes(name: str, node: tuple[str, int] | None) -> dict[str, Any]:
        attributes: dict[str, Any] = {"db.client.connection.pool.name": name}
        if node is not None:
            attributes["server.address"], attributes["server.port"] = node
        return attributes

    def _connection_count(self, _options: CallbackOptions) -> Iterable[Observation]:
        observations = []
        for (name, node), (used, idle, _most) in self._pools().items():
            pool = self._pool_attributes(name, node)
            observations.append(Observation(used, {**pool, "db.client.connection.state": "used"}))
            observations.append(Observation(idle, {**pool, "db.client.connection.state": "idle"}))
        return observations

    def _connection_max(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(most, self._pool_attributes(name, node))
            for (name, node), (_used, _idle, most) in self._pools().items()
        ]


_shared: _Instruments | None = None
_shared_lock = threading.Lock()


def _instruments() -> _Instruments:
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = _Instruments()
        return _shared
