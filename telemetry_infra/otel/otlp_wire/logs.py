"""Log records straight to OTLP bytes: an ExportLogsServiceRequest, without protobuf objects.

:func:`encode_log_record` takes plain values, so the OTLP log handler encodes what it
queued without building SDK log record objects; :func:`encode_logs` takes the SDK's
ReadableLogRecords (for the logger provider's own processor). Both decode to the
message the SDK's ``encode_logs`` produces (property-tested).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk._logs import ReadableLogRecord

from telemetry_infra.otel.otlp_wire.grouping import ResourceGroups, encode_request
from telemetry_infra.otel.otlp_wire.invalid_text import (
    count_sanitized,
    replace_invalid,
    replace_invalid_attributes,
    valid_items,
)
from telemetry_infra.otel.otlp_wire.protobuf import (
    any_value,
    attributes_field,
    pack_fixed32,
    pack_fixed64,
    string_field,
    varint,
)

__all__ = [
    "LogBatch",
    "encode_log_record",
    "encode_logs",
    "encode_record_fields",
    "logs_with_valid_text",
    "severity_fields",
    "trace_fields",
]


def encode_log_record(
    time_unix_nano: int | None,
    observed_time_unix_nano: int | None,
    severity_number: int | None,
    severity_text: str | None,
    body: Any,
    attributes: Mapping[str, Any] | None,
    trace_id: int = 0,
    span_id: int = 0,
    flags: int = 0,
    event_name: str | None = None,
    dropped_attributes: int = 0,
    attribute_fields: bytes = b"",
) -> bytes:
    """One record as a ScopeLogs.log_records field (tag 2, length, LogRecord message).

    ``attribute_fields``: attributes the caller encoded already (valid text), written
    before ``attributes``.

    ``body`` may be of any AnyValue type (``None`` included); raises like the SDK's
    encoder for a body it cannot encode. Attributes it cannot encode are left out.
    Text that is not valid Unicode is replaced by U+FFFD (and counted, see
    :mod:`.invalid_text`): the record is sent, not lost.
    """
    try:
        return _encode_log_record(
            time_unix_nano, observed_time_unix_nano, severity_number, severity_text, body, attributes,
            trace_id, span_id, flags, event_name, dropped_attributes, attribute_fields,
        )  # fmt: skip
    except UnicodeEncodeError as error:
        count_sanitized("log_record", error)
        return _encode_log_record(
            time_unix_nano, observed_time_unix_nano, severity_number, replace_invalid(severity_text),
            replace_invalid(body), replace_invalid_attributes(attributes), trace_id, span_id, flags,
            replace_invalid(event_name), dropped_attributes, attribute_fields,
        )  # fmt: skip


def _encode_log_record(
    time_unix_nano: int | None,
    observed_time_unix_nano: int | None,
    severity_number: int | None,
    severity_text: str | None,
    body: Any,
    attributes: Mapping[str, Any] | None,
    trace_id: int,
    span_id: int,
    flags: int,
    event_name: str | None,
    dropped_attributes: int,
    attribute_fields: bytes = b"",
) -> bytes:
    return encode_record_fields(
        time_unix_nano,
        observed_time_unix_nano,
        severity_fields(severity_number, severity_text),
        any_value(body),
        attribute_fields,
        attributes,
        dropped_attributes,
        trace_fields(trace_id, span_id, flags),
        event_name,
    )


def encode_record_fields(
    time_unix_nano: int | None,
    observed_time_unix_nano: int | None,
    severity: bytes,
    encoded_body: bytes,
    attribute_fields: bytes,
    attributes: Mapping[str, Any] | None,
    dropped_attributes: int,
    trace: bytes,
    event_name: str | None = None,
) -> bytes:
    """A ScopeLogs.log_records field from parts encoded already: ``severity`` from
    :func:`severity_fields`, ``encoded_body`` an AnyValue message, ``trace`` from
    :func:`trace_fields` (records of one level, or of one span, share theirs)."""
    record = b"".join(
        (
            b"\x09" + pack_fixed64(time_unix_nano) if time_unix_nano else b"",  # time_unix_nano=1
            severity,  # severity_number=2, severity_text=3
            b"\x2a" + varint(len(encoded_body)) + encoded_body,  # body=5, written even when empty
            attribute_fields + attributes_field(b"\x32", attributes),  # attributes=6
            b"\x38" + varint(dropped_attributes) if dropped_attributes else b"",  # dropped_attributes_count=7
            trace,  # flags=8, trace_id=9, span_id=10
            # observed_time_unix_nano=11
            b"\x59" + pack_fixed64(observed_time_unix_nano) if observed_time_unix_nano else b"",
            string_field(b"\x62", event_name),  # event_name=12
        )
    )
    return b"\x12" + varint(len(record)) + record


_severities: dict[tuple[Any, Any], bytes] = {}


def severity_fields(number: int | None, text: str | None) -> bytes:
    """LogRecord.severity_number=2 and severity_text=3 (cached: a service logs at a few levels)."""
    key = (number, text)
    fields = _severities.get(key)
    if fields is None:
        fields = (b"\x10" + varint(int(number)) if number else b"") + string_field(b"\x1a", text)
        if text.__class__ is str and len(_severities) < 256:
            _severities[key] = fields
    return fields


def trace_fields(trace_id: int, span_id: int, flags: int) -> bytes:
    """LogRecord.flags=8, trace_id=9 and span_id=10 (the ones that are set)."""
    return b"".join(
        (
            b"\x45" + pack_fixed32(flags) if flags else b"",
            b"\x4a\x10" + trace_id.to_bytes(16, "big") if trace_id else b"",
            b"\x52\x08" + span_id.to_bytes(8, "big") if span_id else b"",
        )
    )


class LogBatch:
    """Encoded records waiting to be sent, nested by resource and scope as OTLP wants them."""

    __slots__ = ("_groups", "count")

    def __init__(self) -> None:
        self._groups = ResourceGroups()
        self.count = 0

    def add(self, resource: Any, scope: Any, encoded_record: bytes) -> None:
        self._groups.add(resource, scope, encoded_record)
        self.count += 1

    def __len__(self) -> int:
        return self.count

    def encode(self) -> bytes:
        """The ExportLogsServiceRequest, serialized."""
        return encode_request(self._groups)


def _encode_readable(readable: ReadableLogRecord, encode: Callable[..., bytes] = encode_log_record) -> bytes:
    record = readable.log_record
    return encode(
        record.timestamp,
        record.observed_timestamp,
        getattr(record.severity_number, "value", None),
        record.severity_text,
        record.body,
        record.attributes,
        record.trace_id or 0,
        record.span_id or 0,
        int(record.trace_flags or 0),
        record.event_name,
        readable.dropped_attributes,
    )


def encode_logs(records: Sequence[ReadableLogRecord]) -> bytes:
    """An ExportLogsServiceRequest for the SDK's ``records``, serialized."""
    batch = LogBatch()
    for readable in records:
        batch.add(readable.resource, readable.instrumentation_scope or None, _encode_readable(readable))
    return batch.encode()


def logs_with_valid_text(records: Sequence[ReadableLogRecord]) -> tuple[list[ReadableLogRecord], int]:
    """``records`` with invalid text replaced, for the SDK's encoder (see :func:`.valid_items`)."""
    return valid_items(records, "log_record", _encode_for_check, _sanitized_readable)


def _encode_for_check(readable: ReadableLogRecord) -> object:
    return _encode_readable(readable, _encode_log_record)


def _sanitized_readable(readable: ReadableLogRecord) -> ReadableLogRecord:
    record = copy.copy(readable.log_record)
    record.body = replace_invalid(record.body)
    record.attributes = replace_invalid_attributes(record.attributes)
    record.severity_text = replace_invalid(record.severity_text)
    record.event_name = replace_invalid(record.event_name)
    return dataclasses.replace(readable, log_record=record)
