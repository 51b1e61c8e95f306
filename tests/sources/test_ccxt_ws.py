"""The ``ccxt`` source over a Binance-shaped kline websocket (ccxt.pro) on a virtual clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import pytest

from signalmint.records import Frame
from signalmint.sources import ccxt_candles
from signalmint.sources.ccxt_candles import CcxtCandles, CcxtOptions
from signalmint.sources.ccxt_ws import KlineFeed
from signalmint.testing.exchange import StandInBinance, candle

MINUTE = 60_000
T0 = 1_700_000_000.0  # 20 s into a minute
SYMBOLS = ["AAA/USDT", "BBB/USDT", "CCC/USDT"]


class SteppingClock:
    """Virtual seconds that move only when someone sleeps. A sleep leaving a minute's close first
    waits there (real time, bounded) until ``settled`` says the websocket's part of that close is
    done, so what the stand-in sends for it arrives at its close (the source cancels the sleep
    when a kline arrives)."""

    def __init__(self, now: float) -> None:
        self.now = now
        #: Whether what the websocket sends for the close at this clock time (ms) is all taken in.
        self.settled: Callable[[int], bool] | None = None
        #: Whether every feed's streams are subscribed (or it is backing off), asked before reaching a close.
        self.subscribed: Callable[[], bool] | None = None

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        target = self.now + max(seconds, 0.0)
        while self.now < target:
            if self.now % 60 == 0 and self.settled is not None:  # at a close: the websocket comes first
                deadline = time.monotonic() + 10
                while not self.settled(int(self.now * 1000)) and time.monotonic() < deadline:
                    await asyncio.sleep(0.001)
            close = (self.now // 60 + 1) * 60
            if (
                target >= close and self.subscribed is not None
            ):  # a close is published only to streams subscribed by then
                deadline = time.monotonic() + 10
                while not self.subscribed() and time.monotonic() < deadline:
                    await asyncio.sleep(0.001)
            self.now = max(self.now, min(target, close))
            await asyncio.sleep(0)


class WatchedFeed(KlineFeed):
    """The source's kline feed, as the test clock watches it: the kline events ccxt.pro handed
    it (counted once handled) and whether it is backing off before a reconnect."""

    live: ClassVar[list[WatchedFeed]] = []

    def __init__(self, ex: Any, *args: Any, **kwargs: Any) -> None:
        self.received = 0
        self.backing_off = False
        handle = ex.handle_message  # each websocket client calls it for every message it reads

        def counted(client: Any, message: Any) -> Any:
            try:
                return handle(client, message)
            finally:
                if isinstance(message, dict) and message.get("e") == "kline":
                    self.received += 1

        ex.handle_message = counted
        super().__init__(ex, *args, **kwargs)
        sleep = self.sleep

        async def backoff(seconds: float) -> None:
            self.backing_off = True
            try:
                await sleep(seconds)
            finally:
                self.backing_off = False

        self.sleep = backoff
        WatchedFeed.live.append(self)

    def took_in(self, close_ms: int) -> bool:
        """Whether the source has drained the events up to the close at ``close_ms`` of every
        symbol streaming on this connection (its newest kline opened then): counting messages
        alone raced the drain once in CI."""
        return all(self._last.get(s, (close_ms,))[0] >= close_ms for s in self.symbols)

    async def close(self) -> None:
        WatchedFeed.live.remove(self)
        await super().close()


@pytest.fixture
def clock() -> SteppingClock:
    return SteppingClock(T0)


@pytest.fixture
def exchange(clock: SteppingClock, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandInBinance]:
    monkeypatch.setattr(ccxt_candles, "KlineFeed", WatchedFeed)
    with StandInBinance(SYMBOLS, clock=clock) as ex:
        sent_before = ex.ws_messages

        def settled(close_ms: int) -> bool:
            """The stand-in has sent every event of the close, the source has received and drained
            them all (no kline in flight, none undrained), and no reconnect is under way."""
            sent = ex.ws_sent_ms
            return (
                sent is not None
                and sent >= close_ms
                and all(
                    feed.received >= ex.ws_messages - sent_before
                    and not feed.wake.is_set()
                    and (feed.backing_off or (ex.ws_streams >= len(feed.symbols) and feed.took_in(close_ms)))
                    for feed in WatchedFeed.live
                )
            )

        clock.settled = settled
        clock.subscribed = lambda: all(
            feed.backing_off or ex.ws_streams >= len(feed.symbols) for feed in WatchedFeed.live
        )
        yield ex
    WatchedFeed.live.clear()


def source(exchange: StandInBinance, clock: SteppingClock, **options: Any) -> CcxtCandles:
    settings = {
        "symbols": SYMBOLS,
        "warmup": 3,
        "urls": {"public": exchange.url, "ws": {"spot": exchange.ws_url}},
        "rate_limit": 0,
        "stream": "websocket",
        "delay": 5.0,
        **options,
    }
    validated = CcxtOptions.model_validate({"exchange": "binance", **settings})
    return CcxtCandles(**validated.model_dump(), clock=clock, sleep=clock.sleep)


def take(src: CcxtCandles, count: int, clock: SteppingClock, on_frame: Any = None) -> list[tuple[Frame, float]]:
    async def run() -> list[tuple[Frame, float]]:
        out: list[tuple[Frame, float]] = []
        stream = src.stream()
        try:
            async for frame in stream:
                out.append((frame, clock()))
                if on_frame is not None:
                    await asyncio.to_thread(on_frame, len(out))
                if len(out) >= count:
                    break
        finally:
            await stream.aclose()
        return out

    return asyncio.run(asyncio.wait_for(run(), timeout=30))


def close_ms(frame: Frame) -> int:
    return int(frame.times[0].astype("datetime64[ms]").astype(np.int64))


def assert_whole_candles(got: list[tuple[Frame, float]]) -> None:
    for frame, now in got:
        closes = close_ms(frame)
        assert closes <= now * 1000, "a candle became a bar before it closed"
        assert sorted(frame.keys.tolist()) == SYMBOLS
        for key, volume in zip(frame.keys.tolist(), frame.columns["volume"].tolist(), strict=True):
            assert volume == candle(key, closes - MINUTE, MINUTE)[4]  # the whole candle, never a partial one
    every_close = [close_ms(f) for f, _ in got]
    assert every_close == list(range(every_close[0], every_close[0] + MINUTE * len(every_close), MINUTE)), (
        "a gap or a duplicate"
    )


def test_auto_means_websocket_and_the_urls_reach_ccxt_pro(exchange: StandInBinance, clock: SteppingClock) -> None:
    src = source(exchange, clock, stream="auto")
    assert src.websocket
    ex = src._exchange()
    assert ex.urls["api"]["ws"]["spot"] == exchange.ws_url
    assert ex.urls["api"]["ws"]["linear"].startswith("wss://")  # the rest of the mapping is kept
    asyncio.run(ex.close())
    assert not source(exchange, clock, stream="poll").websocket
    # a stand-in (or proxy) of the REST API alone: auto polls rather than reach the real websocket
    assert not source(exchange, clock, stream="auto", urls={"public": exchange.url}).websocket
    with pytest.raises(ValueError, match="stream"):
        CcxtOptions.model_validate({"exchange": "binance", "stream": "carrier-pigeon"})


def test_closed_candles_only_arrive_over_the_websocket(exchange: StandInBinance, clock: SteppingClock) -> None:
    got = take(source(exchange, clock), 7, clock)
    boundary = int(T0 * 1000) // MINUTE * MINUTE
    assert_whole_candles(got)
    # the warm-up over REST ends at the newest closed candle, then the live ones follow it
    assert close_ms(got[0][0]) == boundary - 2 * MINUTE and close_ms(got[3][0]) == boundary + MINUTE
    backfill = len(exchange.klines_requests())
    assert backfill == len(SYMBOLS), (
        exchange.klines_requests()
    )  # one page per symbol at start, and never again: the websocket carried the rest
    for frame, at in got[3:]:
        assert at == close_ms(frame) / 1000, "a live candle waited for the delay (REST) instead of the websocket"
    assert exchange.ws_messages >= 2 * len(SYMBOLS) * 4  # each close: the closed kline and the next one


def test_backfill_then_websocket_with_no_gap_or_duplicate_at_the_seam(
    exchange: StandInBinance, clock: SteppingClock
) -> None:
    clock.now = (T0 // 60 + 1) * 60 - 0.5  # the backfill starts half a second before a close
    got = take(source(exchange, clock, warmup=4), 8, clock)
    assert_whole_candles(got)
    closes = [close_ms(f) for f, _ in got]
    assert len(set(closes)) == len(closes)
    assert all(len(f) == len(SYMBOLS) for f, _ in got)


def test_a_dropped_websocket_reconnects_and_the_gap_is_filled_over_rest(
    exchange: StandInBinance, clock: SteppingClock
) -> None:
    src = source(exchange, clock, backoff=20.0)
    seen: dict[str, float] = {}

    def on_frame(n: int) -> None:
        if n == 4:  # after the first live candle: the connection drops and two reconnects fail
            seen["requests"] = len(exchange.klines_requests())
            exchange.drop_websockets(refuse=2)

    got = take(src, 14, clock, on_frame)
    assert_whole_candles(got)
    assert len(exchange.klines_requests()) > seen["requests"], "the gap was not fetched over REST"
    assert exchange.ws_connections >= 2, "the websocket did not reconnect"
    assert src.rejected["exchange_error"] >= 1
    # once reconnected, the last candles come over the websocket again, at their close
    assert got[-1][1] == close_ms(got[-1][0]) / 1000


def test_the_stand_in_speaks_binances_combined_kline_stream(exchange: StandInBinance, clock: SteppingClock) -> None:
    import json

    import websockets

    async def run() -> list[dict[str, Any]]:
        url = exchange.ws_url.replace("/ws", "/stream")
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["nosuch@kline_1m"], "id": 1}))
            refused = json.loads(await ws.recv())
            await ws.send("not json")
            junk = json.loads(await ws.recv())
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["aaausdt@kline_1m"], "id": 2}))
            ack = json.loads(await ws.recv())
            clock.now = (T0 // 60 + 1) * 60  # the clock passes a close
            events = [json.loads(await ws.recv()) for _ in range(2)]
            return [refused, junk, ack, *events]

    refused, junk, ack, closed, forming = asyncio.run(asyncio.wait_for(run(), timeout=10))
    assert refused["id"] == 1 and "error" in refused and junk["error"]["code"] == 2
    assert ack == {"result": None, "id": 2}
    opened = int(T0 * 1000) // MINUTE * MINUTE
    assert closed["stream"] == "aaausdt@kline_1m" and closed["data"]["e"] == "kline"
    k = closed["data"]["k"]
    assert (k["t"], k["T"], k["s"], k["i"], k["x"]) == (opened, opened + MINUTE - 1, "AAAUSDT", "1m", True)
    assert float(k["v"]) == candle("AAA/USDT", opened, MINUTE)[4]
    assert forming["data"]["k"]["t"] == opened + MINUTE and forming["data"]["k"]["x"] is False
