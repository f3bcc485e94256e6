"""Log files that several processes can append to and rotate safely.

Each record is written with a single ``write()`` on an ``O_APPEND`` descriptor, so
lines from different processes never interleave or overwrite each other. Rotation
periods are aligned to the epoch (the default, one day, rolls at midnight UTC), so
every process agrees on when a file ends. The first process to see a record of a
new period renames the file under an inter-process lock; the others notice the
rename (the path no longer names the file they hold) and reopen. A process still
writing to the renamed file for a moment only adds its lines to the rotated file:
nothing is lost or written twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

from telemetry_infra.logs.json_formatter import JsonFormatter

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: rotation is only coordinated within a process
    fcntl = None  # type: ignore[assignment]  # the module or None, checked before use

__all__ = ["DAY_SECONDS", "SharedRotatingFileHandler"]

DAY_SECONDS = 86_400
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


@contextlib.contextmanager
def _interprocess_lock(path: str) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _write_rest(fd: int, data: bytes, written: int) -> None:
    """Finish a write that ``os.write`` cut short (a log line almost always goes in one call)."""
    view = memoryview(data)[written:]
    while view:
        view = view[os.write(fd, view) :]


class SharedRotatingFileHandler(logging.Handler):
    """Appends formatted records to ``path``; rotates every ``rotate_every`` seconds.

    Rotated files are named ``<path>.<period start>`` (``app.log.2026-01-15`` for
    daily rotation) and the newest ``backup_count`` are kept. With ``per_process``
    the file name carries the process id (``app.1234.log``), also after a fork.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        rotate_every: float = DAY_SECONDS,
        backup_count: int = 30,
        per_process: bool = False,
        level: int = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        if rotate_every <= 0:
            raise ValueError(f"rotate_every must be a positive number of seconds, got {rotate_every!r}")
        self._base_path = Path(path)
        self._per_process = per_process
        self._interval = float(rotate_every)
        self._backup_count = backup_count
        self._fd: int | None = None
        self._period = 0
        self._next_rollover = 0.0
        self._open()
        if per_process:
            _reopen_after_fork(self)

    @property
    def path(self) -> str:
        """The file written now."""
        if not self._per_process:
            return str(self._base_path)
        base = self._base_path
        return str(base.with_name(f"{base.stem}.{os.getpid()}{base.suffix}"))

    def _lock_path(self) -> str:
        path = Path(self.path)
        return str(path.with_name(f".{path.name}.lock"))

    def _open(self, period_of: float | None = None) -> int:
        """Open the file; it holds the period of ``period_of`` (default: its last write)."""
        fd = os.open(self.path, _OPEN_FLAGS, 0o644)
        if period_of is None:
            stat = os.fstat(fd)
            period_of = stat.st_mtime if stat.st_size else time.time()
        self._fd = fd
        self._period = int(period_of // self._interval)
        self._next_rollover = (self._period + 1) * self._interval
        return fd

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the handler's own lock (the one ``handle()`` takes around ``emit()``)."""
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def _reopen(self) -> None:
        with self._locked():
            self._close_fd()
            self._open()

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def handle(self, record: logging.LogRecord) -> bool:
        """:meth:`logging.Handler.handle` without its per-record method calls: the filters,
        then :meth:`emit` under the handler's lock."""
        passed = self.filter(record) if self.filters else True
        if not passed:
            return passed
        if isinstance(passed, logging.LogRecord):  # Python 3.12+: a filter may replace the record
            record = passed
        with self.lock:  # type: ignore[union-attr]  # Handler.__init__ always creates it
            self.emit(record)
        return passed

    def emit(self, record: logging.LogRecord) -> None:
        try:
            formatter = self.formatter
            if isinstance(formatter, JsonFormatter):  # the line comes as bytes, no str round trip
                data = formatter.format_bytes(record)
            else:
                data = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
            if record.created >= self._next_rollover:
                self._rotate(record.created)
            fd = self._fd if self._fd is not None else self._open()
            written = os.write(fd, data)
            if written != len(data):
                _write_rest(fd, data, written)
        except Exception:
            self.handleError(record)

    def _rotate(self, now: float) -> None:
        path = self.path
        with _interprocess_lock(self._lock_path()):
            if self._still_names_my_file(path):
                os.replace(path, self._rotated_name(path))
                self._delete_old_rotations(path)
            self._close_fd()
            self._open(period_of=now)

    def _still_names_my_file(self, path: str) -> bool:
        try:
            current = os.stat(path)
        except FileNotFoundError:
            return False
        if self._fd is None:  # closed: like a write to a closed file, emit() reports it
            raise ValueError("the log file handler is closed")
        mine = os.fstat(self._fd)
        return (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev)

    def _rotated_name(self, path: str) -> str:
        start = time.gmtime(self._period * self._interval)
        suffix_format = "%Y-%m-%d" if self._interval % DAY_SECONDS == 0 else "%Y-%m-%dT%H-%M-%S"
        name = f"{path}.{time.strftime(suffix_format, start)}"
        candidate, copy = name, 0
        while os.path.exists(candidate):  # an earlier run already rotated this period
            copy += 1
            candidate = f"{name}.{copy}"
        return candidate

    def _delete_old_rotations(self, path: str) -> None:
        current = Path(path)
        rotated = sorted(
            current.parent.glob(f"{current.name}.*"), key=lambda file: (file.stat().st_mtime, file.name)
        )
        for old in rotated[: max(len(rotated) - self._backup_count, 0)]:
            with contextlib.suppress(FileNotFoundError):  # another process got there first
                old.unlink()

    def close(self) -> None:
        with self._locked():
            self._close_fd()
        super().close()


_per_process_handlers: weakref.WeakSet[SharedRotatingFileHandler] = weakref.WeakSet()
_fork_hook_registered = False


def _reopen_per_process_files() -> None:
    for handler in list(_per_process_handlers):
        if handler._fd is not None:
            handler._reopen()


def _reopen_after_fork(handler: SharedRotatingFileHandler) -> None:
    global _fork_hook_registered
    if not _fork_hook_registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_reopen_per_process_files)
        _fork_hook_registered = True
    _per_process_handlers.add(handler)
