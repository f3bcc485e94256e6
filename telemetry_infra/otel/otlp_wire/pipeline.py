"""One export thread for spans and log records, and the span processor that feeds it.

With ``fast_export`` (the default) ``configure()`` builds one :class:`ExportThread`:
:class:`QueuedSpanProcessor` and the OTLP log handler encode each ended span and each
log record where it is made (a few microseconds) and queue the bytes with a deque
append. The thread only groups and sends: it wakes once 512 of either wait
(or half a smaller queue), never per item, and sends whatever waits at least every schedule delay (the
shorter of ``OTEL_BSP_SCHEDULE_DELAY`` and ``OTEL_BLRP_SCHEDULE_DELAY``, 1 s by
default) and on every flush. Encoding in the thread cost the application more in
all: under the GIL its work competes with requests all the same, each wake-up costs
a switch, and spans and records kept alive until it ran moved through the garbage
collector's generations (see ``docs/performance.md``).

Guarantees kept from the SDK's batch processors: a bounded queue whose overflow is
counted, never blocking the caller; :meth:`ExportThread.flush` returns once
everything queued before it was sent (or its time is up); a forked child gets a
fresh thread and does not export what its parent had queued. While items wait and
its queues are less than half full, the thread takes at most ``worker_share`` of one
CPU (it rests between slices), so a storm does not starve the application; fuller
queues and flushes get no rests.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from telemetry_infra.otel.otlp_wire.exporters import FastSpanExporter
from telemetry_infra.otel.otlp_wire.spans import SpanBatch, encoded_span

__all__ = [
    "DEFAULT_WORKER_SHARE",
    "SHARED_WAKE_AT",
    "SHARED_WORKER_SHARE",
    "ExportThread",
    "QueuedSpanProcessor",
    "Source",
    "check_worker_share",
    "in_export_thread",
    "wake_at_for",
]

_log = logging.getLogger(__name__)

DEFAULT_WORKER_SHARE = 0.25
#: ``configure()``'s thread exports spans as well as records: at a quarter of a CPU it fell
#: behind a loop of requests (2 spans, 2 records each) and its queues overflowed.
SHARED_WORKER_SHARE = 0.5
#: ... and wakes once 512 spans or records wait (a batch; or half of a smaller queue): they
#: are encoded bytes, cheap to keep meanwhile, and every wake-up costs the application a
#: switch of the GIL to the thread and back.
SHARED_WAKE_AT = 512
_SLICE = 64  # items taken between two looks at the clock
#: The thread rests once it was busy this long: a shorter rest costs the application more (a
#: switch of the GIL and of the CPU to the thread and back) than the work it spreads out.
_REST_AFTER_S = 0.002
_FLUSH_POLL_S = 0.002


def wake_at_for(thread: ExportThread, max_queue: int) -> int:
    """When a source wakes ``thread``: at its ``wake_at``, or once half of a smaller queue waits."""
    return max(1, min(thread.wake_at, max_queue // 2))


def check_worker_share(worker_share: float) -> None:
    """Refuse a share of the CPU outside (0, 1]."""
    if not 0 < worker_share <= 1:
        raise ValueError(f"worker_share must be in (0, 1], got {worker_share!r}")


class Source(Protocol):
    """A queue the export thread drains: spans, or log records."""

    def waiting(self) -> int:
        """Items queued and not yet taken."""
        ...

    def building(self) -> int:
        """Items taken and not sent yet."""
        ...

    def crowded(self) -> bool:
        """Whether its queue is half full or more: the thread then does not rest."""
        ...

    def take(self, limit: int) -> None:
        """Move up to ``limit`` queued items into the batch being built (full ones set
        aside), as long as fewer than its queue's size are taken and not sent."""
        ...

    def set_aside(self) -> None:
        """The batch being built is due: set it aside with the full ones."""
        ...

    def send_one(self) -> bool:
        """Send the oldest batch set aside; ``False`` if there is none. Never raises."""
        ...

    def forget_queued(self) -> None:
        """In a forked child: drop what the parent queued (the parent exports it)."""
        ...


