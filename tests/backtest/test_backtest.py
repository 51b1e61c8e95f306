"""Backtests: the batch path equals the streaming path, no look-ahead, the store is left as it
was, and `signalmint backtest` on a small hand-checked CSV."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from sqlalchemy import func, select
from typer.testing import CliRunner

from signalmint.backtest import has_batch, run_backtest
from signalmint.cli import app
from signalmint.detectors import VolumeSpike
from signalmint.detectors.cooldown import Cooldown
from signalmint.detectors.volume_spike import VolumeSpikeOptions
from signalmint.detectors.volume_spike_batch import chunk_size, median_bound
from signalmint.records import Frame, Scores, Signal
from signalmint.sources.file import split_ticks
from signalmint.store import Database, append_signals
from signalmint.store.bars import insert_bars
from signalmint.store.tables import bars, signals

runner = CliRunner()
T0 = np.datetime64("2024-01-02T14:30", "ns")


# --- the batch path equals the streaming path ---------------------------------------------------


def history(seed: int, keys: int, ticks: int, *, ragged: bool, levels: int = 0) -> Frame:
    """Random bars: lognormal volumes (or ``levels`` distinct values, for ties), some NaN,
    zero, negative and huge; with ``ragged`` keys skip ticks and come in shuffled order."""
    rng = np.random.default_rng(seed)
    names = np.array([f"K{i}" for i in range(keys)])
    rows_keys, rows_times = [], []
    for t in range(ticks):
        present = rng.permutation(keys)[: rng.integers(1, keys + 1)] if ragged else np.arange(keys)
        rows_keys.append(names[present])
        rows_times.append(np.full(len(present), T0 + np.timedelta64(t, "m")))
    k = np.concatenate(rows_keys)
    n = len(k)
    if levels:
        volume = rng.integers(0, levels, n).astype(np.float64) * 10
        volume[rng.random(n) < 0.04] *= 10  # spikes that tie with each other
    else:
        volume = np.round(rng.lognormal(4, 0.6, n))
        volume[rng.random(n) < 0.04] *= rng.uniform(3, 30)
    odd = rng.random(n)
    volume[odd < 0.03] = np.nan
    volume[(odd >= 0.03) & (odd < 0.06)] = 0.0
    volume[(odd >= 0.06) & (odd < 0.07)] = -5.0
    volume[(odd >= 0.07) & (odd < 0.075)] = 1e300
    close = rng.uniform(0, 2, n)
    close[rng.random(n) < 0.05] = 0.0
    return Frame(keys=k, times=np.concatenate(rows_times), columns={"volume": volume, "close": close})


def streamed(detector: Any, frame: Frame) -> Scores:
    parts = [detector.update(tick) for tick in split_ticks(frame)]
    return Scores(
        keys=np.concatenate([p.keys for p in parts]),
        times=np.concatenate([p.times for p in parts]),
        score=np.concatenate([p.score for p in parts]),
        flags=np.concatenate([p.flags for p in parts]),
        details={name: np.concatenate([p.details[name] for p in parts]) for name in parts[0].details},
    )


def assert_same(batch: Scores, stream: Scores) -> None:
    assert np.array_equal(batch.keys, stream.keys) and np.array_equal(batch.times, stream.times)
    assert np.array_equal(batch.flags, stream.flags), np.flatnonzero(batch.flags != stream.flags)
    assert np.array_equal(batch.score, stream.score, equal_nan=True)
    for name in ("z", "mad", "history", "price_change", "volume"):
        assert np.array_equal(batch.details[name], stream.details[name], equal_nan=True), name
    for name in ("baseline", "ratio"):  # the batch path computes them where a bar could flag
        where = ~np.isnan(batch.details[name])
        assert np.array_equal(batch.details[name][where], stream.details[name][where]), name


@pytest.mark.parametrize("window", [3, 4, 7, 30, 131])  # 131: counts past a byte
@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("levels", [0, 4])
def test_batch_flags_equal_streaming_flags(window: int, ragged: bool, levels: int) -> None:
    frame = history(window * 7 + ragged + levels, keys=9, ticks=4 * window + 40, ragged=ragged, levels=levels)
    options: dict[str, Any] = {"window": window, "ratio": 2.0, "z": 3.0}
    batch = VolumeSpike(**options).batch(frame)
    stream = streamed(VolumeSpike(**options), frame)
    assert_same(batch, stream)
    assert stream.flags.any()
    if levels and window < 7:  # few distinct values: flat windows (z = inf) and zero medians
        assert np.isinf(stream.score).any() and (stream.details["baseline"] == 0).any()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), window=st.integers(3, 64), levels=st.sampled_from([0, 2, 5]))
def test_the_median_bound_never_exceeds_a_windows_median(seed: int, window: int, levels: int) -> None:
    rng = np.random.default_rng(seed)
    bars = window + int(rng.integers(1, 3 * window))
    values = rng.lognormal(3, 1, (3, bars)) if not levels else rng.integers(0, levels, (3, bars)) * 1.0
    s = chunk_size(window)
    groups = -(-(bars - window) // s)
    wires = -(-(window + s - 1) // s)
    padded = np.full((3, s * (groups + max(wires - 1, -(-window // s)))), 1e300)
    padded[:, :bars] = values
    bound = median_bound(padded, window, groups)
    for j in range(bars - window):
        assert (bound[:, j // s] <= np.median(values[:, j : j + window], axis=1)).all()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    window=st.integers(3, 8),
    ratio=st.floats(1.0, 5.0),
    z=st.floats(0.5, 6.0),
    levels=st.sampled_from([0, 2, 3, 6]),
    cooldown=st.sampled_from([0, 1, 5]),
)
def test_batch_equals_streaming_with_cooldown_property(
    seed: int, window: int, ratio: float, z: float, levels: int, cooldown: int
) -> None:
    frame = history(seed, keys=4, ticks=window * 3 + 15, ragged=True, levels=levels)
    make: Callable[[], Cooldown] = lambda: Cooldown(  # noqa: E731
        VolumeSpike(window=window, ratio=ratio, z=z), timedelta(minutes=cooldown)
    )
    assert_same(make().batch(frame), streamed(make(), frame))


def test_the_cooldown_clears_the_same_flags_in_both_paths() -> None:
    frame = history(3, keys=5, ticks=200, ragged=False)
    raw = VolumeSpike(window=5, ratio=2.0, z=3.0).batch(frame)
    cooled = Cooldown(VolumeSpike(window=5, ratio=2.0, z=3.0), timedelta(minutes=30))
    batch = cooled.batch(frame)
    assert 0 < batch.flags.sum() < raw.flags.sum()  # the cooldown did clear some
    assert_same(batch, streamed(Cooldown(VolumeSpike(window=5, ratio=2.0, z=3.0), timedelta(minutes=30)), frame))


def test_no_look_ahead_flags_on_a_prefix_equal_the_prefix_of_the_flags() -> None:
    frame = history(11, keys=6, ticks=150, ragged=True)
    full = Cooldown(VolumeSpike(window=5, ratio=2.0, z=3.0), timedelta(minutes=10)).batch(frame)
    assert full.flags.sum() > 5
    for cut in (40, 77, 120):
        head = frame.take(np.flatnonzero(frame.times < T0 + np.timedelta64(cut, "m")))
        part = Cooldown(VolumeSpike(window=5, ratio=2.0, z=3.0), timedelta(minutes=10)).batch(head)
        assert np.array_equal(part.flags, full.flags[: len(head)])
        assert np.array_equal(part.score, full.score[: len(head)], equal_nan=True)


def test_no_look_ahead_in_a_backtest_signals_before_a_cut_do_not_change() -> None:
    frame = history(12, keys=6, ticks=3 * 24 * 60 // 20, ragged=False)  # three days of 20-minute bars
    frame = Frame(frame.keys, T0 + (frame.times - T0) * 20, frame.columns)
    start, end = datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 5, tzinfo=UTC)
    cut = datetime(2024, 1, 3, 12, tzinfo=UTC)
    for make in (lambda: VolumeSpike(window=5, ratio=2.0, z=3.0), lambda: _Streaming(VolumeSpike(5, 2.0, 3.0))):
        full = run_backtest(make(), frame, "a", start, end)
        head = frame.take(np.flatnonzero(frame.times < np.datetime64(cut.replace(tzinfo=None), "ns")))
        part = run_backtest(make(), head, "a", start, cut)
        assert len(part.signals) > 3
        assert _plain(part.signals) == _plain([s for s in full.signals if s.time < cut])


def _plain(found: Any) -> list[tuple[Any, ...]]:
    """Signals as comparable tuples (a NaN in a payload equals itself in JSON)."""
    return [(s.key, s.time, s.score, json.dumps(s.payload, sort_keys=True)) for s in found]


class _Streaming:
    """A detector without a batch path (the backtest streams it)."""

    kind: ClassVar[str] = "volume_spike"
    Options: ClassVar[type[BaseModel]] = VolumeSpikeOptions

    def __init__(self, inner: VolumeSpike) -> None:
        self.inner = inner

    def update(self, frame: Frame) -> Scores:
        return self.inner.update(frame)


def test_the_backtest_takes_the_batch_path_when_offered_and_both_agree() -> None:
    frame = history(5, keys=8, ticks=300, ragged=True)
    start, end = datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 3, tzinfo=UTC)
    assert has_batch(Cooldown(VolumeSpike(), timedelta(minutes=5))) and not has_batch(_Streaming(VolumeSpike()))
    batch = run_backtest(Cooldown(VolumeSpike(5, 2.0, 3.0), timedelta(minutes=5)), frame, "a", start, end)
    stream = run_backtest(
        Cooldown(_Streaming(VolumeSpike(5, 2.0, 3.0)), timedelta(minutes=5)),
        frame,
        "a",
        start,
        end,
    )
    assert (batch.path, stream.path) == ("batch", "streaming")
    assert _plain(batch.signals) == _plain(stream.signals) and len(batch.signals) > 5


# --- the command -------------------------------------------------------------------------------

# Two keys, window 3 (ratio 3, z 4). A spikes at day 1 10:03 and 10:08 and at day 2 23:30;
# B at day 1 23:50. Every other bar is within a few percent of its window's median.
BARS = {
    "A": [
        ("2024-01-02T10:00", 100), ("2024-01-02T10:01", 110), ("2024-01-02T10:02", 90),
        ("2024-01-02T10:03", 1000),  # median 100, MAD 10: a spike
        ("2024-01-02T10:04", 100), ("2024-01-02T10:05", 100), ("2024-01-02T10:06", 100),
        ("2024-01-02T10:07", 110),
        ("2024-01-02T10:08", 1000),  # median 100, MAD 0: a spike
        ("2024-01-03T10:00", 100), ("2024-01-03T10:01", 90), ("2024-01-03T10:02", 110),
        ("2024-01-03T23:30", 900),  # median 100, MAD 10: a spike
    ],
    "B": [
        ("2024-01-02T10:00", 50), ("2024-01-02T10:01", 55), ("2024-01-02T10:02", 45),
        ("2024-01-02T10:03", 50),
        ("2024-01-02T23:50", 500),  # median 50, MAD 5: a spike
        ("2024-01-03T10:00", 50),
    ],
}  # fmt: skip

PLANS = """
plans:
  - id: all
  - id: free
    watchlist: 1
    alerts_per_day: 1
  - id: late
    delay: 1h
