"""What a report definition says (the ``reports:`` list under an automation) and when it is due.

A report covers a **period** in its own time zone: a ``day`` (local midnight to midnight, 23 or
25 hours across a daylight-saving change), an ISO ``week`` (Monday to Monday), a ``month``, or
``run``: the time between two runs of its schedule. Its **schedule** is a five-field cron
expression read on the wall clock of ``timezone``: each run renders the last period that had
ended by then (``0 8 * * MON`` with ``period: week`` renders last week every Monday at 08:00).

Wall-clock runs are read the way a person reads a calendar: a run inside the hour skipped in
spring happens at the same instant an hour late, a run inside the hour repeated in autumn
happens once (the first time). Each period has a **key** that names it in URLs and on the
command line: ``2026-11-30`` (day), ``2026-W48`` (week), ``2026-11`` (month) and
``2026-11-30T08:00`` (run, the local time of the run that ends it).

This module imports nothing of signalmint's configuration (``config.py`` imports it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "PERIOD_KINDS",
    "AudienceConfig",
    "ContentsConfig",
    "Period",
    "ReportConfig",
    "due_periods",
    "parse_period",
    "period_before",
    "period_containing",
    "runs_between",
]

PeriodKind = Literal["day", "week", "month", "run"]
PERIOD_KINDS: tuple[str, ...] = ("day", "week", "month", "run")
_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_EXAMPLES = {"day": "2026-11-30", "week": "2026-W48", "month": "2026-11", "run": "2026-11-30T08:00"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContentsConfig(_Strict):
    """What goes into a report; a number of 0 leaves its section out."""

    top_signals: int = Field(default=10, ge=0, le=100, description="the period's signals with the highest scores")
    outcomes: bool = Field(default=True, description="each top signal's outcome where measured (see Outcomes)")
    movers: int = Field(default=5, ge=0, le=50, description="keys whose price moved most over the period (bars)")
    charts: bool = Field(default=True, description="a chart of signals per day (and moves after them)")
    per_key: int = Field(default=12, ge=0, le=200, description="a table of the keys with most signals, one row each")
    track_record: bool = Field(default=True, description="the automation's hit rates up to the period's end")


class AudienceConfig(_Strict):
    """Who receives a report: subscribers of these plans; anyone else may buy it for ``price``."""

    plans: list[str] = Field(default_factory=list, description="plan ids whose subscribers receive it")
    price: int | None = Field(
        default=None, ge=1, description="what anyone else pays for one report, in minor units of credits "
        "(300 = 3.00 of billing.currency); unset: not for sale",
    )  # fmt: skip


class ReportConfig(_Strict):
    name: str = Field(pattern=_NAME, description="id in URLs and on the command line, e.g. weekly")
    title: str = Field(default="", description="shown on the report; unset: the automation's title and the period")
    schedule: str = Field(description='five-field cron expression on the time zone\'s wall clock, e.g. "0 8 * * MON"')
    timezone: str = Field(default="UTC", description="IANA time zone of the schedule and the periods")
    period: PeriodKind = Field(default="week", description="what each report covers: day, week, month or run")
    contents: ContentsConfig = Field(default_factory=ContentsConfig)
    audience: AudienceConfig = Field(default_factory=AudienceConfig)
    sample: str = Field(
        default="first",
        description="which report is public for marketing: first (the oldest stored), none, or a period key",
    )
    catch_up: int = Field(
        default=4, ge=1, le=120, description="after downtime (or at the first start), render at most this many "
        "of the most recent periods that are missing",
    )  # fmt: skip

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        value = " ".join(value.split())
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f'{value!r} is not a five-field cron expression; write e.g. "0 8 * * MON"')
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone; write e.g. Europe/Berlin or UTC") from None
        return value

    @field_validator("sample")
    @classmethod
    def _sample(cls, value: str) -> str:
        if value not in {"first", "none"} and not re.fullmatch(r"\d{4}-[0-9WT:-]{2,12}", value):
            raise ValueError(f"{value!r}: write first, none or a period key such as 2026-W48")
        return value

    @property
    def period_example(self) -> str:
        return _EXAMPLES[self.period]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def display_title(self, automation_title: str) -> str:
        words = {"day": "daily", "week": "weekly", "month": "monthly", "run": "scheduled"}
        return self.title or f"{automation_title}: {words[self.period]} report"


@dataclass(frozen=True, slots=True)
class Period:
    """One period a report covers: ``[start, end)`` in UTC, named by ``key``."""

    key: str
    start: datetime
    end: datetime


def _local(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), zone).astimezone(UTC)


def _run_period(spec: ReportConfig, run_local: datetime) -> Period:
    """The period ending at the run at naive local ``run_local``: since the run before it."""
    before = croniter(spec.schedule, run_local).get_prev(datetime)
    return Period(
        run_local.strftime("%Y-%m-%dT%H:%M"),
        before.replace(tzinfo=spec.zone).astimezone(UTC),
        run_local.replace(tzinfo=spec.zone).astimezone(UTC),
    )


def period_containing(kind: str, zone: ZoneInfo, moment: datetime) -> Period:
    """The day, ISO week or month (not ``run``) in ``zone`` that contains the aware ``moment``.

    >>> p = period_containing("day", ZoneInfo("Europe/Berlin"), datetime(2026, 10, 25, 12, tzinfo=UTC))
    >>> p.key, p.end - p.start  # the day the clocks go back has 25 hours
    ('2026-10-25', datetime.timedelta(days=1, seconds=3600))
    >>> period_containing("week", ZoneInfo("UTC"), datetime(2026, 12, 2, tzinfo=UTC)).key
    '2026-W49'
    """
    day = moment.astimezone(zone).date()
    if kind == "day":
        return Period(day.isoformat(), _local(day, zone), _local(day + timedelta(days=1), zone))
    if kind == "week":
        monday = day - timedelta(days=day.weekday())
        year, week, _ = monday.isocalendar()
        return Period(f"{year}-W{week:02d}", _local(monday, zone), _local(monday + timedelta(days=7), zone))
    if kind == "month":
        first = day.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        return Period(f"{first:%Y-%m}", _local(first, zone), _local(following, zone))
    raise ValueError(f"no calendar period {kind!r}")


def period_before(spec: ReportConfig, run_at: datetime) -> Period:
    """The period a run at the aware ``run_at`` renders: the last one that had ended by then."""
    if spec.period == "run":
        return _run_period(spec, run_at.astimezone(spec.zone).replace(tzinfo=None))
    current = period_containing(spec.period, spec.zone, run_at)
    return period_containing(spec.period, spec.zone, current.start - timedelta(microseconds=1))


def runs_between(spec: ReportConfig, now: datetime, count: int) -> list[datetime]:
    """The last ``count`` runs of the schedule at or before the aware ``now`` (UTC, oldest first)."""
    zone = spec.zone
    wall = now.astimezone(zone).replace(tzinfo=None)
    it = croniter(spec.schedule, wall + timedelta(seconds=1))  # a run exactly at now counts
    runs: list[datetime] = []
    for _ in range(count * 2 + 2):  # a few extra: a run in the repeated autumn hour may still lie ahead
        local = it.get_prev(datetime)
        at = local.replace(tzinfo=zone).astimezone(UTC)
        if at <= now and at not in runs:
            runs.append(at)
        if len(runs) == count:
            break
    return sorted(runs)


def due_periods(spec: ReportConfig, now: datetime, have: set[str]) -> list[Period]:
    """The periods of the last ``catch_up`` runs up to ``now`` not among the stored keys ``have``,
    oldest first, each once."""
    out: dict[str, Period] = {}
    for run in runs_between(spec, now, spec.catch_up):
        period = period_before(spec, run)
        if period.key not in have and period.end <= now:
            out.setdefault(period.key, period)
    return list(out.values())


def parse_period(spec: ReportConfig, text: str) -> Period:
    """A period key typed by a person, for this report's kind; ValueError says what to write."""
    text = text.strip()
    zone = spec.zone
    want = (
        f"report {spec.name!r} covers {'runs' if spec.period == 'run' else spec.period + 's'}: write e.g. "
        + (_EXAMPLES[spec.period])
    )
    try:
        if spec.period == "day" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return period_containing("day", zone, _local(date.fromisoformat(text), zone))
        if spec.period == "week" and (m := re.fullmatch(r"(\d{4})-W(\d{2})", text)):
            monday = date.fromisocalendar(int(m.group(1)), int(m.group(2)), 1)
            return period_containing("week", zone, _local(monday, zone))
        if spec.period == "month" and re.fullmatch(r"\d{4}-\d{2}", text):
            return period_containing("month", zone, _local(date.fromisoformat(text + "-01"), zone))
        if spec.period == "run" and re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}", text):
            local = datetime.fromisoformat(text)
            if not croniter.match(spec.schedule, local):
                raise ValueError(f"{text} is not a run of the schedule {spec.schedule!r} ({spec.timezone})")
            return _run_period(spec, local)
    except ValueError as exc:
        if "schedule" in str(exc):
            raise
        raise ValueError(f"{text!r} is not a valid period; {want}") from None
    raise ValueError(f"{text!r} is not a period key of this report; {want}")
