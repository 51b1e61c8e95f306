"""The ``ccxt`` source's rate budget and ``batch`` (a live tick sent in batches), and the engine's
checkpoints over partial ticks, against a stand-in Binance on a virtual clock: no sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import pytest

from signalmint.config import AutomationConfig, DetectorConfig, PluginConfig, Settings
from signalmint.engine.runner import Engine
from signalmint.records import Frame
from signalmint.registry import Registry
from signalmint.sources.ccxt_budget import RateBudget
from signalmint.sources.ccxt_candles import CcxtCandles, CcxtOptions
from signalmint.store import Database, list_signals, load_checkpoint, verify_chain
from signalmint.store.bars import bar_window, count_bars
from signalmint.testing.exchange import StandInBinance, candle

MINUTE = 60_000
T0 = 1_700_000_000.0  # 20 s into a minute
BOUNDARY = int(T0 * 1000) // MINUTE * MINUTE  # the newest candle closed at T0 closes here
SYMBOLS = ["AAA/USDT", "BBB/USDT", "CCC/USDT"]


class VirtualClock:
    """Seconds since the epoch that move only when someone sleeps; a sleep past ``limit`` waits
    until the limit is raised (time stands still meanwhile)."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.limit = float("inf")

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        while self.now + seconds > self.limit:
            await asyncio.sleep(0.01)  # polls for the test to raise the limit
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture
def exchange(clock: VirtualClock) -> Iterator[StandInBinance]:
    with StandInBinance(SYMBOLS, clock=clock) as ex:
        yield ex


def close_ms(frame: Frame) -> int:
    return int(frame.times[0].astype("datetime64[ms]").astype(np.int64))


# -- the rate budget --------------------------------------------------------------------------


def test_the_budget_lets_a_burst_through_then_waits_for_the_window(clock: VirtualClock) -> None:
    budget = RateBudget(2.0, clock=clock, sleep=clock.sleep, window=60.0)
    admitted: list[tuple[str, float]] = []

    async def request(name: str, cost: float) -> None:
        await budget(cost)
        admitted.append((name, clock()))

    async def run() -> None:
        await asyncio.gather(request("a", 1), request("b", 1), request("c", 1), request("d", 0.5))

    asyncio.run(run())
    assert admitted[:2] == [("a", T0), ("b", T0)], "within the budget: at once"
    assert [name for name, _ in admitted] == ["a", "b", "c", "d"], "then in arrival order"
    assert admitted[2][1] == T0 + 60 and admitted[3][1] == T0 + 60, "once the window's spending expired"
    assert budget.waits == 2


def test_no_rate_limit_means_no_wait_and_the_source_spends_binances_weight_per_minute(clock: VirtualClock) -> None:
    unlimited = RateBudget.for_exchange(0, clock=clock, sleep=clock.sleep)

    async def burst() -> None:
        for _ in range(10_000):
            await unlimited(5)

    asyncio.run(burst())
    assert clock() == T0 and unlimited.waits == 0
    ex = CcxtCandles("binance", symbols=SYMBOLS, stream="poll", clock=clock, sleep=clock.sleep)._exchange()
    try:
        assert isinstance(ex.throttler, RateBudget)
        assert ex.throttler.limit == 60_000 / 50  # 1,200 of ccxt's units: Binance's 6,000 weight a minute
    finally:
        asyncio.run(ex.close())


# -- batches ---------------------------------------------------------------------------------


def source(exchange: StandInBinance, clock: VirtualClock, **options: Any) -> CcxtCandles:
    settings = {"symbols": SYMBOLS, "warmup": 5, "urls": {"public": exchange.url}, "rate_limit": 0, **options}
    validated = CcxtOptions.model_validate({"exchange": "binance", **settings})
    return CcxtCandles(**validated.model_dump(), clock=clock, sleep=clock.sleep)


