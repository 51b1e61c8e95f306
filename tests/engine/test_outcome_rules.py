"""Outcomes beyond market returns: each detector kind's measure against hand-computed values,
measured on what was observed after the signal only, stored once per signal and horizon."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import delete, func, select

from signalmint.config import OutcomesConfig, Settings
from signalmint.engine.outcome_rules import rule_for
from signalmint.engine.outcomes import due_outcomes, summarize
from signalmint.engine.runner import Engine, commit_tick
from signalmint.pipeline import signals_from_scores
from signalmint.records import MEASURES, Frame, Outcome, OutcomeRule, Signal
from signalmint.registry import Registry
from signalmint.store import Database, append_signals
from signalmint.store.outcomes import insert_observations, insert_outcomes, list_outcomes, prune_observations
from signalmint.store.tables import observations

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
SPEC = OutcomesConfig(horizons=[1, 2, 3], baseline_samples=20, lookback=50, seed=7)


def _frame(key: str, hour: int, column: str, value: float) -> Frame:
    at = np.datetime64(T0.replace(tzinfo=None), "ns") + np.timedelta64(hour, "h")
    return Frame(keys=np.array([key]), times=np.array([at]), columns={column: np.array([value])})


def replay(db: Database, kind: str, options: dict[str, Any], column: str, values: list[float]) -> list[Signal]:
    """Run the detector over one key's values, one hour apart, committing each tick as the engine does."""
    registry = Registry.from_entry_points()
    detector = registry.build("detector", kind, options)
    rule = rule_for(kind, options)
    stored: list[Signal] = []
    for hour, value in enumerate(values):
        frame = _frame("sku-1", hour, column, value)
        found = signals_from_scores("a", kind, detector.update(frame))
        stored += db.write_sync(commit_tick, "a", frame, found, None, None, rule.column if rule.observed else None)
    return stored


def measured(db: Database, signal: Signal, kind: str, options: dict[str, Any]) -> dict[int, Outcome]:
    found = db.read_sync(due_outcomes, "a", SPEC, 500, rule_for(kind, options))
    return {o.horizon: o for o in found if o.signal_id == signal.id}


def test_every_built_in_detector_states_its_outcome_in_one_place() -> None:
    registry = Registry.from_entry_points()
    expected = {
        "volume_spike": "return", "price_drop": "stays_down", "restock": "stays_in_stock",
        "threshold": "continues", "pct_move": "continues", "anomaly": "continues",
        "ranking": "holds_rank", "new_item": "none", "change": "none",
    }  # fmt: skip
    options: dict[str, dict[str, Any]] = {
        "price_drop": {"pct": 10},
        "threshold": {"level": 1.0},
        "pct_move": {"pct": 5},
    }
    for kind, measure in expected.items():
        rule = rule_for(kind, options.get(kind))
        assert rule.measure == measure and rule.measure in MEASURES, kind
        cls = registry.get("detector", kind)
        if rule.observed and hasattr(cls, "needs"):  # the column it watches is one the detector reads
            assert rule.column in cls.needs(cls.Options.model_validate(options.get(kind, {}))), kind
        if rule.measure == "none":
            assert rule.reason, kind
    assert rule_for("price_drop", {"pct": 10, "column": "sale_price"}).column == "sale_price"
    assert rule_for("price_drop", {"pct": 10, "cooldown": 0.0}).measure == "stays_down"  # as stored for pages
    assert "not valid" in rule_for("price_drop", {}).reason  # neither pct nor amount
    assert rule_for("threshold", {"level": 1.0, "direction": "below"}).direction == -1


def test_a_price_drop_holds_while_the_price_stays_at_or_below_the_alerted_price(db: Database) -> None:
    prices = [48.0, 50, 50, 40, 40, 38, 45, 40]  # the drop 50 -> 40 at hour 3
    signal, _ = replay(db, "price_drop", {"pct": 10}, "price", prices)  # and 45 -> 40 at hour 7
    assert signal.time == T0 + timedelta(hours=3)
    found = measured(db, signal, "price_drop", {"pct": 10})
    one, two, three = found[1], found[2], found[3]
    assert {o.measure for o in found.values()} == {"stays_down"}
    assert (one.entry, one.exit, one.ret, one.hit, one.volume) == (40.0, 40.0, 0.0, True, 1.0)
    assert (two.exit, two.hit) == (38.0, True) and two.ret == pytest.approx(-0.05)
    assert (three.exit, three.hit) == (45.0, False) and three.ret == pytest.approx(0.125)
    assert three.volume == pytest.approx(2 / 3)  # 40 and 38 held, 45 did not
    assert three.end_time == T0 + timedelta(hours=6)
    # base rate from the 3 earlier observations: 48 -> 50 rose (no), 50 -> 50 and 50 -> 40 held
    assert one.samples == 3 and one.baseline == pytest.approx(2 / 3)
    assert three.baseline == pytest.approx(2 / 3)  # 48: [50, 50, 40] no; 50: [50, 40, 40]; 50: [40, 40, 38]


