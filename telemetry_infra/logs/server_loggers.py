"""uvicorn's and gunicorn's own loggers, sent through our handlers.

Servers install handlers of their own on their loggers (plain text, access lines on
stdout, tracebacks over several lines) and stop them from propagating. Routing them to
the root logger makes every line one of ours: JSON in production. When our ASGI
middleware writes the access records, the server's access logger is silenced, so each
request is logged once.
"""

from __future__ import annotations

import logging

__all__ = ["ACCESS_LOGGERS", "SERVER_LOGGERS", "route_server_loggers", "set_middleware_logs_access"]

SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn.error", "gunicorn.access")
ACCESS_LOGGERS = ("uvicorn.access", "gunicorn.access")

_middleware_logs_access = False


class _DropAll(logging.Filter):
    """On a server's access logger while our middleware logs access: survives a later
    ``dictConfig()`` of the server (which replaces handlers, not a logger's filters)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return False


_DROP_ALL = _DropAll()


def route_server_loggers() -> None:
    """Take the servers' handlers off their loggers and let the records reach the root's."""
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    _apply_access_policy()


def set_middleware_logs_access(enabled: bool) -> None:
    """Called by :class:`~telemetry_infra.integrations.asgi.TelemetryMiddleware`: with
    ``True`` the servers' access loggers say nothing (ours has the record)."""
    global _middleware_logs_access
    _middleware_logs_access = enabled
    _apply_access_policy()


def _apply_access_policy() -> None:
    for name in ACCESS_LOGGERS:
        logger = logging.getLogger(name)
        if not _middleware_logs_access:
            logger.removeFilter(_DROP_ALL)
            continue
        logger.addFilter(_DROP_ALL)  # idempotent
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        # no handler and no propagation: uvicorn sees hasHandlers() False and formats nothing
        logger.propagate = False
