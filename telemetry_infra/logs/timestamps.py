"""UTC timestamps for log lines, formatted once per second rather than once per record."""

from __future__ import annotations

import time

__all__ = ["UtcSecondFormatter"]


class UtcSecondFormatter:
    """Formats epoch seconds in UTC with ``strftime``; the formatted second is cached."""

    def __init__(self, date_format: str) -> None:
        self._date_format = date_format
        self._cached: tuple[int, str] = (-1, "")

    def second(self, created: float) -> tuple[str, int]:
        """``(formatted whole second, microseconds)`` for an epoch time."""
        whole = int(created)
        cached = self._cached
        if cached[0] != whole:
            cached = (whole, time.strftime(self._date_format, time.gmtime(whole)))
            self._cached = cached
        return cached[1], int((created - whole) * 1_000_000)

    def iso(self, created: float) -> str:
        """``2026-01-15T23:00:00.123456Z``."""
        second, micros = self.second(created)
        return f"{second}.{micros:06d}Z"
