"""Concurrent cache traffic across a primary's failover, and the checks made on what callers saw.

Each task owns its keys and, in a loop, writes a new version of one of them, reads it back
and reads all its keys with ``mget``. A value read is wrong unless it is a miss or a version
at least as new as the last version Redis must still hold: every version confirmed before
the kill, except in the last ``LOSS_WINDOW_S`` (replication is asynchronous), and every
version confirmed after it. A version newer than the last written, or any value after a
write that reported failure, is wrong too.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from telemetry_infra.cache import CacheManager

#: Writes acknowledged by the old primary this shortly before its death may be lost.
LOSS_WINDOW_S = 0.5


@dataclass
class KeyHistory:
    written: int = 0  # the last version attempted
    failed: bool = False  # the last write reported failure (False)
    confirmed: list[tuple[int, float]] = field(default_factory=list)  # (version, when)


@dataclass
class FailoverLoad:
    cache: CacheManager
    tasks: int = 20
    keys_per_task: int = 8
    killed_at: float | None = None
    history: dict[str, KeyHistory] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)
    exceptions: list[BaseException] = field(default_factory=list)
    landed: list[tuple[str, float]] = field(default_factory=list)  # (key, when) of confirmed writes
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def keys_of(self, task: int) -> list[str]:
        return [f"t{task}-k{index}" for index in range(self.keys_per_task)]

    def floor(self, key: str) -> int:
        """The oldest version Redis may still answer for ``key``."""
        killed = self.killed_at
        versions = [
            version
            for version, when in self.history[key].confirmed
            if killed is None or when < killed - LOSS_WINDOW_S or when > killed
        ]
        return max(versions, default=0)

    def check(self, key: str, value: Any) -> None:
        """``value`` is ``[key, version]``: an answer meant for another key is caught too."""
        if value is None:
            return
        entry = self.history[key]
        owner, version = value
        if owner != key or entry.failed or not self.floor(key) <= version <= entry.written:
            self.wrong.append(
                f"{key}: read {value!r}, last written {entry.written} (failed={entry.failed}), "
                f"floor {self.floor(key)}"
            )

    async def _task(self, task: int) -> None:
        keys = self.keys_of(task)
        for key in keys:
            self.history[key] = KeyHistory()
        turn = 0
        while not self._stop.is_set():
            key = keys[turn % len(keys)]
            turn += 1
            entry = self.history[key]
            entry.written += 1
            try:
                ok = await self.cache.set(key, [key, entry.written], ttl=120)
                now = time.monotonic()
                entry.failed = not ok
                if ok:
                    entry.confirmed.append((entry.written, now))
                    self.landed.append((key, now))
                self.check(key, await self.cache.get(key))
                for found_key, value in (await self.cache.mget(keys)).items():
                    self.check(found_key, value)
            except Exception as exc:
                self.exceptions.append(exc)
            await asyncio.sleep(0.005)

    async def run(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self._task(task)) for task in range(self.tasks)]

    async def stop(self, running: list[asyncio.Task[None]]) -> None:
        self._stop.set()
        await asyncio.gather(*running)

    def first_landing_after(self, since: float, keys: set[str] | None = None) -> float | None:
        return min(
            (when for key, when in self.landed if when > since and (keys is None or key in keys)),
            default=None,
        )