def test_a_restock_holds_while_the_item_stays_in_stock(db: Database) -> None:
    signal, _ = replay(db, "restock", {}, "in_stock", [1.0, 0, 0, 1, 1, 0, 1, 1])  # back at hours 3 and 6
    found = measured(db, signal, "restock", {})
    assert (found[1].hit, found[2].hit, found[3].hit) == (True, False, False)
    assert found[2].volume == 0.5 and found[3].volume == pytest.approx(2 / 3)
    # the only earlier start in stock is hour 0, sold out the hour after
    assert (found[1].samples, found[1].baseline) == (1, 0.0)


def test_a_threshold_crossing_continues_when_the_metric_moves_on_past_it(db: Database) -> None:
    signal, _ = replay(db, "threshold", {"level": 100.0}, "close", [90.0, 95, 101, 103, 99, 104])  # 99 re-arms
    found = measured(db, signal, "threshold", {"level": 100.0})
    assert (found[1].hit, found[2].hit, found[3].hit) == (True, False, True)
    assert found[1].ret == pytest.approx(2 / 101) and found[2].exit == 99.0
    assert found[1].baseline == 1.0 and found[1].samples == 2  # 90 -> 95 and 95 -> 101 both rose


def test_a_fall_continues_when_the_metric_keeps_falling(db: Database) -> None:
    options = {"pct": 5.0, "window": 1, "column": "close"}
    (signal,) = replay(db, "pct_move", options, "close", [100.0, 100, 90, 85, 95])
    assert signal.score < 0  # a fall: its outcome follows the fall
    found = measured(db, signal, "pct_move", options)
    assert (found[1].hit, found[2].hit) == (True, False) and 3 not in found  # hour 5 not observed yet
    # base rate, the fall's way: one hour on, 100 -> 100 did not fall, 100 -> 90 did; two hours on, both fell
    assert (found[1].baseline, found[1].samples, found[2].baseline) == (0.5, 2, 1.0)


def _signal(db: Database, key: str, hour: int, kind: str, payload: dict[str, Any], score: float = 1.0) -> Signal:
    signal = Signal(automation="a", key=key, time=T0 + timedelta(hours=hour), kind=kind, score=score, payload=payload)
    (stored,) = db.write_sync(append_signals, "a", [signal], datetime.now(UTC))
    return stored


def test_an_anomaly_follows_the_sign_of_its_z(db: Database) -> None:
    values = np.array([10.0, 10, 10, 4, 3, 5, 2])
    for hour, value in enumerate(values):
        db.write_sync(insert_observations, "a", _frame("cpu", hour, "value", value), "value")
    _signal(db, "cpu", 3, "anomaly", {"value": 4.0, "z": -5.0})
    rule = rule_for("anomaly")
    found = {o.horizon: o for o in db.read_sync(due_outcomes, "a", SPEC, 500, rule)}
    assert (found[1].hit, found[2].hit, found[3].hit) == (True, False, True)  # 3 < 4, 5 > 4, 2 < 4


def test_a_ranking_holds_when_its_top_mover_is_listed_in_a_later_ranking(db: Database) -> None:
    tops = [["A", "B"], ["A", "C"], ["B", "C"], ["C", "A"]]
    ids = [
        _signal(db, t[0], h, "ranking", {"ranks": [{"rank": i + 1, "key": k, "move": 1.0} for i, k in enumerate(t)]}).id
        or 0
        for h, t in enumerate(tops)
    ]
    spec = OutcomesConfig(horizons=[1, 2], baseline_samples=20, lookback=50, seed=7)
    found = {(o.signal_id, o.horizon): o for o in db.read_sync(due_outcomes, "a", spec, 500, rule_for("ranking"))}
    assert set(found) == {(ids[0], 1), (ids[0], 2), (ids[1], 1), (ids[1], 2), (ids[2], 1)}
    assert (found[ids[0], 1].hit, found[ids[0], 1].exit) == (True, 1.0)
    assert (found[ids[0], 2].hit, found[ids[0], 2].exit) == (False, 3.0)  # not listed: one past the list
    assert (found[ids[1], 2].hit, found[ids[1], 2].exit, found[ids[1], 2].volume) == (True, 2.0, 0.5)
    assert found[ids[2], 1].baseline == 0.5  # earlier tops: A held into ranking 1, A did not into ranking 2


