"""Protocol-buffers wire primitives and OTLP's common messages (AnyValue, KeyValue).

Everything here returns ``bytes`` ready to be concatenated: a *field* is its tag, its
length (for length-delimited fields) and its payload. Proto3 rules apply: scalar
fields at their default are left out, members of a ``oneof`` (AnyValue's) and
sub-messages are written even when empty, exactly as the SDK's encoder does.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes

__all__ = [
    "any_value",
    "attributes_field",
    "delimited",
    "fixed32_field",
    "fixed64_field",
    "string_field",
    "tag",
    "varint",
    "varint_field",
]

_log = logging.getLogger(__name__)

_SMALL = [bytes((n,)) for n in range(0x80)]
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_pack_double = struct.Struct("<d").pack
pack_fixed64: Callable[[int], bytes] = struct.Struct("<Q").pack
pack_fixed32: Callable[[int], bytes] = struct.Struct("<I").pack

WIRE_VARINT = 0
WIRE_FIXED64 = 1
WIRE_DELIMITED = 2
WIRE_FIXED32 = 5


def varint(number: int) -> bytes:
    """``number`` (0 <= number < 2**64) as a base-128 varint."""
    if number < 0x80:
        return _SMALL[number]
    if number < 0x4000:
        return bytes(((number & 0x7F) | 0x80, number >> 7))
    out = bytearray()
    while number >= 0x80:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def tag(field_number: int, wire_type: int) -> bytes:
    return varint(field_number << 3 | wire_type)


def delimited(field_tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: a string, bytes or an embedded message."""
    return field_tag + varint(len(payload)) + payload


def string_field(field_tag: bytes, text: str | None) -> bytes:
    """A proto3 string field; empty and ``None`` are left out."""
    if not text:
        return b""
    data = text.encode()
    return field_tag + varint(len(data)) + data


def varint_field(field_tag: bytes, number: int | None) -> bytes:
    """A proto3 unsigned varint field (uint32, uint64 or a non-negative enum); 0 is left out."""
    if not number:
        return b""
    return field_tag + varint(number)


def fixed64_field(field_tag: bytes, number: int | None) -> bytes:
    if not number:
        return b""
    return field_tag + pack_fixed64(number)


def fixed32_field(field_tag: bytes, number: int | None) -> bytes:
    if not number:
        return b""
    return field_tag + pack_fixed32(number)


def _int64(number: int) -> bytes:
    if not _INT64_MIN <= number <= _INT64_MAX:
        raise ValueError(f"{number} does not fit an OTLP int_value (int64)")
    return varint(number if number >= 0 else number + (1 << 64))


# AnyValue: string_value=1 bool_value=2 int_value=3 double_value=4 array_value=5 kvlist_value=6
# bytes_value=7. ArrayValue/KeyValueList: values=1. KeyValue: key=1 value=2.
_TRUE = b"\x10\x01"
_FALSE = b"\x10\x00"


def any_value(value: Any) -> bytes:
    """The AnyValue message for ``value``, in the SDK's order of type checks.

    Raises ``TypeError``/``ValueError`` for what the SDK's encoder refuses too (other
    types, integers beyond int64, text that is not valid Unicode).
    """
    cls = value.__class__
    if cls is str:
        data: bytes = value.encode()
        return b"\x0a" + varint(len(data)) + data
    if cls is int:
        return b"\x18" + _int64(value)
    if cls is bool:
        return _TRUE if value else _FALSE
    if cls is float:
        return b"\x21" + _pack_double(value)
    if value is None:
        return b""
    return _any_value_slow(value)


def _any_value_slow(value: Any) -> bytes:
    if isinstance(value, bool):
        return _TRUE if value else _FALSE
    if isinstance(value, str):
        data = value.encode()
        return b"\x0a" + varint(len(data)) + data
    if isinstance(value, int):
        return b"\x18" + _int64(value)
    if isinstance(value, float):
        return b"\x21" + _pack_double(float(value))
    if isinstance(value, bytes):
        return b"\x3a" + varint(len(value)) + value
    if isinstance(value, Sequence):
        body = b"".join([delimited(b"\x0a", any_value(item)) for item in value])
        return b"\x2a" + varint(len(body)) + body
    if isinstance(value, Mapping):
        body = b"".join([delimited(b"\x0a", key_value(str(k), v)) for k, v in value.items()])
        return b"\x32" + varint(len(body)) + body
    raise TypeError(f"Invalid type {type(value)} of value {value!r}")


_MAX_CACHED = 4096
_MAX_CACHED_TEXT = 256
_keys: dict[str, bytes] = {}


def _key(key: str) -> bytes:
    """The ``key`` field of a KeyValue, cached: a service uses a few hundred keys at most."""
    field = _keys.get(key)
    if field is None:
        data = key.encode()
        field = b"\x0a" + varint(len(data)) + data
        if len(_keys) >= _MAX_CACHED:
            _keys.clear()
        _keys[key] = field
    return field


def key_value(key: str, value: Any) -> bytes:
    encoded = any_value(value)
    return _key(key) + b"\x12" + varint(len(encoded)) + encoded


def _plain(attributes: Mapping[str, Any]) -> Mapping[str, Any]:
    """BoundedAttributes' own dict: without its Python-level ``__len__`` and ``__getitem__``."""
    if attributes.__class__ is BoundedAttributes:
        inner = getattr(attributes, "_dict", None)
        if isinstance(inner, dict):
            return inner
    return attributes


# field tag -> {(key, value): the whole attribute field}, for str, bool and small int values:
# most repeat (cache.backend=redis, http.request.method=GET, cache.hit=True), and cost a lookup.
_cached_fields: dict[bytes, dict[Any, bytes]] = {}
_reported: set[tuple[str, str]] = set()


def _report(key: Any, value: Any, error: Exception) -> None:
    """Like the SDK, leave an attribute it cannot encode out; say so once per key and type."""
    seen = (str(key), type(value).__name__)
    if seen in _reported or len(_reported) >= _MAX_CACHED:
        return
    _reported.add(seen)
    _log.warning("OTLP attribute %r left out: %s", key, error)


def attributes_field(field_tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    """Each attribute as one repeated KeyValue field ``field_tag``; bad ones are left out.

    Text that is not valid Unicode raises ``UnicodeEncodeError``: the caller encodes its
    item again with that text replaced (:mod:`.invalid_text`), it is never silently lost.
    """
    if attributes is None:
        return b""
    attributes = _plain(attributes)
    if not attributes:
        return b""
    cached = _cached_fields.get(field_tag)
    if cached is None:
        cached = _cached_fields.setdefault(field_tag, {})
    parts: list[bytes] = []
    append = parts.append
    for key, value in attributes.items():
        cls = value.__class__
        if cls is str:
            cache_key: Any = (key, value) if len(value) <= _MAX_CACHED_TEXT else None
        elif cls is bool or (cls is int and -1024 <= value <= 1024):
            cache_key = (key, value, cls)  # the class: True == 1 as a key
        else:
            cache_key = None
        if cache_key is not None:
            field = cached.get(cache_key)
            if field is not None:
                append(field)
                continue
        try:
            body = key_value(key, value)
        except UnicodeEncodeError:  # the whole item is encoded again with valid text (.invalid_text)
            raise
        except Exception as error:  # the SDK's encoder leaves such an attribute out too
            _report(key, value, error)
            continue
        field = field_tag + varint(len(body)) + body
        if cache_key is not None:
            if len(cached) >= _MAX_CACHED:
                cached.clear()
            cached[cache_key] = field
        append(field)
    return b"".join(parts)
