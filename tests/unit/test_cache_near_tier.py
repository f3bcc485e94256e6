"""The near tier's coherence rules, one at a time (the wire is covered in integration)."""

from __future__ import annotations

import time

import orjson
import pytest

from telemetry_infra.cache.near.tier import NEAR_MISS, NearCache
from telemetry_infra.cache.stats import CacheStats

CHANNEL = object()


def tracked(**options) -> NearCache:
    near = NearCache(
        options.pop("maxsize", 100), options.pop("max_ttl", 60.0), orjson.loads, CacheStats(), **options
    )
    near.tracking_started(time.monotonic() + 60, CHANNEL)
    return near


def fill(near: NearCache, key: str, value) -> None:
    flight = near.begin(key)
    assert flight is not None
    near.settle(key, flight, orjson.dumps(value), value)


def test_filled_entry_is_served_and_containers_are_fresh_copies():
    near = tracked()
    fill(near, "k", {"a": [1]})
    first = near.get("k")
    first["a"].append(2)
    assert near.get("k") == {"a": [1]}
    fill(near, "s", "text")
    assert near.get("s") is near.get("s")  # immutable: shared, not decoded again


def test_invalidation_in_flight_installs_nothing():
    near = tracked()
    flight = near.begin("k")
    near.invalidate(["k"])
    near.settle("k", flight, b'"old"', "old")
    assert near.get("k") is NEAR_MISS
    fill(near, "k", "new")  # a read begun after the invalidation fills
    assert near.get("k") == "new"


def test_readers_disagreeing_drop_the_entry():
    near = tracked()
    first, second = near.begin("k"), near.begin("k")
    assert first is second
    near.settle("k", second, b'"v2"', "v2")
    assert near.get("k") == "v2"
    near.settle("k", first, b'"v1"', "v1")
    assert near.get("k") is NEAR_MISS


def test_nothing_filled_or_served_without_tracking_or_with_the_breaker_open():
    near = NearCache(10, 60.0, orjson.loads, CacheStats())
    assert near.begin("k") is None
    near.tracking_started(time.monotonic() + 60, CHANNEL)
    fill(near, "k", 1)
    near.breaker_changed(True)
    assert near.get("k") is NEAR_MISS and len(near) == 0 and near.begin("k") is None
    near.breaker_changed(False)
    fill(near, "k", 1)
    assert near.get("k") == 1


def test_only_the_tracking_channel_can_end_coverage():
    near = tracked()
    fill(near, "k", 1)
    near.tracking_lost(object())  # a superseded listener ending
    assert near.get("k") == 1
    near.tracking_lost(CHANNEL)
    assert near.get("k") is NEAR_MISS and not near.tracking


def test_coverage_lapses_without_news_from_the_channel():
    near = tracked()
    fill(near, "k", 1)
    near.renew(time.monotonic() - 0.001, CHANNEL)
    assert near.get("k") is NEAR_MISS


def test_bounds_entries_bytes_and_age():
    near = tracked(maxsize=2, max_bytes=20)
    for key in ("a", "b", "c"):
        fill(near, key, key)
    assert near.get("a") is NEAR_MISS and near.get("c") == "c"
    fill(near, "big", "x" * 30)
    assert near.get("big") is NEAR_MISS
    fill(near, "d", "y" * 17)  # 19 bytes: only it fits
    assert near.stored_bytes <= 20 and near.get("c") is NEAR_MISS and near.get("d") == "y" * 17
    short = tracked(max_ttl=0.01)
    fill(short, "k", 1)
    time.sleep(0.02)
    assert short.get("k") is NEAR_MISS


def test_discard_matching_and_abandoned_fills():
    near = tracked()
    fill(near, "user:1", 1)
    fill(near, "post:1", 2)
    near.discard_matching("user:*")
    assert near.get("user:1") is NEAR_MISS and near.get("post:1") == 2
    flight = near.begin("user:2")
    near.abandon_fills()
    near.settle("user:2", flight, b"3", 3)
    assert near.get("user:2") is NEAR_MISS


@pytest.mark.parametrize("size", [0, -1])
def test_bounds_are_checked(size):
    with pytest.raises(ValueError, match="near_cache_size"):
        NearCache(size, 60.0, orjson.loads, CacheStats())


@pytest.mark.parametrize("serialization", ["json", "pickle"])
def test_fresh_copies_come_from_the_body_prepared_at_the_fill(serialization):
    """A compressed (and for pickle, signed) payload is read once at the fill; each hit is a
    fresh, equal copy, and the byte bound still counts the stored payload."""
    from telemetry_infra.cache.codec import Codec

    codec = Codec(serialization, compression_threshold=64, signing_key="k")
    value = {"rows": [{"id": i, "class": "B"} for i in range(40)]}
    payload = codec.encode("k", value)
    loads, body = codec.body_of(payload)
    assert loads(body) == value and len(body) > len(payload)  # decompressed once, here
    near = tracked(body_of=codec.body_of)
    near.tracking_started(time.monotonic() + 60, CHANNEL)
    flight = near.begin("k")
    near.settle("k", flight, payload, codec.decode(payload))
    first, second = near.get("k"), near.get("k")
    assert first == second == value and first is not second
    first["rows"].clear()
    assert near.get("k") == value
    assert near.stored_bytes == len(payload)