def test_kinds_without_an_outcome_say_so_and_measure_nothing(db: Database) -> None:
    _signal(db, "item-1", 1, "new_item", {"title": "Python 3.15 is out"})
    for kind in ("new_item", "change"):
        rule = rule_for(kind)
        assert rule.measure == "none" and "news" in rule.reason
        assert db.read_sync(due_outcomes, "a", SPEC, 500, rule) == []
    assert rule_for("no_such_detector").reason == "the no_such_detector detector is not installed here"


def test_no_look_ahead_cutting_later_observations_changes_no_passed_outcome(db: Database) -> None:
    rng = np.random.default_rng(5)
    for key in ("sku-1", "sku-2"):
        prices = np.round(50 * np.exp(np.cumsum(rng.normal(0, 0.05, 120))), 2)
        for hour, price in enumerate(prices):
            db.write_sync(insert_observations, "a", _frame(key, hour, "price", float(price)), "price")
        for hour in (30, 60, 90, 118):
            _signal(db, key, hour, "price_drop", {"price": float(prices[hour])})
    spec = OutcomesConfig(horizons=[1, 5, 20], baseline_samples=10, lookback=40, seed=3)
    rule = rule_for("price_drop", {"pct": 5})
    full = {(o.signal_id, o.horizon): o for o in db.read_sync(due_outcomes, "a", spec, 500, rule)}
    assert len(full) == 2 * (3 * 3 + 1)  # hour 118: only 1 hour later is observed
    cut = T0 + timedelta(hours=95)
    db.write_sync(lambda conn: conn.execute(delete(observations).where(observations.c.time > cut)))
    truncated = {(o.signal_id, o.horizon): o for o in db.read_sync(due_outcomes, "a", spec, 500, rule)}
    assert set(truncated) == {k for k, o in full.items() if o.end_time <= cut}
    assert all(truncated[k] == full[k] for k in truncated)


def test_outcomes_are_stored_once_with_their_measure_and_a_missing_base_rate(db: Database) -> None:
    replay(db, "restock", {}, "in_stock", [0.0, 1, 1, 1, 1])  # no earlier start in stock: no base rate
    first = db.read_sync(due_outcomes, "a", SPEC, 500, rule_for("restock"))
    assert len(first) == 3 and all(math.isnan(o.baseline) and o.samples == 0 for o in first)
    assert db.write_sync(insert_outcomes, first, datetime.now(UTC)) == 3
    assert db.write_sync(insert_outcomes, first, datetime.now(UTC)) == 0
    stored = db.read_sync(list_outcomes, "a")
    assert [o.measure for o in stored] == ["stays_in_stock"] * 3 and all(math.isnan(o.baseline) for o in stored)
    assert db.read_sync(due_outcomes, "a", SPEC, 500, rule_for("restock")) == []
    (s, *_) = summarize(stored)
    assert s.hit_rate == 1.0 and math.isnan(s.baseline)


def test_observations_are_kept_only_for_the_watched_column_and_pruned_with_retention(db: Database) -> None:
    frame = Frame(
        keys=np.array(["a", "b", "c"]),
        times=np.full(3, np.datetime64(T0.replace(tzinfo=None), "ns")),
        columns={"price": np.array([1.0, np.nan, 3.0]), "other": np.ones(3)},
    )
    assert db.write_sync(insert_observations, "a", frame, "price") == 2  # NaN is not an observation
    assert db.write_sync(insert_observations, "a", frame, "price") == 2  # a repeat is kept as it was
    later = _frame("a", 48, "price", 2.0)
    db.write_sync(insert_observations, "a", later, "price")
    assert db.write_sync(prune_observations, "a", timedelta(days=1)) == 2
    count = db.read_sync(lambda conn: conn.execute(select(func.count()).select_from(observations)).scalar_one())
    assert count == 1
    assert OutcomeRule("stays_down", "price").observed and not OutcomeRule("holds_rank").observed


def _observe(db: Database, key: str, minute: int, value: float) -> None:
    at = np.datetime64(T0.replace(tzinfo=None), "ns") + np.timedelta64(minute, "m")
    frame = Frame(keys=np.array([key]), times=np.array([at]), columns={"price": np.array([value])})
    db.write_sync(insert_observations, "a", frame, "price")


