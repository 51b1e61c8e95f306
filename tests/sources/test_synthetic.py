"""SyntheticMarket: determinism, shape, intraday pattern, injected spikes, clock and resume."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, cast

import numpy as np
import pytest
from pydantic import ValidationError

from signalmint.records import BAR_COLUMNS, Frame, to_datetime
from signalmint.registry import Source
from signalmint.sources.synthetic import SyntheticMarket

T0 = 1_700_000_010.5  # epoch seconds, 30.5 s into a minute


class FakeClock:
    """A clock that only moves when the source sleeps (or when a test moves it)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def market(clock: FakeClock | None = None, **options: object) -> SyntheticMarket:
    clock = clock or FakeClock()
    opts = SyntheticMarket.Options.model_validate(options).model_dump()
    return SyntheticMarket(**opts, clock=clock, sleep=clock.sleep)


def take(source: SyntheticMarket, n: int, since: datetime | None = None) -> list[Frame]:
    async def run() -> list[Frame]:
        frames: list[Frame] = []
        async for f in source.stream(since):
            frames.append(f)
            if len(frames) == n:
                break
        return frames

    return asyncio.run(run())


def volumes(frames: list[Frame]) -> np.ndarray:
    return np.stack([f.columns["volume"] for f in frames])  # (bars, symbols)


def test_is_a_source_with_defaults() -> None:
    m = SyntheticMarket()
    assert isinstance(m, Source)
    assert m.kind == "synthetic"
    assert len(m.names) == 500 and m.names[0] == "SYN000" and m.names[-1] == "SYN499"
    assert SyntheticMarket(symbols=1234).names[7] == "SYN0007"
    with pytest.raises(TypeError):
        cast(Any, m.rejected)["nan"] = 1


def test_options_validation() -> None:
    with pytest.raises(ValidationError, match="spike_rate"):
        SyntheticMarket.Options.model_validate({"spike_rate": 0.05, "spike_gap": 35})
    with pytest.raises(ValidationError, match="spike_multiplier"):
        SyntheticMarket.Options.model_validate({"spike_multiplier": [15, 6]})
    with pytest.raises(ValidationError):
        SyntheticMarket.Options.model_validate({"symbols": 0})
    with pytest.raises(ValidationError):
        SyntheticMarket.Options.model_validate({"colour": "red"})
    opts = SyntheticMarket.Options.model_validate({"spike_multiplier": [3, 4], "interval": 1})
    assert SyntheticMarket(**opts.model_dump()).spike_multiplier == (3.0, 4.0)


def test_shapes_and_bar_consistency() -> None:
    frames = take(market(symbols=50, warmup=5), 12)
    for f in frames:
        assert len(f) == 50
        assert len(np.unique(f.keys)) == 50
        assert f.times.dtype == np.dtype("datetime64[ns]")
        assert (f.times == f.times[0]).all()
        assert set(f.columns) == set(BAR_COLUMNS)
        o, h, lo, c, v = (f.columns[n] for n in BAR_COLUMNS)
        assert all(col.dtype == np.float64 for col in (o, h, lo, c, v))
        assert (lo > 0).all() and (h >= np.maximum(o, c)).all() and (lo <= np.minimum(o, c)).all()
        assert (v > 0).all() and (v == np.rint(v)).all()
    starts = np.array([f.times[0] for f in frames])
    assert (np.diff(starts) == np.timedelta64(60, "s")).all()
    for a, b in pairwise(frames):
        np.testing.assert_array_equal(b.columns["open"], a.columns["close"])


def test_deterministic_for_a_seed() -> None:
    a = take(market(symbols=30, seed=3), 45)
    b = take(market(symbols=30, seed=3), 45)
    c = take(market(symbols=30, seed=4), 45)
    for fa, fb in zip(a, b, strict=True):
        assert (fa.times == fb.times).all()
        for name in BAR_COLUMNS:
            np.testing.assert_array_equal(fa.columns[name], fb.columns[name])
    assert not np.array_equal(volumes(a), volumes(c))
    # the same bar index gives the same values whatever the clock says
    d = take(market(FakeClock(T0 + 86_400), symbols=30, seed=3), 45)
    np.testing.assert_array_equal(volumes(a), volumes(d))
    assert d[0].times[0] - a[0].times[0] == np.timedelta64(86_400, "s")


def test_intraday_u_shape() -> None:
    session = 390
    frames = take(market(symbols=200, spike_rate=0.0, warmup=session), session)
    v = volumes(frames).mean(axis=1)  # bars 0..389 are one whole session
    open_, mid, close = v[:20].mean(), v[185:205].mean(), v[-20:].mean()
    assert open_ > 2.5 * mid and close > 2.5 * mid


