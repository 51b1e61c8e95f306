"""A week of market data for reports: bars, signals (known scores) and outcomes, in a real store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from signalmint.config import OutcomesConfig, Settings, parse_settings
from signalmint.engine.outcomes import due_outcomes
from signalmint.records import Frame, Signal
from signalmint.registry import Registry
from signalmint.store import Database, append_signals
from signalmint.store.bars import insert_bars
from signalmint.store.outcomes import insert_outcomes

# ISO week 2026-W48 runs Monday Nov 23 .. Sunday Nov 29 (UTC here).
WEEK_START = datetime(2026, 11, 23, tzinfo=UTC)
KEYS = ("AAPL", "MSFT", "NVDA", "TSLA", "AMZN")
# (key, hours after the week's start, score): the top three by score are NVDA 31.5, TSLA 27.25, AAPL 19.75
SIGNALS = [
    ("AAPL", 10, 19.75), ("MSFT", 20, 6.5), ("NVDA", 30, 31.5), ("TSLA", 50, 27.25), ("AMZN", 70, 8.0),
    ("AAPL", 90, 12.0), ("MSFT", 110, 5.25), ("NVDA", 130, 9.5), ("AAPL", 150, 7.0), ("MSFT", 160, 4.0),
]  # fmt: skip
# one before and one after the week: never in W48's report
OUTSIDE = [("AAPL", -5, 99.0), ("MSFT", 24 * 7 + 1, 98.0)]

CONFIG = """
database: {database}
plans:
  - {{id: free, price: 0}}
  - {{id: premium, price: 2900, channels: [web, email]}}
  - {{id: pro, price: 9900, channels: [web, email, api]}}
automations:
  - name: stocks
    title: US stocks volume
    source: {{kind: synthetic, symbols: 5, interval: 60}}
    detector: {{kind: volume_spike}}
    outcomes: {{horizons: [1, 5]}}
    reports:
      - name: weekly
        schedule: "0 8 * * MON"
        timezone: UTC
        period: week
        contents: {{top_signals: 3, movers: 3, per_key: 5}}
        audience: {{plans: [premium, pro], price: 300}}
        catch_up: 2
"""


def report_settings(database: str, extra: str = "") -> Settings:
    return parse_settings(CONFIG.format(database=database) + extra, registry=Registry.from_entry_points())


def seed_market(db: Database, automation: str = "stocks") -> list[Signal]:
    """Hourly bars for every key from a day before the week to a day after it; the signals above; outcomes."""
    hours = 24 * 9
    first = WEEK_START - timedelta(days=1)
    times = np.array([np.datetime64(first.replace(tzinfo=None), "ns") + np.timedelta64(h, "h") for h in range(hours)])
    for n, key in enumerate(KEYS):
        rng = np.random.default_rng(n)
        close = 100.0 * (n + 1) * np.exp(np.cumsum(rng.normal(0.0005 * (n - 2), 0.01, hours)))
        frame = Frame(
            keys=np.array([key] * hours),
            times=times,
            columns={c: close.copy() for c in ("open", "high", "low", "close")} | {"volume": np.full(hours, 1000.0)},
        )
        db.write_sync(insert_bars, automation, frame)
    signals = [
        Signal(
            automation=automation, key=key, time=WEEK_START + timedelta(hours=h), kind="volume_spike", score=score,
            payload={"volume": 1000.0 * score, "baseline": 1000.0, "ratio": score, "price_change": 0.01},
        )
        for key, h, score in [*SIGNALS, *OUTSIDE]
    ]  # fmt: skip
    stored = db.write_sync(append_signals, automation, signals, datetime.now(UTC))
    found = db.read_sync(due_outcomes, automation, OutcomesConfig(horizons=[1, 5], baseline_samples=20, lookback=48))
    db.write_sync(insert_outcomes, found, datetime.now(UTC))
    return list(stored)


@pytest.fixture
def market(db: Database) -> dict[str, Any]:
    return {"db": db, "signals": seed_market(db)}
