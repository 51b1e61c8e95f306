"""A backtest's outcomes: equal to hand-computed returns on a small dataset, never measured on
bars after ``--to`` (a horizon running past it is pending), and the engine's own measures."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from signalmint.backtest import measure_outcomes, run_backtest
from signalmint.cli import app
from signalmint.config import OutcomesConfig
from signalmint.detectors import VolumeSpike
from signalmint.engine.outcome_rules import rule_for
from signalmint.records import Frame, OutcomeRule, Signal

runner = CliRunner()

# One key, a bar a minute from 10:00 on 2024-01-02; window 3 (ratio 3, z 4) flags bars 5 and 10.
CLOSE = [100, 101, 99, 100, 102, 104, 110, 106, 108, 105, 107, 109, 111]
VOLUME = [100, 110, 90, 100, 105, 1000, 100, 95, 100, 100, 1000, 100, 100]
# After --to (2024-01-02, the whole day): bars that would give bar 10 a 3-bar outcome if read.
LATER = [("2024-01-03T00:00", 200, 100), ("2024-01-03T00:01", 300, 100), ("2024-01-03T00:02", 50, 100)]
START, END = datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 3, tzinfo=UTC)


def rows() -> list[tuple[str, float, float]]:
    day = [(f"2024-01-02T10:{i:02d}", float(c), float(v)) for i, (c, v) in enumerate(zip(CLOSE, VOLUME, strict=True))]
    return day + [(t, float(c), float(v)) for t, c, v in LATER]


def frame(until: datetime | None = None) -> Frame:
    got = [r for r in rows() if until is None or np.datetime64(r[0], "ns") < np.datetime64(until.replace(tzinfo=None))]
    return Frame(
        keys=np.array(["A"] * len(got)),
        times=np.array([np.datetime64(t, "ns") for t, _, _ in got]),
        columns={"close": np.array([c for _, c, _ in got]), "volume": np.array([v for *_, v in got])},
    )


def baseline(i: int, h: int) -> float:
    """The median absolute h-bar move from every earlier bar (fewer than baseline_samples)."""
    moves = [abs(CLOSE[s + h] / CLOSE[s] - 1) for s in range(i)]
    return float(np.median(moves))


SPEC = OutcomesConfig(horizons=[1, 3], lookback=20, baseline_samples=10)


def test_outcomes_equal_hand_computed_returns_and_the_last_signal_waits() -> None:
    bt = run_backtest(VolumeSpike(window=3, ratio=3.0, z=4.0), frame(END), "a", START, END)
    assert [s.time.minute for s in bt.signals] == [5, 10]
    found = measure_outcomes(bt.signals, frame(), END, OutcomeRule("return"), SPEC)  # the later bars too
    got = {(o.time.minute, o.horizon): o for o in found.outcomes}
    expected = {(5, 1): 110 / 104 - 1, (5, 3): 108 / 104 - 1, (10, 1): 109 / 107 - 1}
    assert set(got) == set(expected)  # (10, 3) needs bar 13: after --to
    for (i, h), ret in expected.items():
        o = got[(i, h)]
        assert math.isclose(o.ret, ret, rel_tol=1e-12) and o.entry == CLOSE[i] and o.exit == CLOSE[i + h]
        assert math.isclose(o.baseline, baseline(i, h), rel_tol=1e-12) and o.samples == i
        assert o.volume == sum(VOLUME[i + 1 : i + h + 1]) and o.hit == (abs(ret) > baseline(i, h))
    assert found.pending == {1: 0, 3: 1} and found.unmeasured == {1: 0, 3: 0}
    one, three = found.summaries
    assert (one.horizon, one.count, three.horizon, three.count) == (1, 2, 3, 1)
    assert math.isclose(one.mean, (expected[(5, 1)] + expected[(10, 1)]) / 2, rel_tol=1e-12)
    assert three.hits == int(abs(expected[(5, 3)]) > baseline(5, 3))


def test_no_look_ahead_an_outcome_never_reads_past_the_end() -> None:
    """Cut the data anywhere: an outcome measured before the cut is the same after it, and a
    horizon crossing the cut is pending, whatever the bars beyond it say."""
    bt = run_backtest(VolumeSpike(window=3, ratio=3.0, z=4.0), frame(END), "a", START, END)
    full = measure_outcomes(bt.signals, frame(), datetime(2024, 1, 4, tzinfo=UTC), OutcomeRule("return"), SPEC)
    late = {(o.time.minute, o.horizon): o.ret for o in full.outcomes}
    assert math.isclose(late[(10, 3)], 200 / 107 - 1)  # with the later bars it would be measured
    for cut_minute in range(6, 14):
        cut = datetime(2024, 1, 2, 10, cut_minute, tzinfo=UTC)
        before = [s for s in bt.signals if s.time < cut]  # a backtest ending at the cut finds these
        part = measure_outcomes(before, frame(), cut, OutcomeRule("return"), SPEC)
        for o in part.outcomes:
            assert o.end_time < cut and o.ret == late[(o.time.minute, o.horizon)]
        assert len(part.outcomes) + sum(part.pending.values()) == 2 * len(before)
        assert sum(part.unmeasured.values()) == 0


def write(tmp_path: Path, outcomes: str) -> tuple[Path, Path]:
    data = tmp_path / "bars.csv"
    data.write_text(
        "symbol,time,open,high,low,close,volume\n" + "".join(f"A,{t}:00Z,{c},1000,1,{c},{v}\n" for t, c, v in rows())
    )
    config = tmp_path / "signalmint.yaml"
    config.write_text(
        f"database: sqlite:///{tmp_path / 'live.db'}\nautomations:\n  - name: spikes\n    source: {{kind: synthetic}}\n"
        "    detector: {kind: volume_spike, window: 3, ratio: 3, z: 4}\n" + outcomes
    )
    return config, data


def test_the_command_reports_outcomes_per_horizon(tmp_path: Path) -> None:
    config, data = write(tmp_path, "    outcomes: {horizons: [1, 3], lookback: 20, baseline_samples: 10}\n")
    args = ["backtest", "-c", str(config), "--automation", "spikes", "--from", "2024-01-02", "--to", "2024-01-02"]
    got = runner.invoke(app, [*args, "--data", str(data), "--json"])
    assert got.exit_code == 0, got.output
    report = json.loads(got.stdout)["outcomes"]
    assert report["measure"] == "return" and report["configured"] and report["pending"] == {"1": 0, "3": 1}
    one, three = report["per_horizon"]
    assert (one["count"], three["count"]) == (2, 1)
    assert math.isclose(one["mean"], ((110 / 104 - 1) + (109 / 107 - 1)) / 2, abs_tol=1e-6)
    assert math.isclose(three["median"], 108 / 104 - 1, abs_tol=1e-6)

    table = runner.invoke(app, [*args, "--data", str(data)])
    assert table.exit_code == 0, table.output
    assert "outcomes (return" in table.stdout and "pending" in table.stdout
    line = next(x for x in table.stdout.splitlines() if "│  3 bars" in x)
    assert "+3.85%" in line and line.rstrip("│ ").endswith("1")  # 108 / 104 - 1; one pending

    unset = runner.invoke(app, [*args, "-c", str(write(tmp_path, "")[0]), "--data", str(data), "--json"])
    defaults = json.loads(unset.stdout)["outcomes"]
    assert not defaults["configured"] and defaults["horizons"] == [1, 5, 20]


def test_other_measures_use_the_engines_rules_and_wait_past_the_end_too() -> None:
    """``stays_down`` (price_drop) on a price column: hits by hand, a horizon past the end pending."""
    prices = [10.0, 9.0, 8.0, 9.0, 11.0]
    times = np.array([np.datetime64(f"2024-01-02T10:0{i}", "ns") for i in range(5)])
    data = Frame(keys=np.array(["P"] * 5), times=times, columns={"price": np.array(prices)})
    sig = [Signal("a", "P", datetime(2024, 1, 2, 10, i, tzinfo=UTC), "price_drop", 1.0, {}) for i in (1, 3)]
    spec = OutcomesConfig(horizons=[1, 3], lookback=20, baseline_samples=10)
    rule = rule_for("price_drop", {"pct": 5})
    found = measure_outcomes(sig, data, END, rule, spec)
    got = {(o.time.minute, o.horizon): (o.hit, o.exit) for o in found.outcomes}
    # from 9: next 8 (stayed down); next three 8, 9, 11 (did not); from 9 at 10:03: next 11
    assert got == {(1, 1): (True, 8.0), (1, 3): (False, 11.0), (3, 1): (False, 11.0)}
    assert found.pending == {1: 0, 3: 1}
    none = measure_outcomes(sig, data, END, rule_for("new_item"), spec)
    assert none.measure == "none" and not none.outcomes and none.reason
