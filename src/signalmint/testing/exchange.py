"""A stand-in for Binance's public spot REST API, for tests and benchmarks of the ``ccxt`` source.

It answers what ccxt's ``binance`` asks for market data, in Binance's JSON shapes:
``GET /api/v3/exchangeInfo`` (markets), ``/api/v3/klines`` (arrays of
``[openTime, "open", "high", "low", "close", "volume", closeTime, "quoteVolume",
trades, "takerBase", "takerQuote", "0"]``), ``/api/v3/ticker/24hr`` and
``/api/v3/time``. Point the source at it with ``urls: {public: <url>}``.

Its clock is injectable (``clock``: seconds since the epoch), so a test decides
"now" and when candles close. The candle being formed (open time <= now <
close time) is served like Binance does, with the volume traded so far. Candles
are deterministic functions of (symbol, open time); ``spikes`` multiplies the
volume of chosen candles. ``fail(n, status, retry_after)`` makes the next ``n``
klines requests fail (a 429 carries ``Retry-After``); ``requests`` logs every
request as (path, query).

It also speaks Binance's kline websocket: ``/ws/<n>`` (raw events, as ccxt.pro connects)
and ``/stream`` (combined-stream ``{"stream": ..., "data": ...}`` events) answer
``{"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": N}`` with
``{"result": null, "id": N}``, then push, as the clock passes each close, the closed
kline (``"x": true``) and the next one being formed (``"x": false``). Point ccxt.pro at
it with ``urls: {ws: {spot: <ws_url>}}``. ``drop_websockets(refuse=n)`` closes every
connection and refuses the next ``n`` attempts (an outage); ``ws_messages`` counts what it sent
and ``ws_sent_ms`` is the clock time (ms) up to which every close's events have been sent (a
test on a virtual clock waits for it at a close, rather than for a fixed real time).

Run it in a thread (``with StandInBinance(...) as ex:``) or as a process:
``python -m signalmint.testing.exchange --port 8900 --symbols 1000 --speed 60``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

__all__ = ["INTERVALS", "StandInBinance", "candle"]

#: The intervals served, in milliseconds.
INTERVALS = {"1s": 1_000, "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000}


def _unit(symbol: str, open_ms: int) -> float:
    """A deterministic number in [0, 1) for (symbol, time)."""
    digest = hashlib.blake2b(f"{symbol}:{open_ms}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def candle(symbol: str, open_ms: int, interval_ms: int, factor: float = 1.0) -> tuple[float, ...]:
    """(open, high, low, close, volume) of ``symbol``'s candle opened at ``open_ms``."""
    u = _unit(symbol, open_ms)
    base = 10.0 + (sum(symbol.encode()) % 90)
    o = base * (1 + 0.01 * _unit(symbol, open_ms - interval_ms))
    c = base * (1 + 0.01 * u)
    return (o, max(o, c) * 1.001, min(o, c) * 0.999, c, round((1000 + 500 * u) * factor, 4))


def _text(x: float) -> str:
    return f"{x:.8f}"


