"""In-process wake-ups for live feeds.

The engine calls :meth:`SignalHub.publish` after each commit; SSE streams
wait on it and then read the new signals from the store. On PostgreSQL each
web process also feeds its hub from ``LISTEN`` (:mod:`signalmint.web.listener`),
so streams wake at once whichever process committed. Streams also wake up on a
timeout and poll (:attr:`SignalHub.poll_timeout`): for signals released later by
a plan's delay, and for commits nobody announced (another process on SQLite,
or while the listener is reconnecting).
"""

from __future__ import annotations

import asyncio
import contextlib
import math

__all__ = ["FALLBACK_POLL", "SignalHub"]

# Seconds between polls while nothing announces commits of other processes.
FALLBACK_POLL = 0.5


class SignalHub:
    def __init__(self, poll: float = FALLBACK_POLL) -> None:
        self.latest_id = 0
        self.closed = False
        self.poll = poll
        # True while a LISTEN connection announces every commit (streams may poll less often).
        self.live = False
        # Counts wake-ups: a stream notes it before reading the store and waits for a change,
        # so a wake-up that lands while it reads is not lost.
        self.generation = 0
        self._event = asyncio.Event()
        self._timers: dict[float, asyncio.TimerHandle] = {}

    @property
    def poll_timeout(self) -> float:
        """How long a stream waits before it polls anyway: ``poll`` while the hub hears every
        commit, at most :data:`FALLBACK_POLL` otherwise."""
        return self.poll if self.live else min(self.poll, FALLBACK_POLL)

    def close(self) -> None:
        """The server is stopping: wake every stream so it can end now."""
        self.closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self.wake()

    def publish(self, signal_id: int) -> None:
        if signal_id > self.latest_id:
            self.latest_id = signal_id
        self.wake()

    def publish_later(self, signal_id: int, after: float, grain: float = 0.1) -> None:
        """Note ``signal_id`` now and wake streams ``after`` seconds from now, when they may show it
        (a stream releases a signal only once it has settled). Wake-ups are rounded up to ``grain``
        seconds and shared, so a burst of signals costs each stream a few reads, not one per signal."""
        if signal_id > self.latest_id:
            self.latest_id = signal_id
        loop = asyncio.get_running_loop()
        at = math.ceil((loop.time() + after) / grain) * grain
        if at not in self._timers:
            self._timers[at] = loop.call_at(at, self._timed_wake, at)

    def _timed_wake(self, at: float) -> None:
        self._timers.pop(at, None)
        self.wake()

    def wake(self) -> None:
        """Wake every waiting stream (it re-reads the store from its own position)."""
        self.generation += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, after_id: int, timeout: float) -> None:
        """Return once a signal newer than ``after_id`` is published, or after ``timeout``."""
        if self.latest_id > after_id or self.closed:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)

    async def wait_since(self, generation: int, timeout: float) -> None:
        """Return once the hub woke after ``generation`` was read (maybe already), or after ``timeout``."""
        if self.generation != generation or self.closed:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
