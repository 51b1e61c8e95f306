"""The operator's weekly business report: the week's figures, computed from the store.

A week is an ISO week (Monday 00:00 to the next Monday 00:00) in the report's time zone
(``admin.business_report.tz``), so "this week" is the operator's own. The figures:

- **revenue**: MRR at the week's end against its start (the end of the previous week), new and
  churned paying subscribers, payments, as defined in :mod:`signalmint.billing.analytics`
  (the same computation as the revenue page), one row per currency; plus sign-ups (accounts
  created, paying or not) and MRR at the end of each day;
- **deliveries** created in the week, by status now (sent, failed = dead, still queued,
  skipped) and by channel, and sent/failed per day;
- **data health** per automation: stale periods that overlap the week (and how much of the
  week they cover), and the rows its source rejected: the total so far by reason, and how many
  since the previous week's report (the counters are cumulative; each sent report keeps them);
- **top signals** of the week per automation, by score, each with its shortest measured outcome.

:func:`compute` reads everything in one call with a given ``now`` (tests pass a fixed clock).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from ..config import Settings
from ..errors import ConfigError
from ..records import Outcome, Signal
from ..store import Connection
from ..store.business import (
    DeliveryCounts,
    count_signals_between,
    delivery_counts,
    read_mark,
    signups_between,
    stale_periods_between,
    top_signals,
)
from ..store.health import StalePeriod
from ..store.outcomes import outcomes_by_signal
from ..store.revenue import load_revenue
from ..store.state import all_checkpoints, list_automations
from .analytics import Figures, RevenueData, mrr_at, revenue_report

__all__ = [
    "AutomationWeek",
    "BusinessWeek",
    "Week",
    "compute",
    "parse_week",
    "rejected_snapshot",
    "week_of",
]

_ISO_WEEK = re.compile(r"^\s*(\d{4})-?W(\d{2})\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Week:
    """An ISO week in a time zone; ``start`` and ``end`` are UTC moments."""

    year: int
    number: int
    tz: str
    start: datetime
    end: datetime

    @property
    def label(self) -> str:
        """``2026-W48``."""
        return f"{self.year}-W{self.number:02d}"

    def days(self) -> list[datetime]:
        """The eight day boundaries (local midnights, as UTC moments) from ``start`` to ``end``."""
        zone, first = ZoneInfo(self.tz), date.fromisocalendar(self.year, self.number, 1)
        return [_local_midnight(first + timedelta(days=i), zone) for i in range(8)]

    def previous(self) -> Week:
        return week_of(self.start - timedelta(days=3), self.tz)


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def _week(year: int, number: int, tz: str) -> Week:
    zone, first = ZoneInfo(tz), date.fromisocalendar(year, number, 1)
    return Week(year, number, tz, _local_midnight(first, zone), _local_midnight(first + timedelta(days=7), zone))


def week_of(moment: datetime, tz: str) -> Week:
    """The ISO week ``moment`` falls in, in ``tz``.

    >>> w = week_of(datetime(2026, 11, 29, 23, 30, tzinfo=UTC), "Europe/Paris")  # Monday 00:30 in Paris
    >>> w.label, w.start.isoformat(), w.end.isoformat()
    ('2026-W49', '2026-11-29T23:00:00+00:00', '2026-12-06T23:00:00+00:00')
    """
    year, number, _ = moment.astimezone(ZoneInfo(tz)).isocalendar()
    return _week(year, number, tz)


def parse_week(text: str, tz: str) -> Week:
    """``2026-W48`` (or ``2026W48``) as a :class:`Week`; a :class:`ConfigError` saying what to write otherwise.

    >>> parse_week("2026-W01", "UTC").start.date().isoformat()  # ISO week 1 holds the first Thursday
    '2025-12-29'
    """
    match = _ISO_WEEK.match(text)
    if match is None:
        raise ConfigError(f"{text!r} is not a week; write an ISO week such as 2026-W48")
    try:
        return _week(int(match.group(1)), int(match.group(2)), tz)
    except ValueError:
        raise ConfigError(f"{text!r}: {match.group(1)} has no week {match.group(2)}") from None


@dataclass(frozen=True, slots=True)
class AutomationWeek:
    """One automation's week: its data health and its top signals (with their outcomes)."""

    name: str
    title: str
    signals: int
    stale: tuple[StalePeriod, ...]
    stale_seconds: float  # of the week, covered by stale periods
    rejected: dict[str, int]  # reason -> rows, since the automation started
    rejected_new: int | None  # since the previous week's report (None: no report kept the count)
    top: tuple[tuple[Signal, Outcome | None], ...]


