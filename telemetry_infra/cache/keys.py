"""Every rule about cache keys: type, namespace prefix, glob patterns, function keys."""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

__all__ = ["Namespace", "call_key", "glob_to_regex", "key_list"]

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")
_DIGEST_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


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
        if key.__class__ is not str:
            _require_str(key)
        return self.prefix + key  # type: ignore[operator]

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


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a Redis glob (``* ? [abc] [^a-z] \\x``) into an anchored regex."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        i += 1
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "\\" and i < n:
            out.append(re.escape(pattern[i]))
            i += 1
        elif char == "[" and (end := pattern.find("]", i + 1)) != -1:
            body = pattern[i:end]
            negate = body[:1] == "^"
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(char))
    return re.compile("".join(out), re.DOTALL)


def _stable_default(value: object) -> object:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    return repr(value)


def call_key(
    key_prefix: str,
    func: Callable[..., Any],
    signature: inspect.Signature,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> str:
    """``[prefix:]module.qualname:digest`` where digest hashes the bound arguments.

    Arguments are bound to the signature with defaults applied, so ``f(1)`` and
    ``f(x=1)`` share a key. Values orjson cannot encode are hashed by ``repr``.
    """
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    encoded = orjson.dumps(bound.arguments, default=_stable_default, option=_DIGEST_OPTIONS)
    digest = hashlib.blake2b(encoded, digest_size=16).hexdigest()
    name = f"{func.__module__}.{func.__qualname__}:{digest}"
    return f"{key_prefix}:{name}" if key_prefix else name
