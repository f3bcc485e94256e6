"""Light spans: spans recorded without a live SDK span, built when they end.

The SDK's span start and end (a lock per call, each attribute validated, ``on_start`` of
every processor, the finished copy) cost more than a cache operation does around a Redis
GET, and most of what a web request's telemetry costs. A :class:`LightSpan` is an API
span holding its data in plain fields: it is the current span while it runs (log records
carry its ids, events, links and exceptions land on it, spans started under it get it as
parent), and when it ends it hands the span processors the same ``ReadableSpan`` the SDK
would: same name, kind, ids, parent, attributes, events, links, status, resource and
scope, the sampler's decision honoured and the ids from the provider's id generator.
Two callers use them: the cache, for an operation's span (:meth:`LightSpans.start`; the
Redis command spans nest under it), and the web middleware, for a request's SERVER span
(:meth:`LightSpans.start_in`: a new trace, or a child of the caller's ``traceparent``).

Only where that is exact: an enabled SDK tracer whose internal metrics are off, whose
span limits cut nothing (no value length limit, room for every attribute) and whose
processors do nothing when a span starts or is ending (the SDK's batch and simple
processors, or none). Anywhere else :meth:`LightSpans.start` and :meth:`LightSpans.start_in`
return None and the caller makes a live span.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from time import time_ns
from types import MappingProxyType
from typing import Any, NamedTuple, cast

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.util import types

__all__ = ["LightSpan", "LightSpans", "LightSpansOf"]

logger = logging.getLogger(__name__)

#: Processors whose ``on_start`` and ``_on_ending`` do nothing: a light span needs only their ``on_end``.
_SILENT_UNTIL_END = (sdk_trace.SpanProcessor, BatchSpanProcessor, SimpleSpanProcessor)
_SILENT_ON_START = frozenset(kind.on_start for kind in _SILENT_UNTIL_END)
_SILENT_ON_ENDING = frozenset(kind._on_ending for kind in _SILENT_UNTIL_END)
#: What a light span reads of the SDK tracer (the private ones as SDK 1.3x keeps them).
_READ = ("_span_limits", "_instrumentation_scope", "_is_enabled", "instrumentation_info", "id_generator")
#: A light span is used only under span limits that leave this many attributes.
_ATTRIBUTES_NEEDED = 64
_UNSET = Status(StatusCode.UNSET)
#: Attribute values the SDK keeps as they are (no value length limit under a light span).
_KEPT_AS_IS = frozenset({str, bool, int, float})
_NO_ATTRIBUTES: Mapping[str, Any] = MappingProxyType({})
_PARENT_BASED = sampling.ParentBased.should_sample
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


class _Parent(NamedTuple):
    """A parent span context as spans under it use it (read once per parent)."""

    context: SpanContext
    valid: bool
    trace_id: int
    random: bool
    #: the flags and trace state the sampler gives spans under it; None: ask the sampler
    flags: TraceFlags | None
    trace_state: TraceState | None


def _flags(sampled: bool, random_trace_id: bool) -> TraceFlags:
    """A span's trace flags, as the SDK's ``start_span`` sets them."""
    flags = _SAMPLED if sampled else _NOT_SAMPLED
    return TraceFlags(flags | TraceFlags.RANDOM_TRACE_ID) if random_trace_id else flags


def _internal_metrics_off(tracer: sdk_trace.Tracer) -> bool:
    """The SDK's internal span metrics are off (its no-op recorder), or this SDK has none."""
    recorder = getattr(tracer, "_tracer_metrics", None)
    return recorder is None or type(recorder).__name__ == "NoOpTracerMetrics"


def _silent_until_end(processor: sdk_trace.SpanProcessor) -> bool:
    kind = type(processor)
    return kind.on_start in _SILENT_ON_START and kind._on_ending in _SILENT_ON_ENDING


