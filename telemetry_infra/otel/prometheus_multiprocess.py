"""One ``/metrics`` for every worker of a server (``PROMETHEUS_MULTIPROC_DIR``).

prometheus-client's multiprocess mode is the convention followed: the variable names a
directory shared by the workers of a service (empty it when the service starts); the
counters and histograms of a worker that exits stay in the sums, its gauges go, and the
sums never fall. Our values come from the OTel SDK, not from prometheus-client's value
classes, so the files hold snapshots of collections as JSON. Every file is keyed by the
service name, so two services sharing a directory keep their own sums:

* ``telemetry_infra.<service>.<pid>.<instance>.snapshot.json``: one worker's latest
  collection (counters, histogram buckets with exemplars, gauges). ``instance`` is
  random per process start, so a reused pid never takes over a dead worker's file. The
  worker rewrites it every :data:`REFRESH_S` seconds and at once when a scrape asks.
* ``telemetry_infra.<service>.archive.json``: the counters and histograms (no gauges, no
  exemplars) of every worker of the service that has exited, summed. A worker's snapshot
  is merged into it, and its file removed, when the worker shuts down, when
  :func:`mark_process_dead` names it (gunicorn's ``child_exit`` hook), or when a scrape
  finds its process gone (SIGKILL: no hook runs). The archive is rewritten atomically
  (temporary file + ``os.replace``) under ``fcntl.flock`` on
  ``telemetry_infra.<service>.lock``, and it lists the instances it absorbed, so a
  snapshot is never counted twice. The directory does not grow with recycles.
* a scrape is answered by one worker: it writes ``telemetry_infra.<service>.scrape-request``
  and waits, within the scrape's budget (:func:`answer_wait`), until every running
  worker has written a snapshot collected after the request; a worker that does not
  answer in time (stopped, busy, dying) contributes its last snapshot. The answering
  worker then reads the archive and the snapshots under the lock, so a worker being
  archived at that moment is counted exactly once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.samples import Exemplar

__all__ = [
    "ANSWER_TIMEOUT_S",
    "DEFAULT_ANSWER_WAIT_S",
    "ENV_VAR",
    "REFRESH_S",
    "SCRAPE_TIMEOUT_SHARE",
    "MultiprocessSnapshots",
    "UnusableDirectory",
    "answer_wait",
    "directory_problem",
    "mark_process_dead",
    "multiprocess_dir",
]

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"
#: A worker rewrites its snapshot at least this often, scrape or not.
REFRESH_S = 1.0
#: How long a scrape waits for the other workers' fresh snapshots, at most.
DEFAULT_ANSWER_WAIT_S = 0.25
#: Kept name of :data:`DEFAULT_ANSWER_WAIT_S`.
ANSWER_TIMEOUT_S = DEFAULT_ANSWER_WAIT_S
#: Share of Prometheus's ``X-Prometheus-Scrape-Timeout-Seconds`` a scrape may wait.
SCRAPE_TIMEOUT_SHARE = 0.5
#: How often a worker looks for a scrape request (a ``stat()``).
_POLL_S = 0.02
_PREFIX = "telemetry_infra"
_SNAPSHOT_SUFFIX = ".snapshot.json"

_log = logging.getLogger("telemetry_infra.otel.prometheus")

#: ``kind, description, unit, rows``; a row is ``(labels, value)``; a histogram's value
#: is ``(buckets, sum)`` with buckets ``(le, cumulative count[, Exemplar])``.
Family = tuple[str, str, str, list[tuple[dict[str, str], Any]]]
Collect = Callable[[], dict[str, Family]]


class UnusableDirectory(ValueError):
    """``PROMETHEUS_MULTIPROC_DIR`` names a directory this process cannot use."""


def multiprocess_dir() -> str | None:
    """The directory named by ``PROMETHEUS_MULTIPROC_DIR``, or ``None`` when unset or empty."""
    return os.environ.get(ENV_VAR) or None


def directory_problem(directory: str | os.PathLike[str]) -> str | None:
    """Why ``directory`` cannot hold the workers' files (``None``: it can). Creates nothing."""
    path = Path(directory).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == path else f"does not exist and {existing} is not writable"
        return f"{path} {what} by this process"
    return None


