"""Loggers whose ``extra`` never raises, handed out by :func:`get_logger`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from telemetry_infra.logs.records import STANDARD_ATTRIBUTES, collision_safe

__all__ = ["StructuredLogger", "get_logger"]


class StructuredLogger(logging.Logger):
    """A :class:`logging.Logger` whose ``extra`` keys never clash with record attributes.

    The standard logger raises ``KeyError`` for ``extra={"message": ...}``; this one
    keeps such a value under ``extra_message`` instead.
    """

    def makeRecord(
        self,
        name: str,
        level: int,
        fn: str,
        lno: int,
        msg: object,
        args: Any,
        exc_info: Any,
        func: str | None = None,
        extra: Mapping[str, object] | None = None,
        sinfo: str | None = None,
    ) -> logging.LogRecord:
        if extra and not STANDARD_ATTRIBUTES.isdisjoint(extra):
            extra = collision_safe(extra)
        return super().makeRecord(name, level, fn, lno, msg, args, exc_info, func, extra, sinfo)


def get_logger(name: str | None = None) -> logging.Logger:
    """Return the standard logger ``name`` (usually ``__name__``), made extra-safe.

    It is the same object ``logging.getLogger(name)`` returns, so handlers, levels and
    code using the stdlib API all agree; ``extra`` keys such as ``message`` or
    ``name`` are kept under ``extra_message`` / ``extra_name`` instead of raising.
    """
    logger = logging.getLogger(name)
    if type(logger) is logging.Logger:
        # StructuredLogger only overrides makeRecord, so the existing object can
        # change class in place and code holding a reference keeps working.
        logger.__class__ = StructuredLogger
    return logger