def _samples_under_sampled(sampler: sampling.Sampler) -> bool:
    """True when ``sampler`` records and samples every span under a sampled parent, keeping
    the parent's trace state and adding no attribute: the SDK's ``ALWAYS_ON``, and a
    ``ParentBased`` sampler (the default, also with a ratio at the root) that hands sampled
    parents to it."""
    if sampler is sampling.ALWAYS_ON:
        return True
    if not isinstance(sampler, sampling.ParentBased) or type(sampler).should_sample is not _PARENT_BASED:
        return False
    delegates = (
        getattr(sampler, "_local_parent_sampled", None),
        getattr(sampler, "_remote_parent_sampled", None),
    )
    return all(delegate is sampling.ALWAYS_ON for delegate in delegates)


class LightSpans:
    """Starts light spans for one SDK tracer (see the module docstring); one per tracer."""

    __slots__ = (
        "_checked",
        "_exact",
        "_ids",
        "_last_parent",
        "_limits",
        "_processor",
        "_sampler",
        "_samples_under_sampled",
        "_tracer",
        "info",
        "max_attributes",
        "resource",
        "scope",
    )

    def __init__(self, tracer: sdk_trace.Tracer) -> None:
        self._tracer = tracer
        self._sampler = tracer.sampler
        self._ids = tracer.id_generator
        self._processor = tracer.span_processor
        self._limits: sdk_trace.SpanLimits = tracer._span_limits
        self.resource = tracer.resource
        self.scope = tracer._instrumentation_scope
        self.info = tracer.instrumentation_info
        limits = self._limits
        room = limits.max_span_attributes
        #: the span limit on attributes (None: none); a light span keeps to it as the SDK's does
        self.max_attributes: int | None = room
        self._exact = (
            isinstance(self._processor, sdk_trace.SynchronousMultiSpanProcessor)
            and _internal_metrics_off(tracer)
            and limits.max_span_attribute_length is None
            and (room is None or room >= _ATTRIBUTES_NEEDED)
        )
        self._checked: tuple[sdk_trace.SpanProcessor, ...] | None = None
        self._samples_under_sampled = _samples_under_sampled(self._sampler)
        self._last_parent: _Parent | None = None

    @classmethod
    def of(cls, tracer: trace.Tracer) -> LightSpans | None:
        """The light spans of ``tracer``; None for anything but an SDK tracer that keeps what
        a light span reads where this SDK version does."""
        if not isinstance(tracer, sdk_trace.Tracer) or not all(hasattr(tracer, name) for name in _READ):
            return None
        if not hasattr(tracer.id_generator, "is_trace_id_random"):
            return None
        if not hasattr(tracer.span_processor, "_span_processors"):
            return None
        return cls(tracer)

    def _usable(self) -> bool:
        if not self._exact or not self._tracer._is_enabled():
            return False
        processors = self._processor._span_processors  # replaced (a new tuple) when one is added
        if processors is not self._checked:
            if not all(_silent_until_end(processor) for processor in processors):
                return False
            self._checked = processors
        return True

    def start(
        self,
        name: str,
        attributes: dict[str, Any],
        parent: SpanContext,
        start_time: int | None = None,
    ) -> trace.Span | None:
        """An INTERNAL span ``name`` under ``parent`` (valid, local or remote, the current
        span) with ``attributes`` (valid values), as ``Tracer.start_span`` makes it; None
        where a light span would not be exact."""
        if not self._usable():
            return None
        under = self._last_parent  # the operations of one request share their parent
        if under is None or under.context is not parent:
            under = self._last_parent = self._under(parent)
        if not under.valid:
            return None
        flags, trace_state = under.flags, under.trace_state
        if flags is None:  # the sampler is asked
            sampled = self._sampler.should_sample(
                None, under.trace_id, name, SpanKind.INTERNAL, attributes, ()
            )
            decision, trace_state = sampled.decision, sampled.trace_state
            attributes = dict(sampled.attributes or ())
            flags = _flags(decision is Decision.RECORD_AND_SAMPLE, under.random)
            if decision is Decision.DROP:
                return trace.NonRecordingSpan(self._context(under.trace_id, flags, trace_state))
        context = self._context(under.trace_id, flags, trace_state)
        return LightSpan(self, name, SpanKind.INTERNAL, context, parent, attributes, start_time or time_ns())

    def start_in(
        self, name: str, kind: SpanKind, attributes: dict[str, Any], context: Context | None
    ) -> trace.Span | None:
        """A span ``name`` of ``kind`` with ``attributes`` (valid values) in ``context``: a
        child of its span when that is valid (local or remote), else the root of a new
        trace, as ``Tracer.start_span(name, context, kind, attributes)`` makes it; None
        where a light span would not be exact."""
        if not self._usable():
            return None
        parent: SpanContext | None = trace.get_current_span(context).get_span_context()
        if parent is not None and parent.is_valid:
            trace_id, random = parent.trace_id, parent.trace_flags.random_trace_id
        else:
            parent, trace_id = None, self._ids.generate_trace_id()
            random = self._ids.is_trace_id_random()
        sampled = self._sampler.should_sample(context, trace_id, name, kind, attributes, ())
        flags = _flags(sampled.decision is Decision.RECORD_AND_SAMPLE, random)
        span_context = self._context(trace_id, flags, sampled.trace_state)
        if sampled.decision is Decision.DROP:
            return trace.NonRecordingSpan(span_context)
        return LightSpan(self, name, kind, span_context, parent, dict(sampled.attributes or ()), time_ns())

    def _under(self, parent: SpanContext) -> _Parent:
        """What spans under ``parent`` take from it; their flags and trace state too when the
        sampler's answer is known (see :func:`_samples_under_sampled`)."""
        random = parent.trace_flags.random_trace_id
        if self._samples_under_sampled and parent.trace_flags.sampled:
            return _Parent(
                parent, parent.is_valid, parent.trace_id, random, _flags(True, random), parent.trace_state
            )
        return _Parent(parent, parent.is_valid, parent.trace_id, random, None, None)

    def _context(self, trace_id: int, flags: TraceFlags, trace_state: TraceState | None) -> SpanContext:
        span_id = self._ids.generate_span_id()
        return SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags, trace_state=trace_state)

    def finished(self, span: LightSpan) -> None:
        """Hand the finished ``span`` to the processors, as the SDK's ``Span.end`` does."""
        self._processor.on_end(
            sdk_trace.ReadableSpan(
                name=span._name,
                context=span._context,
                parent=span._parent,
                resource=self.resource,
                attributes=span._attributes,
                events=span._events,
                kind=span._kind,
                links=span._links,
                instrumentation_info=self.info,
                status=span._status,
                start_time=span._start_time,
                end_time=span._end_time,
                instrumentation_scope=self.scope,
            )
        )

    def new_events(self) -> BoundedList[sdk_trace.Event]:
        return BoundedList(self._limits.max_events)

    def event_attributes(self, attributes: types.Attributes) -> BoundedAttributes:
        limits = self._limits
        return BoundedAttributes(
            limits.max_event_attributes, attributes, max_value_len=limits.max_attribute_length, immutable=True
        )

    def new_links(self) -> BoundedList[Link]:
        return BoundedList(self._limits.max_links)

    def link_attributes(self, attributes: types.Attributes) -> BoundedAttributes:
        limits = self._limits
        return BoundedAttributes(
            limits.max_link_attributes, attributes, max_value_len=limits.max_attribute_length, immutable=True
        )


