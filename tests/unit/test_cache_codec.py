"""The payload codec: round trips, header, compression, signing, refusal of foreign bytes."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telemetry_infra.cache.codec import Codec
from telemetry_infra.cache.errors import CacheDecodeError, CacheSerializationError

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=8), inner, max_size=8),
    max_leaves=40,
)
pickle_values = st.recursive(
    json_scalars | st.binary() | st.complex_numbers(allow_nan=False),
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.tuples(inner, inner)
        | st.frozensets(st.integers() | st.text(max_size=4), max_size=6)
        | st.dictionaries(st.integers() | st.text(max_size=4), inner, max_size=6)
    ),
    max_leaves=30,
)


@given(json_values, st.booleans())
def test_json_round_trip(value, compress):
    codec = Codec("json", enable_compression=compress, compression_threshold=16)
    assert codec.decode(codec.encode("k", value)) == value


@given(pickle_values, st.booleans())
def test_pickle_round_trip(value, compress):
    codec = Codec("pickle", enable_compression=compress, compression_threshold=16, signing_key="s")
    assert codec.decode(codec.encode("k", value)) == value


@given(json_values | pickle_values, st.booleans(), st.sampled_from(["json", "pickle"]))
def test_a_view_reads_like_decode_without_copying_the_payload(value, compress, serialization):
    codec = Codec(serialization, enable_compression=compress, compression_threshold=16, signing_key="s")
    try:
        payload = codec.encode("k", value)
    except CacheSerializationError:
        return  # not JSON: pickle_values hold tuples, bytes, ...
    loads, body = codec.view_of(payload)
    assert loads(body) == codec.decode(payload)  # (JSON reads a tuple back as a list)
    assert not isinstance(body, bytes) or body is payload  # a view of it, or the payload itself


@pytest.mark.parametrize(
    "payload",
    [b"", b"plain text", bytes((0xC1, 0x00)) + b"{broken", bytes((0xC1, 0x01)) + pickle.dumps([1])],
)
def test_a_view_of_unreadable_bytes_raises_when_read(payload):
    loads, body = Codec("json").view_of(payload)  # preparing never raises: a store keeps what it is given
    with pytest.raises((CacheDecodeError, ValueError)):
        loads(body)


def test_header_records_version_serializer_and_compression():
    small, large = "x", "y" * 5000
    codec = Codec("json", compression_threshold=1024)
    assert codec.encode("k", small)[:2] == bytes((0xC1, 0x00))
    assert codec.encode("k", large)[:2] == bytes((0xC1, 0x10))
    assert len(codec.encode("k", large)) < 200
    pickled = Codec("pickle", signing_key="s").encode("k", small)
    assert pickled[:2] == bytes((0xC1, 0x01)) and len(pickled) > 34
    assert Codec("json", enable_compression=False).encode("k", large)[:2] == bytes((0xC1, 0x00))


def test_a_reader_decodes_what_the_other_serializer_wrote():
    writer = Codec("pickle", signing_key="shared")
    assert Codec("json", signing_key="shared").decode(writer.encode("k", (1, 2))) == (1, 2)


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xc1", b"plain text", b'{"a": 1}', bytes((0xC1, 0x00)) + b"{broken", bytes((0xC1, 0x10)) + b"xx"],
)
def test_foreign_or_corrupted_bytes_raise_decode_error(payload):
    with pytest.raises(CacheDecodeError):
        Codec("json").decode(payload)


def test_unsigned_or_wrongly_signed_pickle_is_refused():
    genuine = Codec("pickle", signing_key="right").encode("k", [1])
    for payload in (
        Codec("pickle", signing_key="wrong").encode("k", [1]),
        genuine[:2] + bytes(32) + genuine[34:],
        bytes((0xC1, 0x01)) + pickle.dumps([1]),
        genuine[:-1] + bytes((genuine[-1] ^ 1,)),
    ):
        with pytest.raises(CacheDecodeError, match="signature"):
            Codec("pickle", signing_key="right").decode(payload)


def test_random_key_is_private_to_the_process_and_warns(caplog, monkeypatch):
    monkeypatch.delenv("TELEMETRY_CACHE_SIGNING_KEY", raising=False)
    first, second = Codec("pickle"), Codec("pickle")
    assert "private to this process" in caplog.text
    with pytest.raises(CacheDecodeError):
        second.decode(first.encode("k", 1))


def test_signing_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("TELEMETRY_CACHE_SIGNING_KEY", "from-env")
    payload = Codec("pickle").encode("k", {"a"})
    assert Codec("pickle", signing_key="from-env").decode(payload) == {"a"}


def test_unencodable_value_names_key_and_type():
    with pytest.raises(CacheSerializationError, match=r"'the-key'.*object.*json") as raised:
        Codec("json").encode("the-key", object())
    assert isinstance(raised.value, TypeError)
    with pytest.raises(CacheSerializationError, match="pickle"):
        Codec("pickle", signing_key="s").encode("k", lambda: 1)


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError):
        Codec("yaml")
    with pytest.raises(ValueError):
        Codec("json", compression_level=11)