class ExportThread:
    """Drains its sources in one daemon thread: woken once a source holds ``wake_at`` items.

    A wake-up takes what waits, then sends the full batches, taking what came meanwhile
    after each (a slow collector must not let the queues overflow), and all of it every
    ``interval_s`` and on :meth:`flush`.
    """

    def __init__(
        self, name: str, interval_s: float, worker_share: float = DEFAULT_WORKER_SHARE, wake_at: int = 512
    ) -> None:
        check_worker_share(worker_share)
        self._name = name
        self._interval_s = interval_s
        self._sent_at = time.monotonic()
        #: A source wakes the thread once this many of its items wait.
        self.wake_at = wake_at
        self._rest_per_busy = 1 / worker_share - 1
        self._sources: list[Source] = []
        self._wakeup = threading.Event()
        self._hurry = threading.Event()  # set while flushing: no rests
        self._busy = False
        self._worker: threading.Thread | None = None
        #: ``False`` until the thread runs (again, in a forked child): sources start it on their next item.
        self.running = False
        _threads.add(self)

    def add(self, source: Source) -> None:
        self._sources = [*self._sources, source]

    def remove(self, source: Source) -> None:
        """Stop draining ``source``; the thread ends once it has none."""
        self._sources = [s for s in self._sources if s is not source]
        self._wakeup.set()

    def start(self) -> None:
        """Start the thread unless it runs (a forked child's starts afresh)."""
        worker = self._worker
        if worker is not None and worker.is_alive():
            self.running = True
            return
        self._worker = threading.Thread(target=self._run, name=self._name, daemon=True)
        self.running = True
        self._worker.start()

    def wake(self) -> None:
        """A batch is ready: drain now rather than at the next interval."""
        if not self._wakeup.is_set():
            self.start()
            self._wakeup.set()

    def _run(self) -> None:
        _here.exporting = True
        while self._sources:
            woken = self._wakeup.wait(self._interval_s)
            self._wakeup.clear()
            try:
                self._drain(send_all=not woken)
            except Exception:  # pragma: no cover - sources never raise; the thread must not die
                _log.exception("telemetry export thread")
        self.running = False

    def _crowded(self) -> bool:
        return any(source.crowded() for source in self._sources)

    def _unsent(self) -> bool:
        return any(source.waiting() or source.building() for source in self._sources)

    def _drain(self, send_all: bool) -> None:
        self._busy = True
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))  # no spans of our own export
        try:
            self._take_waiting()
            if send_all or self._hurry.is_set() or time.monotonic() - self._sent_at >= self._interval_s:
                self._sent_at = time.monotonic()
                for source in self._sources:
                    source.set_aside()
            self._send_set_aside()
        finally:
            detach(token)
            self._busy = False

    def _take_waiting(self) -> None:
        """Take what waits now; what comes meanwhile waits for the next wake-up (under a stream
        that never lets a queue empty, batches must still leave as they fill)."""
        sources = self._sources
        left = [source.waiting() for source in sources]
        busy = 0.0
        while any(left):
            started = time.thread_time()
            for index, source in enumerate(sources):
                if left[index]:
                    taking = min(_SLICE, left[index])
                    source.take(taking)
                    left[index] -= taking
            busy += time.thread_time() - started
            if busy >= _REST_AFTER_S and self._rest_per_busy and any(left) and not self._crowded():
                self._hurry.wait(busy * self._rest_per_busy)
                busy = 0.0

    def _send_set_aside(self) -> None:
        """Send the batches set aside, one at a time, taking what came during each send."""
        sent = True
        while sent:
            sent = False
            for source in self._sources:
                if source.send_one():
                    sent = True
                    self._take_waiting()

    def flush(self, timeout_s: float) -> bool:
        """Send everything queued now; ``False`` if it was not all sent within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        self._hurry.set()
        try:
            while self._unsent() or self._busy:
                if time.monotonic() >= deadline:
                    return False
                worker = self._worker
                if worker is None or not worker.is_alive():
                    self._drain(send_all=True)  # no thread (not started yet, or a forked child's): drain here
                    continue
                self._wakeup.set()
                time.sleep(_FLUSH_POLL_S)
            return True
        finally:
            self._hurry.clear()

    def _after_fork_in_child(self) -> None:
        """The parent's thread does not exist here; its locks may have been held at the fork."""
        self._wakeup = threading.Event()
        self._hurry = threading.Event()
        self._busy = False
        self._worker = None
        self.running = False
        for source in self._sources:
            source.forget_queued()


