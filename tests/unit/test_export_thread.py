"""The export thread's drain (``otel.otlp_wire.pipeline.ExportThread``) with sources it cannot empty."""

from __future__ import annotations

import threading

from telemetry_infra.otel.otlp_wire.pipeline import ExportThread

BATCH = 512


class EndlessSource:
    """A queue that never empties while ``endless``: each take finds as many new items waiting.

    It speaks the thread's source protocol; the batches it sends are counted.
    """

    def __init__(self) -> None:
        self.endless = True
        self.taken = 0
        self.unsent = 0  # taken, in batches not sent yet
        self.sent_batches = 0

    def waiting(self) -> int:
        return 64 if self.endless else 0

    def building(self) -> int:
        return self.unsent

    def crowded(self) -> bool:
        return False

    def take(self, limit: int) -> None:
        self.taken += limit
        self.unsent += limit

    def set_aside(self) -> None:
        return None

    def send_one(self) -> bool:
        if self.unsent < BATCH:
            return False
        self.unsent -= BATCH
        self.sent_batches += 1
        return True

    def forget_queued(self) -> None:
        self.unsent = 0


def test_a_wake_up_ends_and_sends_while_items_keep_coming():
    """It takes what waits when it wakes, sends the full batches, and returns: it used to take
    for as long as anything waited, so under a steady stream it never sent anything."""
    thread = ExportThread("test-export", interval_s=60, worker_share=1.0)
    source = EndlessSource()
    thread.add(source)
    drained = threading.Event()

    def drain() -> None:
        for _ in range(20):  # twenty wake-ups' worth
            thread._drain(send_all=False)
        drained.set()

    worker = threading.Thread(target=drain, daemon=True)
    worker.start()
    finished = drained.wait(5)
    source.endless = False  # lets a drain that never ends stop, so the test can
    worker.join(5)
    assert finished, f"the drain was still taking after {source.taken} items, {source.sent_batches} sent"
    assert source.sent_batches >= 1 and source.unsent < 2 * BATCH
