"""The development line: ``time | LEVEL | logger | file:line [request] | message``."""

from __future__ import annotations

import logging

from telemetry_infra.logs.records import ExtraFields, as_text, formatted_once, message_of, one_line
from telemetry_infra.logs.timestamps import UtcSecondFormatter

__all__ = ["ConsoleFormatter"]

_RESET = "\033[0m"
_LEVEL_COLOURS = {
    "DEBUG": "\033[36m",  # cyan
    "INFO": "\033[32m",  # green
    "WARNING": "\033[33m",  # yellow
    "ERROR": "\033[31m",  # red
    "CRITICAL": "\033[1;31m",  # bold red
}


class ConsoleFormatter(logging.Formatter):
    """Readable text for development consoles and text log files.

    ``2026-01-15 23:00:00 | INFO     | api.client           | client.py:123  [abc-123] | message``
    followed by ``| key=value`` for the caller's ``extra`` fields (secrets redacted) and
    the traceback, if any, on the following lines. Times are UTC, like the JSON output.
    Handlers whose formatters have the same :attr:`line_key` (plain ``ConsoleFormatter``
    instances with the same ``colours``) write the line the first one made for a record.
    """

    def __init__(self, colours: bool = False) -> None:
        super().__init__()
        self._colours = colours
        self._clock = UtcSecondFormatter("%Y-%m-%d %H:%M:%S")
        self._extra_fields = ExtraFields()
        self.line_key: object = (ConsoleFormatter, colours) if type(self) is ConsoleFormatter else None
        """Formatters with equal keys write equal lines; ``None`` (a subclass) shares none."""

    def format(self, record: logging.LogRecord) -> str:
        return formatted_once(record, self.line_key, self.format_line)

    def format_line(self, record: logging.LogRecord) -> str:
        """The text line for ``record``, made now (:meth:`format` reuses a shared one)."""
        second, _ = self._clock.second(record.created)
        level = f"{record.levelname:<8}"
        if self._colours:
            level = f"{_LEVEL_COLOURS.get(record.levelname, '')}{level}{_RESET}"
        location = f"{record.filename}:{record.lineno}"
        request_id = record.__dict__.get("request_id") or "-"
        line = (
            f"{second} | {level} | {record.name:<20} | {location:<23} [{request_id}] | "
            f"{one_line(message_of(record))}{self._extras(record)}"
        )
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line

    def _extras(self, record: logging.LogRecord) -> str:
        pairs = [f"{key}={as_text(value)}" for key, value in self._extra_fields.into({}, record).items()]
        return one_line(" | " + " ".join(pairs)) if pairs else ""