"""


def write_config(tmp_path: Path, *, cooldown: str = "0s", source: str = "{kind: synthetic}") -> Path:
    path = tmp_path / "signalmint.yaml"
    path.write_text(
        f"database: sqlite:///{tmp_path / 'live.db'}\n"
        "automations:\n  - name: spikes\n"
        f"    source: {source}\n"
        f"    detector: {{kind: volume_spike, window: 3, ratio: 3, z: 4, cooldown: {cooldown}}}\n" + PLANS
    )
    return path


def write_csv(tmp_path: Path) -> Path:
    path = tmp_path / "bars.csv"
    lines = ["symbol,time,open,high,low,close,volume"]
    rows = sorted((t, key, v) for key, series in BARS.items() for t, v in series)
    lines += [f"{key},{t}:00Z,10,10,10,10,{v}" for t, key, v in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_backtest_on_a_csv_prints_signals_per_day_and_key_and_each_plans_forecast(tmp_path: Path) -> None:
    config, data = write_config(tmp_path), write_csv(tmp_path)
    args = ["backtest", "-c", str(config), "--automation", "spikes", "--from", "2024-01-02", "--to", "2024-01-03"]
    got = runner.invoke(app, [*args, "--data", str(data), "--json"])
    assert got.exit_code == 0, got.output
    report = json.loads(got.stdout)
    assert report["path"] == "batch" and report["keys"] == 2 and report["signals"] == 4
    assert report["per_day"] == {"2024-01-02": 3, "2024-01-03": 1}
    assert report["per_key"] == {"A": 3, "B": 1}
    plans = {f["plan"]: f for f in report["forecasts"]}
    assert plans["all"]["per_day"] == 2.0  # 4 signals over 2 days, every key
    # a 1-key watchlist, 1 a day: watching A gets 1 + 1 over 2 days, watching B 1 + 0
    assert plans["free"]["watchlists"] == 2 and plans["free"]["keys"] == 1
    assert plans["free"]["per_day"] == 0.75 and plans["free"]["capped"] == 0.25
    assert plans["free"]["busiest_day"] == 1.0
    # an hour late: B's 23:50 moves to day 2, A's day-2 23:30 leaves the range
    assert plans["late"]["per_day"] == 1.5 and plans["late"]["busiest_day"] == 2.0

    table = runner.invoke(app, [*args, "--data", str(data)])
    assert table.exit_code == 0, table.output
    text = table.stdout
    assert "signals per day" in text and "2024-01-02 │       3" in text and "2024-01-03 │       1" in text
    assert "signals per key" in text and "A   │       3" in text
    assert "forecast: alerts per subscriber per day" in text
    free = next(line for line in text.splitlines() if line.startswith("│ free"))
    assert "0.75" in free and "25%" in free and "│   1* │" in free

    cooled = runner.invoke(
        app, [*args, "--data", str(data), "--json", "-c", str(write_config(tmp_path, cooldown="10m"))]
    )
    assert json.loads(cooled.stdout)["per_key"] == {"A": 2, "B": 1}  # 10:08 is within 10:03's cooldown


def test_backtest_reads_the_automations_own_file_source(tmp_path: Path) -> None:
    data = write_csv(tmp_path)
    config = write_config(tmp_path, source=f"{{kind: file, path: '{data}'}}")
    got = runner.invoke(
        app,
        [
            "backtest",
            "-c",
            str(config),
            "--automation",
            "spikes",
            "--from",
            "2024-01-02",
            "--to",
            "2024-01-02",
            "--json",
        ],
    )
    assert got.exit_code == 0, got.output
    assert json.loads(got.stdout)["per_day"] == {"2024-01-02": 3}


def test_backtest_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    config, data = write_config(tmp_path), str(write_csv(tmp_path))
    base = ["backtest", "-c", str(config), "--data", data]
    for extra, message in (
        (["--automation", "nope", "--from", "2024-01-02", "--to", "2024-01-03"], "has spikes"),
        (["--automation", "spikes", "--from", "2024-01-05", "--to", "2024-01-03"], "is not after"),
        (["--automation", "spikes", "--from", "yesterday", "--to", "2024-01-03"], "write a date"),
        (["--automation", "spikes", "--from", "2023-01-02", "--to", "2023-01-03"], "no bars"),
    ):
        got = runner.invoke(app, [*base, *extra])
        assert got.exit_code == 1 and message in got.output and "Traceback" not in got.output, got.output


def _counts(db: Database) -> tuple[int, int]:
    def count(conn: Any) -> tuple[int, int]:
        return (
            conn.execute(select(func.count()).select_from(signals)).scalar_one(),
            conn.execute(select(func.count()).select_from(bars)).scalar_one(),
        )

    return db.read_sync(count)


def _files(url: str) -> tuple[str, int]:
    """The SQLite database file's hash, and the size of its WAL (0 when there is none: SQLite
    may create an empty one when a reader opens a WAL-mode database)."""
    main = Path(url.split(":///", 1)[1])
    wal = Path(f"{main}-wal")
    return hashlib.sha256(main.read_bytes()).hexdigest(), wal.stat().st_size if wal.exists() else 0


def test_a_backtest_of_the_stored_bars_leaves_the_store_unchanged(tmp_path: Path, db: Database) -> None:
    """On SQLite and PostgreSQL: same rows after as before; on SQLite, the same bytes."""
    config = tmp_path / "signalmint.yaml"
    config.write_text(write_config(tmp_path).read_text().replace(f"sqlite:///{tmp_path / 'live.db'}", db.url))
    rows = sorted((t, key, v) for key, series in BARS.items() for t, v in series)
    frame = Frame(
        keys=np.array([k for _, k, _ in rows]),
        times=np.array([np.datetime64(t, "ns") for t, _, _ in rows]),
        columns={c: np.array([float(v) for *_, v in rows]) for c in ("open", "high", "low", "close", "volume")},
    )
    db.write_sync(insert_bars, "spikes", frame)
    old = Signal("spikes", "A", datetime(2024, 1, 1, tzinfo=UTC), "volume_spike", 5.0, {"ratio": 5.0})
    db.write_sync(append_signals, "spikes", [old], datetime.now(UTC))
    before_counts = _counts(db)
    sqlite = db.url.startswith("sqlite")
    if sqlite:
        db.close()  # the last connection checkpoints the WAL into the file
    before = _files(db.url) if sqlite else ("", 0)
    got = runner.invoke(
        app,
        [
            "backtest",
            "-c",
            str(config),
            "--automation",
            "spikes",
            "--from",
            "2024-01-02",
            "--to",
            "2024-01-03",
            "--json",
        ],
    )
    assert got.exit_code == 0, got.output
    report = json.loads(got.stdout)
    assert report["signals"] == 4  # it did read the stored bars
    assert report["outcomes"]["measure"] == "return"  # and measured outcomes on them, writing none
    assert sum(h["count"] for h in report["outcomes"]["per_horizon"]) + sum(report["outcomes"]["pending"].values())
    if sqlite:
        assert _files(db.url) == before
        db = Database(db.url, read_only=True)
    try:
        assert _counts(db) == before_counts == (1, 19)
    finally:
        if sqlite:
            db.close()
