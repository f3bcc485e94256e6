"""Grouping records by resource, then by instrumentation scope, as OTLP requests nest them.

Records share a group when their resource (and then their scope) encodes to the same
bytes, in order of first appearance. Not by ``==``: ``True == 1 == 1.0`` and
``0.0 == -0.0`` in Python, yet they are different OTLP values, and merging such
resources would send one provider's records under another's attributes. Each object
is looked up by identity first, and its block is encoded once (:class:`BlockCache`),
so grouping costs no more than the encoding needs anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from telemetry_infra.otel.otlp_wire.invalid_text import count_sanitized, sanitized_resource, sanitized_scope
from telemetry_infra.otel.otlp_wire.protobuf import attributes_field, delimited, string_field, varint

__all__ = ["BlockCache", "Canonical", "ResourceGroups", "encode_request"]


class Canonical:
    """Maps each object to the first one seen with the same encoded identity (by identity first)."""

    __slots__ = ("_by_encoding", "_by_id", "_encoded")

    def __init__(self, encoded: Callable[[Any], Hashable]) -> None:
        self._encoded = encoded
        self._by_id: dict[int, Any] = {}
        self._by_encoding: dict[Hashable, Any] = {}

    def __call__(self, obj: Any) -> Any:
        found = self._by_id.get(id(obj), self)
        if found is not self:
            return found
        found = self._by_encoding.setdefault(self._encoded(obj), obj)
        self._by_id[id(obj)] = found
        return found


class ResourceGroups:
    """``{resource: {scope: [encoded record fields]}}`` for one batch, in first-seen order."""

    __slots__ = ("_last", "_resource_of", "_scope_of", "groups")

    def __init__(self) -> None:
        self._resource_of = Canonical(resource_blocks)
        self._scope_of = Canonical(scope_blocks)
        self.groups: dict[int, tuple[Any, dict[int, tuple[Any, list[bytes]]]]] = {}
        self._last: tuple[Any, Any, list[bytes]] = (self, self, [])

    def add(self, resource: Any, scope: Any, encoded: bytes) -> None:
        last = self._last
        if resource is last[0] and scope is last[1]:  # the usual case: the same as the record before
            last[2].append(encoded)
            return
        records = self._records(resource, scope)
        records.append(encoded)
        self._last = (resource, scope, records)

    def _records(self, given_resource: Any, given_scope: Any) -> list[bytes]:
        resource = self._resource_of(given_resource)
        group = self.groups.get(id(resource))
        if group is None:
            group = self.groups[id(resource)] = (resource, {})
        scopes = group[1]
        scope = self._scope_of(given_scope)
        entry = scopes.get(id(scope))
        if entry is None:
            entry = scopes[id(scope)] = (scope, [])
        return entry[1]


class BlockCache:
    """Encoded resource or scope blocks, kept per object: they are encoded once, not per batch.

    A block is reused while the object still holds the same attributes object: a forked
    worker's resource gets new attributes in place (its own ``process.pid``), and its
    records must not leave with the parent's.
    """

    __slots__ = ("_blocks", "_encode")

    def __init__(self, encode: Callable[[Any], tuple[bytes, bytes]]) -> None:
        self._encode = encode
        self._blocks: dict[int, tuple[Any, Any, tuple[bytes, bytes]]] = {}

    def __call__(self, obj: Any) -> tuple[bytes, bytes]:
        """(prefix, suffix) of the block: the fields before and after its records."""
        attributes = getattr(obj, "attributes", None)
        cached = self._blocks.get(id(obj))
        if cached is not None and cached[0] is obj and cached[1] is attributes:
            return cached[2]
        block = self._encode(obj)
        if len(self._blocks) >= 256:
            self._blocks.clear()
        self._blocks[id(obj)] = (obj, attributes, block)  # holds obj: its id cannot be reused meanwhile
        return block


def _resource_block(resource: Any) -> tuple[bytes, bytes]:
    try:
        return _encode_resource(resource)
    except UnicodeEncodeError as error:  # its records still leave, under valid text
        count_sanitized("resource", error)
        return _encode_resource(sanitized_resource(resource))


def _encode_resource(resource: Any) -> tuple[bytes, bytes]:
    # Resource: attributes=1. ResourceSpans/ResourceLogs: resource=1 ... schema_url=3.
    return delimited(b"\x0a", attributes_field(b"\x0a", resource.attributes)), string_field(
        b"\x1a", resource.schema_url
    )


def _scope_block(scope: Any) -> tuple[bytes, bytes]:
    if scope is None:
        return b"\x0a\x00", b""
    try:
        return _encode_scope(scope)
    except UnicodeEncodeError as error:
        count_sanitized("scope", error)
        return _encode_scope(sanitized_scope(scope))


def _encode_scope(scope: Any) -> tuple[bytes, bytes]:
    # InstrumentationScope: name=1 version=2 attributes=3. ScopeSpans/ScopeLogs: scope=1 ... schema_url=3.
    body = (
        string_field(b"\x0a", scope.name)
        + string_field(b"\x12", scope.version)
        + attributes_field(b"\x1a", scope.attributes)
    )
    return delimited(b"\x0a", body), string_field(b"\x1a", scope.schema_url)


resource_blocks = BlockCache(_resource_block)
scope_blocks = BlockCache(_scope_block)


def encode_request(groups: ResourceGroups) -> bytes:
    """An Export{Trace,Logs}ServiceRequest: the two nest their records the same way."""
    out = []
    for resource, scopes in groups.groups.values():
        resource_prefix, resource_suffix = resource_blocks(resource)
        parts = [resource_prefix]
        for scope, records in scopes.values():
            scope_prefix, scope_suffix = scope_blocks(scope)
            body = b"".join((scope_prefix, *records, scope_suffix))
            parts.append(b"\x12" + varint(len(body)) + body)
        parts.append(resource_suffix)
        body = b"".join(parts)
        out.append(b"\x0a" + varint(len(body)) + body)
    return b"".join(out)
