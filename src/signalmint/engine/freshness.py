"""Guardrails on the data itself: cadence, market hours, staleness limits and gaps.

Each automation knows how often a key should get a bar (its *cadence*): the source says
(``source.cadence``, or a ccxt-like ``timeframe`` such as ``"1m"``) and the automation's
``cadence`` setting overrides it. From the cadence and ``stale_factor`` (k, default 3) come:

* ``stale_after`` (k x cadence): no bar for this long while the market is open makes the
  automation stale (only for live sources, whose bar times follow the clock);
* ``max_signal_age`` (k x cadence): a signal whose bar is older than this when it is
  committed is stored as late and not sent as an alert;
* ``gap_reset`` (10 x cadence): a key whose bars skip more than this restarts its warm-up.

A :class:`Calendar` says when the market is open. ``always`` is 24/7 (crypto);
``us_equities`` is 9:30-16:00 America/New_York on weekdays, without the NYSE holidays of
2026-2027 (a fixed list, with the 13:00 early closes). Closed time never counts toward
staleness or gaps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from ..config import AutomationConfig
from ..records import Frame

__all__ = [
    "ALWAYS",
    "US_EQUITIES",
    "AlwaysOpen",
    "Calendar",
    "GapTracker",
    "Guard",
    "USEquities",
    "guard_for",
    "parse_timeframe",
]

#: The default k of ``stale_after`` and ``max_signal_age`` (k x cadence).
DEFAULT_FACTOR = 3.0
#: A gap longer than this many cadences restarts a key's warm-up, unless ``gap_reset`` is set.
RESET_FACTOR = 10


class Calendar(Protocol):
    """When a market is open. ``session_start(at)``: the start of the session ``at`` falls in,
    ``None`` when closed; ``open_between(a, b)``: how much open time lies between two moments."""

    name: str

    def session_start(self, at: datetime) -> datetime | None: ...

    def open_between(self, start: datetime, end: datetime) -> timedelta: ...


class AlwaysOpen:
    """A market that never closes (crypto)."""

    name = "always"

    def session_start(self, at: datetime) -> datetime | None:
        return datetime.min.replace(tzinfo=UTC)

    def open_between(self, start: datetime, end: datetime) -> timedelta:
        return max(end - start, timedelta(0))


NEW_YORK = ZoneInfo("America/New_York")
NYSE_HOLIDAYS = frozenset(
    date.fromisoformat(d)
    for d in (
        "2026-01-01", "2026-01-19", "2026-02-16", "2026-04-03", "2026-05-25", "2026-06-19",
        "2026-07-03", "2026-09-07", "2026-11-26", "2026-12-25",
        "2027-01-01", "2027-01-18", "2027-02-15", "2027-03-26", "2027-05-31", "2027-06-18",
        "2027-07-05", "2027-09-06", "2027-11-25", "2027-12-24",
    )
)  # fmt: skip
#: Days the NYSE closes at 13:00.
NYSE_EARLY_CLOSES = frozenset(date.fromisoformat(d) for d in ("2026-11-27", "2026-12-24", "2027-11-26"))


class USEquities:
    """NYSE regular hours: 9:30-16:00 America/New_York on weekdays, holidays and early closes
    of 2026-2027 from a fixed list (outside those years only weekends are closed).

    >>> cal = USEquities()
    >>> cal.session_start(datetime(2026, 12, 7, 15, 0, tzinfo=UTC))  # a Monday, 10:00 in New York
    datetime.datetime(2026, 12, 7, 14, 30, tzinfo=datetime.timezone.utc)
    >>> cal.session_start(datetime(2026, 12, 5, 15, 0, tzinfo=UTC)) is None  # a Saturday
    True
    >>> cal.open_between(datetime(2026, 12, 4, 21, 0, tzinfo=UTC), datetime(2026, 12, 7, 14, 40, tzinfo=UTC))
    datetime.timedelta(seconds=600)
    """

    name = "us_equities"

    def _hours(self, day: date) -> tuple[datetime, datetime] | None:
        if day.weekday() >= 5 or day in NYSE_HOLIDAYS:
            return None
        close = time(13, 0) if day in NYSE_EARLY_CLOSES else time(16, 0)
        return (
            datetime.combine(day, time(9, 30), NEW_YORK).astimezone(UTC),
            datetime.combine(day, close, NEW_YORK).astimezone(UTC),
        )

    def session_start(self, at: datetime) -> datetime | None:
        hours = self._hours(at.astimezone(NEW_YORK).date())
        if hours is None or not hours[0] <= at < hours[1]:
            return None
        return hours[0]

    def open_between(self, start: datetime, end: datetime) -> timedelta:
        total = timedelta(0)
        day = start.astimezone(NEW_YORK).date()
        last = end.astimezone(NEW_YORK).date()
        while day <= last:
            hours = self._hours(day)
            if hours is not None:
                lo, hi = max(start, hours[0]), min(end, hours[1])
                if hi > lo:
                    total += hi - lo
            day += timedelta(days=1)
        return total


ALWAYS = AlwaysOpen()
US_EQUITIES = USEquities()
CALENDARS: dict[str, Calendar] = {"always": ALWAYS, "us_equities": US_EQUITIES}

_TIMEFRAME = re.compile(r"^(\d+)([smhdwM])$")
_TF_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "M": 2592000}


def parse_timeframe(value: Any) -> timedelta | None:
    """A ccxt-style timeframe as a duration (``None`` if it is not one).

    >>> parse_timeframe("5m"), parse_timeframe("1h"), parse_timeframe("bad")
    (datetime.timedelta(seconds=300), datetime.timedelta(seconds=3600), None)
    """
    match = _TIMEFRAME.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    return timedelta(seconds=int(match.group(1)) * _TF_SECONDS[match.group(2)])


@dataclass(frozen=True, slots=True)
class Guard:
    """An automation's resolved limits (``None``: that guardrail is off)."""

    cadence: timedelta | None
    live: bool
    calendar: Calendar
    stale_after: timedelta | None
    max_signal_age: timedelta | None
    gap_reset: timedelta | None


