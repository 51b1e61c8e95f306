"""In-process wake-ups for live feeds.

The engine calls :meth:`SignalHub.publish` after each commit; SSE streams
wait on it and then read the new signals from the store. Streams also wake
up on a timeout and poll, so they see signals committed by other processes.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["SignalHub"]


class SignalHub:
    def __init__(self) -> None:
        self.latest_id = 0
        self.closed = False
        self._event = asyncio.Event()

    def close(self) -> None:
        """The server is stopping: wake every stream so it can end now."""
        self.closed = True
        event, self._event = self._event, asyncio.Event()
        event.set()

    def publish(self, signal_id: int) -> None:
        if signal_id > self.latest_id:
            self.latest_id = signal_id
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, after_id: int, timeout: float) -> None:
        """Return once a signal newer than ``after_id`` is published, or after ``timeout``."""
        if self.latest_id > after_id or self.closed:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
