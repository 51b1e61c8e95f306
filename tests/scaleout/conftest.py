"""Helpers for the scale-out tests: deterministic replays of four automations, the config that
runs them, and a reference signal log from one engine over the same data.

Each automation replays its own CSV of one-minute bars (12 symbols, a seed of its own) whose
volume spikes come only after ``quiet`` bars: engines that start together have split the
automations before the first signal."""

from __future__ import annotations

import asyncio
import contextlib
import csv
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from signalmint.config import AutomationConfig, DetectorConfig, PluginConfig, Settings
from signalmint.engine.runner import Engine
from signalmint.records import Fence
from signalmint.registry import Registry
from signalmint.store import Database
from signalmint.store.leases import check_fence
from signalmint.store.migrate import migrate
from signalmint.store.signals import chain_signals

START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
SYMBOLS = [f"S{i:02d}" for i in range(12)]
NAMES = ["alpha", "bravo", "charlie", "delta"]


def replay_migration(db: Database, script: str) -> None:
    """Migrate an empty PostgreSQL schema to head as the ``db`` fixture does: the statements Alembic ran
    once this session (``_pg_migration_script``), in one round trip."""
    with db.engine.begin() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.execute(script)


def write_bars(path: Path, *, bars: int, seed: int, quiet: int) -> None:
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["symbol", "time", "open", "high", "low", "close", "volume"])
        for t in range(bars):
            stamp = (START + timedelta(minutes=t)).isoformat().replace("+00:00", "Z")
            for s, symbol in enumerate(SYMBOLS):
                volume = float(rng.lognormal(8, 0.25))
                if t >= quiet and (t + 5 * s + seed) % 23 == 0:
                    volume *= 12
                w.writerow([symbol, stamp, 100 + s, 101 + s, 99 + s, 100.5 + s, round(volume, 2)])


def write_data(folder: Path, *, bars: int = 200, quiet: int = 60) -> dict[str, Path]:
    paths = {}
    for i, name in enumerate(NAMES):
        paths[name] = folder / f"{name}.csv"
        write_bars(paths[name], bars=bars, seed=11 + i, quiet=quiet)
    return paths


def config_yaml(db_url: str, data: dict[str, Path], *, pace: float, lease: float = 1.5, beat: float = 0.3) -> str:
    lines = [
        f"database: {db_url}",
        "checkpoint_every: 0.3s",
        "log_level: INFO",
        f"engine: {{lease: {lease}s, heartbeat: {beat}s}}",
        "automations:",
    ]
    for name, path in data.items():
        lines += [
            f"  - name: {name}",
            f"    source: {{kind: file, path: '{path}', pace: {pace}}}",
            "    detector: {kind: volume_spike, window: 30, ratio: 3, z: 4}",
            "    retention: null",
        ]
    return "\n".join(lines) + "\n"


def settings_for(db_url: str, data: dict[str, Path], *, pace: float, lease: float = 1.5, beat: float = 0.3) -> Settings:
    return Settings(
        database=db_url,
        checkpoint_every=timedelta(seconds=0.3),
        engine={"lease": timedelta(seconds=lease), "heartbeat": timedelta(seconds=beat)},
        automations=[
            AutomationConfig(
                name=name,
                source=PluginConfig(kind="file", path=str(path), pace=pace),
                detector=DetectorConfig(kind="volume_spike", window=30, ratio=3, z=4),
                retention=None,
            )
            for name, path in data.items()
        ],
    )


Log = list[tuple[int, str, str, str]]  # seq, key, time, kind


def signal_logs(db: Database) -> dict[str, Log]:
    """Every automation's log in seq order, as (seq, key, iso time, kind)."""
    logs: dict[str, Log] = {}
    for name in NAMES:
        rows = db.read_sync(chain_signals, name, 0, 100_000)
        logs[name] = [(s.seq or 0, s.key, s.time.isoformat(), s.kind) for s in rows]
    return logs


def reference_logs(folder: Path, data: dict[str, Path], registry: Registry) -> dict[str, Log]:
    """One engine, alone, over the same data at full speed: the log every run must equal."""
    db = Database(f"sqlite:///{folder / 'reference.db'}")
    migrate(db)

    async def run() -> None:
        engine = Engine(settings_for(db.url, data, pace=0), db, registry, watch_every=None)
        await engine.start()
        await asyncio.wait_for(engine.wait(), timeout=60)
        await engine.stop()

    try:
        asyncio.run(run())
        return signal_logs(db)
    finally:
        db.close()


def same_signals(got: dict[str, Log], expected: dict[str, Log]) -> None:
    """Per automation: the same (key, time, kind) in the same order, seq 1..n without a gap."""
    for name in NAMES:
        assert [s[1:] for s in got[name]] == [s[1:] for s in expected[name]], name
        assert [s[0] for s in got[name]] == list(range(1, len(got[name]) + 1)), name


@contextlib.contextmanager
def stuck_mid_pipeline(db: Database, automation: str, fence: Fence, *, idle_timeout: float) -> Iterator[int]:
    """An engine frozen mid-commit, the way SIGSTOP can catch one (PostgreSQL): a connection whose
    transaction passed ``automation``'s fence (so the lease row is locked, with ``idle_timeout`` set
    as every fenced commit sets it) and then sent half a pipeline, a statement without its Sync, as
    psycopg's ``executemany`` does. The server waits for the rest with no idle timeout. Yields
    the connection's backend pid; the connection is thrown away afterwards."""
    conn = db.engine.connect()
    try:
        conn.begin()
        check_fence(conn, automation, fence, datetime.now(UTC), idle_timeout=idle_timeout)
        driver = conn.connection.driver_connection
        assert driver is not None
        pid = driver.info.backend_pid
        driver.pgconn.enter_pipeline_mode()
        driver.pgconn.send_query_params(b"SELECT 1", None)
        driver.pgconn.flush()
        yield pid
    finally:
        conn.invalidate()
        conn.close()
