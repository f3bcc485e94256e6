"""Hostile input, with hypothesis: odd cache keys, values and TTLs; odd log messages and extras.

Outcome for each: a clear documented error (``TypeError``/``ValueError``/
``CacheSerializationError``) or correct behaviour. Never an exception out of a
logging call, never a lost or corrupted log line, never a wrong value from the cache.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import functools
import io
import json
import logging
import math
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

import telemetry_infra as ti
from telemetry_infra.cache.manager import MAX_TTL_S
from telemetry_infra.logs.setup import installed_handlers, teardown_logging

EXAMPLES = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
DOCUMENTED_ERRORS = (TypeError, ValueError)  # CacheSerializationError is a TypeError


class BrokenStr:
    def __str__(self) -> str:
        raise RuntimeError("broken __str__")


class Unprintable(BrokenStr):
    """Breaks ``repr`` too (hypothesis reprs its examples, so only named cases use it)."""

    __repr__ = BrokenStr.__str__


def recursive_list() -> list:
    loop: list = []
    loop.append(loop)
    return loop


def recursive_dict() -> dict:
    loop: dict = {}
    loop["self"] = loop
    return loop


def deeply_nested(depth: int) -> list:
    return functools.reduce(lambda inner, _: [inner], range(depth), [])


json_fragments = st.sampled_from(
    ['{"level": "CRITICAL"}', '"}\n{"forged": true}', "\\", "\x00", "\r\n", "\u2028"]
)
odd_text = st.lists(st.one_of(st.text(max_size=40), json_fragments), max_size=5).map("".join)
odd_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    odd_text,
    st.binary(max_size=20),
    st.just(decimal.Decimal("1.1")),
    st.just(datetime.datetime(2026, 1, 15, 23, 0, tzinfo=datetime.UTC)),
    st.just(uuid.UUID(int=1)),
    st.just(complex(1, 2)),
    st.just(BrokenStr()),
    st.just(object()),
    st.frozensets(st.integers(), max_size=3),
)
odd_values = st.recursive(
    odd_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(odd_text, inner, max_size=3)),
    max_leaves=10,
)
extra_keys = st.one_of(odd_text, st.sampled_from(["message", "name", "args", "msg", "level", "password"]))


# ------------------------------------------------------------------------ logging


class LogCapture:
    """JSON logs to a stream and to files; reads back what each call wrote."""

    def __init__(self, log_dir: Path) -> None:
        self.stream = io.StringIO()
        self.app_log = log_dir / "app.log"
        ti.setup_logging(log_level="DEBUG", log_dir=log_dir, environment="production", stream=self.stream)
        self.log = ti.get_logger("reliability.hostile")
        self._seen = (0, 0)

    def error(self, *args: Any, **kwargs: Any) -> None:
        """``log.error`` with only our handlers on the root logger: pytest's capture
        handler re-raises what it cannot format, and it is not under test."""
        root = logging.getLogger()
        foreign = [handler for handler in root.handlers if handler not in installed_handlers()]
        for handler in foreign:
            root.removeHandler(handler)
        try:
            self.log.error(*args, **kwargs)
        finally:
            for handler in foreign:
                root.addHandler(handler)

    def new_lines(self) -> tuple[list[str], list[str]]:
        console, files = self.stream.getvalue(), self.app_log.read_text(encoding="utf-8")
        seen_console, seen_files = self._seen
        self._seen = (len(console), len(files))
        return console[seen_console:].splitlines(), files[seen_files:].splitlines()


@pytest.fixture
def capture(tmp_path):
    yield LogCapture(tmp_path)
    teardown_logging()


def assert_one_valid_line(capture: LogCapture, message: str | None = None) -> dict:
    console, files = capture.new_lines()
    # Every line parses; exactly one per output is ours (an exporter thread left over from an
    # earlier test may log too: its lines must be whole, but they are not this record).
    ours = [
        [record for record in map(json.loads, lines) if record["logger_name"] == capture.log.name]
        for lines in (console, files)
    ]
    assert len(ours[0]) == 1 and len(ours[1]) == 1, (console, files)
    records = [ours[0][0], ours[1][0]]
    if message is not None:
        assert records[0]["message"] == records[1]["message"] == message
    return records[1]


@EXAMPLES
@given(message=odd_text, extra=st.dictionaries(extra_keys, odd_values, max_size=5))
def test_any_message_and_extras_make_one_valid_line(capture, figures, message, extra):
    capture.error(message, extra=extra)
    record = assert_one_valid_line(capture, message)
    if "password" in extra:
        assert record["password"] == "[REDACTED]"
    _count(figures, "log_messages_and_extras")


HOSTILE_RECORDS = {
    "1 MB message": (("a" * (1 << 20),), {}),
    "format args that do not fit": (("%s and %s", 1), {}),
    "object as message": ((Unprintable(),), {}),
    "bytes as message": ((b"\xff\x00",), {}),
    "unprintable extra": (("x",), {"extra": {"thing": Unprintable()}}),
    "huge int extra": (("x",), {"extra": {"n": 10**400}}),
    "non-str keys in extra": (("x",), {"extra": {"m": {1: 2, (1, 2): 3, None: 4}}}),
    "forged line": (('ok"}\n{"level": "CRITICAL", "message": "forged"}',), {}),
    "exception with newlines": (("failed",), {"exc_info": ValueError("line1\nline2")}),
}


@pytest.mark.parametrize("case", HOSTILE_RECORDS)
def test_hostile_record_is_one_valid_line(capture, figures, case):
    args, kwargs = HOSTILE_RECORDS[case]
    capture.error(*args, **kwargs)
    assert_one_valid_line(capture)
    _count(figures, "log_named_cases")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (recursive_list(), ["[RECURSIVE]"]),
        (recursive_dict(), {"self": "[RECURSIVE]"}),
    ],
    ids=["recursive list", "recursive dict"],
)
def test_recursive_extra_is_written_with_a_marker(capture, figures, extra, expected):
    capture.error("x", extra={"loop": extra})
    assert assert_one_valid_line(capture)["loop"] == expected
    _count(figures, "log_named_cases")


def test_very_deep_extra_is_cut_at_a_depth_limit(capture, figures):
    capture.error("x", extra={"deep": deeply_nested(5000)})
    value, depth = assert_one_valid_line(capture)["deep"], 0
    while isinstance(value, list):
        value, depth = value[0], depth + 1
    assert value == "[TRUNCATED]" and depth == 32
    _count(figures, "log_named_cases")


@pytest.mark.parametrize(
    ("args", "kwargs", "field", "written"),
    [
        (("bad \ud800 text",), {}, "message", "bad \\ud800 text"),
        (("x",), {"extra": {"s": "\udcff"}}, "s", "\\udcff"),
    ],
    ids=["lone surrogate in message", "lone surrogate in extra"],
)
def test_lone_surrogates_are_escaped_not_lost(capture, figures, args, kwargs, field, written):
    capture.error(*args, **kwargs)
    assert assert_one_valid_line(capture)[field] == written
    _count(figures, "log_named_cases")


# -------------------------------------------------------------------------- cache


def run(coroutine):
    return asyncio.run(coroutine)


keys = st.one_of(
    st.text(max_size=50),
    st.sampled_from(["", "*", "?", "[a-z]", "\\", "a\nb", "\r\n", "é😀", "k" * 10_000, "cache:*"]),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=15,
)
any_values = st.one_of(json_values, odd_scalars)
ttls = st.one_of(
    st.none(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=True, allow_infinity=False),
    st.timedeltas(max_value=datetime.timedelta(days=3650)),
)


def as_documented(value):
    """What the JSON serializer documents reading back: tuples as lists, datetimes as ISO
    text, UUIDs as text. ``TypeError`` for what it cannot store; ``ValueError`` for NaN/inf."""

    def default(obj):
        if isinstance(obj, datetime.datetime):
            return obj.isoformat()
        if isinstance(obj, uuid.UUID):
            return str(obj)
        raise TypeError(type(obj).__name__)

    text = json.dumps(value, default=default, allow_nan=False)
    if any(abs(n) >= 2**63 for n in _integers(value)):
        raise TypeError("integer beyond 64 bits")
    return json.loads(text)


def _integers(value):
    if isinstance(value, int) and not isinstance(value, bool):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _integers(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _integers(item)


@pytest.mark.parametrize("backend", ["memory", "redis"])
@EXAMPLES
@given(key=keys, value=any_values, ttl=ttls)
def test_cache_set_then_get_is_exact_or_a_documented_error(redis_server, figures, backend, key, value, ttl):
    try:
        expected = as_documented(value)
    except ValueError:
        reject()  # NaN/inf: see test_non_finite_floats_are_refused_not_turned_into_none
    except (TypeError, RecursionError):
        expected = DOCUMENTED_ERRORS
    seconds = ttl.total_seconds() if isinstance(ttl, datetime.timedelta) else ttl

    async def scenario():
        url = redis_server.url if backend == "redis" else None
        async with ti.CacheManager(redis_url=url, namespace="hostile", name="hostile") as cache:
            try:
                stored = await cache.set(key, value, ttl=ttl)
            except DOCUMENTED_ERRORS:
                ttl_accepted = seconds is None or 0 < seconds < MAX_TTL_S
                assert expected is DOCUMENTED_ERRORS or not ttl_accepted
                assert await cache.get(key, "<miss>") == "<miss>"
                return "refused"
            assert expected is not DOCUMENTED_ERRORS, f"{value!r} was accepted"
            got = await cache.get(key, "<miss>")
            assert stored is True and cache.get_stats()["errors"] == 0
            if got == "<miss>" and seconds is not None and seconds < 0.05:
                return "expired"  # a TTL shorter than the round trip
            assert got == expected, f"wrote {value!r}, read {got!r}"
            await cache.delete(key)
            return "stored"

    outcome = run(scenario())
    _count(figures, f"cache_{backend}_{outcome}")


@pytest.mark.parametrize("value", [math.nan, math.inf, [1.0, {"x": -math.inf}]], ids=["nan", "inf", "nested"])
def test_non_finite_floats_are_refused_not_turned_into_none(value):
    async def scenario():
        cache = ti.CacheManager()
        with pytest.raises(ti.CacheSerializationError, match="no JSON form"):
            await cache.set("f", value)
        assert await cache.get("f", "absent") == "absent"

    run(scenario())


@pytest.mark.parametrize("ttl", [math.inf, math.nan, 9e15], ids=["inf", "nan", "huge"])
def test_unrepresentable_ttl_is_refused_with_redis(redis_server, ttl):
    async def scenario():
        async with ti.CacheManager(redis_url=redis_server.url, namespace="hostile-ttl") as cache:
            with pytest.raises(ValueError, match="ttl must be positive and below"):
                await cache.set("k", 1, ttl=ttl)
            assert await cache.get("k", "absent") == "absent"

    run(scenario())


@pytest.mark.parametrize(
    "value",
    [b"raw bytes", recursive_list(), recursive_dict(), deeply_nested(1000), 10**30, {1: "int key"}],
    ids=["bytes", "recursive-list", "recursive-dict", "deep", "huge-int", "int-key"],
)
def test_unencodable_value_is_a_serialization_error_and_nothing_is_written(redis_server, value):
    async def scenario():
        async with ti.CacheManager(redis_url=redis_server.url, namespace="hostile-bad") as cache:
            await cache.set("k", "previous")
            with pytest.raises(ti.CacheSerializationError, match="'k'"):
                await cache.set("k", value)
            assert await cache.get("k") == "previous"

    run(scenario())


def test_ten_megabyte_value_round_trips_through_redis(redis_server, figures):
    big = {"blob": "x" * (10 * 2**20), "tail": list(range(100))}

    async def scenario():
        async with ti.CacheManager(redis_url=redis_server.url, namespace="hostile-big") as cache:
            assert await cache.set("big", big)
            assert await cache.get("big") == big
            stored = redis_server.client().strlen("hostile-big:big")
            await cache.delete("big")
            return stored

    stored = run(scenario())
    figures.record("hostile_input", "ten_megabytes", value_bytes=10 * 2**20, stored_bytes=stored)
    assert stored < 2**20  # compressed


_counts: dict[str, int] = {}


def _count(figures, name: str) -> None:
    _counts[name] = _counts.get(name, 0) + 1
    figures.record("hostile_input", "cases_tried", **_counts)