class LightSpan(trace.Span):
    """A recording span that ends as a ``ReadableSpan`` handed to the processors (see the
    module docstring). Made by :meth:`LightSpans.start` and :meth:`LightSpans.start_in`."""

    __slots__ = (
        "_attributes",
        "_context",
        "_end_time",
        "_events",
        "_kind",
        "_leaves",
        "_links",
        "_name",
        "_parent",
        "_start_time",
        "_status",
    )

    def __init__(
        self,
        leaves: LightSpans,
        name: str,
        kind: SpanKind,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: dict[str, Any],
        start_time: int,
    ) -> None:
        self._leaves = leaves
        self._name = name
        self._kind = kind
        self._context = context
        self._parent = parent
        self._attributes: dict[str, Any] | BoundedAttributes = attributes
        self._start_time = start_time
        self._end_time: int | None = None
        self._events: Sequence[sdk_trace.Event] = ()
        self._links: Sequence[Link] = ()
        self._status = _UNSET

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_time is None

    def end_with(self, attributes: Mapping[str, Any], end_time: int | None = None) -> None:
        """Add ``attributes`` (the caller's own, valid values: not validated again) and end."""
        if self._end_time is not None:
            logger.warning("Calling end() on an ended span.")
            return
        self._add(attributes)
        self._end_time = end_time if end_time is not None else time_ns()
        self._leaves.finished(self)

    def end(self, end_time: int | None = None) -> None:
        self.end_with(_NO_ATTRIBUTES, end_time)

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        if self._end_time is not None:
            logger.warning("Setting attribute on ended span.")
            return
        if all(
            key.__class__ is str and key and value.__class__ in _KEPT_AS_IS
            for key, value in attributes.items()
        ):
            self._add(attributes)
            return
        # cleaned as the SDK's span cleans them: invalid keys dropped, odd values made valid, its warnings
        self._add(BoundedAttributes(None, attributes, immutable=True))

    def _add(self, attributes: Mapping[str, Any]) -> None:
        """Valid ``attributes`` in; past the span limit the oldest go, counted, as from the SDK's span."""
        own = self._attributes
        room = self._leaves.max_attributes
        if own.__class__ is dict and (room is None or len(own) + len(attributes) <= room):
            own.update(attributes)
            return
        if not isinstance(own, BoundedAttributes):
            own = self._attributes = BoundedAttributes(room, own, immutable=False)
        for key, value in attributes.items():
            own[key] = value

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        self.set_attributes({key: value})

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        if self._end_time is not None:
            logger.warning("Calling add_event() on an ended span.")
            return
        if not self._events:
            self._events = self._leaves.new_events()
        cast("BoundedList[sdk_trace.Event]", self._events).append(
            sdk_trace.Event(name, self._leaves.event_attributes(attributes), timestamp)
        )

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        """As the SDK's: ignored for an invalid context without attributes or trace state."""
        if not (context and (context.is_valid or attributes or context.trace_state)):
            return
        if self._end_time is not None:
            logger.warning("Tried calling _add_link on an ended span.")
            return
        if not self._links:
            self._links = self._leaves.new_links()
        cast("BoundedList[Link]", self._links).append(Link(context, self._leaves.link_attributes(attributes)))

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        # the SDK's own: it builds the "exception" event's attributes and calls add_event
        sdk_trace.Span.record_exception(cast(sdk_trace.Span, self), exception, attributes, timestamp, escaped)

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """As the SDK's: UNSET is ignored, and so is anything once the status is OK."""
        if self._end_time is not None:
            logger.warning("Calling set_status() on an ended span.")
            return
        if self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self._status = status

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def __repr__(self) -> str:
        return f'LightSpan(name="{self._name}", context={self._context})'