_here = threading.local()


def in_export_thread() -> bool:
    """Whether this is an export thread (what is logged here is not exported: it would feed itself)."""
    return getattr(_here, "exporting", False)


_threads: weakref.WeakSet[ExportThread] = weakref.WeakSet()


def _reset_threads_after_fork() -> None:
    for thread in list(_threads):
        thread._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_threads_after_fork)


class _NoMetrics:
    def drop_items(self, count: int, error_type: str = "queue_full") -> None:
        return None

    def finish_items(self, count: int) -> None:
        return None


def _processor_metrics(capacity: int, queued: Any) -> Any:
    """The SDK's own span processor metrics (``otel.sdk.processor.span.*``), as its
    BatchSpanProcessor keeps them: on with ``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED``."""
    try:
        from opentelemetry.metrics import get_meter_provider
        from opentelemetry.sdk._shared_internal._processor_metrics import create_processor_metrics
        from opentelemetry.sdk.environment_variables import OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED
        from opentelemetry.sdk.environment_variables._internal import parse_boolean_environment_variable
        from opentelemetry.semconv._incubating.attributes.otel_attributes import OtelComponentTypeValues
    except ImportError:  # pragma: no cover - another SDK version: drops stay counted in ``dropped``
        return _NoMetrics()
    metrics = create_processor_metrics(
        "traces",
        OtelComponentTypeValues.BATCHING_SPAN_PROCESSOR,
        get_meter_provider(),
        capacity=capacity,
        enabled=parse_boolean_environment_variable(OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED),
    )
    metrics.register_queue_size(queued)
    return metrics


#: A span as it waits: (resource, scope, encoded, the span itself). ``encoded`` is None when
#: the span goes the SDK's way; the span is None once our encoding alone is enough.
_Queued = tuple[Any, Any, "bytes | None", "ReadableSpan | None"]


