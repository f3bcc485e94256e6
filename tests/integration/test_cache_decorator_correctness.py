"""@cached never hands one call another call's result, and cold and warm calls agree.

Against a real Redis: keys of different functions or arguments never collide (closures
from one factory, objects at a recycled address), keys are the same in every process,
and the first call returns what later calls will (same values, same types).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import logging
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal

import pytest
from prometheus_client.parser import text_string_to_metric_families

import telemetry_infra as ti


@pytest.fixture
async def pickle_cache(redis_server):
    manager = ti.CacheManager(
        redis_url=redis_server.url,
        namespace=f"p-{uuid.uuid4().hex[:12]}",
        serialization="pickle",
        signing_key="test-signing-key",
    )
    await manager.initialize()
    yield manager
    await manager.clear()
    await manager.close()


# -- item 1: keys never collide -----------------------------------------------------------


def table_reader(table: str):
    rows = {"users": {1: "alice"}, "orders": {1: "order #1"}}

    @ti.cached(ttl=60)
    async def read(row_id):
        return rows[table][row_id]

    return read


async def test_closures_from_one_factory_never_share_entries(cache):
    users, orders = table_reader("users"), table_reader("orders")
    assert await users(1, _cache_manager=cache) == "alice"
    assert await orders(1, _cache_manager=cache) == "order #1"
    assert await users(1, _cache_manager=cache) == "alice"
    assert users.cache_key(1) != orders.cache_key(1)
    assert users.cache_key(1) == table_reader("users").cache_key(1)  # same closure values, same entries


class Database:
    """A client object: no __repr__ of its own, so no stable identity."""


def test_a_closure_variable_without_stable_identity_needs_a_key_prefix():
    def repository(db):
        @ti.cached(ttl=60)
        async def load(row_id):
            return db, row_id

        return load

    with pytest.raises(TypeError, match=r"closure variable 'db'.*object.__repr__.*key_prefix="):
        repository(Database())

    def prefixed_repository(db, tenant):
        @ti.cached(ttl=60, key_prefix=f"repo:{tenant}")
        async def load(row_id):
            return db, row_id

        return load

    assert prefixed_repository(Database(), "a").cache_key(1).startswith("repo:a:")


async def test_stacked_decorators_and_cached_helpers_are_keyed_by_what_they_wrap(cache):
    def service(region):
        @ti.cached(ttl=60)
        @ti.log_execution_time
        async def price(item):
            return f"{item}@{region}"

        @ti.cached(ttl=60)
        async def quote(item):  # captures another @cached function
            return await price(item)

        return quote

    eu, us = service("eu"), service("us")
    assert eu.cache_key("tea") != us.cache_key("tea")
    ti.set_default_cache_manager(cache)
    try:
        assert (await eu("tea"), await us("tea"), await eu("tea")) == ("tea@eu", "tea@us", "tea@eu")
    finally:
        ti.set_default_cache_manager(None)


class Tenant:
    def __init__(self, name: str) -> None:
        self.name = name

    @ti.cached(ttl=60)
    async def report(self):
        return f"report of {self.name}"


class KeyedTenant(Tenant):
    def __cache_key__(self):
        return self.name

    @ti.cached(ttl=60)
    async def report(self):
        return f"report of {self.name}"


async def test_self_without_stable_identity_raises_naming_the_parameter(cache):
    with pytest.raises(
        TypeError, match=r"argument 'self'.*Tenant uses object.__repr__.*__cache_key__.*key_builder"
    ):
        await Tenant("a").report(_cache_manager=cache)


async def test_objects_at_recycled_addresses_get_their_own_results(cache):
    for i in range(200):  # each tenant dropped before the next: CPython reuses the address
        tenant = KeyedTenant(f"tenant-{i}")
        assert await tenant.report(_cache_manager=cache) == f"report of tenant-{i}"
        del tenant
    assert await KeyedTenant("tenant-7").report(_cache_manager=cache) == "report of tenant-7"


class Color(enum.Enum):
    RED = 1
    ALSO_RED = "1"


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int
    label: str = dataclasses.field(default="", compare=False)


@ti.cached(ttl=60)
async def echo(value):
    return repr(value)


def test_arguments_are_keyed_by_value_and_type():
    def key(value):
        return echo.cache_key(value)

    distinct = [
        (1, 2),
        [1, 2],
        1,
        1.0,
        True,
        "1",
        b"1",
        None,
        Color.RED,
        Color.ALSO_RED,
        Point(1, 2),
        (Point(1, 2),),
    ]
    assert len({key(value) for value in distinct}) == len(distinct)
    assert key({"a": 1, "b": 2}) == key({"b": 2, "a": 1})
    assert key({3, 1, 2}) == key({1, 2, 3}) != key(frozenset({1, 2, 3}))
    assert key(Point(1, 2, label="a")) == key(Point(1, 2, label="b"))  # label is not compared
    when = datetime(2026, 1, 15, 23, 0, tzinfo=UTC)
    assert key(when) == key(datetime(2026, 1, 15, 23, 0, tzinfo=UTC)) != key(when.isoformat())
    assert key(Decimal("1.5")) != key(1.5) and key(uuid.UUID(int=1)) != key(str(uuid.UUID(int=1)))
    assert echo.cache_key(value=1) == echo.cache_key(1)


class LocalZone(tzinfo):
    """A tzinfo without a __repr__ of its own: a datetime's repr then shows its address."""

    def utcoffset(self, _when):
        return timedelta(hours=1)


