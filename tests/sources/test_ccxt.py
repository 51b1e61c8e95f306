"""The ``ccxt`` source against a stand-in Binance (real JSON shapes) on a virtual clock: no sleeps."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from signalmint.config import AutomationConfig, DetectorConfig, PluginConfig, Settings
from signalmint.detectors.volume_spike import VolumeSpike
from signalmint.engine.runner import Engine
from signalmint.errors import SourceError
from signalmint.pipeline import build_pipeline
from signalmint.records import Frame, to_datetime
from signalmint.registry import Registry
from signalmint.sources.ccxt_candles import CcxtCandles, CcxtOptions
from signalmint.store import Database, list_signals, load_checkpoint, verify_chain
from signalmint.store.bars import bar_window, count_bars
from signalmint.testing.exchange import StandInBinance, candle

from .. import processes

MINUTE = 60_000
#: 2023-11-14 22:13:20 UTC: 20 s into a minute.
T0 = 1_700_000_000.0
SYMBOLS = ["AAA/USDT", "BBB/USDT", "CCC/USDT"]


class VirtualClock:
    """Seconds since the epoch that move only when the source sleeps (and stop at ``limit``)."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.sleeps: list[float] = []
        self.limit = float("inf")

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.now + seconds > self.limit:
            await asyncio.Event().wait()  # time stands still: the source waits until cancelled
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture
def exchange(clock: VirtualClock) -> Iterator[StandInBinance]:
    with StandInBinance([*SYMBOLS, "ZZZ/BTC"], clock=clock) as ex:
        yield ex


def source(exchange: StandInBinance, clock: VirtualClock, **options: Any) -> CcxtCandles:
    settings = {"symbols": SYMBOLS, "warmup": 5, "urls": {"public": exchange.url}, "rate_limit": 0, **options}
    validated = CcxtOptions.model_validate({"exchange": "binance", **settings})
    return CcxtCandles(**validated.model_dump(), clock=clock, sleep=clock.sleep)


def take(src: CcxtCandles, count: int, clock: VirtualClock, since: Any = None) -> list[tuple[Frame, float]]:
    """The first ``count`` frames, each with the clock when it was yielded."""

    async def run() -> list[tuple[Frame, float]]:
        out: list[tuple[Frame, float]] = []
        stream = src.stream(since)
        try:
            async for frame in stream:
                out.append((frame, clock()))
                if len(out) >= count:
                    break
        finally:
            await stream.aclose()
        return out

    return asyncio.run(asyncio.wait_for(run(), timeout=30))


def close_ms(frame: Frame) -> int:
    return int(frame.times[0].astype("datetime64[ms]").astype(np.int64))


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown ccxt exchange"):
        CcxtOptions.model_validate({"exchange": "nosuchexchange"})
    with pytest.raises(ValueError, match="binance has no timeframe '7m'"):
        CcxtOptions.model_validate({"exchange": "binance", "timeframe": "7m"})
    with pytest.raises(SourceError, match="no timeframe '7m'"):
        CcxtCandles("binance", timeframe="7m")
    assert Registry.from_entry_points().get("source", "ccxt") is CcxtCandles


def test_only_closed_candles_become_bars(exchange: StandInBinance, clock: VirtualClock) -> None:
    got = take(source(exchange, clock), 8, clock)
    boundary = int(T0 * 1000) // MINUTE * MINUTE  # the newest closed candle closes here
    for frame, now in got:
        closes = close_ms(frame)
        assert closes <= now * 1000, "a candle became a bar before it closed"
        for key, volume in zip(frame.keys.tolist(), frame.columns["volume"].tolist(), strict=True):
            assert volume == candle(key, closes - MINUTE, MINUTE)[4]  # the whole candle, never a partial one
    backfill = [frame for frame, now in got if now == T0]
    assert [close_ms(f) for f in backfill] == [boundary - i * MINUTE for i in range(4, -1, -1)]
    # the candle open at T0 (served with a partial volume) only comes once the clock passed its close
    first_live, at = got[5]
    assert close_ms(first_live) == boundary + MINUTE and at >= T0 + 40


def test_the_open_candle_seen_at_start_is_not_emitted_when_its_symbol_then_fails(
    exchange: StandInBinance, clock: VirtualClock
) -> None:
    """The first round also returns the candle still open; if AAA fails afterwards, its tick goes out
    after the grace without AAA, not with the partial candle."""
    src = source(exchange, clock, warmup=1, grace=5.0)

    async def run() -> list[Frame]:
        out: list[Frame] = []
        async for frame in src.stream():
            if not out:
                exchange.fail(1000, status=500, symbol="AAA/USDT")
            out.append(frame)
            if len(out) == 3:
                return out
        return out

    got = asyncio.run(asyncio.wait_for(run(), timeout=30))
    boundary = int(T0 * 1000) // MINUTE * MINUTE
    assert sorted(got[0].keys.tolist()) == SYMBOLS and close_ms(got[0]) == boundary
    for frame in got[1:]:
        assert sorted(frame.keys.tolist()) == ["BBB/USDT", "CCC/USDT"], "no partial AAA candle"


