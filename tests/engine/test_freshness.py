"""Cadence, market calendars and gap counting (signalmint/engine/freshness.py), and detector resets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from signalmint.detectors import VolumeSpike
from signalmint.detectors.cooldown import Cooldown
from signalmint.engine.freshness import ALWAYS, US_EQUITIES, GapTracker, parse_timeframe
from signalmint.records import Frame

MINUTE = timedelta(minutes=1)


def frame(keys: list[str], at: datetime | list[datetime], volume: float = 100.0) -> Frame:
    times = at if isinstance(at, list) else [at] * len(keys)
    return Frame(
        np.array(keys),
        np.array([np.datetime64(t.replace(tzinfo=None), "ns") for t in times]),
        {"volume": np.full(len(keys), volume), "close": np.ones(len(keys))},
    )


def test_us_equities_hours_holidays_early_closes_and_daylight_saving() -> None:
    summer = datetime(2026, 7, 6, 13, 30, tzinfo=UTC)  # 9:30 EDT on a Monday
    assert US_EQUITIES.session_start(summer) == summer
    assert US_EQUITIES.session_start(summer - timedelta(seconds=1)) is None
    winter = datetime(2026, 12, 7, 14, 30, tzinfo=UTC)  # 9:30 EST
    assert US_EQUITIES.session_start(winter) == winter
    assert US_EQUITIES.session_start(datetime(2026, 12, 7, 21, 0, tzinfo=UTC)) is None  # 16:00: closed
    for holiday in ("2026-04-03", "2026-07-03", "2026-11-26", "2027-03-26", "2027-12-24"):
        noon = datetime.fromisoformat(f"{holiday}T17:00:00+00:00")
        assert US_EQUITIES.session_start(noon) is None, holiday
    black_friday = datetime(2026, 11, 27, 18, 30, tzinfo=UTC)  # 13:30 in New York: closed at 13:00
    assert US_EQUITIES.session_start(black_friday) is None
    assert US_EQUITIES.session_start(black_friday - timedelta(hours=1)) is not None
    week = US_EQUITIES.open_between(datetime(2026, 12, 7, tzinfo=UTC), datetime(2026, 12, 14, tzinfo=UTC))
    assert week == timedelta(hours=5 * 6.5)


def test_timeframes() -> None:
    assert parse_timeframe("1m") == MINUTE and parse_timeframe("4h") == timedelta(hours=4)
    assert parse_timeframe("1d") == timedelta(days=1) and parse_timeframe(60) is None


def test_gaps_in_open_market_time_only() -> None:
    tracker = GapTracker(MINUTE, US_EQUITIES, reset_after=10 * MINUTE)
    close = datetime(2026, 12, 4, 20, 59, tzinfo=UTC)  # Friday 15:59
    assert tracker.observe(frame(["A"], close)) == (0, 0, [])
    assert tracker.observe(frame(["A"], datetime(2026, 12, 7, 14, 30, tzinfo=UTC))) == (0, 0, [])  # Monday 9:30
    assert tracker.observe(frame(["A"], datetime(2026, 12, 7, 14, 45, tzinfo=UTC))) == (1, 14, ["A"])


def test_repeated_keys_new_keys_and_a_checkpoint_round_trip() -> None:
    t0 = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)
    tracker = GapTracker(MINUTE, ALWAYS, reset_after=None)
    assert tracker.observe(frame(["A", "B"], t0)) == (0, 0, [])
    assert tracker.observe(frame(["A", "A", "C"], [t0 + MINUTE, t0 + 4 * MINUTE, t0])) == (1, 2, [])
    again = GapTracker(MINUTE, ALWAYS, reset_after=None)
    again.restore(tracker.state())
    assert again.observe(frame(["A", "B", "C"], t0 + 6 * MINUTE)) == (3, 1 + 5 + 5, [])


def test_reset_restarts_one_key_and_leaves_the_others() -> None:
    det = Cooldown(VolumeSpike(window=3), period=timedelta(minutes=5))
    t0 = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)
    for minute, volume in enumerate((100.0, 110.0, 90.0)):
        det.update(frame(["A", "B"], t0 + minute * MINUTE, volume))
    det.reset(["A"])
    scores = det.update(frame(["A", "B"], t0 + 3 * MINUTE, 1000.0))
    assert scores.details["history"].tolist() == [0.0, 3.0]
    assert scores.flags.tolist() == [False, True]