def answer_wait(scrape_timeout: str | float | None) -> float:
    """Seconds a scrape waits for the other workers: a share of Prometheus's scrape timeout
    (``X-Prometheus-Scrape-Timeout-Seconds``), never more than :data:`DEFAULT_ANSWER_WAIT_S`."""
    try:
        given = float(scrape_timeout) if scrape_timeout is not None else None
    except ValueError:
        given = None
    if given is None or given <= 0:
        return DEFAULT_ANSWER_WAIT_S
    return min(DEFAULT_ANSWER_WAIT_S, given * SCRAPE_TIMEOUT_SHARE)


# ---------------------------------------------------------------- files of one service


def _service_key(service: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9_-]", "-", service)[:40]
    return f"{readable}-{hashlib.sha256(service.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class _Files:
    """Where one service's snapshots, archive, lock and scrape requests live."""

    directory: Path
    service: str

    @property
    def key(self) -> str:
        return _service_key(self.service)

    def snapshot(self, pid: int, instance: str) -> Path:
        return self.directory / f"{_PREFIX}.{self.key}.{pid}.{instance}{_SNAPSHOT_SUFFIX}"

    def snapshots(self) -> list[Path]:
        return sorted(self.directory.glob(f"{_PREFIX}.{self.key}.*{_SNAPSHOT_SUFFIX}"))

    @property
    def archive(self) -> Path:
        return self.directory / f"{_PREFIX}.{self.key}.archive.json"

    @property
    def lock(self) -> Path:
        return self.directory / f"{_PREFIX}.{self.key}.lock"

    @property
    def request(self) -> Path:
        return self.directory / f"{_PREFIX}.{self.key}.scrape-request"


def _snapshot_pid(path: Path) -> int | None:
    """The pid in a snapshot file's name (``None``: not a snapshot)."""
    if not path.name.endswith(_SNAPSHOT_SUFFIX):
        return None
    parts = path.name[: -len(_SNAPSHOT_SUFFIX)].split(".")
    return int(parts[2]) if len(parts) == 4 and parts[2].isdigit() else None


@contextlib.contextmanager
def _locked(files: _Files) -> Iterator[None]:
    """The service's lock: one archive merge (or consistent read) at a time, across processes."""
    with files.lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------- live processes


def _process_stat(pid: int) -> tuple[str, str] | None:
    """``(state, start time)`` of ``pid`` from ``/proc`` (Linux), ``None`` if unknown there."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[0], fields[19]


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid``, so a reused pid is not taken for the old process."""
    stat = _process_stat(pid)
    return None if stat is None or stat[0] in ("Z", "X") else stat[1]


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


def _stopped(pid: int) -> bool:
    """SIGSTOPped (or traced): it cannot answer, so a scrape does not wait for it."""
    stat = _process_stat(pid)
    return stat is not None and stat[0] in ("T", "t")


# ---------------------------------------------------------------- (de)serialising


def _encode_value(kind: str, value: Any, exemplars: bool) -> Any:
    if kind != "histogram":
        return value
    buckets, total = value
    encoded = []
    for bucket in buckets:
        exemplar = bucket[2] if exemplars and len(bucket) > 2 else None
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


def _encode_families(families: dict[str, Family], exemplars: bool = True) -> dict[str, Any]:
    return {
        name: [kind, description, unit, [[labels, _encode_value(kind, v, exemplars)] for labels, v in rows]]
        for name, (kind, description, unit, rows) in families.items()
    }


def _decode_families(encoded: dict[str, Any]) -> dict[str, Family]:
    return {
        name: (kind, description, unit, [(labels, _decode_value(kind, v)) for labels, v in rows])
        for name, (kind, description, unit, rows) in encoded.items()
    }


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        loaded = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None  # gone, or not ours: skipped
    return loaded if isinstance(loaded, dict) else None


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


def _without_gauges(families: dict[str, Family]) -> dict[str, Family]:
    return {name: family for name, family in families.items() if family[0] != "gauge"}


# ---------------------------------------------------------------- the archive


def _read_archive(files: _Files) -> tuple[dict[str, Family], list[str]]:
    """The archived families and the instances already absorbed (call under the lock)."""
    stored = _read_json(files.archive)
    if stored is None:
        return {}, []
    return _decode_families(stored.get("families", {})), list(stored.get("absorbed", []))


