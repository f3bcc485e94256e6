"""Operation counters kept as plain integers (cheap on the hot path, read on demand).

The same numbers feed ``get_stats()`` and the OpenTelemetry instruments, which read
them at collection time (see ``instruments``), so both always agree exactly.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["CacheStats"]


@dataclass(slots=True)
class CacheStats:
    """What a manager has done since it was created."""

    hits: int = 0
    misses: int = 0
    sets: int = 0
    deletes: int = 0
    evictions: int = 0
    near_hits: int = 0
    near_misses: int = 0
    near_invalidations: int = 0
    errors_by_type: Counter[str] = field(default_factory=Counter)

    @property
    def errors(self) -> int:
        return sum(self.errors_by_type.values())

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    def count_eviction(self) -> None:
        self.evictions += 1

    def count_error(self, exc: BaseException) -> None:
        self.errors_by_type[type(exc).__name__] += 1