def test_an_unkeyable_value_deep_in_an_argument_is_named():
    assert echo.cache_key(lambda: 1) == echo.cache_key(lambda: 1) != echo.cache_key(lambda: 2)  # by code
    with pytest.raises(TypeError, match=r"argument 'value\[1\]\['db'\]'.*Database uses object.__repr__"):
        echo.cache_key([0, {"db": Database()}])
    with pytest.raises(TypeError, match=r"argument 'value'.*memory address \(at 0x"):
        echo.cache_key(asyncio.Lock())
    with pytest.raises(TypeError, match=r"argument 'value'.*datetime.datetime shows a memory address"):
        echo.cache_key(datetime(2026, 1, 1, tzinfo=LocalZone()))


MODULE = """
import dataclasses, enum, uuid
from datetime import datetime, timedelta, timezone, tzinfo
from decimal import Decimal
import telemetry_infra as ti

class Kind(enum.Enum):
    A = "a"

@dataclasses.dataclass
class Query:
    tags: frozenset
    since: datetime

def reader(table):
    @ti.cached(ttl=60)
    async def read(query, *, limit=10):
        return table, query, limit
    return read

ARGUMENTS = [
    ({"b", "a", "c"}, {"z": 1, "a": [1, (2, 3)]}),
    (Query(frozenset({"x", "y", "zz"}), datetime(2026, 1, 1, tzinfo=timezone.utc)),),
    ((Kind.A, Decimal("1.10"), uuid.UUID(int=5), None, 2.5),),
]

def keys():
    return [reader(table).cache_key(args) for table in ("users", "orders") for args in ARGUMENTS]
"""


def test_keys_are_the_same_in_every_process(tmp_path):
    (tmp_path / "keyed_module.py").write_text(MODULE)
    script = "import json, keyed_module; print(json.dumps(keyed_module.keys()))"
    runs = []
    for seed in ("1", "2", "3"):  # str hashes, hence set order, differ between these processes
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(tmp_path)}
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout))
    assert runs[0] == runs[1] == runs[2]
    assert len(set(runs[0])) == len(runs[0])  # every table and argument has its own key


# -- item 2: cold and warm calls agree ---------------------------------------------------