class StandInBinance:
    """Binance's public spot market-data API for ``symbols`` (ccxt form: ``BTC/USDT``)."""

    def __init__(
        self,
        symbols: Iterable[str],
        *,
        clock: Callable[[], float] = time.time,
        quote_volumes: Mapping[str, float] | None = None,
        spikes: Mapping[tuple[str, int], float] | None = None,
        spike_rate: float = 0.0,
        port: int = 0,
    ) -> None:
        self.symbols = list(symbols)
        self.ids = {s.replace("/", ""): s for s in self.symbols}
        self.clock = clock
        self.quote_volumes = dict(quote_volumes or {})
        self.spikes = dict(spikes or {})  # (ccxt symbol, open ms) -> volume factor
        self.spike_rate = spike_rate  # or this share of all candles, chosen by hash, get 10x volume
        self.port = port
        self.requests: list[tuple[float, str, dict[str, str]]] = []  # (clock, path, query)
        self._failures: list[tuple[str | None, int, float | None]] = []  # klines
        self.tickers_fail = 0  # the next this many ticker/24hr requests answer 500
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._started = threading.Event()
        self._sockets: dict[web.WebSocketResponse, tuple[bool, set[tuple[str, str]]]] = {}
        self._published_ms: int | None = None
        self._prepared = -1  # the minute whose next close is written ahead
        self._events: dict[tuple[str, str, int, int, bool], str] = {}  # written ahead of their close
        self._publisher: asyncio.Task[None] | None = None
        self.publish_every = 0.002  # real seconds between looks at the clock
        self.ws_refuse = 0  # the next this many websocket connections are refused (503)
        self.ws_messages = 0
        self.ws_connections = 0
        self.ws_sent_ms: int | None = None  # every close up to this clock time (ms) has been sent

    @property
    def ws_url(self) -> str:
        """The address to give as ``urls: {ws: {spot: ...}}``."""
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def ws_streams(self) -> int:
        """Streams subscribed now, over all connections."""
        return sum(len(streams) for _, streams in list(self._sockets.values()))

    def drop_websockets(self, refuse: int = 0) -> None:
        """Close every websocket connection now and refuse the next ``refuse`` ones (thread-safe)."""
        self.ws_refuse = refuse
        loop = self._loop
        if loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._drop(), loop)
        future.result(timeout=10)

    async def _drop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()

    @property
    def url(self) -> str:
        """The address to give as ``urls: {public: ...}``."""
        return f"http://127.0.0.1:{self.port}/api/v3"

    def fail(self, count: int, status: int = 500, retry_after: float | None = None, symbol: str | None = None) -> None:
        """Fail the next ``count`` klines requests (of ``symbol``, or any) with ``status`` (and ``Retry-After``);
        200 answers truncated JSON."""
        with self._lock:
            self._failures.extend([(symbol, status, retry_after)] * count)

    def klines_requests(self) -> list[tuple[float, dict[str, str]]]:
        """(clock, query) of every klines request so far."""
        return [(at, q) for at, path, q in self.requests if path.endswith("/klines")]

    def _log(self, request: web.Request) -> dict[str, str]:
        query = dict(request.query)
        self.requests.append((self.clock(), request.path, query))
        return query

    def _failure(self, symbol: str | None) -> tuple[int, float | None] | None:
        with self._lock:
            for i, (only, status, retry_after) in enumerate(self._failures):
                if only is None or only == symbol:
                    del self._failures[i]
                    return status, retry_after
        return None

    # -- the API -----------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v3/exchangeInfo", self._exchange_info)
        app.router.add_get("/api/v3/klines", self._klines)
        app.router.add_get("/api/v3/ticker/24hr", self._tickers)
        app.router.add_get("/api/v3/time", self._time)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/ws/{n}", self._websocket)
        app.router.add_get("/stream", self._websocket)
        return app

    # -- the kline websocket -------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if self.ws_refuse > 0:
            self.ws_refuse -= 1
            return web.Response(status=503, text="Service Unavailable")
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        self.ws_connections += 1
        streams: set[tuple[str, str]] = set()
        self._sockets[ws] = (request.path.startswith("/stream"), streams)
        try:
            async for message in ws:
                if message.type != web.WSMsgType.TEXT:
                    continue
                try:
                    body = json.loads(message.data)
                    method, params, ident = body["method"], body.get("params", []), body.get("id")
                except (ValueError, KeyError, TypeError):
                    await ws.send_json({"error": {"code": 2, "msg": "Invalid request"}, "id": None})
                    continue
                names = {self._stream(p) for p in params if isinstance(p, str)}
                if None in names or method not in ("SUBSCRIBE", "UNSUBSCRIBE"):
                    await ws.send_json({"error": {"code": 2, "msg": f"Invalid request: {params!r}"}, "id": ident})
                    continue
                known = {n for n in names if n is not None}
                if method == "SUBSCRIBE":
                    streams.update(known)
                else:
                    streams.difference_update(known)
                await ws.send_json({"result": None, "id": ident})
        finally:
            self._sockets.pop(ws, None)
        return ws

    def _stream(self, name: str) -> tuple[str, str] | None:
        """``btcusdt@kline_1m`` -> (``BTC/USDT``, ``1m``), None if unknown."""
        market, _, channel = name.partition("@kline_")
        symbol = self.ids.get(market.upper())
        return (symbol, channel) if symbol is not None and channel in INTERVALS else None

    def _kline(self, symbol: str, interval: str, opened: int, now: int) -> dict[str, Any]:
        iv = INTERVALS[interval]
        o, h, lo, c, v = candle(symbol, opened, iv, self._factor(symbol, opened))
        closed = now >= opened + iv
        if not closed:
            v = round(v * (now - opened) / iv, 4)
        market = symbol.replace("/", "")
        return {
            "e": "kline", "E": now, "s": market,
            "k": {
                "t": opened, "T": opened + iv - 1, "s": market, "i": interval, "f": 1, "L": 100,
                "o": _text(o), "c": _text(c), "h": _text(h), "l": _text(lo), "v": _text(v), "n": 100,
                "x": closed, "q": _text(v * c), "V": _text(v / 2), "Q": _text(v * c / 2), "B": "0",
            },
        }  # fmt: skip

    async def _publish(self) -> None:
        """Push each stream's closed kline and the next one as the clock passes a close.

        The events of the next close are written ahead (they are functions of the candle times),
        so what a benchmark measures is the client, not this stand-in's JSON encoding."""
        while True:
            now = self._now_ms()
            last, self._published_ms = self._published_ms, now
            if last is not None:
                for ws, (combined, streams) in list(self._sockets.items()):
                    out = []
                    for symbol, interval in sorted(streams):
                        iv = INTERVALS[interval]
                        first, current = last // iv * iv, now // iv * iv
                        if first < current:  # closes passed: each closed kline, then the new one
                            for opened in range(max(first, current - 1000 * iv), current + 1, iv):
                                out.append(self._event(symbol, interval, opened, current, combined))
                    for text in out:
                        with contextlib.suppress(ConnectionError, RuntimeError):
                            await ws.send_str(text)
                            self.ws_messages += 1
                self.ws_sent_ms = now
                await self._prepare(now)
            else:
                self.ws_sent_ms = now
            await asyncio.sleep(self.publish_every)

    def _event(self, symbol: str, interval: str, opened: int, at: int, combined: bool) -> str:
        """The kline event of ``symbol``'s candle opened at ``opened``, as sent at the close ``at``."""
        key = (symbol, interval, opened, at, combined)
        text = self._events.pop(key, None)
        if text is None:
            event: dict[str, Any] = self._kline(symbol, interval, opened, at)
            if combined:
                event = {"stream": f"{symbol.replace('/', '').lower()}@kline_{interval}", "data": event}
            text = json.dumps(event)
        return text

    async def _prepare(self, now: int) -> None:
        """Write the events of every stream's next close ahead of it, once per close (a stream
        subscribed later has its events written when sent)."""
        if self._prepared == now // 1000 // 60 or not any(streams for _, streams in self._sockets.values()):
            return
        self._prepared = now // 1000 // 60
        for _ws, (combined, streams) in list(self._sockets.items()):
            for symbol, interval in sorted(streams):
                iv = INTERVALS[interval]
                close = now // iv * iv + iv
                for opened in (close - iv, close):
                    key = (symbol, interval, opened, close, combined)
                    if key not in self._events:
                        self._events[key] = self._event(symbol, interval, opened, close, combined)
                        if len(self._events) % 200 == 0:
                            await asyncio.sleep(0)  # let a due publish go first
        stale = [key for key in self._events if key[3] <= now]
        for key in stale:
            del self._events[key]

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    @staticmethod
    def _error(status: int, code: int, msg: str) -> web.Response:
        return web.json_response({"code": code, "msg": msg}, status=status)

    async def _time(self, request: web.Request) -> web.Response:
        self._log(request)
        return web.json_response({"serverTime": self._now_ms()})

    async def _exchange_info(self, request: web.Request) -> web.Response:
        self._log(request)
        return web.json_response(
            {
                "timezone": "UTC",
                "serverTime": self._now_ms(),
                "rateLimits": [
                    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000}
                ],
                "exchangeFilters": [],
                "symbols": [self._market(s) for s in self.symbols],
            }
        )

    @staticmethod
    def _market(symbol: str) -> dict[str, Any]:
        base, quote = symbol.split("/")
        return {
            "symbol": base + quote,
            "status": "TRADING",
            "baseAsset": base,
            "baseAssetPrecision": 8,
            "quoteAsset": quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": True,
            "ocoAllowed": True,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True,
            "cancelReplaceAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": "0.00000100",
                    "maxPrice": "1000000.00000000",
                    "tickSize": "0.00000100",
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": "0.00100000",
                    "maxQty": "9000000.00000000",
                    "stepSize": "0.00100000",
                },
                {
                    "filterType": "NOTIONAL",
                    "minNotional": "5.00000000",
                    "applyMinToMarket": True,
                    "maxNotional": "9000000.00000000",
                    "applyMaxToMarket": False,
                    "avgPriceMins": 5,
                },
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }

    async def _tickers(self, request: web.Request) -> web.Response:
        self._log(request)
        if self.tickers_fail > 0:
            self.tickers_fail -= 1
            return self._error(500, -1001, "Internal error; unable to process your request. Please try again.")
        now = self._now_ms()
        out = []
        for symbol_id, symbol in self.ids.items():
            _, _, _, last, volume = candle(symbol, now // 60_000 * 60_000, 60_000)
            quote_volume = self.quote_volumes.get(symbol, volume * last * 1440)
            out.append(
                {
                    "symbol": symbol_id,
                    "priceChange": "0.00000000",
                    "priceChangePercent": "0.000",
                    "weightedAvgPrice": _text(last),
                    "prevClosePrice": _text(last),
                    "lastPrice": _text(last),
                    "lastQty": "1.00000000",
                    "bidPrice": _text(last),
                    "bidQty": "1.00000000",
                    "askPrice": _text(last),
                    "askQty": "1.00000000",
                    "openPrice": _text(last),
                    "highPrice": _text(last),
                    "lowPrice": _text(last),
                    "volume": _text(quote_volume / last),
                    "quoteVolume": _text(quote_volume),
                    "openTime": now - 86_400_000,
                    "closeTime": now,
                    "firstId": 1,
                    "lastId": 1000,
                    "count": 1000,
                }
            )
        return web.json_response(out)

    async def _klines(self, request: web.Request) -> web.Response:
        query = self._log(request)
        failure = self._failure(self.ids.get(query.get("symbol", "")))
        if failure is not None:
            status, retry_after = failure
            if status == 200:  # a malformed answer: truncated JSON
                return web.Response(text='[[1700000000000,"1.0","', content_type="application/json")
            headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
            if status == 429:
                body = {"code": -1003, "msg": "Too much request weight used; current limit is 6000 per 1 MINUTE."}
            else:
                body = {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}
            return web.json_response(body, status=status, headers=headers)
        symbol = self.ids.get(query.get("symbol", ""))
        if symbol is None:
            return self._error(400, -1121, "Invalid symbol.")
        interval = INTERVALS.get(query.get("interval", ""))
        if interval is None:
            return self._error(400, -1120, "Invalid interval.")
        try:
            limit = min(int(query.get("limit", "500")), 1000)
            start = int(query["startTime"]) if "startTime" in query else None
        except ValueError:
            return self._error(400, -1100, "Illegal characters found in a parameter.")
        now = self._now_ms()
        current = now // interval * interval  # the candle being formed
        first = current - (limit - 1) * interval if start is None else -(-start // interval) * interval
        rows = []
        for opened in range(first, min(current, first + (limit - 1) * interval) + 1, interval):
            o, h, lo, c, v = candle(symbol, opened, interval, self._factor(symbol, opened))
            if opened == current:  # not closed yet: what has traded so far
                v = round(v * (now - opened) / interval, 4)
            rows.append(
                [opened, _text(o), _text(h), _text(lo), _text(c), _text(v), opened + interval - 1,
                 _text(v * c), 100, _text(v / 2), _text(v * c / 2), "0"]
            )  # fmt: skip
        return web.json_response(rows)

    def _factor(self, symbol: str, opened: int) -> float:
        if (symbol, opened) in self.spikes:
            return self.spikes[symbol, opened]
        return 10.0 if self.spike_rate and _unit(symbol + "!", opened) < self.spike_rate else 1.0

    # -- running it --------------------------------------------------------------

    async def start(self) -> None:
        """Serve on 127.0.0.1 in the running loop (``port`` 0 picks a free one)."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        self._publisher = asyncio.get_running_loop().create_task(self._publish())

    async def stop(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
        await self._drop()
        if self._runner is not None:
            await self._runner.cleanup()

    def __enter__(self) -> StandInBinance:
        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.start())
            self._started.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self.stop())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="stand-in-binance")
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the stand-in exchange did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)


def main() -> None:  # pragma: no cover - used by bench/live_ingest.py
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--symbols", type=int, default=1000, help="how many USDT markets (S0000/USDT...)")
    parser.add_argument("--epoch", type=float, default=None, help="real time at which the virtual clock starts")
    parser.add_argument("--origin", type=float, default=None, help="virtual time at --epoch")
    parser.add_argument("--speed", type=float, default=1.0, help="virtual seconds per real second")
    parser.add_argument("--spike-rate", type=float, default=0.0, help="share of candles with 10x volume")
    args = parser.parse_args()
    epoch = time.time() if args.epoch is None else args.epoch
    origin = epoch if args.origin is None else args.origin

    speed = float(args.speed)

    def clock() -> float:
        return float(origin + (time.time() - epoch) * speed)

    symbols = [f"S{i:04d}/USDT" for i in range(args.symbols)]
    exchange = StandInBinance(symbols, clock=clock, port=args.port, spike_rate=args.spike_rate)
    loop = asyncio.new_event_loop()
    exchange._loop = loop
    loop.run_until_complete(exchange.start())
    try:
        loop.run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        loop.run_until_complete(exchange.stop())


if __name__ == "__main__":
    main()
