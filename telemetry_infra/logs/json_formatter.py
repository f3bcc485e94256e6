"""Production JSON lines on python-json-logger (its orjson formatter when orjson is installed)."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from typing import Any

from telemetry_infra.logs.records import (
    CORRELATION_FIELDS,
    CORRELATION_MARKER,
    ExtraFields,
    as_text,
    formatted_once,
    message_of,
    one_line,
)
from telemetry_infra.logs.timestamps import UtcSecondFormatter

_ORJSON = importlib.util.find_spec("orjson") is not None
if _ORJSON:
    from orjson import dumps as _fast_dumps
    from pythonjsonlogger.orjson import OrjsonFormatter as _JsonBase
else:  # pragma: no cover - orjson is a dependency, but stay usable without it
    # mypy types a name once, so this second base needs the ignore; both bases give the
    # json_default and jsonify_log_record the class relies on
    from pythonjsonlogger.json import JsonFormatter as _JsonBase  # type: ignore[assignment]  # conditional base class

    def _fast_dumps(
        data: Any, /, default: Callable[[Any], Any] | None = None, option: int | None = None
    ) -> bytes:
        raise TypeError("no orjson: every record takes jsonify_log_record")


__all__ = ["OUTPUT_FIELDS", "JsonFormatter"]

_MAX_SITES = 4096

OUTPUT_FIELDS = frozenset(
    {
        "timestamp",
        "level",
        "logger_name",
        "module",
        "function_name",
        "line_number",
        "message",
        "exc_info",
        "stack_info",
        *CORRELATION_FIELDS,
    }
)
"""Names this formatter writes itself; an ``extra`` key among them gets a prefix."""


def _encoded_line(line: str) -> bytes:
    """``line`` on one line, as UTF-8 with a newline (a lone surrogate as ``\\udcff``)."""
    if not line.isascii():
        line = one_line(line)
    return (line + "\n").encode("utf-8", "backslashreplace")


def _message(record: logging.LogRecord) -> str:
    message = record.msg
    if record.args or type(message) is not str:
        return message_of(record)
    return message


class JsonFormatter(_JsonBase):
    """One JSON object per line, with the fields and order of DESIGN "Log records".

    ``timestamp level logger_name module function_name line_number message``, then
    ``request_id user_id trace_id span_id trace_flags`` when present, then the
    caller's ``extra`` fields (secrets redacted), then ``exc_info`` / ``stack_info``.
    Values JSON cannot encode are written as strings; the line never breaks.

    A record is formatted once: every handler whose formatter has the same
    :attr:`line_key` (all plain ``JsonFormatter`` instances) writes the line the first
    one made (see :func:`telemetry_infra.logs.records.formatted_once`); a subclass's
    formatters make their own.
    """

    def __init__(self) -> None:
        super().__init__()
        self._clock = UtcSecondFormatter("%Y-%m-%dT%H:%M:%S")
        self._second, self._second_text, self._second_json = -1, "", b""
        self._sites: dict[tuple[str, str, str, str | None, int], bytes] = {}
        self._correlated: dict[str, Any] | None = None
        self._correlated_json = b""
        self._extras = ExtraFields(reserved=OUTPUT_FIELDS)
        self._default = self.json_default
        self.line_key: object = JsonFormatter if type(self) is JsonFormatter else None
        """Formatters with equal keys write equal lines; ``None`` (a subclass) shares none."""

    def format(self, record: logging.LogRecord) -> str:
        if self.line_key is None:  # a subclass: its own format_line, nothing shared
            return self.format_line(record)
        return formatted_once(record, self.line_key, self.line_bytes)[:-1].decode()

    def format_bytes(self, record: logging.LogRecord) -> bytes:
        """The line as a file takes it: UTF-8, ending with a newline (shared like :meth:`format`)."""
        if self.line_key is None:
            return (self.format(record) + "\n").encode("utf-8", "backslashreplace")
        return formatted_once(record, self.line_key, self.line_bytes)

    def format_line(self, record: logging.LogRecord) -> str:
        """The JSON line for ``record``, made now (:meth:`format` reuses a shared one)."""
        return self.line_bytes(record)[:-1].decode()

    def line_bytes(self, record: logging.LogRecord) -> bytes:
        """:meth:`format_line` as UTF-8 with its newline: what a file handler writes."""
        if record.exc_info or record.exc_text or record.stack_info:
            return _encoded_line(self._general_line(record))
        try:
            line = self._prepared_line(record)
        except (TypeError, ValueError, OverflowError, RecursionError):
            return _encoded_line(self._general_line(record))
        return line if line.isascii() else _encoded_line(line.decode()[:-1])

    def _seconds_of(self, created: float) -> int:
        """The whole second of ``created``; its text is formatted once per second."""
        whole = int(created)
        if whole != self._second:
            self._second, self._second_text = whole, self._clock.second(created)[0]
            self._second_json = b'{"timestamp":"%s.' % self._second_text.encode()
        return whole

    def _prepared_line(self, record: logging.LogRecord) -> bytes:
        """The line and its newline from parts prepared once: the second, the call site, the
        correlation ids.

        Only the microseconds, the message and the ``extra`` fields are encoded per record;
        the bytes are those the one-dict encoding of :meth:`_general_line` gives.
        """
        created = record.created
        whole = int(created)
        if whole != self._second:
            self._seconds_of(created)
        site = self._sites.get((record.levelname, record.name, record.module, record.funcName, record.lineno))
        if site is None:
            site = self._site((record.levelname, record.name, record.module, record.funcName, record.lineno))
        correlated = record.__dict__.get(CORRELATION_MARKER)
        if correlated is None:  # no filter ran: the fields the caller passed in ``extra``, if any
            correlation = self._correlation(record, correlated)
        elif correlated is self._correlated:  # the filter hands out one dict per span and request
            correlation = self._correlated_json
        else:
            correlation = self._correlation(record, correlated)
            self._correlated, self._correlated_json = correlated, correlation
        message = record.msg
        if record.args or type(message) is not str:
            message = message_of(record)
        extras = self._extras.into({}, record)
        return b"".join(
            (
                self._second_json,
                b'%06dZ"' % ((created - whole) * 1_000_000),
                site,
                _fast_dumps(message, None),
                correlation,
                b"," if extras else b"}",
                _fast_dumps(extras, self._default)[1:] if extras else b"",
                b"\n",
            )
        )

    def _site(self, site_key: tuple[str, str, str, str | None, int]) -> bytes:
        """``,"level":...,"line_number":N,"message":`` for records of one call site and level."""
        level, name, module, function, line = site_key
        fields = {"level": level, "logger_name": name, "module": module, "function_name": function}
        site = b"," + _fast_dumps({**fields, "line_number": line}, None)[1:-1] + b',"message":'
        if len(self._sites) < _MAX_SITES:
            self._sites[site_key] = site
        return site

    def _correlation(self, record: logging.LogRecord, correlated: dict[str, Any] | None) -> bytes:
        """``,"request_id":...,"trace_flags":"01"`` (the fields present), or nothing."""
        if correlated is None:  # no filter ran: fields the caller passed in ``extra``
            fields = record.__dict__
            correlated = {key: fields[key] for key in CORRELATION_FIELDS if fields.get(key) is not None}
        return b"," + _fast_dumps(correlated, None)[1:-1] if correlated else b""

    def _general_line(self, record: logging.LogRecord) -> str:
        """The line made from one dict of every field: tracebacks, values orjson refuses
        (line breaks not yet escaped: :func:`_encoded_line` does)."""
        fields = record.__dict__
        created = record.created
        whole = self._seconds_of(created)
        message = _message(record)
        data: dict[str, Any] = {
            "timestamp": "%s.%06dZ" % (self._second_text, (created - whole) * 1_000_000),  # noqa: UP031 - fastest
            "level": record.levelname,
            "logger_name": record.name,
            "module": record.module,
            "function_name": record.funcName,
            "line_number": record.lineno,
            "message": message,
        }
        correlated = fields.get(CORRELATION_MARKER)
        if correlated is not None:  # the filter's: the record's correlation fields, in order
            data.update(correlated)
        else:
            for key in CORRELATION_FIELDS:
                value = fields.get(key)
                if value is not None:
                    data[key] = value
        self._extras.into(data, record)
        if record.exc_info or record.exc_text or record.stack_info:
            self._add_traces(data, record)
        try:
            # Positional arguments and no options: the cheapest orjson call, tried first.
            line = _fast_dumps(data, self.json_default).decode()
        except (TypeError, ValueError, OverflowError, RecursionError):
            line = self._encoded(data)
        return line

    def _add_traces(self, data: dict[str, Any], record: logging.LogRecord) -> None:
        if record.exc_info and not record.exc_text:
            # the record's cache is text for every formatter (python-json-logger's own
            # formatException may give a list of lines)
            record.exc_text = logging.Formatter.formatException(self, record.exc_info)
        if record.exc_text:
            data["exc_info"] = record.exc_text
        if record.stack_info:
            data["stack_info"] = self.formatStack(record.stack_info)

    def _encoded(self, data: dict[str, Any]) -> str:
        """``data`` as JSON when the fast call refused it: non-string keys, then values as strings."""
        try:
            return self.jsonify_log_record(data)
        except (TypeError, ValueError, OverflowError, RecursionError):
            return self.jsonify_log_record(self._encodable(data))

    def _encodable(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` with each value the encoder rejects (huge ints, cycles, ...) as a string."""
        encodable = {}
        for key, value in data.items():
            try:
                self.jsonify_log_record({key: value})
            except (TypeError, ValueError, OverflowError, RecursionError):
                value = as_text(value)
            encodable[as_text(key)] = value
        return encodable