def _source_cadence(source: Any) -> timedelta | None:
    cadence = getattr(source, "cadence", None)
    if isinstance(cadence, timedelta):
        return cadence
    return parse_timeframe(getattr(source, "timeframe", None))


def guard_for(config: AutomationConfig, source: Any) -> Guard:
    """The limits of an automation: its settings first, then what its source says.

    A source is *live* (its bar times follow the clock) when it says so (``live = True``) or
    has a ccxt-like ``timeframe``; replays of history are not, so their bars are never late
    and they never go stale unless ``stale_after`` or ``max_signal_age`` is set.
    """
    cadence = config.cadence or _source_cadence(source)
    live = bool(getattr(source, "live", hasattr(source, "timeframe")))
    name = config.calendar or getattr(source, "calendar", None) or "always"
    calendar = CALENDARS[name] if isinstance(name, str) else name
    derived = cadence * config.stale_factor if cadence is not None and live else None
    return Guard(
        cadence=cadence,
        live=live,
        calendar=calendar,
        stale_after=config.stale_after or derived,
        max_signal_age=config.max_signal_age or derived,
        gap_reset=config.gap_reset or (cadence * RESET_FACTOR if cadence is not None else None),
    )


class GapTracker:
    """Per key, the time of its last bar; finds the candles a frame's bars skip.

    ``observe(frame)`` returns the number of gaps (bars that skip more than one cadence step,
    counted once per such bar), the candles missing in them, and the keys whose gap is longer
    than ``reset_after`` (their detector warm-up restarts). Closed market time does not count.

    >>> t0 = np.datetime64("2026-12-07T15:00", "ns")
    >>> g = GapTracker(timedelta(minutes=1), ALWAYS, reset_after=timedelta(minutes=10))
    >>> def bar(minute):
    ...     return Frame(np.array(["A"]), np.array([t0 + np.timedelta64(minute, "m")]), {"volume": np.ones(1)})
    >>> g.observe(bar(0)), g.observe(bar(1)), g.observe(bar(4)), g.observe(bar(30))
    ((0, 0, []), (0, 0, []), (1, 2, []), (1, 25, ['A']))
    """

    def __init__(self, cadence: timedelta, calendar: Calendar, reset_after: timedelta | None) -> None:
        self.cadence = cadence
        self.calendar = calendar
        self.reset_after = reset_after
        self._step = int(cadence.total_seconds() * 1e9)
        self._rows: dict[str, int] = {}
        self._last: npt.NDArray[np.int64] = np.full(0, -1, dtype=np.int64)
        self._cached: tuple[Any, npt.NDArray[np.intp], bool] | None = None

    def state(self) -> dict[str, int]:
        return {key: int(self._last[row]) for key, row in self._rows.items()}

    def restore(self, state: dict[str, int]) -> None:
        self._rows = {key: row for row, key in enumerate(state)}
        self._last = np.array(list(state.values()), dtype=np.int64)
        self._cached = None

    def _rows_of(self, keys: npt.NDArray[Any]) -> tuple[npt.NDArray[np.intp], bool]:
        """Each key's row (new keys get one) and whether they are unique; the answer is kept for
        the next frame, which usually has the same keys."""
        raw = (keys.dtype.str, keys.shape, keys.tobytes()) if keys.dtype.kind in "US" else None
        if raw is not None and self._cached is not None and self._cached[0] == raw:
            return self._cached[1], self._cached[2]
        rows_map = self._rows
        found = []
        for key in keys.tolist():
            row = rows_map.get(key)
            if row is None:
                row = rows_map[key] = len(rows_map)
            found.append(row)
        if len(rows_map) > len(self._last):
            grown = np.full(max(len(rows_map), 2 * len(self._last)), -1, dtype=np.int64)
            grown[: len(self._last)] = self._last
            self._last = grown
        rows = np.array(found, dtype=np.intp)
        unique = not len(rows) or int(np.bincount(rows).max()) == 1
        if raw is not None:
            self._cached = (raw, rows, unique)
        return rows, unique

    def observe(self, frame: Frame) -> tuple[int, int, list[str]]:
        times: npt.NDArray[np.int64] = frame.times.astype("datetime64[ns]").view(np.int64)
        rows, unique = self._rows_of(frame.keys)
        last = self._last
        if not unique:  # a key repeats: take its rows in order
            prev = np.empty(len(rows), dtype=np.int64)
            for i, row in enumerate(rows.tolist()):
                prev[i] = last[row]
                last[row] = max(int(times[i]), int(last[row]))
        else:
            prev = last[rows]
            last[rows] = np.maximum(times, prev)
        delta = times - prev
        suspects = np.flatnonzero((prev >= 0) & (2 * delta > 3 * self._step))
        gaps = missing = 0
        reset: list[str] = []
        always = isinstance(self.calendar, AlwaysOpen)
        for i in suspects.tolist():
            if always:
                span = timedelta(microseconds=int(delta[i]) // 1000)
            else:
                a = datetime.fromtimestamp(int(prev[i]) / 1e9, UTC)
                b = datetime.fromtimestamp(int(times[i]) / 1e9, UTC)
                span = self.calendar.open_between(a, b)
            steps = round(span / self.cadence)
            if steps <= 1:
                continue
            gaps += 1
            missing += steps - 1
            if self.reset_after is not None and span > self.reset_after:
                reset.append(str(frame.keys[i]))
        return gaps, missing, reset
