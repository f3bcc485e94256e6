"""Rules about cache keys: type, namespace prefix, glob patterns (``@cached`` keys: ``function_keys``)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence

__all__ = ["Namespace", "glob_matcher", "key_list"]

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def _require_str(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"cache keys must be str, got {type(key).__qualname__}: {key!r}")
    return key


class Namespace:
    """The prefix under which a manager stores every key (``"<namespace>:"``).

    Keys are stored as ``prefix + key``; patterns are matched inside the prefix, with
    glob characters in the prefix escaped so ``SCAN MATCH`` never leaks outside it.
    """

    __slots__ = ("everything", "glob_prefix", "prefix")

    def __init__(self, namespace: str) -> None:
        _require_str(namespace)
        self.prefix = f"{namespace}:" if namespace else ""
        self.glob_prefix = _GLOB_SPECIAL.sub(r"\\\1", self.prefix)
        self.everything = self.glob_prefix + "*"

    def key(self, key: object) -> str:
        """The stored form of ``key``; ``TypeError`` when it is not a ``str``."""
        if type(key) is str:  # the common case, without a call
            return self.prefix + key
        return self.prefix + _require_str(key)

    def keys(self, keys: Iterable[object]) -> list[str]:
        return [self.key(key) for key in keys]

    def pattern(self, pattern: str | None) -> str:
        """The stored-key glob for a user pattern (``None``: the whole namespace)."""
        if pattern is None:
            return self.everything
        return self.glob_prefix + _require_str(pattern)

    def strip(self, stored_key: str) -> str:
        return stored_key[len(self.prefix) :]


def key_list(keys: Iterable[str]) -> list[str]:
    """``keys`` as a list; a lone ``str``/``bytes`` is a mistake, not a list of characters."""
    if isinstance(keys, (str, bytes)):
        raise TypeError(f"expected a collection of str keys, got a single {type(keys).__name__}")
    return list(keys)


# -- Redis glob patterns ---------------------------------------------------------------
#
# The memory backend must remove exactly the keys Redis's ``SCAN MATCH`` would, so this
# follows ``stringmatchlen()`` in Redis's src/util.c rather than fnmatch or regex rules:
#
# * Matching is on the UTF-8 bytes of key and pattern: ``?`` is one byte, not one character.
# * ``\\x`` is a literal ``x``; a trailing lone backslash is a literal backslash.
# * ``[`` opens a class that ends at the first ``]`` not escaped; ``[]`` matches nothing
#   and ``[^]`` any byte. An unterminated class runs to the end of the pattern.
# * In a class, ``a-z`` is a range when a byte follows the ``-`` (``[a-]`` is the range
#   from ``]`` to ``a``); reversed ranges are swapped (``[7-0]`` is ``[0-7]``); bounds are
#   compared as C ``char``s, signed on x86-64, so ranges crossing 0x7F behave as there.
# * An empty key is matched only by ``""`` (and by ``*``, which ``SCAN`` short-circuits).
#
# Every byte token consumes exactly one byte, so a pattern is fixed-length segments between
# stars: the first anchored at the start, the last at the end, the middle ones found at
# their leftmost place. That is linear in the key for any pattern (no backtracking).

_STAR = None
_ANY_BYTE = frozenset(range(256))


def _signed(byte: int) -> int:
    return byte - 256 if byte > 127 else byte


def _class_at(pattern: bytes, i: int) -> tuple[frozenset[int], int]:
    """The bytes matched by the class whose ``[`` is at ``pattern[i]``, and where it ends."""
    n = len(pattern)
    i += 1
    negate = i < n and pattern[i] == 0x5E  # ^
    i += negate
    members: set[int] = set()
    while i < n:
        byte = pattern[i]
        if byte == 0x5C and i + 1 < n:  # backslash: the next byte, literally
            members.add(pattern[i + 1])
            i += 2
        elif byte == 0x5D:  # ]
            i += 1
            break
        elif i + 2 < n and pattern[i + 1] == 0x2D:  # x-y
            low, high = sorted((_signed(byte), _signed(pattern[i + 2])))
            members.update(b for b in range(256) if low <= _signed(b) <= high)
            i += 3
        else:
            members.add(byte)
            i += 1
    return (_ANY_BYTE - members if negate else frozenset(members)), i


def _tokens(pattern: bytes) -> list[frozenset[int] | None]:
    """``_STAR`` or the set of bytes one position accepts, for each element of ``pattern``."""
    tokens: list[frozenset[int] | None] = []
    i, n = 0, len(pattern)
    while i < n:
        byte = pattern[i]
        if byte == 0x2A:  # *
            if tokens[-1:] != [_STAR]:
                tokens.append(_STAR)
            i += 1
        elif byte == 0x3F:  # ?
            tokens.append(_ANY_BYTE)
            i += 1
        elif byte == 0x5B:  # [
            members, i = _class_at(pattern, i)
            tokens.append(members)
        else:
            if byte == 0x5C and i + 1 < n:  # backslash escapes the next byte
                i += 1
            tokens.append(frozenset((pattern[i],)))
            i += 1
    return tokens


def _byte_regex(members: frozenset[int]) -> str:
    if members == _ANY_BYTE:
        return "."
    if not members:
        return "(?!)"
    if len(members) == 1:
        return re.escape(chr(next(iter(members))))
    return "[" + "".join(re.escape(chr(b)) for b in sorted(members)) + "]"


def _segment(tokens: Sequence[frozenset[int]]) -> re.Pattern[str]:
    """One regex for a run of byte tokens, over keys decoded as latin-1 (a char per byte)."""
    return re.compile("".join(_byte_regex(members) for members in tokens), re.DOTALL)


def _as_bytes_text(text: str) -> str:
    """``text``'s UTF-8 bytes as a str of one char per byte (ASCII is left as it is)."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogatepass").decode("latin-1")


class _Glob:
    """A compiled Redis glob: ``head * middle * ... * tail``."""

    __slots__ = ("_empty_matches", "_head", "_middles", "_starred", "_tail", "_tail_size")

    def __init__(self, pattern: str) -> None:
        tokens = _tokens(_as_bytes_text(pattern).encode("latin-1"))
        self._empty_matches = pattern in ("", "*")
        runs: list[list[frozenset[int]]] = [[]]
        for token in tokens:
            if token is _STAR:
                runs.append([])
            else:
                runs[-1].append(token)
        self._starred = len(runs) > 1
        self._head = _segment(runs[0])
        self._tail = _segment(runs[-1])
        self._tail_size = len(runs[-1])
        self._middles = [_segment(run) for run in runs[1:-1] if run]

    def __call__(self, key: str) -> bool:
        if not key:
            return self._empty_matches
        text = _as_bytes_text(key)
        if not self._starred:
            return self._head.fullmatch(text) is not None
        head = self._head.match(text)
        if head is None:
            return False
        start, end = head.end(), len(text) - self._tail_size
        if end < start or self._tail.match(text, end) is None:
            return False
        for segment in self._middles:
            found = segment.search(text, start, end)
            if found is None:
                return False
            start = found.end()
        return True


@functools.lru_cache(maxsize=256)
def glob_matcher(pattern: str) -> Callable[[str], bool]:
    """A predicate telling whether a key matches the Redis glob ``pattern`` exactly as
    ``SCAN MATCH`` does (see the rules above). Never raises for any ``str`` pattern."""
    return _Glob(pattern)
