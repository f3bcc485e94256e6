"""``setup_logging()``: console and file handlers on the root logger, installed idempotently."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from telemetry_infra.logs.console_formatter import ConsoleFormatter
from telemetry_infra.logs.correlation import TraceCorrelationFilter
from telemetry_infra.logs.files import DAY_SECONDS, SharedRotatingFileHandler
from telemetry_infra.logs.json_formatter import JsonFormatter
from telemetry_infra.logs.redaction import set_secret_keys
from telemetry_infra.logs.server_loggers import SERVER_LOGGERS, route_server_loggers
from telemetry_infra.settings import Settings

__all__ = [
    "LOG_FILES",
    "SERVER_LOG_CONFIG",
    "installed_handlers",
    "server_console_handler",
    "setup_logging",
    "teardown_logging",
]

_MARKER = "_telemetry_infra_logs"
"""Attribute set on every handler setup_logging installs, so it only replaces its own."""

LOG_FILES: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("app.log", logging.NOTSET, ()),
    ("error.log", logging.ERROR, ()),
    ("api.log", logging.NOTSET, ("api",)),
    ("model.log", logging.NOTSET, ("model",)),
)
"""``(file name, minimum level, logger names it is limited to)`` for each log file."""

_log = logging.getLogger("telemetry_infra.logs")


class _LoggerNameFilter(logging.Filter):
    """Passes records of the named loggers and their children (``api``, ``api.*``)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        super().__init__()
        self._names = names
        self._prefixes = tuple(name + "." for name in names)

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        return name in self._names or name.startswith(self._prefixes)


def installed_handlers() -> list[logging.Handler]:
    """The handlers :func:`setup_logging` put on the root logger."""
    return [handler for handler in logging.getLogger().handlers if getattr(handler, _MARKER, False)]


def teardown_logging() -> None:
    """Remove and close the handlers :func:`setup_logging` installed (others stay)."""
    root = logging.getLogger()
    for handler in installed_handlers():
        root.removeHandler(handler)
        handler.close()


def _console_handler(stream: TextIO | None, json_logs: bool) -> logging.Handler:
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    colours = not json_logs and _is_terminal(handler.stream)
    handler.setFormatter(JsonFormatter() if json_logs else ConsoleFormatter(colours=colours))
    return handler


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # detached or closed streams
        return False


def _file_handlers(
    log_dir: str, json_logs: bool, rotate_every: float, backup_count: int, per_process: bool
) -> list[logging.Handler]:
    """One handler per :data:`LOG_FILES` entry; raises OSError if the directory is unusable."""
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = []
    try:
        for name, level, loggers in LOG_FILES:
            handler = SharedRotatingFileHandler(
                Path(log_dir) / name,
                rotate_every=rotate_every,
                backup_count=backup_count,
                per_process=per_process,
                level=level,
            )
            if loggers:
                handler.addFilter(_LoggerNameFilter(loggers))
            handler.setFormatter(JsonFormatter() if json_logs else ConsoleFormatter())
            handlers.append(handler)
    except OSError:
        for opened in handlers:
            opened.close()
        raise
    return handlers


def setup_logging(
    log_level: str | int | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    environment: str | None = None,
    *,
    console: bool = True,
    log_files: bool = True,
    stream: TextIO | None = None,
    rotate_every: float = DAY_SECONDS,
    backup_count: int = 30,
    per_process_files: bool = False,
    secret_keys: Iterable[str] | None = None,
) -> None:
    """Configure the root logger: console output plus ``app/error/api/model.log`` files.

    ``log_level``, ``log_dir`` and ``environment`` fall back to ``LOG_LEVEL``,
    ``LOG_DIR`` and ``ENVIRONMENT``, then to ``INFO``, ``./logs`` and ``development``;
    an unknown level raises ``ValueError``. Development writes readable text,
    every other environment JSON lines. Files rotate every ``rotate_every`` seconds
    (default: at midnight UTC) keeping ``backup_count``; ``per_process_files`` gives
    each process its own files. ``secret_keys`` replaces the names whose values are
    redacted. Calling it again replaces what the previous call installed and leaves
    other handlers alone. An unwritable ``log_dir`` logs one warning and keeps the
    console going. uvicorn's and gunicorn's loggers are routed through these handlers
    (see :mod:`telemetry_infra.logs.server_loggers`).
    """
    settings = Settings.resolve(log_level=log_level, log_dir=log_dir, environment=environment)
    if secret_keys is not None:
        set_secret_keys(secret_keys)
    teardown_logging()
    root = logging.getLogger()
    root.setLevel(settings.log_level)

    handlers = [_console_handler(stream, settings.json_logs)] if console else []
    file_error: OSError | None = None
    if log_files:
        try:
            handlers += _file_handlers(
                settings.log_dir, settings.json_logs, rotate_every, backup_count, per_process_files
            )
        except OSError as error:
            file_error = error

    correlation = TraceCorrelationFilter()
    for handler in handlers:
        handler.addFilter(correlation)
        setattr(handler, _MARKER, True)
        root.addHandler(handler)
    route_server_loggers()
    if file_error is not None:
        _log.warning(
            "Cannot write log files to %s (%s: %s); logging to the console only",
            settings.log_dir,
            type(file_error).__name__,
            file_error.strerror or file_error,
        )


def server_console_handler() -> logging.Handler:
    """The console handler :func:`setup_logging` installs, for a server's logging config.

    Used by :data:`SERVER_LOG_CONFIG`, so the server's first lines (before the app
    imported and ``configure()`` ran) are already ours; ``setup_logging`` replaces it.
    """
    handler = _console_handler(None, Settings.resolve().json_logs)
    handler.addFilter(TraceCorrelationFilter())
    setattr(handler, _MARKER, True)
    return handler


#: ``uvicorn --log-config`` / ``uvicorn.run(log_config=...)`` / gunicorn ``logconfig_dict``:
#: every server line through our console handler (JSON in production), nothing on stderr.
SERVER_LOG_CONFIG: dict[str, object] = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"telemetry_infra": {"()": "telemetry_infra.logs.setup.server_console_handler"}},
    "root": {"level": "INFO", "handlers": ["telemetry_infra"]},
    "loggers": {name: {"handlers": [], "propagate": True} for name in SERVER_LOGGERS},
}