def test_backfill_then_live_has_no_gap_and_no_duplicate(exchange: StandInBinance, clock: VirtualClock) -> None:
    got = take(source(exchange, clock, warmup=30), 40, clock)
    closes = [close_ms(frame) for frame, _ in got]
    assert np.all(np.diff(closes) == MINUTE), "consecutive candle times across the backfill/live seam"
    for frame, _ in got:
        assert sorted(frame.keys.tolist()) == SYMBOLS
    assert sum(now == T0 for _, now in got) == 30  # 30 backfilled, then 10 live ones as they close


def test_resume_after_restart_from_since_with_a_long_outage(exchange: StandInBinance, clock: VirtualClock) -> None:
    first = take(source(exchange, clock), 8, clock)
    since = to_datetime(first[5][0].times[0])
    clock.now += 1500 * 60  # down for 25 hours: more than one page (1,000 candles) per symbol
    resumed = take(source(exchange, clock), 1510, clock, since=since)
    closes = [close_ms(frame) for frame, _ in resumed]
    assert closes[0] == close_ms(first[5][0]) + MINUTE, "no gap and no duplicate at the checkpoint"
    assert np.all(np.diff(closes) == MINUTE)
    assert all(sorted(frame.keys.tolist()) == SYMBOLS for frame, _ in resumed)


def test_errors_and_429s_are_retried_with_backoff_and_counted(exchange: StandInBinance, clock: VirtualClock) -> None:
    exchange.fail(4, status=500)
    exchange.fail(2, status=429, retry_after=7)
    src = source(exchange, clock, backoff=1.0)
    got = take(src, 8, clock)
    assert src.rejected["exchange_error"] == 4 and src.rejected["rate_limited"] == 2
    closes = [close_ms(frame) for frame, _ in got]
    assert np.all(np.diff(closes) == MINUTE), "nothing lost to the errors"
    assert all(sorted(frame.keys.tolist()) == SYMBOLS for frame, _ in got)
    requests = exchange.klines_requests()
    # requests 0-3 got a 500, 4 and 5 (sent together) a 429 with Retry-After: 7
    assert min(at for at, _ in requests[6:]) - requests[5][0] >= 7, "the Retry-After of a 429 is honoured"
    assert any(s >= 1.0 for s in clock.sleeps)  # backed off, no hot retry loop


def test_an_empty_or_malformed_answer_is_asked_again_not_taken_as_no_candles(
    exchange: StandInBinance, clock: VirtualClock
) -> None:
    exchange.fail(2, status=200)  # truncated JSON, which ccxt reads as no candles
    src = source(exchange, clock)
    got = take(src, 8, clock)
    assert close_ms(got[0][0]) == int(T0 * 1000) // MINUTE * MINUTE - 4 * MINUTE, "the whole backfill"
    assert np.all(np.diff([close_ms(frame) for frame, _ in got]) == MINUTE)
    assert all(sorted(frame.keys.tolist()) == SYMBOLS for frame, _ in got)


def test_a_failing_symbol_does_not_hold_back_the_others(exchange: StandInBinance, clock: VirtualClock) -> None:
    exchange.fail(1000, status=500, symbol="CCC/USDT")
    src = source(exchange, clock, grace=5.0)
    got = take(src, 8, clock)
    for frame, now in got:
        assert sorted(frame.keys.tolist()) == ["AAA/USDT", "BBB/USDT"]
        assert now * 1000 <= max(close_ms(frame), T0 * 1000) + 5_000 + 1_000, "emitted within the grace"
    assert src.rejected["exchange_error"] >= 8


def test_top_rule_picks_the_largest_quote_volumes_and_refreshes(clock: VirtualClock) -> None:
    symbols = ["AAA/USDT", "BBB/USDT", "CCC/USDT", "DDD/USDT", "BIG/BTC"]
    volumes = {"AAA/USDT": 5e6, "BBB/USDT": 9e6, "CCC/USDT": 1e6, "DDD/USDT": 7e6, "BIG/BTC": 1e9}
    with StandInBinance(symbols, clock=clock, quote_volumes=volumes) as ex:
        src = source(ex, clock, symbols={"top": 2, "quote": "USDT", "refresh": timedelta(minutes=3)}, warmup=1)

        async def run() -> list[tuple[Frame, float]]:
            out = []
            async for frame in src.stream():
                out.append((frame, clock()))
                if len(out) == 1:
                    ex.quote_volumes["CCC/USDT"] = 1e8  # CCC becomes the busiest market
                    ex.tickers_fail = 1  # but the first refresh fails: the old list stays
                if len(out) == 8:
                    break
            return out

        got = asyncio.run(asyncio.wait_for(run(), timeout=30))
    assert sorted(got[0][0].keys.tolist()) == ["BBB/USDT", "DDD/USDT"]
    refreshed = [i for i, (frame, _) in enumerate(got) if "CCC/USDT" in frame.keys.tolist()]
    assert refreshed and all(sorted(f.keys.tolist()) == ["BBB/USDT", "DDD/USDT"] for f, _ in got[: refreshed[0]])
    assert src.rejected["exchange_error"] == 1, "the failed refresh is counted"
    assert sorted(got[-1][0].keys.tolist()) == ["BBB/USDT", "CCC/USDT"], "the list is recomputed every refresh"
    assert src.rejected.get("unknown_symbol", 0) == 0


