"""Removals made while Redis was unreachable, replayed when it answers again."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

__all__ = ["OutageJournal"]


class OutageJournal:
    """Keys and patterns to remove from Redis on recovery, bounded to ``capacity``.

    Overflow never loses correctness: once more than ``capacity`` entries are
    recorded the journal collapses into "clear the whole namespace" (counted in
    ``overflowed``), which removes everything the dropped entries would have.
    """

    def __init__(self, everything: str, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError(f"journal_size must be >= 1, got {capacity!r}")
        self.capacity = capacity
        self.overflowed = 0
        self._everything = everything
        self._keys: set[str] = set()
        self._patterns: set[str] = set()
        self._collapsed = False
        self._full = False

    def __len__(self) -> int:
        return len(self._keys) + len(self._patterns) + self._collapsed

    def record_keys(self, keys: Sequence[str]) -> None:
        if self._collapsed:
            self.overflowed += len(keys) if self._full else 0
            return
        self._keys.update(keys)
        self._check_capacity()

    def record_pattern(self, pattern: str) -> None:
        if pattern == self._everything:
            self._collapse()
            return
        if self._collapsed:
            self.overflowed += self._full
            return
        self._patterns.add(pattern)
        self._check_capacity()

    def _check_capacity(self) -> None:
        excess = len(self._keys) + len(self._patterns) - self.capacity
        if excess > 0:
            self.overflowed += excess
            self._collapse()
            self._full = True

    def _collapse(self) -> None:
        self._collapsed = True
        self._full = False
        self._keys.clear()
        self._patterns.clear()

    async def replay(
        self,
        delete_many: Callable[[Sequence[str]], Awaitable[int]],
        clear: Callable[[str], Awaitable[int]],
    ) -> None:
        """Apply every recorded removal; on failure keep what is left for the next try.

        Entries recorded while replay awaits are applied too: it runs until empty.
        """
        while len(self):
            keys, patterns, collapsed = self._keys, self._patterns, self._collapsed
            self._keys, self._patterns, self._collapsed, self._full = set(), set(), False, False
            try:
                if collapsed:
                    await clear(self._everything)
                else:
                    for pattern in patterns:
                        await clear(pattern)
                    await delete_many(sorted(keys))
            except BaseException:
                self._restore(keys, patterns, collapsed)
                raise

    def _restore(self, keys: set[str], patterns: set[str], collapsed: bool) -> None:
        if collapsed or self._collapsed:
            self._collapse()
            return
        self._keys |= keys
        self._patterns |= patterns