class LightSpansOf:
    """The light spans of the SDK tracer behind ``tracer`` (an API proxy) now.

    ``tracer`` is what ``trace.get_tracer`` returned at import; once a provider is set it
    forwards to the provider's tracer for good. With our switchable provider that is a
    tracer which prepares its light spans again whenever ``configure()`` changes the
    provider: found once, it is then one attribute read per span.
    """

    __slots__ = ("_switchable", "_tracer")

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer
        self._switchable: Any = None

    def __call__(self) -> LightSpans | None:
        switchable = self._switchable
        if switchable is None:
            real = getattr(self._tracer, "_tracer", self._tracer)  # what the proxy forwards to now
            if not hasattr(real, "light_spans"):
                return None  # not ours (another provider was set first), or no provider yet
            switchable = self._switchable = real
        spans: LightSpans | None = switchable.light_spans
        return spans

    def start_in(
        self, name: str, kind: SpanKind, attributes: dict[str, Any], context: Context | None
    ) -> trace.Span:
        """A span as ``tracer.start_span(name, context, kind, attributes)`` makes it: a light
        one where that is exact (see :meth:`LightSpans.start_in`), else a live one."""
        spans = self()
        span = None if spans is None else spans.start_in(name, kind, attributes, context)
        if span is None:
            span = self._tracer.start_span(name, context=context, kind=kind, attributes=attributes)
        return span
