"""Metering API calls against monthly quotas without a database write per request.

Counts gather in memory and are flushed to the ``usage`` table every second
(and at shutdown). The quota check adds what is pending to what is stored, so
one process never lets a subscriber past the quota; several processes (``shared``:
web replicas on PostgreSQL, which re-read what is stored after every flush) may each
let a call or two through in the second before their flushes meet.

Overage calls that the payment provider bills (``metered``) become meter events in the
flush's transaction (:func:`signalmint.billing.metering.record_overage`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from ..store import Connection, Database
from ..store.usage import add_usage, get_usage
from .metering import record_overage

__all__ = ["UsageMeter", "month_of"]

log = logging.getLogger("signalmint.usage")


def month_of(at: datetime) -> str:
    """The calendar month (UTC) a call counts in.

    >>> month_of(datetime(2026, 11, 21, tzinfo=UTC))
    '2026-11'
    """
    at = at.astimezone(UTC)
    return f"{at.year:04d}-{at.month:02d}"


def _store(
    conn: Connection,
    counts: dict[tuple[int, str], tuple[int, int]],
    metered: dict[tuple[int, str], int],
    now: datetime,
    event_name: str,
) -> None:
    add_usage(conn, counts, now)
    for (subscriber_id, month), calls in metered.items():
        record_overage(conn, subscriber_id, calls, month, now, event_name=event_name)


class UsageMeter:
    def __init__(
        self,
        db: Database,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        meter_event: str = "api_overage",
        shared: bool = False,
    ) -> None:
        """``shared``: other processes count calls too (web replicas on PostgreSQL), so what is
        stored is read again after every flush instead of once: a quota spent on one replica
        is enforced on the others within about two flush periods."""
        self.db = db
        self.shared = shared
        self.clock = clock
        self.meter_event = meter_event
        self._lock = threading.Lock()
        self._stored: dict[tuple[int, str], int] = {}
        self._pending: dict[tuple[int, str], tuple[int, int]] = {}
        self._metered: dict[tuple[int, str], int] = {}

    def used(self, subscriber_id: int, month: str) -> int:
        """Calls this month so far: stored plus pending."""
        key = (subscriber_id, month)
        with self._lock:
            stored = self._stored.get(key)
            if stored is not None:  # the usual case: one lock, no read
                return stored + self._pending.get(key, (0, 0))[0]
        stored = self.db.read_sync(get_usage, subscriber_id, month)[0]
        with self._lock:
            stored = self._stored.setdefault(key, stored)
            return stored + self._pending.get(key, (0, 0))[0]

    def record(self, subscriber_id: int, month: str, *, overage: bool, metered: bool = False) -> None:
        """Count one call; ``metered``: an overage call the payment provider bills (a meter event)."""
        key = (subscriber_id, month)
        with self._lock:
            calls, over = self._pending.get(key, (0, 0))
            self._pending[key] = (calls + 1, over + int(overage))
            if metered and overage:
                self._metered[key] = self._metered.get(key, 0) + 1

    async def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            metered, self._metered = self._metered, {}
        if not pending:
            self._forget_stored()
            return
        try:
            await self.db.write(_store, pending, metered, self.clock(), self.meter_event)
        except Exception:
            log.exception("could not store API usage; keeping it for the next flush")
            with self._lock:
                for key, (calls, over) in pending.items():
                    c, o = self._pending.get(key, (0, 0))
                    self._pending[key] = (c + calls, o + over)
                for key, n in metered.items():
                    self._metered[key] = self._metered.get(key, 0) + n
            return
        with self._lock:
            for key, (calls, _) in pending.items():
                if key in self._stored:
                    self._stored[key] += calls
        self._forget_stored()

    def _forget_stored(self) -> None:
        if self.shared:  # read again: the other replicas' flushes are in the store by now
            with self._lock:
                self._stored.clear()

    async def run(self, every: float = 1.0) -> None:
        try:
            while True:
                await asyncio.sleep(every)
                await self.flush()
        finally:
            await self.flush()