def _absorb(files: _Files, instance: str, families: dict[str, Family], snapshot: Path | None) -> None:
    """Add one exited worker's counters and histograms to the archive, then remove its
    snapshot (call under the lock). ``absorbed`` remembers the instances whose snapshot
    may still exist, so a crash between the two steps never counts one twice."""
    archived, absorbed = _read_archive(files)
    if instance not in absorbed:
        archived = merge([(0, archived), (0, _without_gauges(families))])
        existing = {_instance_of(path) for path in files.snapshots()}
        absorbed = [known for known in absorbed if known in existing] + [instance]
        document: dict[str, Any] = {"service": files.service, "absorbed": absorbed}
        document["families"] = _encode_families(archived, exemplars=False)
        _write_atomically(files.archive, orjson.dumps(document))
    if snapshot is not None:
        with contextlib.suppress(FileNotFoundError):
            snapshot.unlink()


def _instance_of(path: Path) -> str:
    return path.name[: -len(_SNAPSHOT_SUFFIX)].split(".")[-1]


def _archive_if_dead(files: _Files, path: Path, absorbed: list[str]) -> dict[str, Any] | None:
    """The snapshot at ``path`` if its worker runs; else archive it (under the lock) and ``None``."""
    snapshot = _read_json(path)
    if snapshot is None or snapshot.get("service") != files.service:
        return None
    if _instance_of(path) in absorbed:  # archived already; only the removal was missed
        path.unlink(missing_ok=True)
        return None
    if _alive(snapshot["pid"], snapshot.get("started")):
        return snapshot
    _absorb(files, _instance_of(path), _decode_families(snapshot["families"]), path)
    absorbed.append(_instance_of(path))
    return None


def mark_process_dead(pid: int, path: str | os.PathLike[str] | None = None) -> None:
    """Archive an exited worker's counters and histograms now and drop its gauges (e.g.
    from gunicorn's ``child_exit`` hook). Its counts stay in the sums.

    Optional: a scrape that finds a worker gone does the same.
    """
    directory = path or multiprocess_dir()
    if not directory:
        return
    for snapshot in Path(directory).glob(f"{_PREFIX}.*.{pid}.*{_SNAPSHOT_SUFFIX}"):
        stored = _read_json(snapshot)
        if _snapshot_pid(snapshot) != pid or stored is None or not isinstance(stored.get("service"), str):
            continue
        files = _Files(Path(directory), stored["service"])
        with _locked(files):
            _archive_if_dead(files, snapshot, _read_archive(files)[1])


# ---------------------------------------------------------------- one worker's side


