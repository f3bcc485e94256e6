"""Text that is not valid Unicode (lone surrogates such as ``"\\ud800"``): replaced, counted, said once.

OTLP strings are UTF-8 and a lone surrogate has no UTF-8 form, so an encoder refuses
it, and the SDK's loses the whole batch with it. Ours (and our wrapper of the SDK's
exporters) take the slow path here only after encoding raised ``UnicodeEncodeError``:
the item is encoded again with each lone surrogate replaced by U+FFFD, the
``telemetry_infra.export.sanitized`` counter counts it (attribute ``item``: ``span``,
``log_record``, ``resource`` or ``scope``) and the first of each kind is logged as a
WARNING. Valid text never comes here: the fast path stays one ``str.encode``.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, Status, StatusCode

__all__ = [
    "ITEMS",
    "REPLACEMENT",
    "count_sanitized",
    "register_sanitized_counter",
    "replace_invalid",
    "replace_invalid_attributes",
    "sanitized_resource",
    "sanitized_scope",
    "sanitized_span",
    "valid_items",
]

REPLACEMENT = "\ufffd"
ITEMS = ("span", "log_record", "resource", "scope")
"""The values of the counter's ``item`` attribute."""
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_log = logging.getLogger(__name__)


def replace_invalid(value: Any) -> Any:
    """``value`` with every lone surrogate replaced by U+FFFD, in strings, sequences and mapping keys."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub(REPLACEMENT, value)
    if isinstance(value, Mapping):
        return {replace_invalid(key): replace_invalid(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return [replace_invalid(item) for item in value]
    return value


def replace_invalid_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """An attribute mapping with its keys and values made valid (``None`` stays ``None``)."""
    return None if attributes is None else dict(replace_invalid(attributes))


class _SanitizedCounter:
    """``telemetry_infra.export.sanitized``: items exported with invalid text replaced."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self._registered = False

    def register(self) -> None:
        with self._lock:
            self._warned.clear()  # each configure() says it once again
            if self._registered:
                return
            self._registered = True
        metrics.get_meter("telemetry_infra.export").create_observable_counter(
            "telemetry_infra.export.sanitized",
            [self._observe],
            unit="{item}",
            description="Spans, log records, resources and scopes exported with text that was "
            "not valid Unicode (lone surrogates) replaced by U+FFFD",
        )

    def _observe(self, _options: CallbackOptions) -> list[Observation]:
        counts = dict(self.counts)  # every kind, 0 included: a rate() needs the series before the first
        return [Observation(counts.get(item, 0), {"item": item}) for item in ITEMS]

    def add(self, item: str, error: UnicodeEncodeError) -> None:
        with self._lock:
            self.counts[item] = self.counts.get(item, 0) + 1
            first = item not in self._warned
            self._warned.add(item)
        if first:
            _log.warning(
                "OTLP export: a %s held text that is not valid Unicode (%s); it was replaced by U+FFFD "
                "and the item sent (counted in telemetry_infra.export.sanitized; said once per kind)",
                item.replace("_", " "),
                error.reason,
            )


_sanitized = _SanitizedCounter()


def register_sanitized_counter() -> None:
    """Make ``telemetry_infra.export.sanitized`` visible on ``/metrics``; each kind is said once again."""
    _sanitized.register()


def count_sanitized(item: str, error: UnicodeEncodeError) -> None:
    """Count one ``item`` (``span``, ``log_record``, ``resource``, ``scope``) sent with text replaced."""
    _sanitized.add(item, error)


T = TypeVar("T")


def valid_items(
    items: Sequence[T], kind: str, encode: Callable[[T], object], sanitized: Callable[[T], T]
) -> tuple[list[T], int]:
    """``items`` with each one that holds text which is not valid Unicode replaced by
    ``sanitized(item)`` (U+FFFD), and how many were replaced (each counted as ``kind``).

    For the SDK's encoder, which refuses the whole batch for one of them: ``encode`` (ours)
    finds them.
    """
    valid = []
    replaced = 0
    for item in items:
        try:
            encode(item)
        except UnicodeEncodeError as error:
            count_sanitized(kind, error)
            item = sanitized(item)
            replaced += 1
        valid.append(item)
    return valid, replaced


def _status(status: Status) -> Status:
    if status.status_code is StatusCode.ERROR and status.description:
        return Status(StatusCode.ERROR, replace_invalid(status.description))
    return status


def sanitized_resource(resource: Resource) -> Resource:
    """A copy of ``resource`` with valid text."""
    return Resource(replace_invalid_attributes(resource.attributes) or {}, resource.schema_url)


def sanitized_scope(scope: InstrumentationScope) -> InstrumentationScope:
    """A copy of ``scope`` with valid text."""
    return InstrumentationScope(
        replace_invalid(scope.name),
        replace_invalid(scope.version),
        scope.schema_url,
        replace_invalid_attributes(scope.attributes),
    )


def sanitized_span(span: ReadableSpan) -> ReadableSpan:
    """A copy of ``span`` whose name, attributes, events, links and status are valid text.

    The resource and scope stay the span's own: our encoder replaces their text where
    it encodes them (see :mod:`.grouping`).
    """
    return ReadableSpan(
        name=replace_invalid(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=replace_invalid_attributes(span.attributes),
        events=[
            Event(replace_invalid(event.name), replace_invalid_attributes(event.attributes), event.timestamp)
            for event in span.events
        ],
        links=[Link(link.context, replace_invalid_attributes(link.attributes)) for link in span.links],
        kind=span.kind,
        status=_status(span.status),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
