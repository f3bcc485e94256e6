"""Circuit breaker: stop calling an unreachable Redis, probe it, resume when it answers."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable

from telemetry_infra.cache.background_tasks import cancel_anywhere

__all__ = ["CircuitBreaker"]

logger = logging.getLogger("telemetry_infra.cache")

StateListener = Callable[[bool, "BaseException | None"], None]


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures (or at once via ``trip``).

    Three states. *Closed*: everything goes to Redis. *Open*: nothing does
    (``is_open`` and ``blocks_writes``). *Half-open*, entered when ``probe()``
    succeeds: writes go to Redis again while ``recover()`` runs (so the work it has
    to do stops growing), reads still avoid Redis; the breaker closes when
    ``recover()`` returns True and re-opens otherwise.

    Callers reset ``failures`` to 0 after a success (a plain attribute: the hot path
    pays for no call). While open, ``is_open`` is True and callers skip the network. A background
    task calls ``probe`` every ``probe_interval`` seconds; when it returns True the
    breaker closes. Listeners hear ``(is_open, cause)`` on every transition.

    The probe task runs on the loop of the call that opened the breaker. When that
    loop ends (``asyncio.run()`` returning, a pytest-asyncio test finishing) the task
    dies with it; callers served from memory call ``keep_probing()``, which starts a
    new one on their own loop. Only the newest probe task probes: an older one still
    alive on another loop stops at its next turn.
    """

    def __init__(
        self,
        probe: Callable[[], Awaitable[bool]],
        recover: Callable[[], Awaitable[bool]],
        *,
        failure_threshold: int = 3,
        probe_interval: float = 1.0,
        task_context: Callable[[], contextvars.Context] = contextvars.copy_context,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold!r}")
        if probe_interval <= 0:
            raise ValueError(f"probe_interval must be positive, got {probe_interval!r}")
        self.is_open = False
        self.blocks_writes = False
        self.failures = 0
        self.times_opened = 0
        self.failure_threshold = failure_threshold
        self.probe_interval = probe_interval
        self._probe = probe
        self._recover = recover
        self._task_context = task_context
        self._prober: asyncio.Task[None] | None = None
        self._listeners: list[StateListener] = []
        #: the loop a probe starts on when the breaker opens in a thread without one (a sync
        #: view's read in its caller's thread); None: such a thread has no way to probe
        self.loop_for_threads: Callable[[], asyncio.AbstractEventLoop] | None = None

    def add_listener(self, listener: StateListener) -> None:
        self._listeners.append(listener)

    def record_failure(self, cause: BaseException) -> None:
        self.failures += 1
        if self.failures >= self.failure_threshold:
            self.trip(cause)

    def trip(self, cause: BaseException | None) -> None:
        """Open now and start probing in the background (half-open goes back to open)."""
        self.blocks_writes = True
        if self.is_open:
            return
        self.is_open = True
        self.times_opened += 1
        logger.warning(
            "Redis unreachable (%s); serving from memory and probing every %.3gs",
            _describe(cause),
            self.probe_interval,
        )
        self._notify(cause)
        self._start_probing()

    def keep_probing(self) -> None:
        """Restart the probe on the running loop if its task died or its loop no longer runs.

        Called while the breaker is open by every operation served from memory (it costs
        a few attribute reads): without it a breaker opened under a loop that has since
        ended would stay open for good.
        """
        prober = self._prober
        if prober is not None and not prober.done() and prober.get_loop().is_running():
            return
        self.blocks_writes = True  # an interrupted recovery starts again from the open state
        self._start_probing()

    def _start_probing(self) -> None:
        # the probe outlives the call that tripped the breaker: it must not run in its context
        loop = asyncio._get_running_loop()
        if loop is None:
            if self.loop_for_threads is None:
                raise RuntimeError("no running event loop to probe Redis from")
            self.loop_for_threads().call_soon_threadsafe(self.keep_probing)
            return
        self._prober = self._task_context().run(loop.create_task, self._probe_until_closed())

    def _close(self) -> None:
        self.is_open = self.blocks_writes = False
        self.failures = 0
        logger.warning("Redis reachable again; cache back on Redis")
        self._notify(None)

    def _notify(self, cause: BaseException | None) -> None:
        for listener in self._listeners:
            listener(self.is_open, cause)

    async def _probe_until_closed(self) -> None:
        me = asyncio.current_task()
        while self.is_open and self._prober is me:
            await asyncio.sleep(self.probe_interval)
            if self._prober is not me:
                return  # superseded by a probe on another loop
            if not await self._probe() or self._prober is not me:
                continue
            self.blocks_writes = False
            if await self._recover():
                self._close()
            else:
                self.blocks_writes = True

    async def stop(self) -> None:
        """Cancel the background probe (used on close), whichever loop it runs on."""
        prober, self._prober = self._prober, None
        await cancel_anywhere(prober)


def _describe(cause: BaseException | None) -> str:
    if cause is None:
        return "no answer"
    return f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
