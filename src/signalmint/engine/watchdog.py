"""The staleness watchdog: notices automations whose data stopped, tells the operator, and
announces recovery.

An automation is stale when no bar has arrived for ``stale_after`` of *open market time*:
the clock starts at the later of the last bar's arrival (or the engine's start) and the
opening of the current session, so nights, weekends and holidays never raise an alarm, and
a market that just opened gets a full ``stale_after`` before the first bar is owed.

Going stale opens a row in ``stale_periods`` (store/health.py), sets the automation's
status (``/healthz``, the ``signalmint_automation_stale`` gauge, the pages' "data delayed
since" banner) and sends an alert to every ``operator.alerts`` URL; the first bar after that
closes the period and sends a recovery alert. The engine is handed the sender
(:class:`OperatorAlerts`; :mod:`signalmint.delivery.operator` sends through the subscribers'
channel classes, so the URLs work the same); a failed alert is logged and counted, never
retried into the engine's way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from ..store.health import close_stale_period, open_stale_period, open_stale_periods

if TYPE_CHECKING:
    from .runner import AutomationRunner, Engine

__all__ = ["OperatorAlerts", "Staleness", "Watchdog", "open_time_since"]

log = logging.getLogger("signalmint.watchdog")


@dataclass(frozen=True, slots=True)
class Staleness:
    """What the operator is told: automation ``automation`` went stale (``kind`` ``"stale"``) or
    has bars again (``"recovered"``); ``since`` is when its data was last fresh, ``at`` now."""

    kind: str
    automation: str
    since: datetime
    at: datetime
    last_bar: datetime | None
    limit: str  # the freshness limit in words (AutomationRunner.guard_limit)


class OperatorAlerts(Protocol):
    """Where the watchdog's news goes: :class:`signalmint.delivery.operator.OperatorChannels`
    sends it to every ``operator.alerts`` URL through the subscribers' channel classes."""

    async def send(self, notice: Staleness) -> int: ...

    async def close(self) -> None: ...


class _Silent:
    """No one to tell (an engine run without alerts): staleness is still recorded and shown."""

    async def send(self, notice: Staleness) -> int:
        return 0

    async def close(self) -> None:
        return None


def _notice(runner: AutomationRunner, kind: str, now: datetime, since: datetime) -> Staleness:
    return Staleness(kind, runner.config.name, since, now, runner.status.cursor, runner.guard_limit())


class Watchdog:
    """Checks every automation's freshness (``check``), raising and clearing staleness."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime], alerts: OperatorAlerts | None = None) -> None:
        self.engine = engine
        self.clock = clock
        self.alerts: OperatorAlerts = alerts if alerts is not None else _Silent()
        self._lock = asyncio.Lock()
        self._poke = asyncio.Event()

    async def load(self) -> None:
        """Periods left open by an earlier process: still stale until bars come."""
        names = list(self.engine.runners)
        found = await self.engine.db.read(open_stale_periods, names)
        for name, period in found.items():
            self.engine.runners[name].status.stale_since = period.since

    def poke(self) -> None:
        """A bar arrived for a stale automation: check now rather than at the next round."""
        self._poke.set()

    async def run(self, every: float) -> None:
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the staleness check failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), timeout=every)
            self._poke.clear()

    async def check(self) -> None:
        """Raise or clear staleness for every automation, as of the engine's clock."""
        async with self._lock:
            now = self.clock()
            for runner in self.engine.runners.values():
                await self._check(runner, now)

    async def _check(self, runner: AutomationRunner, now: datetime) -> None:
        status, name = runner.status, runner.config.name
        metrics = self.engine.metrics
        if status.cursor is not None:
            metrics.last_bar_age.labels(name).set(max((now - status.cursor).total_seconds(), 0.0))
        stale = runner.is_stale(now)
        if stale and status.stale_since is None:
            since = status.last_arrival or status.started_at or now
            status.stale_since = since
            metrics.stale.labels(name).set(1)
            await self.engine.db.write(open_stale_period, name, since, now, status.cursor)
            log.warning("%s: stale, no bar since %s", name, since.isoformat())
            await self.alerts.send(_notice(runner, "stale", now, since))
        elif not stale and status.stale_since is not None and status.last_arrival is not None:
            if status.last_arrival <= status.stale_since:
                return  # not stale any more only because the market closed: wait for a bar
            since = status.stale_since
            status.stale_since = None
            metrics.stale.labels(name).set(0)
            await self.engine.db.write(close_stale_period, name, now)
            log.info("%s: recovered, bars arrive again", name)
            await self.alerts.send(_notice(runner, "recovered", now, since))

    async def close(self) -> None:
        await self.alerts.close()


def open_time_since(runner: AutomationRunner, now: datetime) -> timedelta | None:
    """Open market time since the automation's data was last fresh (None: the market is closed)."""
    guard, status = runner.guard, runner.status
    if guard is None:
        return None
    start = guard.calendar.session_start(now)
    if start is None:
        return None
    reference = status.last_arrival or status.started_at or now
    return now - max(reference, start)
