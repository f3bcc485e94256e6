"""``clear(pattern)`` in memory removes exactly what Redis's ``SCAN MATCH`` would.

The memory matcher is compared with a real redis-server on patterns and keys generated
by hypothesis, built from the characters that mean something to a Redis glob.
"""

from __future__ import annotations

import itertools
import time

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import telemetry_infra as ti
from telemetry_infra.cache.keys import glob_matcher

# glob syntax, plain letters and digits, a 2-byte and a 3-byte UTF-8 char, a control byte
ALPHABET = "*?[]^-\\ab07é€\x00"
patterns = st.text(alphabet=ALPHABET, max_size=8)
keys = st.text(alphabet=ALPHABET.replace("\x00", "") + "z", max_size=6)
CORPUS = sorted(
    {"", *("".join(chars) for n in range(1, 4) for chars in itertools.product("ab]-\\^é", repeat=n))}
)

SETTINGS = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture
def server(redis_restartable):
    client = redis.Redis.from_url(redis_restartable.url)
    yield client
    client.close()


def scan_match(client: redis.Redis, pattern: str) -> set[str]:
    return {key.decode() for key in client.scan_iter(match=pattern, count=1000)}


def test_corpus_matches_redis_for_generated_patterns(server):
    server.mset({key: 1 for key in CORPUS if key})
    server.set("", 1)

    @SETTINGS
    @given(pattern=patterns)
    def check(pattern):
        matches = glob_matcher(pattern)
        assert {key for key in CORPUS if matches(key)} == scan_match(server, pattern)

    check()


def test_generated_keys_match_redis_for_generated_patterns(server):
    @SETTINGS
    @given(pattern=patterns, generated=st.lists(keys, min_size=1, max_size=12, unique=True))
    def check(pattern, generated):
        server.flushdb()
        server.mset({key: 1 for key in generated})
        matches = glob_matcher(pattern)
        assert {key for key in generated if matches(key)} == scan_match(server, pattern)

    check()


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("[7-0]", {"0", "5", "7"}),  # a reversed range is valid in Redis
        ("[ab", {"a", "b"}),  # an unterminated class runs to the end
        ("[\\]]", {"]"}),
        ("[a-]", {"]", "^", "a"}),  # the range from ] to a
        ("[]", set()),
        ("\\*", {"*"}),
        ("?", {"0", "5", "7", "a", "b", "]", "^", "*"}),  # é is two bytes
        ("??", {"é", "ab"}),
    ],
)
def test_known_redis_glob_quirks(pattern, expected):
    candidates = ["0", "5", "7", "a", "b", "]", "^", "*", "é", "ab"]
    assert {key for key in candidates if glob_matcher(pattern)(key)} == expected


def test_hostile_patterns_agree_with_redis_without_backtracking(server):
    stored = ["a" * 5000, "[", "\\" * 500, "ab" * 100]
    server.mset(dict.fromkeys(stored, 1))
    for pattern in ("*a" * 200 + "*b", "[" * 1000, "\\" * 999, "*a*b" * 50 + "*", "]" * 3 + "[^" * 3):
        started = time.perf_counter()
        matched = {key for key in stored if glob_matcher(pattern)(key)}
        assert time.perf_counter() - started < 1.0, pattern  # 5000-byte key, 200 stars
        assert matched == scan_match(server, pattern), pattern


async def test_clear_removes_the_same_keys_in_memory_and_in_redis(redis_server):
    stored = ["user:1", "user:7", "user:]", "a-b", "[x]", "é", "ab"]
    for pattern in ("[7-0]", "user:[7-0]", "[ab", "user:[\\]]", "?", "??", "*:[^1]", "[a-]-b", "\\[x\\]"):
        async with (
            ti.CacheManager(namespace="glob-mem") as memory,
            ti.CacheManager(redis_url=redis_server.url, namespace="glob-redis") as shared,
        ):
            await memory.mset(dict.fromkeys(stored, 1))
            await shared.mset(dict.fromkeys(stored, 1))
            removed = await memory.clear(pattern)
            assert removed == await shared.clear(pattern), pattern
            assert await memory.mget(stored) == await shared.mget(stored), pattern
            await shared.clear()