class QueuedSpanProcessor(SpanProcessor):
    """Queues ended spans for an :class:`ExportThread` that exports them through ``exporter``.

    With our encoder (a :class:`FastSpanExporter`), ``on_end`` encodes the span where it
    ends and queues the bytes: the span object is not kept alive for the thread, and
    the thread only groups and sends. Otherwise it queues the span for the exporter.
    Either way it never blocks: at most ``max_queue_size`` spans wait; more are dropped
    and counted in :attr:`dropped` (with one warning) and, as by the SDK's
    BatchSpanProcessor, in ``otel.sdk.processor.span.processed`` when the SDK's internal
    metrics are on.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        thread: ExportThread,
        max_queue_size: int = 2048,
        max_export_batch_size: int = 512,
        export_timeout_s: float = 30.0,
    ) -> None:
        self._exporter = exporter
        self._fast = exporter if isinstance(exporter, FastSpanExporter) else None
        self._thread = thread
        self._queue: deque[_Queued] = deque()
        self._batch = SpanBatch()  # our encoder's: the encoded spans taken
        self._taken: list[ReadableSpan] = []  # for the SDK's path (until our transport proved itself)
        self._full: list[tuple[SpanBatch, list[ReadableSpan]]] = []  # full batches, to be sent
        self._max_queue = max_queue_size
        self._wake_at = wake_at_for(thread, max_queue_size)
        self._batch_size = max(1, min(max_export_batch_size, max_queue_size))
        self._export_timeout_s = export_timeout_s
        self._closed = False
        self.dropped = 0
        self._metrics = _processor_metrics(max_queue_size, lambda: len(self._queue))
        thread.add(self)

    @property
    def exporter(self) -> SpanExporter:
        return self._exporter

    # on_start is the base class's no-op, not an override: light spans (otel.light_spans) are
    # used only under processors that do nothing until a span ends, checked by identity.

    def on_end(self, span: ReadableSpan) -> None:
        if not span.context.trace_flags.sampled:
            return
        queue = self._queue
        if len(queue) >= self._max_queue:  # 0 once shut down
            self._drop(1)
            return
        fast = self._fast
        if fast is None or not fast.fast:
            queue.append((None, None, None, span))
        else:
            try:
                resource, scope, encoded = encoded_span(span)
            except Exception:  # what the SDK's encoder refuses too: this span, not the batch
                _log.exception("Failed to encode a span")
                self.dropped += 1
                return
            # kept for the SDK's path until our transport proved itself
            queue.append((resource, scope, encoded, None if fast.proven else span))
        if len(queue) >= self._wake_at:
            self._thread.wake()
        elif not self._thread.running:
            self._thread.start()

    def _drop(self, count: int) -> None:
        if not self.dropped:
            reason = "shut down" if self._closed else "queue full"
            _log.warning("span export %s: dropping spans (counted in the processor's dropped)", reason)
        self.dropped += count
        self._metrics.drop_items(count, "already_shutdown" if self._closed else "queue_full")

    def _lost(self, count: int) -> None:
        """Spans encoded for our transport, which fell back to the SDK's path before they left,
        and not kept for it (its one warning said so): counted, not silently lost."""
        self.dropped += count
        self._metrics.drop_items(count, "_OTHER")

    # ------------------------------------------------------------ the thread's side

    def waiting(self) -> int:
        return len(self._queue)

    def building(self) -> int:
        return max(self._batch.count, len(self._taken)) + sum(max(b.count, len(t)) for b, t in self._full)

    def crowded(self) -> bool:
        return len(self._queue) * 2 >= self._max_queue

    def take(self, limit: int) -> None:
        queue, taken, batch = self._queue, self._taken, self._batch
        fast = self._fast is not None and self._fast.fast
        for _ in range(min(limit, len(queue), self._max_queue - self.building())):
            resource, scope, encoded, span = queue.popleft()
            if encoded is not None and fast:
                batch.add_encoded(resource, scope, encoded)
            elif span is None:  # encoded for our transport, which fell back since, and not kept
                self._lost(1)
                continue
            if span is not None:
                taken.append(span)
        if max(batch.count, len(taken)) >= self._batch_size:
            self._full.append((batch, taken))
            self._batch, self._taken = SpanBatch(), []

    def set_aside(self) -> None:
        if self._batch.count or self._taken:
            self._full.append((self._batch, self._taken))
            self._batch, self._taken = SpanBatch(), []

    def send_one(self) -> bool:
        if not self._full:
            return False
        batch, taken = self._full.pop(0)
        self._send(batch, taken)
        return True

    def _send(self, batch: SpanBatch, taken: list[ReadableSpan]) -> None:
        self._metrics.finish_items(max(batch.count, len(taken)))
        fast = self._fast
        if fast is None or not batch.count:
            self._export(taken)
            return

        def stock() -> bool:  # our transport failed on the SDK's internals: the SDK's way
            if len(taken) < batch.count:
                self._lost(batch.count - len(taken))
            return fast.export_stock(taken) if taken else True

        if not fast.send_batch(batch, stock):
            self.dropped += batch.count

    def _export(self, batch: Sequence[ReadableSpan]) -> None:
        try:
            result = self._exporter.export(batch)
        except Exception:  # the exporter's own failures are results; this is a surprise
            _log.exception("Exception while exporting spans")
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self.dropped += len(batch)

    def forget_queued(self) -> None:
        self._queue.clear()
        self._batch, self._taken, self._full = SpanBatch(), [], []

    # ------------------------------------------------------------ flush, shutdown

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._thread.flush(timeout_millis / 1000)

    def shutdown(self) -> None:
        if self._closed:
            return
        self._thread.flush(self._export_timeout_s)
        self._closed = True
        self._max_queue = 0  # on_end drops from now on, with no check of its own
        left = len(self._queue) + self.building()
        self.forget_queued()
        if left:
            self._drop(left)
        self._thread.remove(self)
        self._exporter.shutdown()
