"""Outcomes: returns against hand-computed ones, only after the horizon, and no look-ahead."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import delete

from signalmint.config import OutcomesConfig, Settings
from signalmint.engine.outcomes import due_outcomes, summarize, summarize_by_key
from signalmint.engine.runner import Engine
from signalmint.records import Frame, Outcome, Signal
from signalmint.registry import Registry
from signalmint.store import Database, append_signals, verify_chain
from signalmint.store.bars import insert_bars
from signalmint.store.outcomes import insert_outcomes, list_outcomes, outcomes_by_signal
from signalmint.store.tables import bars

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
SPEC = OutcomesConfig(horizons=[1, 5], baseline_samples=20, lookback=50, seed=7)


def _closes(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))


def _store_bars(db: Database, key: str, close: np.ndarray, first: int = 0) -> None:
    n = len(close)
    times = np.array([np.datetime64(T0.replace(tzinfo=None), "ns") + np.timedelta64(first + i, "m") for i in range(n)])
    frame = Frame(
        keys=np.array([key] * n),
        times=times,
        columns={c: close.copy() for c in ("open", "high", "low", "close")} | {"volume": np.arange(n) + 1000.0 + first},
    )
    db.write_sync(insert_bars, "a", frame)


def _signal(db: Database, key: str, minute: int) -> Signal:
    signal = Signal(
        automation="a", key=key, time=T0 + timedelta(minutes=minute), kind="volume_spike", score=9.0,
        payload={"volume": 9000.0, "baseline": 1000.0, "ratio": 9.0, "price_change": 0.01},
    )  # fmt: skip
    (stored,) = db.write_sync(append_signals, "a", [signal], datetime.now(UTC))
    return stored


def test_outcomes_equal_hand_computed_returns_and_volumes(db: Database) -> None:
    close = np.array([100.0, 101, 99, 102, 100, 104, 110, 108, 107, 120, 90, 95])
    _store_bars(db, "IBM", close)
    signal = _signal(db, "IBM", 4)  # close 100 at minute 4
    found = {o.horizon: o for o in db.read_sync(due_outcomes, "a", SPEC)}
    assert set(found) == {1, 5}
    one, five = found[1], found[5]
    assert (one.entry, one.exit) == (100.0, 104.0) and one.ret == pytest.approx(0.04)
    assert five.exit == 120.0 and five.ret == pytest.approx(0.20)
    # the volume of the 5 bars after the signal: minutes 5..9 -> 1005 + ... + 1009
    assert five.volume == 1005 + 1006 + 1007 + 1008 + 1009 and one.volume == 1005
    assert five.end_time == T0 + timedelta(minutes=9)
    # baseline: every earlier start bar (0..3, fewer than the samples), median |h-bar return|
    hand1 = np.median(np.abs(close[1:5] / close[0:4] - 1))
    hand5 = np.median(np.abs(close[5:9] / close[0:4] - 1))  # the last window ends at bar 8 < 4 + 5
    assert one.baseline == pytest.approx(hand1) and one.samples == 4
    assert five.baseline == pytest.approx(hand5) and five.samples == 4
    assert one.hit == (hand1 < 0.04) and five.hit == (hand5 < 0.20)
    assert signal.id == one.signal_id


def test_outcomes_come_only_once_the_horizon_has_passed_and_leave_the_chain_alone(db: Database) -> None:
    close = _closes(40)
    _store_bars(db, "IBM", close[:33])  # the virtual clock: bars up to minute 32
    signal = _signal(db, "IBM", 30)
    first = db.read_sync(due_outcomes, "a", SPEC)
    assert [o.horizon for o in first] == [1]  # bar 31 exists, bar 35 does not yet
    assert db.write_sync(insert_outcomes, first, datetime.now(UTC)) == 1
    assert db.read_sync(due_outcomes, "a", SPEC) == []  # horizon 5 still to come, 1 stored
    _store_bars(db, "IBM", close[33:], first=33)  # time passes
    (later,) = db.read_sync(due_outcomes, "a", SPEC)
    assert later.horizon == 5 and later.ret == pytest.approx(close[35] / close[30] - 1)
    db.write_sync(insert_outcomes, [later, *first], datetime.now(UTC))  # a repeat is ignored
    assert [o.horizon for o in db.read_sync(outcomes_by_signal, [signal.id])[signal.id or 0]] == [1, 5]
    assert db.read_sync(due_outcomes, "a", SPEC) == []
    assert db.read_sync(verify_chain, "a").ok  # stored beside the log, not in it


def test_no_look_ahead_truncated_future_bars_give_the_same_outcomes(db: Database) -> None:
    close = _closes(300, seed=3)
    _store_bars(db, "IBM", close)
    _store_bars(db, "MSFT", _closes(300, seed=4))
    for minute in (60, 120, 200, 280):
        _signal(db, "IBM", minute)
    _signal(db, "MSFT", 150)
    spec = OutcomesConfig(horizons=[1, 5, 20], baseline_samples=30, lookback=100, seed=11)
    full = {(o.signal_id, o.horizon): o for o in db.read_sync(due_outcomes, "a", spec)}
    assert len(full) == 5 * 3 - 1  # the signal at 280 has no bar 300 yet
    # cut the store right after minute 205: horizons that had passed by then must not change
    cut = T0 + timedelta(minutes=205)
    db.write_sync(lambda conn: conn.execute(delete(bars).where(bars.c.time > cut)))
    truncated = {(o.signal_id, o.horizon): o for o in db.read_sync(due_outcomes, "a", spec)}
    assert set(truncated) == {k for k, o in full.items() if o.end_time <= cut}
    assert len(truncated) == 11  # 60, 120 and 150: all 3 horizons; 200: 1 and 5
    for k, o in truncated.items():
        assert o == full[k]


def test_the_baseline_is_seeded_and_reproducible(db: Database) -> None:
    _store_bars(db, "IBM", _closes(200, seed=5))
    _signal(db, "IBM", 150)
    a = db.read_sync(due_outcomes, "a", SPEC)
    assert a == db.read_sync(due_outcomes, "a", SPEC)
    assert all(o.samples == 20 for o in a)
    other = db.read_sync(due_outcomes, "a", SPEC.model_copy(update={"seed": 8}))
    assert [o.baseline for o in other] != [o.baseline for o in a]


def test_a_signal_whose_bars_were_pruned_gets_no_outcome(db: Database) -> None:
    _store_bars(db, "IBM", _closes(20)[10:], first=10)
    _signal(db, "IBM", 3)  # before the oldest stored bar
    assert db.read_sync(due_outcomes, "a", SPEC) == []


def _outcome(i: int, key: str, ret: float, hit: bool) -> Outcome:
    return Outcome(i, "a", key, T0, 5, T0, 100.0, 100 * (1 + ret), ret, 0.0, 0.01, 50, hit)


def test_summaries_per_horizon_and_key() -> None:
    rows = [_outcome(1, "A", 0.03, True), _outcome(2, "A", -0.02, True), _outcome(3, "B", 0.001, False)]
    (s,) = summarize(rows)
    assert (s.count, s.hits) == (3, 2) and s.hit_rate == pytest.approx(2 / 3)
    assert s.mean == pytest.approx(0.011 / 3) and s.median == pytest.approx(0.001)
    assert s.mean_abs == pytest.approx(0.051 / 3)
    assert 0 < s.hit_low < 2 / 3 < s.hit_high < 1
    assert s.mean_low < s.mean < s.mean_high
    by_key = summarize_by_key(rows)
    assert list(by_key) == ["A", "B"] and by_key["A"][0].hit_rate == 1.0 and by_key["B"][0].hits == 0
    assert math.isnan(summarize([_outcome(4, "C", 0.01, True)])[0].mean_low)  # one outcome: no interval


def test_horizons_must_be_positive_bars() -> None:
    assert OutcomesConfig(horizons=[20, 1, 5, 5]).horizons == [1, 5, 20]
    with pytest.raises(ValueError, match="horizons"):
        OutcomesConfig(horizons=[0])


def test_the_engine_measures_outcomes_after_a_replay(tmp_path: Path, db: Database, registry: Registry) -> None:
    n = 120
    close = _closes(n, seed=9)
    volume = np.full(n, 1000.0)
    volume[[60, 90]] = 20_000.0
    lines = ["symbol,time,open,high,low,close,volume"]
    for i in range(n):
        t = (T0 + timedelta(minutes=i)).isoformat()
        lines.append(f"IBM,{t},{close[i]},{close[i]},{close[i]},{close[i]},{volume[i]}")
    path = tmp_path / "bars.csv"
    path.write_text("\n".join(lines) + "\n")
    settings = Settings.model_validate(
        {
            "automations": [
                {
                    "name": "a",
                    "source": {"kind": "file", "path": str(path)},
                    "detector": {"kind": "volume_spike", "window": 20},
                    "outcomes": {"horizons": [1, 5], "baseline_samples": 20},
                }
            ]
        }
    )

    async def run() -> None:
        engine = Engine(settings, db, registry, watch_every=None)
        await engine.start()
        await engine.wait()
        await engine.stop()

    asyncio.run(run())
    stored = db.read_sync(list_outcomes, "a")
    assert {(o.time, o.horizon) for o in stored} >= {(T0 + timedelta(minutes=m), h) for m in (60, 90) for h in (1, 5)}
    (one,) = [o for o in stored if o.time == T0 + timedelta(minutes=60) and o.horizon == 1]
    assert one.ret == pytest.approx(close[61] / close[60] - 1)
