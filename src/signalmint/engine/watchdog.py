"""The staleness watchdog: notices automations whose data stopped, tells the operator, and
announces recovery.

An automation is stale when no bar has arrived for ``stale_after`` of *open market time*:
the clock starts at the later of the last bar's arrival (or the engine's start) and the
opening of the current session, so nights, weekends and holidays never raise an alarm, and
a market that just opened gets a full ``stale_after`` before the first bar is owed.

Going stale opens a row in ``stale_periods`` (store/health.py), sets the automation's
status (``/healthz``, the ``signalmint_automation_stale`` gauge, the pages' "data delayed
since" banner) and sends an alert to every ``operator.alerts`` URL; the first bar after that
closes the period and sends a recovery alert. Alerts go through the subscribers' channel
classes, so the URLs work the same; a failed alert is logged and counted, never retried
into the engine's way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..delivery.channels.base import ChannelContext, Message
from ..errors import SignalmintError
from ..registry import channel_class, channel_kinds
from ..store.health import close_stale_period, open_stale_period, open_stale_periods
from ..store.outbox import Endpoint

if TYPE_CHECKING:
    from .runner import AutomationRunner, Engine

__all__ = ["OperatorAlerts", "Watchdog"]

log = logging.getLogger("signalmint.watchdog")


def _kind(url: str) -> str:
    """The channel kind of an operator alert URL, by the installed channels' ``url_prefix``."""
    return next(kind for kind in channel_kinds() if url.startswith(channel_class(kind).url_prefix))


class OperatorAlerts:
    """Sends the operator's alerts to every ``operator.alerts`` URL (their channels are built once)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.urls = list(settings.operator.alerts)
        self.sent = 0
        self.failed = 0
        self._context: ChannelContext | None = None
        self._channels: dict[str, Any] = {}

    def _channel(self, url: str) -> Any:
        from ..delivery.runner import channel_context
        from ..delivery.worker import default_channel_factory

        if self._context is None:
            self._context = channel_context(self.settings)
        if url not in self._channels:
            secret = self.settings.operator.webhook_secret
            endpoint = Endpoint(0, 0, _kind(url), url, (secret,) if secret else (), "active")
            self._channels[url] = default_channel_factory(endpoint, self._context)
        return self._channels[url]

    async def send(self, message: Message) -> int:
        """Send to every URL; how many took it. Failures are logged, never raised."""
        ok = 0
        for url in self.urls:
            try:
                await self._channel(url).send(message)
            except (SignalmintError, OSError) as exc:
                self.failed += 1
                log.warning("operator alert to %s failed: %s", url.split(":", 1)[0], exc)
            else:
                ok += 1
                self.sent += 1
        return ok

    async def close(self) -> None:
        context = self._context
        if context is not None:
            from ..delivery.channels import email, telegram

            for close in (email.close, telegram.close):  # the SMTP pool and the bot's client, if opened
                with contextlib.suppress(Exception):
                    await close(context)
            if context.http is not None:
                with contextlib.suppress(Exception):
                    await context.http.close()
        self._context = None
        self._channels.clear()


def _hhmm(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def _message(runner: AutomationRunner, kind: str, now: datetime, since: datetime) -> Message:
    name, status = runner.config.name, runner.status
    last_bar = status.cursor.isoformat() if status.cursor else None
    if kind == "stale":
        subject = f"[signalmint] {name}: data delayed since {_hhmm(since)}"
        text = (
            f"No bar has reached the automation {name} since {_hhmm(since)} "
            f"(limit {runner.guard_limit()}). Subscribers see a 'data delayed' banner; "
            "a recovery message follows when bars come again."
        )
    else:
        subject = f"[signalmint] {name}: data flowing again"
        text = f"Bars reach the automation {name} again (delayed from {_hhmm(since)} to {_hhmm(now)})."
    payload = {  # the webhook envelope (type, version, timestamp, data) subscribers' hooks get too
        "type": f"automation.{kind}",
        "version": 1,
        "timestamp": now.isoformat(),
        "data": {"automation": name, "since": since.isoformat(), "at": now.isoformat(), "last_bar": last_bar},
    }
    stamp = int(since.timestamp())
    return Message(f"op-{kind}-{name}-{stamp}", subject, text, payload, now)


class Watchdog:
    """Checks every automation's freshness (``check``), raising and clearing staleness."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self.clock = clock
        self.alerts = OperatorAlerts(engine.settings)
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
            await self.alerts.send(_message(runner, "stale", now, since))
        elif not stale and status.stale_since is not None and status.last_arrival is not None:
            if status.last_arrival <= status.stale_since:
                return  # not stale any more only because the market closed: wait for a bar
            since = status.stale_since
            status.stale_since = None
            metrics.stale.labels(name).set(0)
            await self.engine.db.write(close_stale_period, name, now)
            log.info("%s: recovered, bars arrive again", name)
            await self.alerts.send(_message(runner, "recovered", now, since))

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
