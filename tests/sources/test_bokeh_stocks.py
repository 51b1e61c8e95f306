"""BokehStocks: the real bokeh_sampledata stock file, replayed one trading day per tick."""

from __future__ import annotations

import asyncio
import csv
import gzip
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError

from signalmint.records import BAR_COLUMNS, Frame, to_datetime
from signalmint.registry import Source
from signalmint.sources.bokeh_stocks import TICKERS, BokehStocks, data_path


def build(**options: object) -> BokehStocks:
    return BokehStocks(**BokehStocks.Options.model_validate({"pace": 0, **options}).model_dump())


def collect(source: BokehStocks, since: datetime | None = None) -> list[Frame]:
    async def run() -> list[Frame]:
        return [f async for f in source.stream(since)]

    return asyncio.run(run())


@pytest.fixture(scope="module")
def raw() -> list[dict[str, str]]:
    with gzip.open(data_path(), "rt", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def everything() -> list[Frame]:
    source = build()
    frames = collect(source)
    assert not source.rejected  # the shipped file is clean
    return frames


def test_is_a_source_with_defaults() -> None:
    source = BokehStocks()
    assert isinstance(source, Source)
    assert source.kind == "bokeh_stocks" and source.pace == 0.1
    assert source.symbols == ["AAPL", "GOOG", "IBM", "MSFT", "FB"] == list(TICKERS)


def test_emits_every_row_of_the_five_tickers(raw: list[dict[str, str]], everything: list[Frame]) -> None:
    assert sum(len(f) for f in everything) == len(raw)
    keys = np.concatenate([f.keys for f in everything])
    assert set(keys.tolist()) == set(TICKERS)
    for ticker in TICKERS:
        assert (keys == ticker).sum() == sum(r["Ticker"] == ticker for r in raw)


def test_first_aapl_bar_matches_the_raw_csv(raw: list[dict[str, str]], everything: list[Frame]) -> None:
    first = next(r for r in raw if r["Ticker"] == "AAPL")
    frame = everything[0]
    i = frame.keys.tolist().index("AAPL")
    assert frame.times[i] == np.datetime64(f"{first['Date']}T21:00:00", "ns")
    for name in BAR_COLUMNS:
        assert frame.columns[name][i] == float(first[name.capitalize()])
    assert frame.columns["volume"][i] == 9616100.0


def test_ticks_in_date_order_one_day_each(everything: list[Frame]) -> None:
    days = np.array([f.times[0] for f in everything])
    assert (np.diff(days) > np.timedelta64(0, "ns")).all()
    for f in everything:
        assert (f.times == f.times[0]).all()
        assert len(np.unique(f.keys)) == len(f)
        assert f.times[0].astype("datetime64[h]").astype(int) % 24 == 21
    assert str(days[0].astype("datetime64[D]")) == "2000-03-01"
    assert str(days[-1].astype("datetime64[D]")) == "2013-03-01"


def test_fb_starts_in_2012(everything: list[Frame]) -> None:
    first_fb = next(f for f in everything if "FB" in f.keys)
    assert str(first_fb.times[0].astype("datetime64[D]")) == "2012-05-18"


def test_symbols_filter_start_end() -> None:
    frames = collect(build(symbols=["FB", "IBM"], start=date(2013, 2, 1), end=date(2013, 2, 28)))
    assert len(frames) == 19  # trading days of February 2013
    assert all(sorted(f.keys.tolist()) == ["FB", "IBM"] for f in frames)
    assert str(frames[0].times[0].astype("datetime64[D]")) == "2013-02-01"
    assert len(collect(build(symbols=["FB"]))) == 196


def test_since_skips_days_at_or_before() -> None:
    since = datetime(2013, 2, 27, 21, 0, tzinfo=UTC)
    frames = collect(build(), since=since)
    assert [str(f.times[0].astype("datetime64[D]")) for f in frames] == ["2013-02-28", "2013-03-01"]
    assert len(frames[0]) == 5


def test_pace_sleeps_between_days() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    source = BokehStocks(pace=0.25, start=date(2013, 2, 25), sleep=sleep)
    assert len(collect(source)) == 5
    assert slept == [0.25] * 4


def test_options() -> None:
    with pytest.raises(ValidationError):
        BokehStocks.Options.model_validate({"symbols": ["TSLA"]})
    with pytest.raises(ValidationError, match="after end"):
        BokehStocks.Options.model_validate({"start": "2010-01-02", "end": "2010-01-01"})
    with pytest.raises(ValidationError):
        BokehStocks.Options.model_validate({"symbols": []})


class Clock:
    """A clock that moves only when the source sleeps (no real waiting)."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.waits: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += timedelta(seconds=seconds)


def take(source: BokehStocks, n: int, since: datetime | None = None) -> list[Frame]:
    async def run() -> list[Frame]:
        out: list[Frame] = []
        async for frame in source.stream(since):
            out.append(frame)
            if len(out) == n:
                break
        return out

    return asyncio.run(run())


def test_the_replay_loops_forever_in_time_order(everything: list[Frame]) -> None:
    """After 2013-03-01 the history plays again on the 15-minute grid, never stopping."""
    clock = Clock(datetime(2030, 1, 1, tzinfo=UTC))
    source = BokehStocks(pace=0, loop=True, sleep=clock.sleep, clock=clock)
    frames = take(source, 2 * len(everything) + 3)
    times = np.array([f.times[0] for f in frames])
    assert (np.diff(times) > np.timedelta64(0, "ns")).all()  # signals append in time order
    looped = frames[len(everything)]
    assert looped.times[0] == np.datetime64("2013-03-08T21:00:00", "ns")  # a week after the last day
    assert frames[len(everything) + 1].times[0] - looped.times[0] == np.timedelta64(15, "m")
    for lap in (1, 2):
        again = frames[lap * len(everything)]
        assert again.keys.tolist() == everything[0].keys.tolist()
        assert (again.columns["volume"] == everything[0].columns["volume"]).all()
    assert not clock.waits  # the grid is behind the clock: no waiting at pace 0


def test_a_restart_resumes_after_the_cursor_without_repeating(everything: list[Frame]) -> None:
    clock = Clock(datetime(2030, 1, 1, tzinfo=UTC))
    source = BokehStocks(pace=0, loop=True, sleep=clock.sleep, clock=clock)
    before = take(source, len(everything) + 10)
    cursor = to_datetime(before[-1].times[0])  # what the engine checkpoints
    after = take(BokehStocks(pace=0, loop=True, sleep=clock.sleep, clock=clock), 3, since=cursor)
    assert after[0].times[0] - before[-1].times[0] == np.timedelta64(15, "m")
    assert after[0].keys.tolist() == everything[10].keys.tolist()
    assert (after[0].columns["close"] == everything[10].columns["close"]).all()
    inside = to_datetime(everything[100].times[0])  # a cursor in the first, dated lap
    assert take(BokehStocks(pace=0, loop=True), 1, since=inside)[0].times[0] == everything[101].times[0]


def test_a_looped_bar_is_never_stamped_in_the_future() -> None:
    origin = datetime(2013, 3, 8, 21, tzinfo=UTC)
    clock = Clock(origin + timedelta(minutes=30))
    source = BokehStocks(pace=0, loop=True, sleep=clock.sleep, clock=clock)
    frames = take(source, 5, since=origin - timedelta(seconds=1))
    for frame in frames:
        assert to_datetime(frame.times[0]) <= clock.now
    assert to_datetime(frames[-1].times[0]) == origin + timedelta(hours=1)
    assert sum(clock.waits) == pytest.approx(30 * 60)  # it waited for the clock, then went on


def test_loop_options_validate() -> None:
    assert build(loop=True, loop_step="1h").loop_step == timedelta(hours=1)
    with pytest.raises(ValidationError):
        build(loop=True, loop_step="0s")
