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
        self._event = asyncio.Event()

    @property
    def poll_timeout(self) -> float:
        """How long a stream waits before it polls anyway: ``poll`` while the hub hears every
        commit, at most :data:`FALLBACK_POLL` otherwise."""
        return self.poll if self.live else min(self.poll, FALLBACK_POLL)

    def close(self) -> None:
        """The server is stopping: wake every stream so it can end now."""
        self.closed = True
        self.wake()

    def publish(self, signal_id: int) -> None:
        if signal_id > self.latest_id:
            self.latest_id = signal_id
        self.wake()

    def wake(self) -> None:
        """Wake every waiting stream (it re-reads the store from its own position)."""
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, after_id: int, timeout: float) -> None:
        """Return once a signal newer than ``after_id`` is published, or after ``timeout``."""
        if self.latest_id > after_id or self.closed:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
