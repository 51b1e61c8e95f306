"""What a report says, read from the store: :func:`gather` makes a :class:`ReportData` that
both renderers (HTML and PDF) draw from, so the two always agree."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..config.reports import Period, ReportConfig
from ..engine.outcomes import as_of, summarize
from ..records import Outcome, OutcomeSummary, ReportSignal, Signal
from ..store import Connection
from ..store.outcomes import list_outcomes, outcomes_by_signal
from ..store.reports import price_moves, signals_between

__all__ = ["KeyRow", "Mover", "ReportData", "TopRow", "gather"]

MOST_SIGNALS = 200_000  # read at most this many signals of one period


@dataclass(frozen=True, slots=True)
class TopRow:
    signal: Signal
    outcomes: dict[int, Outcome]  # by horizon; empty when not measured (or not asked for)
    details: tuple[tuple[str, str], ...]  # the first few numbers of its payload, formatted


@dataclass(frozen=True, slots=True)
class Mover:
    key: str
    first: float
    last: float
    change: float  # last / first - 1
    signals: int


@dataclass(frozen=True, slots=True)
class KeyRow:
    key: str
    signals: int
    best: float  # highest score
    mean: float
    last: datetime


@dataclass(frozen=True, slots=True)
class ReportData:
    automation: str
    automation_title: str
    spec: ReportConfig
    title: str
    period: Period
    signal_count: int
    key_count: int
    top: list[TopRow]
    movers: list[Mover]
    per_key: list[KeyRow]
    daily: list[tuple[str, int]]  # (local day, signals), every day of the period
    period_outcomes: list[OutcomeSummary]  # the period's signals' outcomes, per horizon
    track: list[OutcomeSummary]  # every outcome known at the period's end, per horizon
    generated: datetime
    notes: list[str] = field(default_factory=list)

    @property
    def summary(self) -> tuple[ReportSignal, ...]:
        return tuple(
            ReportSignal(r.signal.id or 0, r.signal.key, r.signal.time, r.signal.kind, r.signal.score) for r in self.top
        )

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.spec.zone)

    @property
    def period_label(self) -> str:
        """``Nov 23 – Nov 29, 2026 (Europe/Berlin)``: the period in its own time zone, end included."""
        start = self.local(self.period.start)
        last = self.local(self.period.end - timedelta(microseconds=1))
        if self.spec.period == "run":
            return f"{start:%b %d, %Y %H:%M} – {self.local(self.period.end):%b %d, %Y %H:%M} ({self.spec.timezone})"
        if start.date() == last.date():
            return f"{start:%A, %b %d, %Y} ({self.spec.timezone})"
        return f"{start:%b %d} – {last:%b %d, %Y} ({self.spec.timezone})"


def _number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _details(payload: dict[str, Any] | Any, most: int = 3) -> tuple[tuple[str, str], ...]:
    out = []
    for name, value in dict(payload).items():
        shown = _number(value)
        if shown is not None:
            out.append((name.replace("_", " "), shown))
        if len(out) == most:
            break
    return tuple(out)


def gather(
    conn: Connection, automation: str, automation_title: str, spec: ReportConfig, period: Period, now: datetime
) -> ReportData:
    """Everything the report on ``period`` shows, read in one go (a read connection is enough)."""
    contents = spec.contents
    found = signals_between(conn, automation, period.start, period.end, MOST_SIGNALS)
    notes = (
        [f"Only the first {MOST_SIGNALS:,} signals of the period are counted."] if len(found) >= MOST_SIGNALS else []
    )
    ranked = sorted(found, key=lambda s: (-(s.score if math.isfinite(s.score) else -math.inf), s.time, s.id or 0))
    top_signals = ranked[: contents.top_signals]
    measured: dict[int, list[Outcome]] = {}
    if contents.outcomes and found:
        measured = outcomes_by_signal(conn, [s.id for s in found if s.id is not None])
    visible_until = period.end  # nothing measured after the period ends goes into it: a re-render agrees
    top = [
        TopRow(
            s,
            {o.horizon: o for o in as_of(measured.get(s.id or 0, []), visible_until)} if contents.outcomes else {},
            _details(s.payload),
        )
        for s in top_signals
    ]
    by_key: dict[str, list[Signal]] = {}
    for s in found:
        by_key.setdefault(s.key, []).append(s)
    per_key = [
        KeyRow(
            key,
            len(rows),
            max(r.score for r in rows),
            sum(r.score for r in rows) / len(rows),
            max(r.time for r in rows),
        )
        for key, rows in sorted(by_key.items(), key=lambda kv: (-len(kv[1]), kv[0]))[: contents.per_key]
    ]
    movers: list[Mover] = []
    if contents.movers:
        for key, (first, last) in price_moves(conn, automation, period.start, period.end).items():
            if first > 0 and math.isfinite(last):
                movers.append(Mover(key, first, last, last / first - 1.0, len(by_key.get(key, []))))
        movers.sort(key=lambda m: (-abs(m.change), m.key))
        movers = movers[: contents.movers]
    daily: dict[str, int] = {}
    day = period.start.astimezone(spec.zone).date()
    last_day = (period.end - timedelta(microseconds=1)).astimezone(spec.zone).date()
    while day <= last_day and len(daily) < 400:
        daily[day.isoformat()] = 0
        day += timedelta(days=1)
    for s in found:
        label = s.time.astimezone(spec.zone).date().isoformat()
        if label in daily:
            daily[label] += 1
    period_outcomes: list[OutcomeSummary] = []
    if contents.outcomes:
        period_outcomes = summarize(o for rows in measured.values() for o in as_of(rows, visible_until))
    track = summarize(as_of(list_outcomes(conn, automation), visible_until)) if contents.track_record else []
    return ReportData(
        automation=automation,
        automation_title=automation_title,
        spec=spec,
        title=spec.display_title(automation_title),
        period=period,
        signal_count=len(found),
        key_count=len(by_key),
        top=top,
        movers=movers,
        per_key=per_key,
        daily=list(daily.items()),
        period_outcomes=period_outcomes,
        track=track,
        generated=now,
        notes=notes,
    )