def test_spikes_are_where_injected_says_and_large() -> None:
    kw: dict[str, Any] = {"symbols": 100, "seed": 11, "warmup": 40, "spike_gap": 35}
    bars = 400
    plain = volumes(take(market(spike_rate=0.0, **kw), bars))
    spiky_market = market(spike_rate=0.01, **kw)
    spiky = volumes(take(spiky_market, bars))
    ratio = spiky / plain
    names = spiky_market.names.tolist()
    expected = np.ones_like(ratio, dtype=bool)
    spikes = spiky_market.spikes_between(0, bars)
    assert len(spikes) > 100  # about 0.01 * 100 * 360
    for i, sym in spikes:
        expected[i, names.index(sym)] = False
        assert 5.9 <= ratio[i, names.index(sym)] <= 15.1
    np.testing.assert_array_equal(ratio[expected], 1.0)  # nothing else changed
    for i in range(bars):
        assert sorted(spiky_market.injected(i)) == sorted(s for j, s in spikes if j == i)
    assert all(i >= 40 for i, _ in spikes)  # never during warmup


def test_spike_spacing_and_rate() -> None:
    m = SyntheticMarket(symbols=500, seed=7, spike_rate=0.002, spike_gap=35, warmup=0)
    bars = 14_000
    spikes = m.spikes_between(0, bars)
    expected = 0.002 * 500 * bars
    assert abs(len(spikes) - expected) < 0.05 * expected
    by_symbol: dict[str, list[int]] = {}
    for i, sym in spikes:
        by_symbol.setdefault(sym, []).append(i)
    gaps = np.concatenate([np.diff(v) for v in by_symbol.values() if len(v) > 1])
    assert gaps.min() >= 35
    assert m.spikes_between(100, 200) == [s for s in spikes if 100 <= s[0] < 200]


def test_warmup_stamping_and_live_clock() -> None:
    clock = FakeClock()
    m = market(clock, symbols=5, warmup=40, interval=60.0)
    frames = take(m, 43)
    live = np.datetime64(int(T0 // 60 * 60), "s").astype("datetime64[ns]")
    stamps = np.array([f.times[0] for f in frames])
    assert stamps[40] == live  # first live bar: now floored to the interval
    assert stamps[0] == live - np.timedelta64(40 * 60, "s")
    assert (np.diff(stamps) == np.timedelta64(60, "s")).all()
    assert m.start == to_datetime(stamps[0])
    assert m.bar_index(stamps[41]) == 41
    assert m.bar_time(42) == stamps[42]
    # warmup and the first live bar came at once; then one sleep per live bar
    assert sum(clock.slept) == pytest.approx(60 - 30.5 + 60)
    assert clock.now == pytest.approx(T0 - 30.5 + 120)


def test_catches_up_without_skipping_bars() -> None:
    clock = FakeClock()
    m = market(clock, symbols=3, warmup=0, interval=1.0)

    async def run() -> list[Frame]:
        frames: list[Frame] = []
        async for f in m.stream():
            frames.append(f)
            if len(frames) == 2:
                clock.now += 10  # the consumer stalls for ten bars
            if len(frames) == 15:
                break
        return frames

    frames = asyncio.run(run())
    stamps = np.array([f.times[0] for f in frames])
    assert (np.diff(stamps) == np.timedelta64(1, "s")).all()
    assert len(clock.slept) <= 4  # ten late bars came back to back


def test_since_skips_bars_at_or_before() -> None:
    first = take(market(symbols=4), 45)
    since = to_datetime(first[20].times[0])
    again = take(market(symbols=4), 5, since=since)
    assert again[0].times[0] == first[21].times[0]
    np.testing.assert_array_equal(again[0].columns["volume"], first[21].columns["volume"])
    # a restart 10 minutes later: only warmup bars newer than since, then live bars
    last = to_datetime(first[-1].times[0])
    later = FakeClock(T0 + 600)
    resumed = take(market(later, symbols=4), 15, since=last)
    stamps = np.array([f.times[0] for f in resumed])
    assert (stamps > first[-1].times[0]).all()
    assert stamps[0] == first[-1].times[0] + np.timedelta64(60, "s")
    assert (np.diff(stamps) == np.timedelta64(60, "s")).all()


def test_since_with_aware_datetime_in_other_zone() -> None:
    first = take(market(symbols=2), 3)
    since = to_datetime(first[1].times[0]).astimezone(UTC)
    assert take(market(symbols=2), 1, since=since)[0].times[0] == first[2].times[0]


def test_throughput_200_ticks_of_500_symbols() -> None:
    m = market(symbols=500, warmup=200)
    t = time.perf_counter()
    frames = take(m, 200)
    elapsed = time.perf_counter() - t
    assert len(frames) == 200 and not m.rejected
    assert elapsed < 1.0, f"{elapsed * 5:.2f} ms per tick"