def shape(value):
    """``value`` with the type of every part spelled out, so equal-but-different-type values differ."""
    if isinstance(value, dict):
        return ("dict", sorted((shape(k), shape(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [shape(item) for item in value])
    if isinstance(value, (set, frozenset)):
        return (type(value).__name__, sorted(map(shape, value)))
    return (type(value).__name__, repr(value))


WHEN = datetime(2026, 1, 15, 23, 0, tzinfo=UTC)
JSON_RESULTS = {
    "datetime": (WHEN, "2026-01-15T23:00:00+00:00"),
    "tuple": ((1, "a"), [1, "a"]),
    "nested": ({"at": WHEN, "pairs": [(1, 2), (3, (4,))], "none": None}, None),
    "none": (None, None),
    "str": ("plain", "plain"),
}


@pytest.mark.parametrize("name", JSON_RESULTS)
async def test_json_cold_and_warm_calls_return_the_same_values_and_types(cache, name):
    result, stored_form = JSON_RESULTS[name]
    runs = []

    @ti.cached(ttl=60, key_prefix=name)
    async def produce():
        runs.append(1)
        return result

    cold = await produce(_cache_manager=cache)
    warm = await produce(_cache_manager=cache)
    assert shape(cold) == shape(warm) and len(runs) == 1
    if stored_form is not None:
        assert shape(cold) == shape(stored_form)


PICKLE_RESULTS = {
    "datetime": WHEN,
    "tuple": (1, "a"),
    "set": {1, 2, 3},
    "decimal": Decimal("1.10"),
    "bytes": b"\x00\xff",
    "nested": {
        "at": WHEN,
        "pairs": [(1, 2), frozenset({3})],
        "amount": Decimal("2.5"),
        "raw": b"x",
        "none": None,
    },
    "none": None,
}


@pytest.mark.parametrize("name", PICKLE_RESULTS)
async def test_pickle_cold_and_warm_calls_keep_every_type(pickle_cache, name):
    result = PICKLE_RESULTS[name]

    @ti.cached(ttl=60, key_prefix=name)
    async def produce():
        return result

    cold = await produce(_cache_manager=pickle_cache)
    warm = await produce(_cache_manager=pickle_cache)
    assert shape(cold) == shape(warm) == shape(result)


@pytest.mark.parametrize("result", [{1, 2}, Decimal("1.10"), b"raw"], ids=["set", "decimal", "bytes"])
async def test_a_result_json_cannot_store_is_returned_uncached_logged_once_and_counted(caplog, result):
    telemetry = ti.configure(service_name="cached-unencodable", setup_logs=False)
    name = f"unencodable-{uuid.uuid4().hex[:8]}"
    manager = ti.CacheManager(name=name)
    runs = []

    @ti.cached(ttl=60)
    async def produce():
        runs.append(1)
        return result

    with caplog.at_level(logging.DEBUG, logger="telemetry_infra.cache"):
        for _ in range(3):
            assert shape(await produce(_cache_manager=manager)) == shape(result)
    assert len(runs) == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "@cached" in r.getMessage()]
    assert len(warnings) == 1
    assert "produce" in warnings[0].getMessage() and type(result).__name__ in warnings[0].getMessage()
    assert manager.get_stats()["errors"] == 3
    errors = {
        sample.labels["error_type"]: sample.value
        for family in text_string_to_metric_families(telemetry.prometheus_text())
        for sample in family.samples
        if sample.name == "cache_errors_total" and sample.labels.get("cache_name") == name
    }
    assert errors == {"CacheSerializationError": 3}
    await manager.close()


async def test_concurrent_callers_each_get_their_own_copy(cache):
    @ti.cached(ttl=60)
    async def rows():
        await asyncio.sleep(0.05)
        return [{"id": 1}]

    results = await asyncio.gather(*(rows(_cache_manager=cache) for _ in range(5)))
    results[0].append({"id": "mutated by one caller"})
    assert results[1:] == [[{"id": 1}]] * 4
    assert await rows(_cache_manager=cache) == [{"id": 1}]
