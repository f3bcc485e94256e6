"""OTLPLogHandler: stdlib records into OpenTelemetry log records.

Given a :class:`~telemetry_infra.otel.otlp_wire.FastLogExporter` (``configure()``'s
``fast_export``, the default), the calling thread encodes each record straight to
OTLP bytes (no SDK log record objects; a few microseconds) and queues them; an export
thread (:class:`~telemetry_infra.otel.otlp_wire.pipeline.ExportThread`) sends them in
batches of up to 512 through that exporter, and a batch the collector refuses is
counted as dropped. Encoding where the record is made is cheaper in all than handing
the record over: under the GIL the thread's work is not free, and records kept alive
until it runs cost the application garbage-collector passes. Without that exporter
the calling thread only captures what cannot wait (the message, the active
OpenTelemetry context, the request context), and the thread translates the record
and hands it to the LoggerProvider, whose batch processor exports it. Under
``configure()`` that thread is the one that exports spans too: one thread, one
wake-up policy (a batch waiting, or the schedule delay) for both signals.
Two rules keep a log storm from hurting the application or vanishing: the thread
takes at most ``worker_share`` of the CPU while records wait (it rests between
slices), and every 512 records it flushes the provider itself, so the SDK's batch
queue cannot overflow and drop records uncounted; what does not fit our own queue
is dropped and counted (``telemetry_infra.logs.dropped``).

Trace and span ids travel in the OTLP record's own fields, so they are not repeated
as attributes. The handler never feeds itself: records of the exporter's own
loggers are dropped, and so is anything logged from an export thread or from a
thread already inside this handler.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

from opentelemetry import metrics
from opentelemetry._logs import Logger, LoggerProvider, SeverityNumber
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context, get_current
from opentelemetry.metrics import Observation
from opentelemetry.sdk._logs import LogRecordLimits
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import get_current_span

from telemetry_infra.logs.context import RequestContext, get_request_context
from telemetry_infra.logs.records import (
    CALLER_IDS_MARKER,
    CORRELATION_MARKER,
    ExtraFields,
    as_text,
    message_of,
    valid_text,
)
from telemetry_infra.otel.otlp_wire.exporters import FastLogExporter
from telemetry_infra.otel.otlp_wire.logs import (
    LogBatch,
    encode_log_record,
    encode_record_fields,
    severity_fields,
    trace_fields,
)
from telemetry_infra.otel.otlp_wire.pipeline import (
    DEFAULT_WORKER_SHARE,
    ExportThread,
    check_worker_share,
    in_export_thread,
    wake_at_for,
)
from telemetry_infra.otel.otlp_wire.protobuf import any_value, attributes_field

__all__ = ["EXPORTER_LOGGERS", "OTLPLogHandler"]

EXPORTER_LOGGERS = ("opentelemetry", "grpc", "urllib3", "requests", "httpx", "httpcore")
"""Loggers of the export path: their records would loop back into the exporter."""

_SEVERITY_TEXT = {"WARNING": "WARN", "CRITICAL": "FATAL"}
_SEVERITY_BASE = {10: 5, 20: 9, 30: 13, 40: 17, 50: 21}  # DEBUG INFO WARN ERROR FATAL
_PRIMITIVES = (str, bool, int, float)
# A thread of its own picks records up every _POLL_S (the shared one: at its schedule
# delay), or sooner once _WAKE_AT are waiting: waking it for every record would cost
# the logging thread a lock and a switch.
_POLL_S = 0.1
_WAKE_AT = 512
_MAX_LOGGERS = 1024
_FLUSH_EVERY = 512  # the SDK's default export batch; its queue holds 2,048
_OWN_ATTRIBUTES = frozenset(
    {"request_id", "user_id", "code.file.path", "code.function.name", "code.line.number"}
    | {"exception.type", "exception.message", "exception.stacktrace"}
)


def severity_number(levelno: int) -> SeverityNumber:
    """The OTel severity of a stdlib level (``INFO`` -> 9, ``INFO+1`` -> 10, ...)."""
    if levelno < logging.DEBUG:
        return SeverityNumber.UNSPECIFIED
    if levelno >= logging.CRITICAL + 4:
        return SeverityNumber.FATAL4
    band, step = divmod(levelno, 10)
    return SeverityNumber(_SEVERITY_BASE[band * 10] + min(step, 3))


_severity_values: dict[int, int] = {}


def _severity_value(levelno: int) -> int:
    value = _severity_values.get(levelno)
    if value is None:
        value = _severity_values[levelno] = severity_number(levelno).value
    return value


def _severity_text(levelname: str) -> str:
    return _SEVERITY_TEXT.get(levelname, levelname)


def attribute_value(value: Any) -> Any:
    """``value`` as a valid OTel attribute: a primitive or a homogeneous primitive sequence."""
    if isinstance(value, str):
        return valid_text(value)  # protobuf refuses lone surrogates: the whole batch would be lost
    if isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        kinds = {type(item) for item in value}
        if kinds == {str}:
            return tuple(valid_text(item) for item in value)
        if len(kinds) <= 1 and kinds <= set(_PRIMITIVES):
            return tuple(value)
    return as_text(value)


def _exception_attributes(exc_info: Any) -> dict[str, str]:
    exc_type, exc, tb = exc_info
    if exc_type is None:
        return {}
    module = exc_type.__module__
    qualname = exc_type.__qualname__
    return {
        "exception.type": qualname if module == "builtins" else f"{module}.{qualname}",
        "exception.message": as_text(exc),
        "exception.stacktrace": valid_text("".join(traceback.format_exception(exc_type, exc, tb))),
    }


_SITE_KEYS = ("code.file.path", "code.function.name", "code.line.number")
_MAX_SITES = 4096


def _site_attributes(record: logging.LogRecord) -> dict[str, Any]:
    """Where the record was made: the ``code.*`` attributes."""
    return dict(zip(_SITE_KEYS, (record.pathname, record.funcName, record.lineno), strict=True))


class _DroppedRecords:
    """Records every handler dropped, exported as ``telemetry_infra.logs.dropped``."""

    def __init__(self) -> None:
        self.count = 0
        self._exported = False

    def export(self) -> None:
        if self._exported:
            return
        self._exported = True
        metrics.get_meter("telemetry_infra.logs").create_observable_counter(
            "telemetry_infra.logs.dropped",
            [lambda _options: [Observation(self.count)]],
            unit="{record}",
            description=(
                "Log records not exported over OTLP: the export queue was full, "
                "or the collector did not accept them"
            ),
        )


_dropped = _DroppedRecords()


#: A record as the calling thread captured it: (record, message, OTel context, request context).
_Pending = tuple[logging.LogRecord, str, Context, RequestContext]
#: A record encoded where it was logged: (resource, scope, OTLP bytes, the record as captured,
#: kept for the SDK's path until our transport proved itself, else None).
_Encoded = tuple[Any, InstrumentationScope, bytes, "_Pending | None"]


class OTLPLogHandler(logging.Handler):
    """Emits each record through ``logger_provider.get_logger(record.name)``.

    Body is the formatted message, ``extra`` fields become attributes (secrets
    redacted, other values coerced to attribute types), exceptions become
    ``exception.type``/``exception.message``/``exception.stacktrace``, ``code.*``
    attributes say where the record was made, and ``request_id``/``user_id`` come
    from the request context. At most ``max_queue`` records wait for the export
    thread; beyond that new ones are dropped (and counted in ``dropped``). While
    records wait, the thread uses at most ``worker_share`` of one CPU (0.25: about
    12,000 records a second here); :meth:`flush` and :meth:`close` do not wait for its
    rests. With ``exporter`` (a :class:`~telemetry_infra.otel.otlp_wire.FastLogExporter`)
    records are encoded by the thread and sent through it, not through
    ``logger_provider``; should the exporter fall back to the SDK's path, so does the
    handler. ``export_thread`` (``configure()`` passes the one that exports spans)
    shares a thread instead of starting one; its own ``worker_share`` then applies.
    Never raises.
    """

    def __init__(
        self,
        logger_provider: LoggerProvider,
        level: int = logging.NOTSET,
        max_queue: int = 4096,
        worker_share: float = DEFAULT_WORKER_SHARE,
        exporter: FastLogExporter | None = None,
        export_thread: ExportThread | None = None,
    ) -> None:
        super().__init__(level)
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue!r}")
        check_worker_share(worker_share)
        self._thread = export_thread or ExportThread("telemetry-otlp-logs", _POLL_S, worker_share, _WAKE_AT)
        self._provider = logger_provider
        self._max_queue = max_queue
        self._wake_at = wake_at_for(self._thread, max_queue)
        self._pending: deque[_Pending | _Encoded] = deque()
        self._unflushed = 0
        self._closed = False
        self._inside = threading.local()
        self._extras = ExtraFields(reserved=_OWN_ATTRIBUTES)
        self._loggers: dict[str, Logger] = {}  # the provider's get_logger takes a lock each call
        self.dropped = 0
        self._fast = exporter
        self._batch = LogBatch()
        self._batched: list[_Pending] = []  # what the batch holds, for the SDK's path should it fail
        self._full: list[tuple[LogBatch, list[_Pending]]] = []  # full batches, to be sent
        self._scopes: dict[str, InstrumentationScope] = {}
        self._sites: dict[tuple[str, str, int], bytes] = {}
        self._last_trace: tuple[Context | None, bytes] = (None, b"")
        limits = LogRecordLimits()
        self._max_attributes = limits.max_log_record_attributes
        self._max_value_length = limits.max_log_record_attribute_length
        _dropped.export()
        self._thread.add(self)

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock: the queue is thread-safe, and logging threads must not
        # wait for each other here.
        if (
            record.name.startswith(EXPORTER_LOGGERS)
            or getattr(self._inside, "active", False)
            or in_export_thread()
        ):
            return False
        if self.filters and not self.filter(record):
            return False
        self._inside.active = True
        try:
            self.emit(record)
        finally:
            self._inside.active = False
        return True

    def emit(self, record: logging.LogRecord) -> None:
        if self._closed or len(self._pending) >= self._max_queue:
            self.dropped += 1
            _dropped.count += 1
            return
        try:
            pending = self._pending
            captured = (record, message_of(record), get_current(), get_request_context())
            fast = self._fast
            # Encoded here with our encoder: the record is not kept alive for the thread.
            pending.append(self._encode(captured) if fast is not None and fast.fast else captured)
            if len(pending) >= self._wake_at:
                self._thread.wake()
            elif not self._thread.running:
                self._thread.start()  # also in a forked child
        except Exception:  # best effort: never into the caller
            self.dropped += 1
            _dropped.count += 1

    # -------------------------------------------------- the export thread's side (a Source)

    def waiting(self) -> int:
        return len(self._pending)

    def building(self) -> int:
        return self._batch.count + sum(batch.count for batch, _ in self._full)

    def crowded(self) -> bool:
        return len(self._pending) * 2 >= self._max_queue

    def take(self, limit: int) -> None:
        pending = self._pending
        for _ in range(min(limit, len(pending), self._max_queue - self.building())):
            try:
                self._take(pending.popleft())
            except Exception:  # a bad record must not stop the others; it is counted
                self._count_dropped(1)
            self._unflushed += 1
        if self._unflushed >= _FLUSH_EVERY:
            self._hand_off()

    def set_aside(self) -> None:
        if self._batch.count:
            self._set_aside()

    def send_one(self) -> bool:
        if not self._full:
            return False
        batch, batched = self._full.pop(0)
        self._send_batch(batch, batched)
        return True

    def forget_queued(self) -> None:
        self._pending.clear()
        self._batch, self._batched, self._unflushed, self._full = LogBatch(), [], 0, []

    def _count_dropped(self, count: int) -> None:
        self.dropped += count
        _dropped.count += count

    def _hand_off(self) -> None:
        if self._batch.count:
            self._set_aside()
        else:
            self._flush_provider()

    def _set_aside(self) -> None:
        """The batch being built is full (or due): it leaves with the thread's next sends."""
        self._full.append((self._batch, self._batched))
        self._batch, self._batched, self._unflushed = LogBatch(), [], 0

    def _send_batch(self, batch: LogBatch, batched: list[_Pending]) -> None:
        exporter = self._fast
        assert exporter is not None

        def through_provider() -> bool:  # our transport failed on the SDK's internals
            if len(batched) < batch.count:  # not kept (the transport had proved itself): counted
                self._count_dropped(batch.count - len(batched))
            for pending in batched:
                with contextlib.suppress(Exception):  # as in _drain: a bad record must not stop the others
                    self._emit(pending)
            self._flush_provider()
            return True

        if not exporter.send_batch(batch, through_provider):
            self._count_dropped(batch.count)

    def _flush_provider(self) -> None:
        self._unflushed = 0
        force_flush = getattr(self._provider, "force_flush", None)  # the API's providers have none
        if force_flush is not None:
            with contextlib.suppress(Exception):
                force_flush()

    def _logger(self, name: str) -> Logger:
        logger = self._loggers.get(name)
        if logger is None:
            logger = self._provider.get_logger(name)
            if len(self._loggers) < _MAX_LOGGERS:
                self._loggers[name] = logger
        return logger

    def _scope(self, name: str) -> InstrumentationScope:
        scope = self._scopes.get(name)
        if scope is None:
            scope = InstrumentationScope(name)
            if len(self._scopes) < _MAX_LOGGERS:
                self._scopes[name] = scope
        return scope

    def _site_field(self, record: logging.LogRecord) -> bytes | None:
        """The ``code.*`` attributes as OTLP fields, encoded once per call site (``None``: invalid text)."""
        site = (record.pathname, record.funcName, record.lineno)
        field = self._sites.get(site)
        if field is None:
            try:
                field = attributes_field(b"\x32", _site_attributes(record))
            except UnicodeEncodeError:  # encoded with the others, its text made valid
                return None
            if len(self._sites) >= _MAX_SITES:
                self._sites.clear()
            self._sites[site] = field
        return field

    def _take(self, item: _Pending | _Encoded) -> None:
        """One queued record into the batch the thread sends next, or through the provider."""
        if item[2].__class__ is not bytes:  # captured for the SDK's path
            self._emit(cast(_Pending, item))
            return
        resource, scope, encoded, kept = item
        if self._fast is not None and self._fast.fast:
            self._batch.add(resource, scope, encoded)
            if kept is not None:
                self._batched.append(kept)
        elif kept is not None:  # our transport fell back since it was encoded
            self._emit(kept)
        else:
            self._count_dropped(1)

    def _encode(self, pending: _Pending) -> _Encoded:
        """The fast path, in the calling thread: the record as OTLP bytes."""
        record, body, otel_context, request = pending
        attributes: Any = self._other_attributes({}, record, request)
        site = self._site_field(record)
        dropped = 0
        max_attributes = self._max_attributes  # None (e.g. the variable set to ""): no limit
        if (
            site is None
            or self._max_value_length is not None
            or (max_attributes is not None and len(attributes) + len(_SITE_KEYS) > max_attributes)
        ):
            site, attributes = b"", {**_site_attributes(record), **attributes}
            attributes = BoundedAttributes(  # the limits the SDK's log records apply
                max_attributes, attributes, False, self._max_value_length, extended_attributes=True
            )
            dropped = attributes.dropped
        created, observed = int(record.created * 1e9), time.time_ns()
        body = valid_text(body)
        try:
            encoded = encode_record_fields(
                created,
                observed,
                severity_fields(_severity_value(record.levelno), _severity_text(record.levelname)),
                any_value(body),
                site,
                attributes,
                dropped,
                self._trace_fields(otel_context),
            )
        except UnicodeEncodeError:  # an attribute's text: encoded again, replaced and counted
            span_context = get_current_span(otel_context).get_span_context()
            encoded = encode_log_record(
                created, observed, _severity_value(record.levelno), _severity_text(record.levelname),
                body, attributes, span_context.trace_id, span_context.span_id, span_context.trace_flags,
                None, dropped, site,
            )  # fmt: skip
        fast = self._fast
        assert fast is not None
        return fast.resource, self._scope(record.name), encoded, None if fast.proven else pending

    def _trace_fields(self, otel_context: Context) -> bytes:
        """The span's ids as OTLP fields; a request's records share its context: kept for the next."""
        last = self._last_trace
        if last[0] is otel_context:
            return last[1]
        span_context = get_current_span(otel_context).get_span_context()
        fields = trace_fields(span_context.trace_id, span_context.span_id, span_context.trace_flags)
        self._last_trace = (otel_context, fields)  # one tuple: other threads see the pair or the last one
        return fields

    def _emit(self, pending: _Pending) -> None:
        """The SDK's path: an SDK log record through the logger provider."""
        record, body, otel_context, request = pending
        self._logger(record.name).emit(
            timestamp=int(record.created * 1e9),
            observed_timestamp=time.time_ns(),
            context=otel_context,
            severity_number=severity_number(record.levelno),
            severity_text=_severity_text(record.levelname),
            body=valid_text(body),
            attributes=self._attributes(record, request),
        )

    def _attributes(self, record: logging.LogRecord, request: RequestContext) -> dict[str, Any]:
        return self._other_attributes(_site_attributes(record), record, request)

    def _other_attributes(
        self, attributes: dict[str, Any], record: logging.LogRecord, request: RequestContext
    ) -> dict[str, Any]:
        """The attributes besides ``code.*``, added to ``attributes``."""
        fields = record.__dict__
        # The caller's own ids: all of them without the filter, else the ones it names.
        from_caller = fields.get(CALLER_IDS_MARKER, ()) if CORRELATION_MARKER in fields else fields
        for key, from_context in (("request_id", request.request_id), ("user_id", request.user_id)):
            value = fields.get(key) if key in from_caller else None
            value = from_context if value is None else value  # the caller's own extra wins
            if value is not None:
                attributes[key] = attribute_value(value)
        for key, value in self._extras.into({}, record).items():
            attributes[valid_text(key)] = attribute_value(value)  # escaped as in the log files
        if record.exc_info:
            attributes.update(_exception_attributes(record.exc_info))
        return attributes

    def flush(self, timeout_s: float = 5.0) -> None:
        """Wait (up to ``timeout_s``) until queued records are sent (or handed to the provider)."""
        if self._closed:  # closing or closed: e.g. logging.shutdown() at exit after shutdown()
            return
        self._thread.flush(timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (waiting at most ``timeout_s``), then leave the export thread."""
        if self._closed:
            return
        self._closed = True  # before handing over: nothing new is queued
        self._thread.flush(timeout_s)
        while True:  # what could not be handed over in time is counted, not silently lost
            try:
                self._pending.popleft()
            except IndexError:
                break
            self._count_dropped(1)
        self._thread.remove(self)
        super().close()