def test_a_live_tick_goes_out_in_batches_of_disjoint_closed_candles(
    exchange: StandInBinance, clock: VirtualClock
) -> None:
    src = source(exchange, clock, batch=0.5, backoff=2.0, delay=0.0)
    assert src.partial_ticks
    live = BOUNDARY + MINUTE

    async def run() -> list[tuple[Frame, float]]:
        out: list[tuple[Frame, float]] = []
        stream = src.stream()
        try:
            async for frame in stream:
                out.append((frame, clock()))
                if close_ms(frame) == BOUNDARY and sum(close_ms(f) == BOUNDARY for f, _ in out) == 1:
                    exchange.fail(1, status=500, symbol="AAA/USDT")  # AAA's first live answer fails
                if close_ms(frame) >= live + 3 * MINUTE:
                    break
        finally:
            await stream.aclose()
        return out

    got = asyncio.run(asyncio.wait_for(run(), timeout=30))
    closes = [close_ms(frame) for frame, _ in got]
    assert closes == sorted(closes), "a candle time never comes back after a later one"
    got = [(frame, now) for frame, now in got if close_ms(frame) < closes[-1]]  # the last may be in part
    by_close: dict[int, list[str]] = {}
    for frame, now in got:
        assert close_ms(frame) <= now * 1000, "closed candles only"
        for key, volume in zip(frame.keys.tolist(), frame.columns["volume"].tolist(), strict=True):
            assert volume == candle(key, close_ms(frame) - MINUTE, MINUTE)[4]
        by_close.setdefault(close_ms(frame), []).extend(frame.keys.tolist())
    assert sorted(by_close) == [BOUNDARY + i * MINUTE for i in range(-4, 4)], "no gap"
    for keys in by_close.values():
        assert sorted(keys) == SYMBOLS, "every symbol once a candle time: no duplicate, none lost"
    backfill = [frame for frame, _ in got if close_ms(frame) <= BOUNDARY]
    assert len(backfill) == 5, "the backfill goes out in whole ticks"
    first = [frame for frame, _ in got if close_ms(frame) == live]
    assert len(first) >= 2 and first[-1].keys.tolist() == ["AAA/USDT"], "the others did not wait for AAA"
    assert not any("AAA/USDT" in frame.keys.tolist() for frame in first[:-1])


# -- through the engine: a restart in the middle of a tick -------------------------------------


def settings(db: Database, url: str) -> Settings:
    source = PluginConfig(
        kind="ccxt", exchange="binance", symbols=SYMBOLS, urls={"public": url}, rate_limit=0, batch=0.5,
        backoff=30.0, delay=0.0,
    )  # fmt: skip
    return Settings(
        database=db.url,
        checkpoint_every=timedelta(seconds=0),
        automations=[
            AutomationConfig(
                name="crypto",
                source=source,
                detector=DetectorConfig(kind="volume_spike", window=12, ratio=3, z=4),
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


def test_a_stop_in_the_middle_of_a_tick_resumes_without_gap_or_a_bar_fed_twice(
    db: Database, clock: VirtualClock
) -> None:
    live = BOUNDARY + MINUTE
    spikes = {("BBB/USDT", live - MINUTE): 10.0, ("AAA/USDT", live - MINUTE): 10.0}  # one in each half of the tick
    with StandInBinance(SYMBOLS, clock=clock, spikes=spikes) as ex:
        config = settings(db, ex.url)
        registry = virtual_registry(clock)

        async def first_run() -> None:
            engine = Engine(config, db, registry)
            runner = engine.runners["crypto"]
            clock.limit = T0  # the backfill, then time stands still before the first live close
            await engine.start()
            try:
                async with asyncio.timeout(30):
                    while (c := runner.status.cursor) is None or c.timestamp() * 1000 < BOUNDARY:
                        await asyncio.sleep(0.01)
                    ex.fail(1, status=500, symbol="AAA/USDT")  # AAA's live answer fails; its retry is 30 s off
                    clock.limit = live / 1000 + 5  # BBB and CCC come, then time stands still again
                    while runner.open_tick is None or runner.open_tick.keys != {"BBB/USDT", "CCC/USDT"}:
                        await asyncio.sleep(0.01)
            finally:
                await engine.stop()

        asyncio.run(first_run())
        stopped = db.read_sync(load_checkpoint, "crypto")
        assert stopped.cursor is not None and stopped.cursor.timestamp() * 1000 == BOUNDARY, "the whole tick"
        assert stopped.bars_total == db.read_sync(count_bars, "crypto") == 12 * 3 + 2
        signals = db.read_sync(list_signals, automation="crypto", limit=100)
        assert [(s.key, int(s.time.timestamp() * 1000)) for s in signals] == [("BBB/USDT", live)]

        async def second_run() -> None:
            engine = Engine(config, db, registry)
            clock.limit = float("inf")
            await engine.start()
            try:
                async with asyncio.timeout(30):
                    while (c := engine.statuses()[0].cursor) is None or c.timestamp() * 1000 < live + 3 * MINUTE:
                        await asyncio.sleep(0.01)
            finally:
                await engine.stop()

        asyncio.run(second_run())
    checkpoint = db.read_sync(load_checkpoint, "crypto")
    assert checkpoint.bars_total == db.read_sync(count_bars, "crypto"), "no bar fed twice"
    for symbol in SYMBOLS:
        window = db.read_sync(bar_window, "crypto", symbol, checkpoint.cursor, before=100, after=0)
        times = window["time"].astype("datetime64[ms]").astype(np.int64)
        assert times[0] == BOUNDARY - 11 * MINUTE and np.all(np.diff(times) == MINUTE), f"{symbol}: no gap"
        assert live in times.tolist()
    signals = db.read_sync(list_signals, automation="crypto", limit=100)
    assert sorted((s.key, int(s.time.timestamp() * 1000)) for s in signals) == [
        ("AAA/USDT", live),
        ("BBB/USDT", live),
    ], "each signal once: BBB's before the stop, AAA's after it"
    assert db.read_sync(verify_chain, "crypto").ok