def test_a_ticker_outage_at_refresh_keeps_the_list_and_the_candles_flowing(clock: VirtualClock) -> None:
    symbols = ["AAA/USDT", "BBB/USDT", "CCC/USDT"]
    with StandInBinance(symbols, clock=clock, quote_volumes={"AAA/USDT": 3e6, "BBB/USDT": 2e6, "CCC/USDT": 1e6}) as ex:
        src = source(ex, clock, symbols={"top": 2, "refresh": "3m"}, warmup=1)

        async def run() -> list[Frame]:
            out: list[Frame] = []
            async for frame in src.stream():
                if not out:
                    ex.quote_volumes["CCC/USDT"] = 1e9
                    ex.tickers_fail = 1000  # ticker/24hr is down from now on
                out.append(frame)
                if len(out) == 8:
                    break
            return out

        got = asyncio.run(asyncio.wait_for(run(), timeout=30))
    assert all(sorted(f.keys.tolist()) == ["AAA/USDT", "BBB/USDT"] for f in got)
    assert np.all(np.diff([close_ms(f) for f in got]) == MINUTE), "candles kept coming during the outage"
    assert src.rejected["exchange_error"] >= 2  # a retry a minute, each counted


def test_unknown_symbols_are_skipped_and_counted(exchange: StandInBinance, clock: VirtualClock) -> None:
    src = source(exchange, clock, symbols=["AAA/USDT", "NOPE/USDT"])
    got = take(src, 2, clock)
    assert all(frame.keys.tolist() == ["AAA/USDT"] for frame, _ in got)
    assert src.rejected["unknown_symbol"] == 1


# -- through the engine ----------------------------------------------------------


def engine_settings(db: Database, url: str, **detector: Any) -> Settings:
    source = PluginConfig(kind="ccxt", exchange="binance", symbols=SYMBOLS, urls={"public": url}, rate_limit=0)
    return Settings(
        database=db.url,
        checkpoint_every=timedelta(seconds=0),
        automations=[
            AutomationConfig(
                name="crypto",
                source=source,
                detector=DetectorConfig(kind="volume_spike", window=12, ratio=3, z=4, **detector),
                retention=None,
            )
        ],
    )


def virtual_registry(clock: VirtualClock) -> Registry:
    class VirtualCcxt(CcxtCandles):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs, clock=clock, sleep=clock.sleep)

    registry = Registry.from_entry_points()
    registry.sources["ccxt"] = VirtualCcxt
    return registry


async def run_engine_until(settings: Settings, db: Database, registry: Registry, cursor_ms: int) -> None:
    engine = Engine(settings, db, registry)
    await engine.start()
    try:
        async with asyncio.timeout(30):
            while (c := engine.statuses()[0].cursor) is None or c.timestamp() * 1000 < cursor_ms:
                await asyncio.sleep(0.01)
    finally:
        await engine.stop()


def test_a_spike_on_the_first_live_candle_fires_and_a_restart_resumes_without_gap(
    db: Database, clock: VirtualClock
) -> None:
    boundary = int(T0 * 1000) // MINUTE * MINUTE
    spikes = {("BBB/USDT", boundary): 10.0}  # the candle open at start, closing at boundary + 1 min
    with StandInBinance(SYMBOLS, clock=clock, spikes=spikes) as ex:
        settings = engine_settings(db, ex.url)
        registry = virtual_registry(clock)
        source = build_pipeline(settings.automations[0], registry).source
        assert isinstance(source, CcxtCandles) and source.warmup == 12  # the detector's window
        clock.limit = T0 + 3 * 60
        asyncio.run(run_engine_until(settings, db, registry, boundary + 3 * MINUTE))
        signals = db.read_sync(list_signals, automation="crypto", limit=100)
        assert [(s.key, int(s.time.timestamp() * 1000)) for s in signals] == [("BBB/USDT", boundary + MINUTE)]

        clock.limit = T0 + 30 * 60
        clock.now += 20 * 60  # down for 20 minutes, then restarted
        asyncio.run(run_engine_until(settings, db, registry, boundary + 30 * MINUTE))
    window = db.read_sync(
        bar_window, "crypto", "AAA/USDT", to_datetime(np.datetime64(boundary * 10**6, "ns")), after=40
    )
    times = window["time"].astype("datetime64[ms]").astype(np.int64)
    assert times[0] == boundary - 11 * MINUTE and times[-1] == boundary + 30 * MINUTE
    assert np.all(np.diff(times) == MINUTE), "no gap across the restart"
    checkpoint = db.read_sync(load_checkpoint, "crypto")
    assert checkpoint.bars_total == db.read_sync(count_bars, "crypto") == 42 * 3, "no bar fed twice"