def test_time_horizons_read_the_value_in_force_for_sources_that_report_changes_only(db: Database) -> None:
    for minute, price in ((0, 50.0), (10, 40.0), (70, 38.0), (200, 45.0)):  # only changes are reported
        _observe(db, "sku-1", minute, price)
    spec = OutcomesConfig(horizons=[30, 120, 240], unit="minutes", baseline_samples=20, lookback=50)
    rule = rule_for("price_drop", {"pct": 10})
    moved = Signal(
        automation="a", key="sku-1", time=T0 + timedelta(minutes=10), kind="price_drop", score=20.0, payload={}
    )
    (signal,) = db.write_sync(append_signals, "a", [moved], datetime.now(UTC))
    found = {o.horizon: o for o in db.read_sync(due_outcomes, "a", spec, 500, rule) if o.signal_id == signal.id}
    # the automation has observed nothing after minute 200 yet: 240 minutes after minute 10 has not passed
    assert set(found) == {30, 120}
    assert (found[30].exit, found[30].hit, found[30].volume) == (40.0, True, 1.0)  # no change: it held
    assert found[30].end_time == T0 + timedelta(minutes=40)
    assert (found[120].exit, found[120].hit) == (38.0, True)
    assert (found[30].samples, found[30].baseline) == (1, 1.0)  # from minute 0: 50 held for 30 minutes
    _observe(db, "sku-2", 300, 9.0)  # any key observed later: the automation was watching
    found = {o.horizon: o for o in db.read_sync(due_outcomes, "a", spec, 500, rule) if o.signal_id == signal.id}
    assert (found[240].exit, found[240].hit, found[240].volume) == (45.0, False, 0.5)
    assert found[240].ret == pytest.approx(0.125)


def test_the_engine_keeps_the_watched_column_and_measures_a_threshold_after_a_replay(tmp_path, db: Database) -> None:  # type: ignore[no-untyped-def]
    close = [90.0, 95, 101, 103, 99, 104, 106, 98, 97, 102, 108, 110]  # crosses 100 at 2, 5 and 9
    lines = ["symbol,time,open,high,low,close,volume"]
    for i, c in enumerate(close):
        lines.append(f"IBM,{(T0 + timedelta(minutes=i)).isoformat()},{c},{c},{c},{c},1000")
    path = tmp_path / "bars.csv"
    path.write_text("\n".join(lines) + "\n")
    settings = Settings.model_validate(
        {
            "automations": [
                {
                    "name": "a",
                    "source": {"kind": "file", "path": str(path)},
                    "detector": {"kind": "threshold", "level": 100.0},
                    "outcomes": {"horizons": [1, 2]},
                }
            ]
        }
    )

    async def run() -> None:
        engine = Engine(settings, db, Registry.from_entry_points(), watch_every=None)
        await engine.start()
        await engine.wait()
        await engine.stop()

    asyncio.run(run())
    count = db.read_sync(lambda conn: conn.execute(select(func.count()).select_from(observations)).scalar_one())
    assert count == len(close)
    stored = {(o.time, o.horizon): o for o in db.read_sync(list_outcomes, "a")}
    at = [T0 + timedelta(minutes=m) for m in (2, 5, 9)]
    assert set(stored) == {(t, h) for t in at for h in (1, 2)}
    assert {o.measure for o in stored.values()} == {"continues"}
    assert [stored[t, 1].hit for t in at] == [True, True, True]  # 103 > 101, 106 > 104, 108 > 102
    assert [stored[t, 2].hit for t in at] == [False, False, True]  # 99 < 101, 98 < 104, 110 > 102


def test_the_conformance_suite_refuses_an_outcome_it_cannot_measure() -> None:
    from signalmint.detectors import PriceDrop
    from signalmint.testing.detectors import check_states_a_known_outcome

    class Vague(PriceDrop):
        @classmethod
        def outcome(cls, options: Any) -> OutcomeRule:
            return OutcomeRule("vibes", column="price")

    class Elsewhere(PriceDrop):
        @classmethod
        def outcome(cls, options: Any) -> OutcomeRule:
            return OutcomeRule("stays_down", column="list_price")

    check_states_a_known_outcome(lambda: PriceDrop(pct=10))
    with pytest.raises(AssertionError, match="not one of"):
        check_states_a_known_outcome(lambda: Vague(pct=10))
    with pytest.raises(AssertionError, match="never reads"):
        check_states_a_known_outcome(lambda: Elsewhere(pct=10))
