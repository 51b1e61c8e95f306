"""The report step: for every report definition, render each due period once and store it.

:meth:`ReportScheduler.step` asks, per definition, which periods are due at the clock's
``now`` (:func:`~signalmint.config.reports.due_periods`, minus those stored), reads the data,
renders it (HTML, email HTML, PDF) on a worker thread, and stores it with
``ON CONFLICT DO NOTHING`` on (automation, report, period), enqueuing its deliveries in the same
transaction (:func:`~signalmint.reports.publish.publish`). A process killed anywhere in
between stored nothing for that period, so the next step renders it again; once stored, a
period is never rendered again. Before rendering, a step takes the period's lease
(:func:`~signalmint.store.report_outbox.lease_rendering`, :data:`RENDER_LEASE`): a second engine
leaves a period alone while the first renders it. A lease outlived (a rendering slower than
it, a process killed while holding it) only costs a second rendering: the unique key still
keeps one.

The clock and a fault-injection ``hook`` are passed in: tests fix the time and stop the process
at a chosen point (``due``, ``rendering``, ``rendered``, ``stored``) to ``kill -9`` it there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from ..config import AutomationConfig, Settings
from ..config.reports import Period, ReportConfig, due_periods
from ..errors import ConfigError
from ..records import Report
from ..store import Connection, Database
from ..store.report_outbox import lease_rendering, release_rendering
from ..store.reports import period_keys
from .build import gather
from .publish import publish
from .render import render_report

__all__ = ["Due", "ReportScheduler", "definitions", "find_definition", "render_period", "report_url", "reports_due"]

log = logging.getLogger("signalmint.reports")
#: How long a step may render one period before another engine may take it over.
RENDER_LEASE = timedelta(minutes=3)
Hook = Callable[[str, str, str, str], None]  # (point, automation, report, period key)


@dataclass(frozen=True, slots=True)
class Due:
    """A period of one report definition that is due and not stored yet."""

    automation: AutomationConfig
    spec: ReportConfig
    period: Period


def definitions(settings: Settings) -> list[tuple[AutomationConfig, ReportConfig]]:
    """Every report definition of every enabled automation."""
    return [(a, r) for a in settings.automations if a.enabled for r in a.reports]


def find_definition(settings: Settings, automation: str, report: str | None) -> tuple[AutomationConfig, ReportConfig]:
    """The definition named on a command line or in a URL; a ConfigError says what exists."""
    names = [a.name for a in settings.automations]
    if automation not in names:
        raise ConfigError(f"no automation {automation!r}", hint=f"the config has {', '.join(names) or 'none'}")
    chosen = settings.automation(automation)
    reports = [r.name for r in chosen.reports]
    if not reports:
        raise ConfigError(
            f"automation {automation!r} defines no reports", hint="add a `reports:` list to it (README, Reports)"
        )
    if report is None:
        if len(reports) > 1:
            raise ConfigError(f"automation {automation!r} has several reports", hint=f"pick one: {', '.join(reports)}")
        report = reports[0]
    for spec in chosen.reports:
        if spec.name == report:
            return chosen, spec
    raise ConfigError(f"automation {automation!r} has no report {report!r}", hint=f"it has {', '.join(reports)}")


def reports_due(conn: Connection, settings: Settings, now: datetime) -> list[Due]:
    """The periods to render at ``now``, every definition's, oldest first within each."""
    out = []
    for automation, spec in definitions(settings):
        have = period_keys(conn, automation.name, spec.name)
        out += [Due(automation, spec, p) for p in due_periods(spec, now, have)]
    return out


def report_url(settings: Settings, automation: str, name: str, period_key: str) -> str:
    """The public address of one report's page."""
    path = f"/automations/{quote(automation)}/reports/{quote(name)}/{quote(period_key)}"
    return settings.base_url.rstrip("/") + path


def render_period(
    conn: Connection,
    settings: Settings,
    automation: AutomationConfig,
    spec: ReportConfig,
    period: Period,
    now: datetime,
) -> Report:
    """Read and render one period (nothing stored): the step's work, and the command line's."""
    data = gather(conn, automation.name, automation.display_title, spec, period, now)
    link = report_url(settings, automation.name, spec.name, period.key)
    return render_report(data, site_title=settings.web.title, link=link)


class ReportScheduler:
    """Renders due report periods; ``step()`` once, or ``run(stop)`` every ``every`` seconds."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        hook: Hook | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock
        self.hook = hook
        self.rendered = 0  # renderings this process made (a lost race included)
        self.owner = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"

    def _at(self, point: str, due: Due) -> None:
        if self.hook is not None:
            self.hook(point, due.automation.name, due.spec.name, due.period.key)

    def _render(self, due: Due, now: datetime) -> Report:
        def work(conn: Connection) -> Report:
            data = gather(conn, due.automation.name, due.automation.display_title, due.spec, due.period, now)
            self._at("rendering", due)  # the data read, the HTML and the PDF not made yet
            link = report_url(self.settings, due.automation.name, due.spec.name, due.period.key)
            return render_report(data, site_title=self.settings.web.title, link=link)

        report = self.db.read_sync(work)
        self.rendered += 1
        return report

    async def step(self) -> list[Report]:
        """Render and store every due period; the reports this step stored."""
        now = self.clock()
        stored: list[Report] = []
        for due in await self.db.read(reports_due, self.settings, now):
            names = (due.automation.name, due.spec.name, due.period.key)
            if not await self.db.write(lease_rendering, *names, self.owner, now, RENDER_LEASE):
                log.info("report %s/%s %s is being rendered elsewhere", *names)
                continue
            try:
                self._at("due", due)
                report = await asyncio.to_thread(self._render, due, now)
                self._at("rendered", due)
                kept, ours, queued = await self.db.write(publish, self.settings, report, self.clock())
                self._at("stored", due)
            finally:
                await self.db.write(release_rendering, *names, self.owner)
            if ours:
                stored.append(kept)
                log.info(
                    "report %s/%s %s stored (%d bytes of PDF), %d deliveries queued",
                    kept.automation,
                    kept.name,
                    kept.period_key,
                    kept.pdf_size,
                    queued,
                )
        return stored

    async def run(self, stop: asyncio.Event, every: float = 60.0) -> None:
        """Step until ``stop`` is set; a failing step is logged and retried at the next one."""
        while not stop.is_set():
            try:
                await self.step()
            except Exception:  # a report is never worth stopping the engine for
                log.exception("rendering reports failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every)