@pytest.mark.slow
def test_kill_9_mid_backfill_then_restart_loses_nothing_and_feeds_nothing_twice(tmp_path: Path) -> None:
    """A real `signalmint run` on the real clock, SIGKILLed mid-backfill, run again until caught up.

    The kill lands at a chosen point: the engine's fault-injection hook (engine/faults.py) kills
    the process right after the commit that stored its 90th bar (30 of the 120 backfilled ticks)."""
    symbols = [f"S{i}/USDT" for i in range(3)]
    target = tmp_path / "crash.db"
    config = tmp_path / "signalmint.yaml"
    with StandInBinance(symbols, spike_rate=0.06) as ex:
        config.write_text(
            f"database: sqlite:///{target}\n"
            "checkpoint_every: 0.2s\n"
            "web: {port: 0}\n"
            "automations:\n"
            "  - name: crypto\n"
            f"    source: {{kind: ccxt, exchange: binance, symbols: [{', '.join(symbols)}], "
            f"urls: {{public: '{ex.url}'}}, warmup: 120, rate_limit: 0}}\n"
            "    detector: {kind: volume_spike}\n"
            "    retention: null\n"
        )
        run = ["run", "-c", str(config)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        db = Database(f"sqlite:///{target}")
        killing = {**env, "SIGNALMINT_FAULT_KILL_AFTER_BARS": "90"}
        proc = processes.start(run, env=killing, output=tmp_path / "killed.log")
        try:
            output, _ = proc.communicate(timeout=90)  # it dies by its own hook, mid-backfill
            assert proc.returncode == -signal.SIGKILL, output[-3000:]
            partial = db.read_sync(count_bars, "crypto")
            assert 90 <= partial < 120 * len(symbols), "killed mid-backfill"
            proc = processes.start(run, env=env, output=tmp_path / "restarted.log")
            caught_up = time.time() // 60 * 60
            minute = np.datetime64(int(caught_up), "s")

            def newest_bar(symbol: str) -> np.datetime64 | None:
                times = db.read_sync(bar_window, "crypto", symbol, to_datetime(minute), before=0, after=0)["time"]
                return times[-1] if len(times) else None

            # until every symbol's bar of the minute it restarted in is committed (checkpoints lag behind)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and proc.poll() is None:
                if all((t := newest_bar(s)) is not None and t >= minute for s in symbols):
                    break
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)  # a clean stop saves the checkpoint at the last committed tick
            output, _ = proc.communicate(timeout=30)
            assert proc.returncode == 0, output[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    checkpoint = db.read_sync(load_checkpoint, "crypto")
    assert checkpoint.cursor is not None and checkpoint.cursor.timestamp() >= caught_up
    assert checkpoint.bars_total == db.read_sync(count_bars, "crypto"), "no bar fed twice"
    detector = VolumeSpike()  # the expected signals: the detector over every stored bar, in order
    bars = {s: db.read_sync(bar_window, "crypto", s, checkpoint.cursor, before=10_000, after=0) for s in symbols}
    expected = set()
    for s, window in bars.items():
        times = window["time"].astype("datetime64[ms]").astype(np.int64)
        assert len(times) >= 120 and np.all(np.diff(times) == MINUTE), f"{s}: no gap"
    for i in range(len(bars[symbols[0]]["time"])):
        frame = Frame(
            keys=np.array(symbols),
            times=np.array([bars[s]["time"][i] for s in symbols]),
            columns={c: np.array([bars[s][c][i] for s in symbols]) for c in ("open", "high", "low", "close", "volume")},
        )
        scores = detector.update(frame)
        expected |= {
            (str(k), int(t.astype("datetime64[ms]").astype(np.int64)))
            for k, t in zip(scores.keys[scores.flags], scores.times[scores.flags], strict=True)
        }
    stored = db.read_sync(list_signals, automation="crypto", limit=10_000)
    got = [(s.key, int(s.time.timestamp() * 1000)) for s in stored]
    assert len(expected) >= 3 and sorted(got) == sorted(expected), "every signal once, none missing"
    assert db.read_sync(verify_chain, "crypto").ok
    db.close()