class MultiprocessSnapshots:
    """This worker's snapshot file in ``directory``, kept fresh by a daemon thread, and
    the merge of the service's archive and live workers for a scrape this worker answers."""

    def __init__(self, directory: str | os.PathLike[str], collect: Collect, service: str = "") -> None:
        self.directory = Path(directory)
        self.files = _Files(self.directory, service)
        self._collect = collect
        self._write_lock = threading.Lock()
        self._warned_services: set[str] = set()
        with contextlib.suppress(OSError):
            self.directory.mkdir(parents=True, exist_ok=True)
        problem = directory_problem(self.directory)
        if problem is not None:
            raise UnusableDirectory(f"{ENV_VAR}={directory!s} cannot be used: {problem}")
        self._start()

    def after_fork_in_child(self) -> None:
        """Threads do not survive ``fork()``: the forked worker starts its own file and thread."""
        self._write_lock = threading.Lock()
        self._start()

    def _start(self) -> None:
        self.pid = os.getpid()
        self.started = _process_start(self.pid)
        self.instance = uuid.uuid4().hex[:16]
        self._closed = False
        self._stop = threading.Event()
        self._seen_request: int | None = None
        self._thread = threading.Thread(target=self._run, name="telemetry-metrics-snapshot", daemon=True)
        self._thread.start()

    @property
    def path(self) -> Path:
        return self.files.snapshot(self.pid, self.instance)

    def close(self) -> None:
        """Stop refreshing and move this worker's counters and histograms into the archive."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
        try:
            families = self._collect()
        except Exception:  # the provider may be gone: its last snapshot is what we have
            families = {}
        if not families:  # nothing collected (reader detached already): the last snapshot
            stored = _read_json(self.path)
            families = _decode_families(stored["families"]) if stored else {}
        try:
            with _locked(self.files):
                _absorb(self.files, self.instance, families, self.path)
        except OSError:
            _log.warning("cannot archive the metrics of this worker in %s", self.directory, exc_info=True)

    def write(self, families: dict[str, Family] | None = None) -> None:
        """Rewrite this worker's snapshot: ``families`` or a fresh collection."""
        collected_at = time.time_ns()
        if families is None:
            families = self._collect()
        document = {
            "service": self.files.service,
            "pid": self.pid,
            "instance": self.instance,
            "started": self.started,
            "collected_at": collected_at,
            "families": _encode_families(families),
        }
        with self._write_lock:
            if not self._closed:  # an archived worker's file must not come back
                _write_atomically(self.path, orjson.dumps(document))

    def _run(self) -> None:
        last_write = 0.0
        while not self._stop.wait(_POLL_S if last_write else 0):
            if not self._new_request() and time.monotonic() - last_write < REFRESH_S:
                continue
            try:
                self.write()
            except Exception:  # a full disk must not kill the thread; the next round retries
                _log.debug("cannot write the metrics snapshot %s", self.path, exc_info=True)
            last_write = time.monotonic()

    def _new_request(self) -> bool:
        try:
            stamp = self.files.request.stat().st_mtime_ns
        except OSError:
            return False
        if stamp == self._seen_request:
            return False
        self._seen_request = stamp
        return True

    # ------------------------------------------------------------ answering a scrape

    def merged(self, own: dict[str, Family], wait_s: float = DEFAULT_ANSWER_WAIT_S) -> dict[str, Family]:
        """``own`` (this worker's fresh collection) merged with the archive and every live
        worker's snapshot, asking them for fresh ones and waiting at most ``wait_s``."""
        self.write(own)  # our file never lags what this scrape reports
        requested_at = time.time_ns()
        _write_atomically(self.files.request, str(requested_at).encode())
        self._await_answers(requested_at, time.monotonic() + wait_s)
        with _locked(self.files):
            absorbed = _read_archive(self.files)[1]
            live = [_archive_if_dead(self.files, path, absorbed) for path in self.files.snapshots()]
            archived = _read_archive(self.files)[0]  # with the workers just found dead
        self._warn_about_other_services()
        return merge([(0, archived), *self._in_fixed_order(own, live)])

    def _in_fixed_order(
        self, own: dict[str, Family], snapshots: list[dict[str, Any] | None]
    ) -> list[tuple[int, dict[str, Family]]]:
        """Live workers by (pid, instance), ``own`` in its place: whichever worker answers,
        float sums are added in one order, so a ``_sum`` never falls by a rounding."""
        by_worker = {
            (int(snapshot["pid"]), str(snapshot.get("instance"))): snapshot
            for snapshot in snapshots
            if snapshot is not None
        }
        by_worker[(self.pid, self.instance)] = {}
        return [
            (
                pid,
                own if instance == self.instance else _decode_families(by_worker[pid, instance]["families"]),
            )
            for pid, instance in sorted(by_worker)
        ]

    def _await_answers(self, requested_at: int, deadline: float) -> None:
        pending = [path for path in self.files.snapshots() if path != self.path]
        while pending and time.monotonic() < deadline:
            time.sleep(_POLL_S / 2)
            pending = [path for path in pending if not self._answered(path, requested_at)]

    @staticmethod
    def _answered(path: Path, requested_at: int) -> bool:
        """Whether ``path`` needs no more waiting: fresh, gone, dead or stopped."""
        snapshot = _read_json(path)
        if snapshot is None or snapshot.get("collected_at", 0) >= requested_at:
            return True
        pid = int(snapshot["pid"])
        return not _alive(pid, snapshot.get("started")) or _stopped(pid)

    def _warn_about_other_services(self) -> None:
        for path in self.directory.glob(f"{_PREFIX}.*{_SNAPSHOT_SUFFIX}"):
            if path.name.startswith(f"{_PREFIX}.{self.files.key}."):
                continue
            stored = _read_json(path)
            other = stored.get("service") if stored else None
            if isinstance(other, str) and other not in self._warned_services:
                self._warned_services.add(other)
                _log.warning(
                    "%s=%s is shared by services %r and %r: each keeps its own sums, but one "
                    "directory per service is the convention (empty it when the service starts)",
                    ENV_VAR,
                    self.directory,
                    self.files.service,
                    other,
                )
