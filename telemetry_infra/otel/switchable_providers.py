"""Global OTel providers whose real SDK provider can be replaced.

OpenTelemetry lets a process set its global tracer and meter providers once. Users
(and instrumentation libraries) take tracers and meters at import time, so a second
``configure()`` must reach them too. These delegating providers are installed once;
``configure()`` swaps the SDK provider behind them and every tracer and instrument
handed out earlier is re-bound at once (eagerly, so the hot path is one attribute
read and one call).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackT
from opentelemetry.util.types import Attributes

from telemetry_infra.otel.light_spans import LightSpans

try:  # the API's own proxy tracer uses it: a context manager that also decorates coroutines
    from opentelemetry.util._decorator import _agnosticcontextmanager as _span_contextmanager
except ImportError:  # pragma: no cover - older/newer API without it
    # same shape (generator function -> context manager factory); mypy types the name once
    from contextlib import contextmanager as _span_contextmanager  # type: ignore[assignment]  # fallback import

__all__ = ["SwitchableMeterProvider", "SwitchableTracerProvider"]


def _attributes_key(attributes: Attributes) -> tuple[tuple[str, Any], ...] | None:
    if not attributes:
        return None
    return tuple(sorted((k, str(v)) for k, v in attributes.items()))


class _SwitchableTracer(trace.Tracer):
    __slots__ = ("_args", "_real", "light_spans")

    def __init__(self, args: tuple[Any, ...], real: trace.Tracer) -> None:
        self._args = args
        self._bind(real)

    def _bind(self, real: trace.Tracer) -> None:
        self._real = real
        #: spans without children made without a live SDK span (None: not an SDK tracer)
        self.light_spans = LightSpans.of(real)

    def _rebind(self, provider: trace.TracerProvider) -> None:
        self._bind(provider.get_tracer(*self._args))

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self._real.start_span(*args, **kwargs)

    @_span_contextmanager
    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Iterator[trace.Span]:
        # resolved at entry, so a function decorated before a reconfigure still follows it
        with self._real.start_as_current_span(*args, **kwargs) as span:
            yield span


class SwitchableTracerProvider(trace.TracerProvider):
    """A tracer provider that forwards to a replaceable SDK provider."""

    def __init__(self, provider: trace.TracerProvider | None = None) -> None:
        self._lock = threading.Lock()
        self._provider = provider or trace.NoOpTracerProvider()
        self._tracers: dict[tuple[Any, ...], _SwitchableTracer] = {}

    @property
    def current(self) -> trace.TracerProvider:
        return self._provider

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> trace.Tracer:
        args = (instrumenting_module_name, instrumenting_library_version, schema_url, attributes)
        key = (*args[:3], _attributes_key(attributes))
        with self._lock:
            tracer = self._tracers.get(key)
            if tracer is None:
                tracer = _SwitchableTracer(args, self._provider.get_tracer(*args))
                self._tracers[key] = tracer
            return tracer

    def switch(self, provider: trace.TracerProvider) -> None:
        with self._lock:
            self._provider = provider
            for tracer in self._tracers.values():
                tracer._rebind(provider)


class _SwitchableInstrument:
    """Holds how it was created, so it can be created again on a new meter."""

    __slots__ = ("_args", "_factory", "_kwargs", "_real")

    def __init__(self, factory: str, args: tuple[Any, ...], kwargs: dict[str, Any], meter: metrics.Meter):
        self._factory = factory
        self._args = args
        self._kwargs = kwargs
        self._rebind(meter)

    def _rebind(self, meter: metrics.Meter) -> None:
        self._real = getattr(meter, self._factory)(*self._args, **self._kwargs)


class _Counter(_SwitchableInstrument, metrics.Counter):
    __slots__ = ()

    def add(self, amount: int | float, attributes: Attributes = None, context: Any = None) -> None:
        self._real.add(amount, attributes, context)


class _UpDownCounter(_SwitchableInstrument, metrics.UpDownCounter):
    __slots__ = ()

    def add(self, amount: int | float, attributes: Attributes = None, context: Any = None) -> None:
        self._real.add(amount, attributes, context)


class _Histogram(_SwitchableInstrument, metrics.Histogram):
    __slots__ = ()

    def record(self, amount: int | float, attributes: Attributes = None, context: Any = None) -> None:
        self._real.record(amount, attributes, context)


class _Gauge(_SwitchableInstrument, metrics._Gauge):  # the API exports the synchronous gauge privately
    __slots__ = ()

    def set(self, amount: int | float, attributes: Attributes = None, context: Any = None) -> None:
        self._real.set(amount, attributes, context)


class _ObservableCounter(_SwitchableInstrument, metrics.ObservableCounter):
    __slots__ = ()


class _ObservableUpDownCounter(_SwitchableInstrument, metrics.ObservableUpDownCounter):
    __slots__ = ()


class _ObservableGauge(_SwitchableInstrument, metrics.ObservableGauge):
    __slots__ = ()


_Instrument = TypeVar("_Instrument", bound=_SwitchableInstrument)


class _SwitchableMeter(metrics.Meter):
    def __init__(
        self,
        name: str,
        version: str | None,
        schema_url: str | None,
        attributes: Attributes,
        real: metrics.Meter,
    ):
        super().__init__(name, version=version, schema_url=schema_url)
        self.attributes = attributes
        self._real = real
        self._instruments: list[_SwitchableInstrument] = []
        self._lock = threading.Lock()

    def _rebind(self, meter: metrics.Meter) -> None:
        with self._lock:
            self._real = meter
            for instrument in self._instruments:
                instrument._rebind(meter)

    def _create(self, cls: type[_Instrument], factory: str, *args: Any, **kwargs: Any) -> _Instrument:
        with self._lock:
            instrument = cls(factory, args, kwargs, self._real)
            self._instruments.append(instrument)
            return instrument

    def create_counter(self, name: str, unit: str = "", description: str = "") -> metrics.Counter:
        return self._create(_Counter, "create_counter", name, unit, description)

    def create_up_down_counter(
        self, name: str, unit: str = "", description: str = ""
    ) -> metrics.UpDownCounter:
        return self._create(_UpDownCounter, "create_up_down_counter", name, unit, description)

    def create_histogram(
        self,
        name: str,
        unit: str = "",
        description: str = "",
        *,
        explicit_bucket_boundaries_advisory: Sequence[float] | None = None,
    ) -> metrics.Histogram:
        return self._create(
            _Histogram,
            "create_histogram",
            name,
            unit,
            description,
            explicit_bucket_boundaries_advisory=explicit_bucket_boundaries_advisory,
        )

    def create_gauge(self, name: str, unit: str = "", description: str = "") -> metrics._Gauge:
        return self._create(_Gauge, "create_gauge", name, unit, description)

    def create_observable_counter(
        self,
        name: str,
        callbacks: Sequence[CallbackT] | None = None,
        unit: str = "",
        description: str = "",
    ) -> metrics.ObservableCounter:
        return self._create(
            _ObservableCounter, "create_observable_counter", name, callbacks, unit, description
        )

    def create_observable_up_down_counter(
        self,
        name: str,
        callbacks: Sequence[CallbackT] | None = None,
        unit: str = "",
        description: str = "",
    ) -> metrics.ObservableUpDownCounter:
        return self._create(
            _ObservableUpDownCounter, "create_observable_up_down_counter", name, callbacks, unit, description
        )

    def create_observable_gauge(
        self,
        name: str,
        callbacks: Sequence[CallbackT] | None = None,
        unit: str = "",
        description: str = "",
    ) -> metrics.ObservableGauge:
        return self._create(_ObservableGauge, "create_observable_gauge", name, callbacks, unit, description)


class SwitchableMeterProvider(metrics.MeterProvider):
    """A meter provider that forwards to a replaceable SDK provider.

    Instruments are kept (strongly: instruments are meant to be created once and
    reused) so they can be re-created on the next provider.
    """

    def __init__(self, provider: metrics.MeterProvider | None = None) -> None:
        self._lock = threading.Lock()
        self._provider = provider or metrics.NoOpMeterProvider()
        self._meters: dict[tuple[Any, ...], _SwitchableMeter] = {}

    @property
    def current(self) -> metrics.MeterProvider:
        return self._provider

    def get_meter(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> metrics.Meter:
        key = (name, version, schema_url, _attributes_key(attributes))
        with self._lock:
            meter = self._meters.get(key)
            if meter is None:
                real = self._provider.get_meter(name, version, schema_url, attributes)
                meter = _SwitchableMeter(name, version, schema_url, attributes, real)
                self._meters[key] = meter
            return meter

    def switch(self, provider: metrics.MeterProvider) -> None:
        with self._lock:
            self._provider = provider
            for meter in self._meters.values():
                meter._rebind(
                    provider.get_meter(meter.name, meter.version, meter.schema_url, meter.attributes)
                )
