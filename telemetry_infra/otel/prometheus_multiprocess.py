"""One ``/metrics`` for every worker of a server (``PROMETHEUS_MULTIPROC_DIR``).

prometheus-client's multiprocess mode is the convention followed: the variable names a
directory shared by the workers of one service (empty it when the service starts), each
worker keeps a file there named after its pid, and whoever answers a scrape merges the
files of the workers that are alive. Our values come from the OTel SDK, not from
prometheus-client's value classes, so the file holds a snapshot of this worker's
collection (counters, histogram buckets with exemplars, gauges) as JSON:

* a worker rewrites its snapshot every :data:`REFRESH_S` seconds, and at once when a
  scrape asks: the answering worker writes a token to ``scrape.request`` and waits
  (at most :data:`ANSWER_TIMEOUT_S`) until every live worker's snapshot answers it. A
  scrape made after requests finished therefore counts all of them; a worker that does
  not answer in time contributes its last snapshot (at most ``REFRESH_S`` old).
* counters and histograms are summed over the live workers (buckets bucket by bucket,
  each bucket keeping the newest exemplar); gauges are kept per worker with a ``pid``
  label, as prometheus-client's default ``all`` mode does.
* a worker whose pid is gone (or now names another process) is dropped, and its file
  removed: the sums then fall, which ``rate()`` treats as a counter reset.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.samples import Exemplar

__all__ = [
    "ANSWER_TIMEOUT_S",
    "ENV_VAR",
    "REFRESH_S",
    "MultiprocessSnapshots",
    "mark_process_dead",
    "multiprocess_dir",
]

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"
#: A worker rewrites its snapshot at least this often, scrape or not.
REFRESH_S = 5.0
#: How long the answering worker waits for the others' fresh snapshots.
ANSWER_TIMEOUT_S = 1.0
#: How often a worker looks for a scrape request (a ``stat()``).
_POLL_S = 0.05
_PREFIX = "telemetry_infra_"
_REQUEST = "scrape.request"

_log = logging.getLogger("telemetry_infra.otel.prometheus")

#: ``kind, description, unit, rows``; a row is ``(labels, value)``; a histogram's value
#: is ``(buckets, sum)`` with buckets ``(le, cumulative count[, Exemplar])``.
Family = tuple[str, str, str, list[tuple[dict[str, str], Any]]]
Collect = Callable[[], dict[str, Family]]


def multiprocess_dir() -> str | None:
    """The directory named by ``PROMETHEUS_MULTIPROC_DIR``, or ``None`` when unset or empty."""
    return os.environ.get(ENV_VAR) or None


def _snapshot_path(directory: Path, pid: int) -> Path:
    return directory / f"{_PREFIX}{pid}.json"


def mark_process_dead(pid: int, path: str | os.PathLike[str] | None = None) -> None:
    """Drop a worker's snapshot now (e.g. from gunicorn's ``child_exit`` hook).

    Optional: dead workers are noticed at the next scrape anyway.
    """
    directory = path or multiprocess_dir()
    if directory:
        with contextlib.suppress(FileNotFoundError):
            _snapshot_path(Path(directory), pid).unlink()


# ---------------------------------------------------------------- live processes


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), so a reused pid is not taken for the old process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if started is None:
        return True
    return _process_start(pid) == started


# ---------------------------------------------------------------- (de)serialising


def _encode_value(kind: str, value: Any) -> Any:
    if kind != "histogram":
        return value
    buckets, total = value
    encoded = []
    for bucket in buckets:
        exemplar = bucket[2] if len(bucket) > 2 else None
        stored = None if exemplar is None else [exemplar.labels, exemplar.value, exemplar.timestamp]
        encoded.append([bucket[0], bucket[1], stored])
    return [encoded, total]


def _decode_value(kind: str, value: Any) -> Any:
    if kind != "histogram":
        return value
    encoded, total = value
    buckets = []
    for le, count, exemplar in encoded:
        buckets.append((le, count) if exemplar is None else (le, count, Exemplar(*exemplar)))
    return buckets, total


def _encode(pid: int, started: str | None, answered: str | None, families: dict[str, Family]) -> bytes:
    return orjson.dumps(
        {
            "pid": pid,
            "started": started,
            "answered": answered,
            "families": {
                name: [kind, description, unit, [[labels, _encode_value(kind, v)] for labels, v in rows]]
                for name, (kind, description, unit, rows) in families.items()
            },
        }
    )


def _decode_families(encoded: dict[str, Any]) -> dict[str, Family]:
    return {
        name: (kind, description, unit, [(labels, _decode_value(kind, v)) for labels, v in rows])
        for name, (kind, description, unit, rows) in encoded.items()
    }


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


# ---------------------------------------------------------------- merging


def _labels_key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _merge_histograms(left: Any, right: Any) -> Any:
    (left_buckets, left_sum), (right_buckets, right_sum) = left, right
    by_le: dict[str, list[Any]] = {bucket[0]: list(bucket) for bucket in left_buckets}
    for bucket in right_buckets:
        mine = by_le.setdefault(bucket[0], [bucket[0], 0])
        mine[1] += bucket[1]
        if len(bucket) > 2 and (len(mine) < 3 or (bucket[2].timestamp or 0) > (mine[2].timestamp or 0)):
            mine[2:] = [bucket[2]]
    order = sorted(by_le, key=lambda le: float("inf") if le == "+Inf" else float(le))
    return [tuple(by_le[le]) for le in order], left_sum + right_sum


def merge(workers: Iterable[tuple[int, dict[str, Family]]]) -> dict[str, Family]:
    """Sum counters and histograms over the workers; keep gauges per worker (``pid`` label)."""
    merged: dict[str, tuple[str, str, str, dict[Any, tuple[dict[str, str], Any]]]] = {}
    for pid, families in workers:
        for name, (kind, description, unit, rows) in families.items():
            entry = merged.setdefault(name, (kind, description, unit, {}))
            if entry[0] != kind:
                continue  # a worker running other code; the first kind wins
            by_labels = entry[3]
            for labels, value in rows:
                if kind == "gauge":
                    labels = {**labels, "pid": str(pid)}
                key = _labels_key(labels)
                known = by_labels.get(key)
                if known is None:
                    by_labels[key] = (labels, value)
                elif kind == "histogram":
                    by_labels[key] = (labels, _merge_histograms(known[1], value))
                else:
                    by_labels[key] = (labels, known[1] + value)
    return {name: (kind, d, u, list(rows.values())) for name, (kind, d, u, rows) in merged.items()}


# ---------------------------------------------------------------- one worker's side

_instances: weakref.WeakSet[MultiprocessSnapshots] = weakref.WeakSet()
"""Live instances of this process: a reconfigure must not remove the file a newer one writes."""


class MultiprocessSnapshots:
    """This worker's snapshot file in ``directory``, kept fresh by a daemon thread,
    and the merge of all live workers' snapshots for a scrape this worker answers."""

    def __init__(self, directory: str | os.PathLike[str], collect: Collect) -> None:
        self.directory = Path(directory)
        self._collect = collect
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"{ENV_VAR}={directory!s} is not a usable directory: {error}") from error
        _instances.add(self)
        self._start()

    def after_fork_in_child(self) -> None:
        """Threads do not survive ``fork()``: the forked worker starts its own file and thread."""
        self._start()

    def _start(self) -> None:
        self.pid = os.getpid()
        self.started = _process_start(self.pid)
        self._stop = threading.Event()
        self._seen_request: int | None = None
        self._thread = threading.Thread(target=self._run, name="telemetry-metrics-snapshot", daemon=True)
        self._thread.start()

    @property
    def path(self) -> Path:
        return _snapshot_path(self.directory, self.pid)

    def close(self) -> None:
        """Stop refreshing and remove this worker's file (its series leave the sums)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        _instances.discard(self)
        if any(other.path == self.path for other in list(_instances)):
            return  # a newer configure() of this process writes the same file now
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def write(self, answered: str | None = None) -> None:
        _write_atomically(self.path, _encode(self.pid, self.started, answered, self._collect()))

    def _run(self) -> None:
        request = self.directory / _REQUEST
        last_write = 0.0
        while not self._stop.wait(_POLL_S if last_write else 0):
            token = self._new_request(request)
            if token is None and time.monotonic() - last_write < REFRESH_S:
                continue
            try:
                self.write(answered=token)
            except Exception:  # a full disk must not kill the thread; the next round retries
                _log.debug("cannot write the metrics snapshot %s", self.path, exc_info=True)
            last_write = time.monotonic()

    def _new_request(self, request: Path) -> str | None:
        try:
            stamp = request.stat().st_mtime_ns
            if stamp == self._seen_request:
                return None
            self._seen_request = stamp
            return request.read_text()
        except OSError:
            return None

    # ------------------------------------------------------------ answering a scrape

    def merged(self, own: dict[str, Family]) -> dict[str, Family]:
        """``own`` (this worker's fresh collection) merged with every live worker's snapshot."""
        others = self._other_files()
        if not others:
            return own
        token = f"{self.pid}-{time.time_ns()}"
        _write_atomically(self.directory / _REQUEST, token.encode())
        snapshots = self._await_answers(others, token)
        return merge([(self.pid, own), *snapshots])

    def _other_files(self) -> list[Path]:
        return [path for path in self.directory.glob(f"{_PREFIX}*.json") if path.name != self.path.name]

    def _await_answers(self, paths: list[Path], token: str) -> list[tuple[int, dict[str, Family]]]:
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        answered: dict[Path, tuple[int, dict[str, Family]]] = {}
        latest: dict[Path, dict[str, Any]] = {}
        pending = list(paths)
        while pending:
            for path in list(pending):
                snapshot = self._read_live(path)
                if snapshot is None:  # dead or unreadable: dropped
                    pending.remove(path)
                    continue
                latest[path] = snapshot
                if snapshot.get("answered") == token:
                    pending.remove(path)
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(_POLL_S / 2)
        for path, snapshot in latest.items():
            answered[path] = (snapshot["pid"], _decode_families(snapshot["families"]))
        return list(answered.values())

    def _read_live(self, path: Path) -> dict[str, Any] | None:
        try:
            snapshot = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError):
            return None  # being replaced right now never happens (os.replace); garbage is skipped
        if not _alive(snapshot["pid"], snapshot.get("started")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return None
        return snapshot
