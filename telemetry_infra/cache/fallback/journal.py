"""Removals Redis still owes: keys and patterns whose value in Redis may be stale.

Entries come from writes and removals made while Redis was unreachable (memory
served them), and from writes Redis refused or did not confirm while it was
reachable. Until an entry is applied (``UNLINK`` / ``SCAN`` + ``UNLINK``), reads
through this manager treat its keys as misses (``masks``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence

from telemetry_infra.cache.keys import glob_matcher

__all__ = ["OutageJournal"]


class OutageJournal:
    """Keys and patterns to remove from Redis, at most ``capacity`` of them.

    A full journal refuses new entries (``record_*`` return False, counted in
    ``overflowed``): the caller then tells its own caller the write failed. It never
    collapses into "clear the whole namespace", which would also remove what other
    processes wrote after the outage.

    Every recording gets a sequence number (``seq``); an entry is forgotten only if it
    was not recorded again while its removal (or a write replacing it) was in flight.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError(f"journal_size must be >= 1, got {capacity!r}")
        self.capacity = capacity
        self.overflowed = 0
        #: True while anything is recorded: a plain attribute, read on every lookup.
        self.pending = False
        self.seq = 0
        self._keys: dict[str, int] = {}
        self._patterns: dict[str, tuple[int, Callable[[str], bool]]] = {}

    def __len__(self) -> int:
        return len(self._keys) + len(self._patterns)

    def record_keys(self, keys: Iterable[str]) -> bool:
        """Record every key, or none when they do not fit (then False)."""
        keys = list(keys)
        new = sum(key not in self._keys for key in keys)
        if new and len(self) + new > self.capacity:
            self.overflowed += new
            return False
        self.seq += 1
        self._keys.update(dict.fromkeys(keys, self.seq))
        self.pending = bool(self._keys or self._patterns)
        return True

    def record_pattern(self, pattern: str) -> bool:
        if pattern not in self._patterns and len(self) >= self.capacity:
            self.overflowed += 1
            return False
        self.seq += 1
        self._patterns[pattern] = (self.seq, glob_matcher(pattern))
        self.pending = True
        return True

    def masks(self, key: str) -> bool:
        """True when Redis may hold a stale value for ``key``."""
        if key in self._keys:
            return True
        # a copy (one C call, atomic under the GIL): the sync view's reads ask from their
        # callers' threads while a replay on a loop thread changes the patterns
        return any(matches(key) for _, matches in tuple(self._patterns.values()))

    def settle(self, keys: Iterable[str], since: int) -> None:
        """Forget ``keys`` recorded up to ``since``: a write or removal begun after that landed."""
        entries = self._keys
        for key in keys:
            seq = entries.get(key)
            if seq is not None and seq <= since:
                del entries[key]
        self.pending = bool(entries or self._patterns)

    async def replay(
        self,
        delete_many: Callable[[Sequence[str]], Awaitable[int]],
        clear: Callable[[str], Awaitable[int]],
    ) -> None:
        """Apply every recorded removal; on failure what is not applied stays recorded.

        Entries stay in the journal (and masked) until their removal is done; entries
        recorded while replay awaits are applied too: it runs until empty.
        """
        while self.pending:
            since = self.seq
            for pattern, (seq, _) in list(self._patterns.items()):
                await clear(pattern)
                if self._patterns.get(pattern, (None,))[0] == seq:
                    del self._patterns[pattern]
            keys = sorted(self._keys)
            await delete_many(keys)
            self.settle(keys, since)
