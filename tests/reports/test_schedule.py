"""Schedules and periods across daylight-saving changes and time zones, with a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from signalmint.config.reports import ReportConfig, due_periods, parse_period, period_before, runs_between


def spec(**values: Any) -> ReportConfig:
    return ReportConfig.model_validate({"name": "r", "schedule": "0 8 * * MON", **values})


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_a_weekly_run_keeps_its_wall_clock_time_across_the_autumn_change() -> None:
    berlin = spec(timezone="Europe/Berlin", period="week", catch_up=3)
    runs = runs_between(berlin, utc(2026, 11, 2, 12), 3)
    # Mondays 08:00 in Berlin: summer time (UTC+2) on Oct 19, winter time (UTC+1) after Oct 25
    assert runs == [utc(2026, 10, 19, 6), utc(2026, 10, 26, 7), utc(2026, 11, 2, 7)]
    keys = [period_before(berlin, r).key for r in runs]
    assert keys == ["2026-W42", "2026-W43", "2026-W44"]
    w43 = period_before(berlin, runs[1])  # the week the clocks went back has 169 hours
    assert (w43.start, w43.end) == (utc(2026, 10, 18, 22), utc(2026, 10, 25, 23))
    assert w43.end - w43.start == timedelta(hours=169)


def test_a_daily_period_has_23_and_25_hours_on_the_change_days() -> None:
    york = spec(timezone="America/New_York", period="day", schedule="30 6 * * *")
    spring = parse_period(york, "2026-03-08")
    autumn = parse_period(york, "2026-11-01")
    assert spring.end - spring.start == timedelta(hours=23)
    assert autumn.end - autumn.start == timedelta(hours=25)
    assert spring.start == utc(2026, 3, 8, 5) and autumn.end == utc(2026, 11, 2, 5)


def test_a_run_in_the_skipped_hour_happens_once_an_hour_late_and_one_in_the_repeated_hour_once() -> None:
    york = spec(timezone="America/New_York", period="day", schedule="30 2 * * *", catch_up=3)
    runs = runs_between(york, utc(2026, 3, 9, 12), 3)
    # 02:30 does not exist on Mar 8: that run happens at 03:30 EDT = 07:30 UTC (02:30 EST)
    assert runs == [utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7, 30), utc(2026, 3, 9, 6, 30)]
    assert [period_before(york, r).key for r in runs] == ["2026-03-06", "2026-03-07", "2026-03-08"]
    york = spec(timezone="America/New_York", period="day", schedule="30 1 * * *", catch_up=3)
    runs = runs_between(york, utc(2026, 11, 2, 12), 3)
    # 01:30 happens twice on Nov 1: the run happens the first time only (EDT, 05:30 UTC)
    assert runs == [utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]


def test_one_instant_falls_in_different_days_in_different_zones() -> None:
    now = utc(2026, 12, 1, 12)
    tokyo = spec(timezone="Asia/Tokyo", period="day", schedule="0 7 * * *", catch_up=1)
    la = spec(timezone="America/Los_Angeles", period="day", schedule="0 7 * * *", catch_up=1)
    # 12:00 UTC is 21:00 in Tokyo (today's 07:00 run rendered Nov 30) and 04:00 in Los Angeles
    # (today's run still ahead: yesterday's rendered Nov 29)
    assert [p.key for p in due_periods(tokyo, now, set())] == ["2026-11-30"]
    assert [p.key for p in due_periods(la, now, set())] == ["2026-11-29"]
    (tokyo_day,) = due_periods(tokyo, now, set())
    assert tokyo_day.start == utc(2026, 11, 29, 15)  # midnight in Tokyo


def test_due_periods_skip_stored_ones_and_catch_up_a_bounded_number() -> None:
    weekly = spec(period="week", catch_up=4)
    now = utc(2026, 11, 30, 8)  # a run exactly now counts
    assert [p.key for p in due_periods(weekly, now, set())] == ["2026-W45", "2026-W46", "2026-W47", "2026-W48"]
    assert [p.key for p in due_periods(weekly, now, {"2026-W46", "2026-W48"})] == ["2026-W45", "2026-W47"]
    assert [p.key for p in due_periods(weekly, now - timedelta(seconds=1), set())][-1] == "2026-W47"


def test_months_and_runs() -> None:
    monthly = spec(period="month", schedule="0 6 1 * *", timezone="Europe/London", catch_up=1)
    (october,) = due_periods(monthly, utc(2026, 11, 1, 7), set())
    assert october.key == "2026-10" and october.start == utc(2026, 9, 30, 23) and october.end == utc(2026, 11, 1)
    twice = spec(period="run", schedule="0 9,17 * * *", timezone="Europe/Paris", catch_up=2)
    found = due_periods(twice, utc(2026, 12, 1, 17), set())
    assert [p.key for p in found] == ["2026-12-01T09:00", "2026-12-01T17:00"]
    assert (found[1].start, found[1].end) == (utc(2026, 12, 1, 8), utc(2026, 12, 1, 16))
    assert parse_period(twice, "2026-12-01T17:00") == found[1]
    with pytest.raises(ValueError, match="not a run of the schedule"):
        parse_period(twice, "2026-12-01T12:00")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"schedule": "every monday"}, "not a five-field cron expression"),
        ({"schedule": "0 8 * * * *"}, "not a five-field cron expression"),
        ({"timezone": "Mars/Olympus"}, "not an IANA time zone"),
        ({"period": "year"}, "Input should be 'day', 'week', 'month' or 'run'"),
        ({"sample": "the best one"}, "write first, none or a period key"),
    ],
)
def test_bad_definitions_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spec(**values)
