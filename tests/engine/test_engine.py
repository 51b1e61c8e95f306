"""The engine end to end: file replay -> detector -> committed, chained signals."""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from signalmint.config import AutomationConfig, DetectorConfig, PluginConfig, Settings
from signalmint.engine.runner import Engine
from signalmint.registry import Registry
from signalmint.store import Database, list_signals, load_checkpoint, verify_chain
from signalmint.store.migrate import migrate
from signalmint.store.signals import count_signals

from .. import processes

START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
SYMBOLS = [f"S{i:02d}" for i in range(12)]


def write_bars(path: Path, bars: int = 160, seed: int = 3, bad_rows: bool = True) -> set[tuple[str, str]]:
    """A CSV of one-minute bars with spikes at known places; returns the spikes as (symbol, iso time)."""
    rng = np.random.default_rng(seed)
    spikes: set[tuple[str, str]] = set()
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["symbol", "time", "open", "high", "low", "close", "volume"])
        for t in range(bars):
            stamp = (START + timedelta(minutes=t)).isoformat().replace("+00:00", "Z")
            for s, symbol in enumerate(SYMBOLS):
                volume = float(rng.lognormal(8, 0.25))
                if t >= 40 and (t + 7 * s) % 50 == 0:
                    volume *= 12
                    spikes.add((symbol, stamp))
                price = 100 + s
                w.writerow([symbol, stamp, price, price + 1, price - 1, price + 0.5, round(volume, 2)])
            if bad_rows and t % 40 == 5:
                w.writerow(["S00", stamp, 1, 2, 1, 1, -5])  # negative volume (and a duplicate time)
                w.writerow(["S01", stamp.replace("Z", ""), 1, 2, 1, 1, 5])  # naive timestamp
                w.writerow(["S02", stamp, "nan", 2, 1, 1, 5])  # NaN
                w.writerow(["S03", stamp, 1, 0.5, 1, 1, 5])  # high < low
    return spikes


def settings_for(db_url: str, csv_path: Path, *, pace: float = 0.0, checkpoint: float = 5.0) -> Settings:
    return Settings(
        database=db_url,
        checkpoint_every=timedelta(seconds=checkpoint),
        automations=[
            AutomationConfig(
                name="replay",
                source=PluginConfig(kind="file", path=str(csv_path), pace=pace),
                detector=DetectorConfig(kind="volume_spike", window=30, ratio=3, z=4),
                retention=None,
            )
        ],
    )


async def run_to_end(settings: Settings, db: Database, registry: Registry) -> Engine:
    engine = Engine(settings, db, registry)
    await engine.start()
    await asyncio.wait_for(engine.wait(), timeout=60)
    await engine.stop()
    return engine


def keys_of(db: Database) -> list[tuple[str, str]]:
    signals = db.read_sync(list_signals, automation="replay", limit=10_000)
    return sorted((s.key, s.time.isoformat().replace("+00:00", "Z")) for s in signals)


def test_replay_finds_the_injected_spikes(db: Database, registry: Registry, tmp_path: Path) -> None:
    spikes = write_bars(tmp_path / "bars.csv")
    asyncio.run(run_to_end(settings_for(db.url, tmp_path / "bars.csv"), db, registry))
    found = set(keys_of(db))
    assert spikes <= found
    assert len(found) <= len(spikes) + 2  # lognormal noise at sigma 0.25 almost never reaches 3x and 4 MADs
    assert db.read_sync(verify_chain, "replay").ok


def test_bad_rows_are_counted_and_the_rest_is_processed(db: Database, registry: Registry, tmp_path: Path) -> None:
    spikes = write_bars(tmp_path / "bars.csv")
    engine = asyncio.run(run_to_end(settings_for(db.url, tmp_path / "bars.csv"), db, registry))
    checkpoint = db.read_sync(load_checkpoint, "replay")
    assert checkpoint.bars_total == 160 * len(SYMBOLS)
    rejected = dict(checkpoint.rejected)
    assert rejected.get("negative_volume", 0) + rejected.get("duplicate", 0) >= 4
    assert rejected.get("naive_timestamp") == 4
    assert rejected.get("nan") == 4
    assert sum(rejected.values()) == 16
    text = engine.metrics.render().decode()
    assert 'signalmint_rows_rejected_total{automation="replay",reason="nan"} 4.0' in text
    assert spikes <= set(keys_of(db))


def test_graceful_stop_and_restart_gives_the_same_signals_once(
    db: Database, registry: Registry, tmp_path: Path
) -> None:
    write_bars(tmp_path / "bars.csv")
    reference_db = Database(f"sqlite:///{tmp_path / 'reference.db'}")
    migrate(reference_db)
    asyncio.run(run_to_end(settings_for(reference_db.url, tmp_path / "bars.csv"), reference_db, registry))
    expected = keys_of(reference_db)
    reference_db.close()

    settings = settings_for(db.url, tmp_path / "bars.csv", pace=0.01, checkpoint=0.3)

    async def stop_midway() -> None:
        engine = Engine(settings, db, registry)
        await engine.start()
        while db.read_sync(count_signals, "replay") < len(expected) // 3:
            await asyncio.sleep(0.05)
        await engine.stop()

    asyncio.run(stop_midway())
    partial = keys_of(db)
    assert 0 < len(partial) < len(expected)
    rest = settings_for(db.url, tmp_path / "bars.csv", checkpoint=0.3)  # the rest at full speed
    asyncio.run(run_to_end(rest, db, registry))
    assert keys_of(db) == expected  # nothing missing, nothing twice
    assert db.read_sync(verify_chain, "replay").ok


