"""Secret redaction: the one policy deciding which values never leave the process.

A key is secret when, lower-cased with ``-`` read as ``_``, it equals one of the
configured names or ends with ``_<name>`` (``db_password``, ``x-api-key``,
``access_token``), so ``max_tokens`` is left alone. Nested mappings and lists are
walked; the value is replaced by :data:`REDACTED`, never a hint of the secret.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["DEFAULT_SECRET_KEYS", "REDACTED", "Redactor", "get_redactor", "set_secret_keys"]

REDACTED = "[REDACTED]"
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
        """``value`` as it may be written under ``key``."""
        if self.is_secret(key):
            return REDACTED
        if isinstance(value, Mapping):
            return self.mapping(value)
        if isinstance(value, (list, tuple)):
            return [self.value(None, item) for item in value]
        return value

    def mapping(self, values: Mapping[Any, Any]) -> dict[Any, Any]:
        """A copy of ``values`` with every secret (at any depth) redacted."""
        return {key: self.value(key, value) for key, value in values.items()}


_redactor = Redactor()


def get_redactor() -> Redactor:
    """The redactor every output (console, files, OTLP) applies."""
    return _redactor


def set_secret_keys(secret_keys: Iterable[str]) -> None:
    """Replace the list of secret key names used by every output."""
    global _redactor
    _redactor = Redactor(secret_keys)
