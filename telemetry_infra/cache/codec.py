"""Values <-> stored bytes: serializer, compression, a 2-byte header, pickle signing.

Layout of every payload::

    byte 0   0xC0 | format version      (0xC0/0xC1 never start UTF-8 text, so
                                          foreign strings are recognised at once)
    byte 1   serializer id | 0x10 if the body is zlib-compressed
    [32 bytes HMAC-SHA256 of header + body]   pickle only
    body

The header says how to read a payload, so a manager reads entries written with the
other serializer or compression setting. Pickle payloads are verified before a
single byte is unpickled: an entry written by someone without the key is a miss.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import pickle
import secrets
import zlib
from collections.abc import Callable
from typing import Any

import orjson

from telemetry_infra.cache.errors import CacheDecodeError, CacheSerializationError

__all__ = ["SERIALIZERS", "SIGNING_KEY_ENV", "Codec", "resolve_signing_key"]

SIGNING_KEY_ENV = "TELEMETRY_CACHE_SIGNING_KEY"
SERIALIZERS = ("json", "pickle")

_VERSION = 1
_MARK = 0xC0 | _VERSION
_JSON = 0x00
_PICKLE = 0x01
_SERIALIZER_BITS = 0x0F
_COMPRESSED = 0x10
_HEADER_SIZE = 2
_MAC_SIZE = hashlib.sha256().digest_size
_JSON_HEADER = bytes((_MARK, _JSON))
_loads = orjson.loads

logger = logging.getLogger("telemetry_infra.cache")


def resolve_signing_key(signing_key: str | bytes | None) -> tuple[bytes, bool]:
    """The pickle signing key: argument > ``TELEMETRY_CACHE_SIGNING_KEY`` > random.

    Returns ``(key, shared)``; ``shared`` is False for the random per-process key.
    This is the only place the cache reads the environment.
    """
    if signing_key is None:
        signing_key = os.environ.get(SIGNING_KEY_ENV) or None
    if signing_key is None:
        return secrets.token_bytes(32), False
    key = signing_key.encode() if isinstance(signing_key, str) else bytes(signing_key)
    if not key:
        raise ValueError("signing_key must not be empty")
    return key, True


def _refuse_non_finite(value: Any) -> None:
    """Raise ``ValueError`` for a NaN or infinity anywhere in ``value``: JSON would read it back as None."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{item!r} has no JSON form (it would be read back as None); use pickle")
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)