@pytest.mark.slow
def test_kill_9_and_restart_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    """A real `signalmint run` process, killed with SIGKILL mid-replay (by its fault-injection hook,
    right after the commit that stores its middle signal: signalmint/engine/faults.py), then run
    again to the end. It checkpoints every 0.1 s and replays at 5 ms a tick: some checkpoints are
    stored before the kill, and signals after the last one, which the restart must not repeat."""
    processes.warm_up()
    write_bars(tmp_path / "bars.csv", bars=220)
    reference = tmp_path / "reference.db"
    config = tmp_path / "signalmint.yaml"

    def write_config(db_path: Path, pace: float) -> None:
        config.write_text(
            f"database: sqlite:///{db_path}\n"
            "checkpoint_every: 0.1s\n"
            "web: {port: 0}\n"
            "automations:\n"
            "  - name: replay\n"
            f"    source: {{kind: file, path: {tmp_path / 'bars.csv'}, pace: {pace}}}\n"
            "    detector: {kind: volume_spike}\n"
            "    retention: null\n"
        )

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    write_config(reference, 0.0)
    first = processes.start(["run", "-c", config, "--for", "60", "--exit-when-done"], output=tmp_path / "ref.log")
    assert first.wait(timeout=90) == 0, first.read_output()
    ref_db = Database(f"sqlite:///{reference}")
    expected = keys_of(ref_db)
    ref_db.close()
    assert len(expected) > 10

    target = tmp_path / "crash.db"
    write_config(target, 0.005)
    kill_after = {"SIGNALMINT_FAULT_KILL_AFTER_SIGNAL": str(len(expected) // 2)}
    proc = processes.start(["run", "-c", config], env={**env, **kill_after}, output=tmp_path / "killed.log")
    db = Database(f"sqlite:///{target}")
    try:
        assert proc.wait(timeout=90) == -signal.SIGKILL, proc.read_output()
        partial = keys_of(db)
        assert 0 < len(partial) < len(expected)
        assert db.read_sync(load_checkpoint, "replay").cursor is not None  # it restarts from a checkpoint
        write_config(target, 0.0)
        rerun = processes.start(["run", "-c", config, "--for", "60", "--exit-when-done"], env=env,
                                output=tmp_path / "rerun.log")  # fmt: skip
        assert rerun.wait(timeout=90) == 0, rerun.read_output()
        got = keys_of(db)
        assert got == expected, (
            sorted(set(expected) - set(got)),
            sorted(set(got) - set(expected)),
            rerun.read_output()[-3000:],
        )
        assert db.read_sync(verify_chain, "replay").ok
    finally:
        if proc.poll() is None:
            proc.kill()
        db.close()


def test_sigterm_stops_cleanly_with_a_checkpoint(tmp_path: Path) -> None:
    processes.warm_up()
    write_bars(tmp_path / "bars.csv", bars=400, bad_rows=False)
    config = tmp_path / "signalmint.yaml"
    config.write_text(
        f"database: sqlite:///{tmp_path / 'term.db'}\n"
        "web: {port: 0}\n"
        "automations:\n"
        "  - name: replay\n"
        f"    source: {{kind: file, path: {tmp_path / 'bars.csv'}, pace: 0.02}}\n"
        "    detector: {kind: volume_spike}\n"
    )
    proc = processes.start(["run", "-c", config], output=tmp_path / "term.log")
    db = Database(f"sqlite:///{tmp_path / 'term.db'}")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                if db.read_sync(load_checkpoint, "replay").bars_total or db.read_sync(count_signals, "replay"):
                    break
            except Exception:  # the schema may not exist yet
                continue
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "received SIGTERM" in output and "checkpoint saved" in output
    checkpoint = db.read_sync(load_checkpoint, "replay")
    assert checkpoint.cursor is not None and checkpoint.detector_state is not None
    assert checkpoint.bars_total == len(SYMBOLS) * (1 + round((checkpoint.cursor - START).total_seconds() / 60))
    db.close()


def test_a_looping_replay_keeps_appending_in_order_across_a_restart(db: Database, registry: Registry) -> None:
    """The demo's stock replay loops: signals keep coming, in time order, chained, none twice."""
    origin = datetime(2013, 3, 8, 21, tzinfo=UTC)  # a week after the file's last day
    source = PluginConfig(kind="bokeh_stocks", pace=0, start="2012-09-01", loop=True, loop_step="1h")
    settings = Settings(
        database=db.url,
        checkpoint_every=timedelta(seconds=0.2),
        automations=[
            AutomationConfig(
                name="stocks",
                source=source,
                detector=DetectorConfig(kind="volume_spike", window=10, ratio=2, z=2),
                retention=None,
            )
        ],
    )

    async def run_until(cursor: datetime) -> None:
        engine = Engine(settings, db, registry)
        await engine.start()
        async with asyncio.timeout(60):
            while (engine.statuses()[0].cursor or origin - timedelta(days=9999)) < cursor:
                await asyncio.sleep(0.05)
        await engine.stop()

    ticks_per_lap = 124  # trading days from 2012-09-04 to 2013-03-01
    asyncio.run(run_until(origin + timedelta(hours=ticks_per_lap)))  # one lap past the file's end
    first = db.read_sync(list_signals, automation="stocks", limit=10_000)
    asyncio.run(run_until(origin + timedelta(hours=3 * ticks_per_lap)))  # resumes after its cursor
    signals = sorted(db.read_sync(list_signals, automation="stocks", limit=10_000), key=lambda s: s.seq)
    assert len(signals) > len(first) > 0
    looped = [s for s in signals if s.time >= origin]
    assert len({s.time for s in looped if s.time >= origin + timedelta(hours=2 * ticks_per_lap)}) > 0
    times = [s.time for s in signals]
    assert times == sorted(times)  # appended in time order
    assert len({(s.key, s.time) for s in signals}) == len(signals)  # nothing twice
    assert db.read_sync(verify_chain, "stocks").ok
