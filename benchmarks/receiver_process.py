"""An OTLP receiver in a process of its own, for benchmarks that measure the CPU of theirs.

    receiver = Receiver()          # starts ``python receiver_process.py``
    receiver.endpoints["grpc"]     # and ["http"]
    receiver.count("bench")        # {"spans": ..., "records": ...} of that scope
    receiver.clear(); receiver.close()

Decoding what arrives costs a Python receiver about as much CPU as exporting it costs
the sender: in the measured process it would be counted as the sender's. This one only
counts what arrives, per scope: a receiver that builds Python objects for every span
falls behind a sender that exports 20,000 spans a second, and the sender's bounded
queues then drop what a collector would have taken.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

from telemetry_infra.testing import OTLPReceiver


class CountingReceiver(OTLPReceiver):
    """An :class:`OTLPReceiver` that keeps only how many spans and records each scope sent."""

    def __init__(self) -> None:
        super().__init__()
        self._counted: Counter[tuple[str, str]] = Counter()
        self._counting = threading.Lock()

    def _store(self, kind: str, request: Any, transport: str) -> None:
        counted: Counter[tuple[str, str]] = Counter()
        if kind == "traces":
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    counted["spans", scope.scope.name] += len(scope.spans)
        elif kind == "logs":
            for resource in request.resource_logs:
                for scope in resource.scope_logs:
                    counted["records", scope.scope.name] += len(scope.log_records)
        with self._counting:
            self._counted.update(counted)

    def clear(self) -> None:
        with self._counting:
            self._counted.clear()

    def counts(self, scope: str) -> dict[str, int]:
        with self._counting:
            return {"spans": self._counted["spans", scope], "records": self._counted["records", scope]}


def serve() -> None:
    """Child: an OTLP receiver; prints its endpoints, then answers ``clear`` and
    ``count <scope>`` on stdin, one line each."""
    with CountingReceiver() as receiver:
        print(json.dumps({"grpc": receiver.grpc_endpoint, "http": receiver.http_endpoint}), flush=True)
        for line in sys.stdin:
            command, _, scope = line.strip().partition(" ")
            if command == "clear":
                receiver.clear()
                print("{}", flush=True)
            elif command == "count":
                print(json.dumps(receiver.counts(scope)), flush=True)


class Receiver:
    """The receiver process, and the questions it answers."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.endpoints: dict[str, str] = json.loads(self._ask(None))

    def _ask(self, command: str | None) -> str:
        assert self._process.stdin is not None and self._process.stdout is not None
        if command is not None:
            self._process.stdin.write(command + "\n")
            self._process.stdin.flush()
        return self._process.stdout.readline()

    def clear(self) -> None:
        self._ask("clear")

    def count(self, scope: str) -> dict[str, int]:
        counts: dict[str, int] = json.loads(self._ask(f"count {scope}"))
        return counts

    def settled_count(
        self, scope: str, expected_spans: int, expected_records: int, timeout_s: float = 5.0
    ) -> dict[str, int]:
        """Counts once they stop changing (a request may still be in the receiver's decoder)."""
        deadline = time.monotonic() + timeout_s
        last = self.count(scope)
        while time.monotonic() < deadline:
            if last["spans"] >= expected_spans and last["records"] >= expected_records:
                return last
            time.sleep(0.1)
            now = self.count(scope)
            if now == last:
                return now
            last = now
        return last

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(10)

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    serve()