@dataclass(frozen=True, slots=True)
class BusinessWeek:
    week: Week
    generated_at: datetime
    currency: str  # the main (credit) currency: its row comes first in ``revenue``
    revenue: tuple[Figures, ...]  # per currency, over the week
    mrr_daily: tuple[tuple[int, ...], ...]  # per currency, MRR at the end of each day
    signups: int
    deliveries: DeliveryCounts
    automations: tuple[AutomationWeek, ...]
    complete: bool = True  # False when the week has not ended yet (a preview)
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def main(self) -> Figures:
        return self.revenue[0]

    @property
    def sent(self) -> int:
        return self.deliveries.by_status.get("sent", 0)

    @property
    def failed(self) -> int:
        return self.deliveries.by_status.get("dead", 0)

    @property
    def queued(self) -> int:
        return self.deliveries.by_status.get("pending", 0) + self.deliveries.by_status.get("sending", 0)


def _overlap(period: StalePeriod, start: datetime, end: datetime, now: datetime) -> float:
    last = min(period.ended_at or now, end)
    return max(0.0, (last - max(period.since, start)).total_seconds())


def compute(conn: Connection, settings: Settings, week: Week, now: datetime) -> BusinessWeek:
    """The week's figures as of ``now`` (a week still under way is cut at ``now``)."""
    top_n = settings.admin.business_report.top
    configured = {a.name: a.title or a.name for a in settings.automations}
    stored = {a.name: a.title or a.name for a in list_automations(conn, enabled_only=False)}
    names = list(configured) or sorted(stored)
    currency = settings.billing.currency
    end = min(week.end, now)
    if end <= week.start:
        raise ConfigError(f"{week.label} has not started yet (it starts {week.start.isoformat()})")
    data = load_revenue(conn, week.start, end, automations=names, now=now, credit_currency=currency)
    report = revenue_report(data, week.start, end)
    edges = [e for e in week.days() if e < end] + [end]
    mrr_daily = _mrr_by_day(data, edges[1:], report.currencies)
    counts = delivery_counts(conn, edges)
    checkpoints = all_checkpoints(conn)
    previous_mark = read_mark(conn, week.previous().label) or {}
    before = previous_mark.get("rejected")
    stale = stale_periods_between(conn, week.start, end)
    automations = []
    for name in names:
        signals = top_signals(conn, name, week.start, end, top_n)
        outcomes = outcomes_by_signal(conn, [s.id for s in signals if s.id is not None])
        periods = tuple(p for p in stale if p.automation == name)
        rejected = dict(checkpoints[name].rejected) if name in checkpoints else {}
        new = None
        if isinstance(before, dict):
            earlier = before.get(name, {})
            new = sum(rejected.values()) - sum(int(v) for v in earlier.values()) if isinstance(earlier, dict) else None
        automations.append(
            AutomationWeek(
                name=name,
                title=configured.get(name) or stored.get(name) or name,
                signals=count_signals_between(conn, name, week.start, end),
                stale=periods,
                stale_seconds=sum(_overlap(p, week.start, end, now) for p in periods),
                rejected=rejected,
                rejected_new=max(new, 0) if new is not None else None,
                top=tuple((s, _first(outcomes.get(s.id or 0))) for s in signals),
            )
        )
    return BusinessWeek(
        week=week,
        generated_at=now,
        currency=currency,
        revenue=report.period.total,
        mrr_daily=mrr_daily,
        signups=signups_between(conn, week.start, end),
        deliveries=counts,
        automations=tuple(automations),
        complete=now >= week.end,
    )


def _first(found: list[Outcome] | None) -> Outcome | None:
    return found[0] if found else None


def _mrr_by_day(data: RevenueData, edges: list[datetime], currencies: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
    """MRR at each of ``edges`` (the ends of the week's local days), per currency."""
    found = mrr_at(data, edges)
    return tuple(tuple(found.get(c, [0] * len(edges))) for c in currencies)


def rejected_snapshot(conn: Connection) -> dict[str, dict[str, int]]:
    """Every automation's rejected-row counters now (kept with a sent report, for the next one)."""
    return {name: dict(cp.rejected) for name, cp in all_checkpoints(conn).items()}
