"""The US stock market calendar: regular hours, NYSE holidays and early closes.

The regular session is 09:30-16:00 America/New_York on weekdays (the zone's
own DST rules, so 14:30-21:00 UTC in winter and 13:30-20:00 UTC in summer).
NYSE holidays and 13:00 early closes are a fixed list for 2026 and 2027 (from
the exchange's published calendar); outside those years every weekday counts
as a trading day, so extend :data:`HOLIDAYS` before then.

A staleness guard asks :func:`market_open` before alarming: no bar is expected
overnight, at weekends or on a holiday.

>>> from datetime import datetime, UTC
>>> market_open(datetime(2026, 12, 7, 15, 0, tzinfo=UTC))   # Monday 10:00 New York
True
>>> market_open(datetime(2026, 12, 25, 15, 0, tzinfo=UTC))  # Christmas
False
>>> next_open(datetime(2026, 12, 5, 12, 0, tzinfo=UTC))     # Saturday -> Monday 09:30 ET
datetime.datetime(2026, 12, 7, 14, 30, tzinfo=datetime.timezone.utc)
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = [
    "EARLY_CLOSES",
    "HOLIDAYS",
    "NEW_YORK",
    "market_minutes_start",
    "market_open",
    "next_open",
    "session",
]

NEW_YORK = ZoneInfo("America/New_York")
OPEN, CLOSE, EARLY_CLOSE = time(9, 30), time(16, 0), time(13, 0)

#: NYSE full-day closures (observed dates).
HOLIDAYS: frozenset[date] = frozenset(
    {
        date(2026, 1, 1),  # New Year's Day
        date(2026, 1, 19),  # Martin Luther King Jr. Day
        date(2026, 2, 16),  # Washington's Birthday
        date(2026, 4, 3),  # Good Friday
        date(2026, 5, 25),  # Memorial Day
        date(2026, 6, 19),  # Juneteenth
        date(2026, 7, 3),  # Independence Day (observed; July 4 is a Saturday)
        date(2026, 9, 7),  # Labor Day
        date(2026, 11, 26),  # Thanksgiving Day
        date(2026, 12, 25),  # Christmas Day
        date(2027, 1, 1),  # New Year's Day
        date(2027, 1, 18),  # Martin Luther King Jr. Day
        date(2027, 2, 15),  # Washington's Birthday
        date(2027, 3, 26),  # Good Friday
        date(2027, 5, 31),  # Memorial Day
        date(2027, 6, 18),  # Juneteenth (observed; June 19 is a Saturday)
        date(2027, 7, 5),  # Independence Day (observed; July 4 is a Sunday)
        date(2027, 9, 6),  # Labor Day
        date(2027, 11, 25),  # Thanksgiving Day
        date(2027, 12, 24),  # Christmas Day (observed; December 25 is a Saturday)
    }
)

#: Days the market closes at 13:00 New York time.
EARLY_CLOSES: frozenset[date] = frozenset(
    {
        date(2026, 11, 27),  # the day after Thanksgiving
        date(2026, 12, 24),  # Christmas Eve
        date(2027, 11, 26),  # the day after Thanksgiving
    }
)


def session(day: date) -> tuple[datetime, datetime] | None:
    """The regular session of ``day`` (a New York date) as UTC (open, close), or None if closed."""
    if day.weekday() >= 5 or day in HOLIDAYS:
        return None
    close = EARLY_CLOSE if day in EARLY_CLOSES else CLOSE
    return (
        datetime.combine(day, OPEN, NEW_YORK).astimezone(UTC),
        datetime.combine(day, close, NEW_YORK).astimezone(UTC),
    )


def _aware(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at!r}: give it a timezone (UTC)")
    return at


def market_open(at: datetime) -> bool:
    """Whether the regular session is open at ``at`` (open inclusive, close exclusive)."""
    hours = session(_aware(at).astimezone(NEW_YORK).date())
    return hours is not None and hours[0] <= at < hours[1]


def next_open(at: datetime) -> datetime:
    """``at`` itself if the market is open then, else the next session's open (UTC)."""
    day = _aware(at).astimezone(NEW_YORK).date()
    for _ in range(15):  # the longest closure is a few days
        hours = session(day)
        if hours is not None and at < hours[1]:
            return max(at.astimezone(UTC), hours[0])
        day += timedelta(days=1)
    raise ValueError(f"no session within 15 days of {at}")  # pragma: no cover - a calendar bug


def market_minutes_start(end: datetime, minutes: int) -> datetime:
    """The latest time such that ``[start, end)`` holds at least ``minutes`` minutes of sessions.

    A source uses it to backfill enough one-minute bars for a detector's warm-up
    across nights, weekends and holidays. At most a year back.
    """
    end = _aware(end).astimezone(UTC)
    left = timedelta(minutes=minutes)
    day = end.astimezone(NEW_YORK).date()
    start = end
    for _ in range(366):
        if left <= timedelta(0):
            break
        hours = session(day)
        if hours is not None and hours[0] < end:
            open_, close = hours[0], min(hours[1], end)
            span = close - open_
            start = close - left if span >= left else open_
            left -= min(span, left)
        day -= timedelta(days=1)
    return start