class Codec:
    """Encodes values for one manager; decodes any payload in this format."""

    __slots__ = ("_compress_over", "_level", "_pickle", "_signing_key")

    def __init__(
        self,
        serialization: str = "json",
        *,
        enable_compression: bool = True,
        compression_threshold: int = 1024,
        compression_level: int = 6,
        signing_key: str | bytes | None = None,
    ) -> None:
        if serialization not in SERIALIZERS:
            raise ValueError(f"serialization must be one of {', '.join(SERIALIZERS)}, got {serialization!r}")
        if compression_threshold < 0:
            raise ValueError(f"compression_threshold must be >= 0, got {compression_threshold!r}")
        if not -1 <= compression_level <= 9:
            raise ValueError(f"compression_level must be -1..9, got {compression_level!r}")
        self._pickle = serialization == "pickle"
        self._compress_over = compression_threshold if enable_compression else None
        self._level = compression_level
        self._signing_key, shared = resolve_signing_key(signing_key)
        if self._pickle and not shared:
            logger.warning(
                "pickle cache entries are signed with a random per-process key: set signing_key= or %s "
                "so other processes can read them (entries are private to this process until then)",
                SIGNING_KEY_ENV,
            )

    @property
    def serializer(self) -> str:
        return "pickle" if self._pickle else "json"

    def encode(self, key: str, value: Any) -> bytes:
        """The payload for ``value``; ``CacheSerializationError`` naming ``key`` if impossible."""
        try:
            body = pickle.dumps(value, pickle.HIGHEST_PROTOCOL) if self._pickle else orjson.dumps(value)
            if not self._pickle and b"null" in body:  # orjson writes NaN and infinities as null
                _refuse_non_finite(value)
        except Exception as exc:  # pickle raises many types (TypeError, AttributeError, ...)
            raise CacheSerializationError(key, value, self.serializer, exc) from exc
        flags = _PICKLE if self._pickle else _JSON
        limit = self._compress_over
        if limit is not None and len(body) > limit:
            packed = zlib.compress(body, self._level)
            if len(packed) < len(body):
                body, flags = packed, flags | _COMPRESSED
        if self._pickle:
            header = bytes((_MARK, flags))
            return header + hmac.digest(self._signing_key, header + body, "sha256") + body
        if flags == _JSON:
            return _JSON_HEADER + body
        return bytes((_MARK, flags)) + body

    def decode(self, payload: bytes) -> Any:
        """The value in ``payload``; ``CacheDecodeError`` for anything we did not write."""
        if payload[:2] == _JSON_HEADER:  # the hot path: plain JSON (2 is _HEADER_SIZE)
            try:
                return _loads(payload[2:])
            except orjson.JSONDecodeError as exc:
                raise CacheDecodeError(f"corrupted JSON payload: {exc}") from exc
        if len(payload) < _HEADER_SIZE or payload[0] != _MARK:
            raise CacheDecodeError("not a telemetry_infra cache payload (unknown header)")
        flags = payload[1]
        serializer = flags & _SERIALIZER_BITS
        if serializer not in (_JSON, _PICKLE) or flags & ~(_SERIALIZER_BITS | _COMPRESSED):
            raise CacheDecodeError(f"unknown header flags 0x{flags:02x}")
        try:
            if serializer == _PICKLE:
                return pickle.loads(self._body(self._verified(payload), flags))
            return orjson.loads(self._body(memoryview(payload)[_HEADER_SIZE:], flags))
        except CacheDecodeError:
            raise
        except Exception as exc:
            raise CacheDecodeError(f"corrupted payload: {type(exc).__name__}: {exc}") from exc

    def body_of(self, payload: bytes) -> tuple[Callable[[bytes], Any], bytes]:
        """``(loads, body)`` with ``loads(body) == decode(payload)``: the body read once (header
        stripped, decompressed, a pickle's signature verified), so each later ``loads`` makes
        a fresh copy at the serializer's own cost. ``CacheDecodeError`` like ``decode``."""
        flags = payload[1] if len(payload) >= _HEADER_SIZE and payload[0] == _MARK else -1
        if flags == _JSON:
            return orjson.loads, payload[_HEADER_SIZE:]
        self.decode(payload)  # raises for anything unreadable
        if flags & _SERIALIZER_BITS == _PICKLE:
            return pickle.loads, bytes(self._body(self._verified(payload), flags))
        return orjson.loads, bytes(self._body(memoryview(payload)[_HEADER_SIZE:], flags))

    def view_of(self, payload: bytes) -> tuple[Callable[[Any], Any], Any]:
        """``(loads, body)`` with ``loads(body) == decode(payload)``, holding no copy of the
        payload (a store bounded by payload bytes stays within its bound): the body is a view
        past the header, a pickle's signature verified once. A compressed or unreadable
        payload is read by ``decode`` itself (so ``loads`` raises ``CacheDecodeError`` for
        the unreadable)."""
        flags = payload[1] if len(payload) >= _HEADER_SIZE and payload[0] == _MARK else -1
        if flags == _JSON:
            return _loads, memoryview(payload)[_HEADER_SIZE:]
        if flags == _PICKLE:
            try:
                return pickle.loads, self._verified(payload)
            except CacheDecodeError:
                pass
        return self.decode, payload

    def _verified(self, payload: bytes) -> memoryview:
        view = memoryview(payload)
        mac, body = view[_HEADER_SIZE : _HEADER_SIZE + _MAC_SIZE], view[_HEADER_SIZE + _MAC_SIZE :]
        expected = hmac.digest(self._signing_key, bytes(view[:_HEADER_SIZE]) + body, "sha256")
        if len(mac) != _MAC_SIZE or not hmac.compare_digest(bytes(mac), expected):
            raise CacheDecodeError("pickle payload signature does not verify; not unpickled")
        return body

    @staticmethod
    def _body(body: memoryview, flags: int) -> bytes | memoryview:
        return zlib.decompress(body) if flags & _COMPRESSED else body
