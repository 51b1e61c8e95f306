"""Waking idle delivery workers the moment due outbox rows commit.

An idle worker waits on an :class:`asyncio.Event` for at most ``delivery.poll``, then looks for
due rows anyway. Whatever sets the event makes it claim at once:

- on PostgreSQL, :class:`OutboxListener`: one ``LISTEN`` connection per worker process on the
  schema's outbox channel, which the fan-out's transaction notifies when it writes rows due now
  (:func:`~signalmint.store.notify.notify_outbox`; PostgreSQL delivers it only once that
  transaction committed, so the rows are there to claim);
- in the embedded single process, the engine's own commits (``serve`` wires
  ``engine.listeners`` to the event): no round trip at all, on SQLite too.

The poll stays the fallback: for rows that become due later (a plan's delay, a retry, the end
of a grouping window or of quiet hours), for commits nobody announced, and while the listener
is disconnected. It reconnects with exponential backoff, and wakes the worker once listening
again (rows committed while it was away are claimed at once). Nothing is lost either way: the
outbox, not the notification, is the record.
"""

from __future__ import annotations

import asyncio
import logging

import psycopg

from ..store import Database
from ..store.listen import connect_outbox_listener, ping_listener
from ..store.notify import backoff_delay

__all__ = ["OutboxListener"]

log = logging.getLogger("signalmint.delivery")


class OutboxListener:
    """Sets ``wake`` on every outbox notification while :meth:`run` runs (PostgreSQL only)."""

    def __init__(self, db: Database, wake: asyncio.Event, *, ping_every: float = 15.0) -> None:
        self.db = db
        self.wake = wake
        self.ping_every = ping_every
        self.connects = 0  # successful connections so far (1 + reconnects)
        self.heard = 0  # notifications heard
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Listen until cancelled, reconnecting after every loss."""
        failures = 0
        while True:
            try:
                await self._listen()
                failures = 0
            except (psycopg.Error, OSError, TimeoutError) as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if self.connected.is_set() or failures == 0:
                    log.warning("outbox LISTEN connection lost (%s); the worker polls until it is back", reason)
                failures += 1
            except Exception:  # a bug must not end wake-ups for good: log it, start over
                log.exception("outbox LISTEN connection failed; the worker polls until it is back")
                failures += 1
            finally:
                self.connected.clear()
            await asyncio.sleep(backoff_delay(failures))

    async def _listen(self) -> None:
        conn, channel = await connect_outbox_listener(self.db.engine)
        async with conn:
            self.connects += 1
            if self.connects > 1:
                log.info("outbox LISTEN connection back")
            self.connected.set()
            self.wake.set()  # what committed while nobody listened is claimed now, not at the next poll
            while True:
                async for note in conn.notifies(timeout=self.ping_every):
                    if note.channel == channel:
                        self.heard += 1
                        self.wake.set()
                await asyncio.wait_for(ping_listener(conn), timeout=5)
