"""Secret redaction: the one policy deciding which values never leave the process.

A key is secret when, lower-cased with ``-`` read as ``_``, it equals one of the
configured names or ends with ``_<name>`` (``db_password``, ``x-api-key``,
``access_token``), so ``max_tokens`` is left alone. Nested mappings and lists are
walked; the value is replaced by :data:`REDACTED`, never a hint of the secret.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

__all__ = [
    "DEFAULT_SECRET_KEYS",
    "RECURSIVE",
    "REDACTED",
    "TRUNCATED",
    "Redactor",
    "get_redactor",
    "set_secret_keys",
]

REDACTED = "[REDACTED]"
RECURSIVE = "[RECURSIVE]"
TRUNCATED = "[TRUNCATED]"
MAX_DEPTH = 32
MAX_ITEMS = 10_000
DEFAULT_SECRET_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "set-cookie",
)
_MAX_REMEMBERED_KEYS = 4096


def _normalise(key: str) -> str:
    return key.lower().replace("-", "_")


class Redactor:
    """Replaces the values of secret-looking keys by ``[REDACTED]``."""

    def __init__(self, secret_keys: Iterable[str] = DEFAULT_SECRET_KEYS) -> None:
        self._names = frozenset(_normalise(name) for name in secret_keys)
        self._suffixes = tuple("_" + name for name in self._names)
        # Field names repeat endlessly in logs: remember each verdict.
        self._verdicts: dict[str, bool] = {}

    def is_secret(self, key: Any) -> bool:
        """Whether values stored under ``key`` must be redacted."""
        try:
            return self._verdicts[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable key cannot name a secret field
            return False
        verdict = self._judge(key)
        if len(self._verdicts) < _MAX_REMEMBERED_KEYS:
            self._verdicts[key] = verdict
        return verdict

    def _judge(self, key: Any) -> bool:
        if not isinstance(key, str):
            return False
        name = _normalise(key)
        return name in self._names or name.endswith(self._suffixes)

    def value(self, key: Any, value: Any) -> Any:
        """``value`` as it may be written under ``key``.

        Containers are copied with their secrets redacted, at most :data:`MAX_DEPTH`
        levels and :data:`MAX_ITEMS` items deep; a container that holds itself is
        written as :data:`RECURSIVE` instead of looping.
        """
        if self.is_secret(key):
            return REDACTED
        if not isinstance(value, (Mapping, list, tuple)):
            return value
        return _RedactedCopy(self).of(value, 0)

    def mapping(self, values: Mapping[Any, Any]) -> dict[Any, Any]:
        """A copy of ``values`` with every secret (at any depth) redacted."""
        # a fresh walk starts at depth 0 with its whole budget and an empty path, so a
        # Mapping always comes back as a dict (never RECURSIVE or TRUNCATED)
        return cast("dict[Any, Any]", _RedactedCopy(self).of(values, 0))


class _RedactedCopy:
    """One bounded walk over a value: cycles and depth cannot make it recurse without end."""

    __slots__ = ("_budget", "_path", "_redactor")

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._path: set[int] = set()
        self._budget = MAX_ITEMS

    def of(self, value: Any, depth: int) -> Any:
        if not isinstance(value, (Mapping, list, tuple)):
            return value
        if id(value) in self._path:
            return RECURSIVE
        self._budget -= 1
        if depth >= MAX_DEPTH or self._budget < 0:
            return TRUNCATED
        self._path.add(id(value))
        try:
            if isinstance(value, Mapping):
                secret = self._redactor.is_secret
                return {k: REDACTED if secret(k) else self.of(v, depth + 1) for k, v in value.items()}
            return [self.of(item, depth + 1) for item in value]
        finally:
            self._path.discard(id(value))


_redactor = Redactor()


def get_redactor() -> Redactor:
    """The redactor every output (console, files, OTLP) applies."""
    return _redactor


def set_secret_keys(secret_keys: Iterable[str]) -> None:
    """Replace the list of secret key names used by every output."""
    global _redactor
    _redactor = Redactor(secret_keys)
