"""Live OHLCV candles from any exchange the ``ccxt`` library supports, by polling its REST API.

Public market data needs no key. What the source does, and what it decided:

- **Bar times.** A candle is stamped with its *close* time (open time plus the
  timeframe): the 10:41-10:42 one-minute candle is the 10:42 bar, the moment it
  became known, as in the other sources.
- **Closed candles only.** A candle is kept only once the clock has reached its
  close; the incomplete last candle the exchange serves never becomes a bar.
- **Ticks.** One frame per candle time across all symbols. Every round fetches,
  concurrently, each symbol that has not answered up to the newest closed
  candle. A symbol has answered for a candle time when the exchange returned
  that candle or a later one (an empty or unreadable answer proves nothing, so
  the symbol is asked again). A candle time is emitted once every symbol has
  answered for it (a symbol the exchange skipped at that time, e.g. no trades,
  simply is not in the tick), or ``grace`` seconds after its close, whichever
  comes first, so a slow or failing symbol does not hold back the rest. Its
  candle, if it arrives later, is dropped and counted as ``late`` (ticks only
  move forward). A request under way is waited for before a tick goes out
  after its grace.
- **Batches.** With ``batch`` (seconds), a live tick does not wait for its last
  symbol: the candles in hand go out as a frame once the first of them has
  waited ``batch`` seconds, then the next ones, so a signal commits as soon as
  its symbol's candle is in (the engine commits each batch in one transaction
  and checkpoints a tick once it is whole: ``partial_ticks``). The backfill goes
  out in whole ticks, and a tick still goes out before any candle of the next.
- **Closed by whose clock.** Ours: ``delay`` gives the exchange time to roll
  its candle over before we ask, so keep it above the clock skew.
- **Backfill and resume.** With no checkpoint the stream starts ``warmup``
  candles back, so a detector is warm for the first live candle (the pipeline
  sets ``warmup`` to the detector's window when it is not given). With a
  checkpoint (``since``) it fetches everything after it, paginated: no gap and
  no duplicate across a restart.
- **Rate limit.** Requests spend the exchange's request weight per minute, priced
  by ccxt (``rateLimit`` and each endpoint's cost): a round of every symbol at a
  close goes at once when it fits in the minute's budget, and waits only when it
  does not (``ccxt_budget.py``; ``rate_limit: 0``: no limit). At most 50 requests
  are under way at once.
- **Errors never stop the stream.** A failed request (or an answer ccxt cannot
  parse) is retried with exponential backoff (``backoff`` seconds doubled per failure, at most 60 s), a 429/418 waits at
  least its ``Retry-After`` and pauses every symbol. Failures are logged and
  counted in ``rejected`` (and so in the ``signalmint_rejected`` metric):
  ``exchange_error``, ``rate_limited``, ``late``, ``unknown_symbol``.
- **Symbols.** A list of ccxt symbols (``BTC/USDT``) or a rule ``{top: 50,
  quote: USDT}``: the markets of ``market_type`` quoted in ``quote`` with the
  largest 24-hour quote volume, resolved at start and every ``refresh`` (a day).
  A symbol that joins on a refresh starts at the next candle, without backfill;
  a refresh the exchange fails keeps the current list and is tried again a
  minute later (the candles keep flowing).
- **Websocket.** ``stream: websocket`` (and ``auto``, the default, where ccxt.pro
  has the exchange's ``watchOHLCVForSymbols`` and ``urls`` does not move REST
  without moving ``ws``) subscribes every symbol's klines
  over ccxt.pro and turns them into closed candles (``ccxt_ws.KlineFeed``: closed
  when the exchange says so or a later candle arrives); REST still backfills the
  warm-up, fills the gap after a reconnect and fetches any symbol the stream has
  not delivered ``delay`` seconds after a close. ``stream: poll`` only polls.
- **Stand-ins.** ``urls`` is merged into the exchange's ``urls["api"]``: for
  ``binance``, ``{public: "http://127.0.0.1:PORT/api/v3"}`` serves all market data
  (markets are loaded for ``market_type`` only, so no other API is called); a
  mapping value is merged into the mapping there, so ``{ws: {spot: "ws://..."}}``
  moves binance's spot websocket only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, ClassVar, Literal, Self

import ccxt  # type: ignore[import-untyped]
import ccxt.async_support as ccxt_async  # type: ignore[import-untyped]
import ccxt.pro as ccxt_pro  # type: ignore[import-untyped]
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..config import Duration
from ..errors import SourceError
from ..records import Frame, to_datetime64
from .ccxt_budget import RateBudget
from .ccxt_ws import KlineFeed
from .validate import RowValidator

__all__ = ["CcxtCandles", "CcxtOptions", "TopRule"]

log = logging.getLogger("signalmint.sources")

#: Longest wait between retries of a failing symbol, seconds.
MAX_BACKOFF = 60.0
#: Most candles asked for in one request (Binance's maximum).
PAGE = 1000
#: Most requests under way at once (ccxt's connection pool holds 100): the others wait their
#: turn before they start, so a request's ``timeout`` counts its own wait on the exchange.
IN_FLIGHT = 50

Row = tuple[float, float, float, float, float]


class TopRule(BaseModel):
    """The ``top`` markets of a quote currency by 24-hour quote volume."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    top: int = Field(ge=1, le=5000, description="How many markets.")
    quote: str = Field("USDT", description="Quote currency of the markets.")
    refresh: Duration = Field(timedelta(days=1), description="How often the list is recomputed (e.g. 1d, 6h).")


class CcxtOptions(BaseModel):
    """Settings of the ``ccxt`` source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    exchange: str = Field(description="A ccxt exchange id, e.g. binance.")
    timeframe: str = Field("1m", description="Candle length, as the exchange names it (1m, 5m, 1h...).")
    symbols: list[str] | TopRule = Field(
        default_factory=lambda: TopRule(top=50), description="ccxt symbols (BTC/USDT) or {top: N, quote: USDT}."
    )
    urls: dict[str, str | dict[str, str]] = Field(
        default_factory=dict, description="Merged into the exchange's urls['api'] (a mapping into a mapping)."
    )
    stream: Literal["auto", "poll", "websocket"] = Field(
        "auto", description="websocket (ccxt.pro) or poll; auto: websocket where ccxt.pro has it."
    )
    market_type: str = Field("spot", description="Markets loaded: spot, swap, future...")
    warmup: int | None = Field(None, ge=0, description="Candles backfilled at first start (None: detector's).")
    delay: float = Field(1.0, ge=0, description="Seconds after a close before polling for the candle.")
    grace: float = Field(10.0, ge=0, description="Seconds after a close a tick waits for slow symbols.")
    batch: float | None = Field(
        None,
        ge=0,
        description="Seconds a live tick's first candles wait for company, then go out without the rest "
        "(None: each tick goes out whole).",
    )
    backoff: float = Field(1.0, gt=0, description="First retry delay in seconds (doubles, at most 60).")
    rate_limit: int | None = Field(None, ge=0, description="Milliseconds between requests (None: ccxt's).")
    timeout: float = Field(10.0, gt=0, description="Seconds before a request is abandoned.")

    @field_validator("exchange")
    @classmethod
    def _known_exchange(cls, value: str) -> str:
        if value not in ccxt.exchanges:
            raise ValueError(f"unknown ccxt exchange {value!r} (use e.g. 'binance', 'kraken', 'okx')")
        return value

    @model_validator(mode="after")
    def _websocket_exists(self) -> Self:
        if self.stream == "websocket" and not _has_websocket(self.exchange):
            raise ValueError(f"ccxt.pro has no OHLCV websocket for {self.exchange} (use stream: poll)")
        return self

    @model_validator(mode="after")
    def _known_timeframe(self) -> Self:
        try:
            _timeframe_ms(self.exchange, self.timeframe)
        except SourceError as exc:
            raise ValueError(str(exc)) from None
        return self


def _has_websocket(exchange: str) -> bool:
    """Whether ccxt.pro watches OHLCV of many symbols of ``exchange`` at once."""
    cls = getattr(ccxt_pro, exchange, None)
    return cls is not None and bool((cls().has or {}).get("watchOHLCVForSymbols"))


def _timeframe_ms(exchange: str, timeframe: str) -> int:
    known = getattr(ccxt, exchange)().timeframes or {}
    if timeframe not in known:
        raise SourceError(f"ccxt: {exchange} has no timeframe {timeframe!r} (it has: {', '.join(known)})")
    return int(ccxt.Exchange.parse_timeframe(timeframe) * 1000)


class CcxtCandles:
    """Closed OHLCV candles of many symbols of one exchange, one frame per candle time."""

    kind: ClassVar[str] = "ccxt"
    Options: ClassVar[type[CcxtOptions]] = CcxtOptions

    def __init__(
        self,
        exchange: str,
        timeframe: str = "1m",
        symbols: list[str] | TopRule | Mapping[str, Any] | None = None,
        urls: Mapping[str, str | Mapping[str, str]] | None = None,
        market_type: str = "spot",
        warmup: int | None = None,
        delay: float = 1.0,
        grace: float = 10.0,
        backoff: float = 1.0,
        rate_limit: int | None = None,
        timeout: float = 10.0,
        stream: str = "auto",
        batch: float | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.exchange = exchange
        self.timeframe = timeframe
        if symbols is None:
            symbols = TopRule(top=50)
        self.symbols: list[str] | TopRule = (
            list(symbols) if isinstance(symbols, list) else TopRule.model_validate(symbols)
        )
        self.urls = dict(urls or {})
        if stream not in ("auto", "poll", "websocket"):
            raise SourceError(f"ccxt: stream must be auto, poll or websocket, not {stream!r}")
        self.stream_mode = stream
        #: What ``auto`` became: the websocket where ccxt.pro has it, unless ``urls`` moves the REST
        #: API and not the websocket (a proxy or stand-in that serves REST only).
        self.websocket = stream == "websocket" or (
            stream == "auto" and _has_websocket(exchange) and (not self.urls or "ws" in self.urls)
        )
        self.market_type = market_type
        self.warmup = warmup
        self.delay, self.grace, self.backoff = delay, grace, backoff
        self.batch = batch
        #: With ``batch`` a live tick may come in several frames (disjoint symbols, one time): the
        #: engine then checkpoints a tick once it is whole (see engine/runner.py).
        self.partial_ticks = batch is not None
        self.rate_limit, self.timeout = rate_limit, timeout
        self.clock, self.sleep = clock, sleep
        self._tf = _timeframe_ms(exchange, timeframe)
        self._rejected: Counter[str] = Counter()
        self.requests = 0

    def __repr__(self) -> str:
        return f"CcxtCandles(exchange={self.exchange!r}, timeframe={self.timeframe!r}, symbols={self.symbols!r})"

    @property
    def rejected(self) -> Mapping[str, int]:
        """Rows rejected and exchange errors so far, by reason."""
        return MappingProxyType(self._rejected)

    # -- the exchange ------------------------------------------------------------

    def _exchange(self) -> Any:
        config: dict[str, Any] = {
            "enableRateLimit": True,
            "enableLastResponseHeaders": True,
            "timeout": int(self.timeout * 1000),
        }
        if self.rate_limit is not None:
            config["rateLimit"] = self.rate_limit
        ex = getattr(ccxt_pro if self.websocket else ccxt_async, self.exchange)(config)
        # the exchange's weight per minute, spent in bursts (ccxt_budget.py), on our clock
        ex.throttler = RateBudget.for_exchange(float(ex.rateLimit or 0), clock=self.clock, sleep=self.sleep)
        ex.options["defaultType"] = self.market_type
        loading = ex.options.get("fetchMarkets")
        if isinstance(loading, dict) and "types" in loading:
            ex.options["fetchMarkets"] = {**loading, "types": [self.market_type]}
        elif isinstance(loading, list):
            ex.options["fetchMarkets"] = [self.market_type]
        if self.urls:
            api = ex.urls.get("api")
            merged = dict(api) if isinstance(api, dict) else {}
            for key, value in self.urls.items():
                known = merged.get(key)
                merged[key] = {**known, **value} if isinstance(value, Mapping) and isinstance(known, dict) else value
            ex.urls["api"] = merged
        return ex

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _failed(self, ex: Any, what: str, exc: BaseException) -> float:
        """Count and log a failed request; the least wait before the next one (Retry-After)."""
        if isinstance(exc, ccxt.DDoSProtection | ccxt.RateLimitExceeded):
            self._rejected["rate_limited"] += 1
            headers = getattr(ex, "last_response_headers", None) or {}
            after = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
            log.warning("ccxt %s: %s rate limited (Retry-After %s)", self.exchange, what, after)
            try:
                return max(float(after), 0.0) if after is not None else self.backoff
            except ValueError:
                return self.backoff
        self._rejected["exchange_error"] += 1
        log.warning("ccxt %s: %s failed: %s: %s", self.exchange, what, type(exc).__name__, str(exc)[:200])
        return 0.0

    async def _persist(self, ex: Any, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """``call()`` until it succeeds, backing off between failures."""
        failures = 0
        while True:
            try:
                self.requests += 1
                return await call()
            except Exception as exc:  # an exchange error or an answer ccxt could not parse
                least = self._failed(ex, what, exc)
                failures += 1
                await self.sleep(max(least, min(self.backoff * 2 ** (failures - 1), MAX_BACKOFF)))

    async def _resolve(self, ex: Any, *, retry: bool = True) -> list[str]:
        """The symbols to follow now: the configured list, or the ``top`` rule applied."""
        markets: dict[str, Any] = ex.markets
        if isinstance(self.symbols, list):
            unknown = [s for s in self.symbols if s not in markets]
            if unknown:
                self._rejected["unknown_symbol"] += len(unknown)
                log.warning("ccxt %s: unknown symbols skipped: %s", self.exchange, ", ".join(unknown))
            return [s for s in self.symbols if s in markets]
        rule = self.symbols
        tickers: dict[str, Any] = await (
            self._persist(ex, "fetch_tickers", ex.fetch_tickers) if retry else ex.fetch_tickers()
        )
        eligible = [
            symbol
            for symbol, market in markets.items()
            if market.get("quote") == rule.quote
            and market.get("type") == self.market_type
            and market.get("active") is not False
        ]

        def volume(symbol: str) -> float:
            value = (tickers.get(symbol) or {}).get("quoteVolume")
            return float(value) if value is not None else 0.0

        chosen = sorted(eligible, key=lambda s: (-volume(s), s))[: rule.top]
        log.info("ccxt %s: top %d %s markets: %s", self.exchange, rule.top, rule.quote, ", ".join(chosen))
        return chosen

    async def _refresh(self, ex: Any) -> list[str] | None:
        """The ``top`` rule applied to freshly loaded markets and tickers; None if the exchange failed."""
        try:
            await ex.load_markets(reload=True)
            return await self._resolve(ex, retry=False)
        except Exception as exc:
            self._failed(ex, "refreshing the top list", exc)
            return None

    async def _fetch(self, ex: Any, symbol: str, start: int, boundary: int) -> tuple[list[tuple[int, Row]], int]:
        """Closed candles of ``symbol`` closing in ``(start, boundary]``, as (close ms, row) pairs, and
        how far the symbol has answered: up to the latest candle the exchange returned (a candle
        still open proves the closed ones are all there), never past ``boundary``. An empty answer
        leaves it at ``start``: the symbol is asked again, and its ticks wait at most ``grace``."""
        out: list[tuple[int, Row]] = []
        tf = self._tf
        answered = start
        while answered < boundary:
            limit = min(PAGE, (boundary - answered) // tf + 1)
            self.requests += 1
            candles = await ex.fetch_ohlcv(symbol, self.timeframe, since=answered, limit=limit)
            now = self._now_ms()
            reached = answered
            for candle in candles:
                opened = int(candle[0])
                close = opened + tf
                reached = max(reached, min(close, boundary))
                if opened >= answered and close <= min(now, boundary):
                    o, h, lo, c, v = (float(x) if x is not None else float("nan") for x in candle[1:6])
                    out.append((close, (o, h, lo, c, v)))
            if reached == answered or len(candles) < limit:
                return out, reached
            answered = reached
        return out, answered

    # -- the stream --------------------------------------------------------------

    async def stream(self, since: datetime | None = None) -> AsyncGenerator[Frame, None]:
        """Backfill (or resume after ``since``), then one frame per closed candle time, forever
        (with ``batch``, a live candle time may come in several frames of disjoint symbols)."""
        validator = RowValidator(self._rejected, source=self.kind)
        ex = self._exchange()
        tf = self._tf
        batch = None if self.batch is None else self.batch * 1000
        inflight: dict[asyncio.Task[tuple[list[tuple[int, Row]], int]], str] = {}
        finished: list[asyncio.Task[tuple[list[tuple[int, Row]], int]]] = []
        arrived = asyncio.Event()
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def fetch(symbol: str, start: int, boundary: int) -> tuple[list[tuple[int, Row]], int]:
            async with slots:
                return await self._fetch(ex, symbol, start, boundary)

        def landed(task: asyncio.Task[tuple[list[tuple[int, Row]], int]]) -> None:
            finished.append(task)
            arrived.set()

        feed: KlineFeed | None = None
        try:
            await self._persist(ex, "load_markets", ex.load_markets)
            symbols = await self._resolve(ex)
            started = resolved_at = self._now_ms()
            boundary = started // tf * tf
            live = boundary  # candles closing after this are live (``batch`` may split their ticks)
            if since is not None:
                cursor = int(to_datetime64(since).astype(np.int64)) // 1_000_000
            else:
                cursor = boundary - (self.warmup if self.warmup is not None else 60) * tf
            answered = dict.fromkeys(symbols, cursor)
            retry_at: dict[str, float] = {}
            failures: Counter[str] = Counter()
            pending: dict[int, dict[str, Row]] = {}
            waiting: int | None = None  # since when the oldest open tick's unsent candles wait (batch)
            if self.websocket:
                feed = KlineFeed(
                    ex, symbols, self.timeframe, tf,
                    failed=self._failed, sleep=self.sleep, backoff=self.backoff, max_backoff=MAX_BACKOFF,
                )  # fmt: skip
            while True:
                now = self._now_ms()
                if isinstance(self.symbols, TopRule) and now - resolved_at >= self.symbols.refresh / timedelta(
                    milliseconds=1
                ):
                    fresh = await self._refresh(ex)
                    if fresh is None:  # keep the current list; try again in a minute
                        resolved_at = (
                            now - int(self.symbols.refresh / timedelta(milliseconds=1)) + int(MAX_BACKOFF * 1000)
                        )
                    else:
                        symbols, resolved_at = fresh, now
                        answered = {s: answered.get(s, cursor) for s in symbols}
                        if feed is not None:
                            feed.follow(symbols)
                # REST asks for a candle once its close has passed (by ``delay`` when the websocket has it)
                boundary = (now - int(self.delay * 1000 if feed is not None else 0)) // tf * tf
                # (answered holds exactly the symbols followed; min() spares a Python loop per kline wake-up)
                if min(answered.values(), default=boundary) < boundary:
                    busy = set(inflight.values())
                    for symbol in symbols:
                        if answered[symbol] < boundary and retry_at.get(symbol, 0.0) <= now and symbol not in busy:
                            task = asyncio.ensure_future(fetch(symbol, answered[symbol], boundary))
                            task.add_done_callback(landed)
                            inflight[task] = symbol
                if inflight and batch is None:  # whole rounds: every request of the round answers first
                    await asyncio.wait(inflight)
                arrived.clear()
                results, finished[:] = list(finished), []
                pause = 0.0
                for task in results:
                    symbol = inflight.pop(task)
                    if symbol not in answered:  # no longer followed (a refresh of the top list)
                        continue
                    if task.cancelled():
                        raise asyncio.CancelledError
                    error = task.exception()
                    if isinstance(error, Exception):  # an exchange error or an answer ccxt could not parse
                        failures[symbol] += 1
                        pause = max(pause, self._failed(ex, f"fetch_ohlcv {symbol}", error))
                        wait = min(self.backoff * 2 ** (failures[symbol] - 1), MAX_BACKOFF)
                        retry_at[symbol] = now + wait * 1000
                        continue
                    if error is not None:
                        raise error
                    fetched, upto = task.result()
                    failures.pop(symbol, None)
                    retry_at.pop(symbol, None)
                    held = answered[symbol]  # the websocket may have delivered some meanwhile
                    answered[symbol] = max(held, upto)
                    for close, row in fetched:
                        if close <= held:
                            continue
                        if close <= cursor:
                            self._rejected["late"] += 1
                        else:
                            pending.setdefault(close, {})[symbol] = row
                if pause:  # a 429 holds every symbol back
                    for symbol in symbols:
                        if answered[symbol] < boundary:
                            retry_at[symbol] = max(retry_at.get(symbol, 0.0), now + pause * 1000)
                if feed is not None:
                    feed.drain(answered, pending, cursor, self._rejected)
                now = self._now_ms()
                floor = min(answered.values(), default=now)  # every symbol has answered up to here
                for close in sorted(pending):
                    deadline = max(close, started) + self.grace * 1000  # backfill waits from the start
                    # (a request under way is waited for, as a whole round is without ``batch``)
                    if floor >= close or (now >= deadline and not inflight):
                        cursor, waiting = close, None
                        rows = pending.pop(close)
                        frame = validator.check(_frame(close, rows)) if rows else None
                        if frame is not None and len(frame):
                            yield frame
                        continue
                    if batch is not None and close > live and pending[close]:  # the open tick, in batches
                        waiting = now if waiting is None else waiting
                        if now >= waiting + batch:
                            rows, pending[close], waiting = pending[close], {}, None
                            frame = validator.check(_frame(close, rows))
                            if len(frame):
                                yield frame
                    break
                await self._wait(symbols, answered, retry_at, pending, boundary, started, feed, inflight, arrived,
                                 waiting)  # fmt: skip
        finally:
            for task in inflight:
                task.cancel()
            if inflight:
                await asyncio.gather(*inflight, return_exceptions=True)
            if feed is not None:
                await feed.close()
            validator.flush()
            await ex.close()

    async def _wait(
        self,
        symbols: list[str],
        answered: dict[str, int],
        retry_at: dict[str, float],
        pending: dict[int, dict[str, Row]],
        boundary: int,
        started: int,
        feed: KlineFeed | None = None,
        inflight: Mapping[asyncio.Task[Any], str] | None = None,
        arrived: asyncio.Event | None = None,
        waiting: int | None = None,
    ) -> None:
        """Sleep until the next thing to do: a retry, a grace deadline, the next close, the end of a
        batch's wait (or a kline). While requests are under way (``batch``), only an answer, a kline
        or the end of a batch's wait: the rest is decided once they answer, as after a round."""
        wake: float = float("inf")
        if not inflight:
            wake = boundary + self._tf + self.delay * 1000
            behind = [retry_at.get(s, 0.0) for s in symbols if answered[s] < boundary]
            if behind:
                wake = min(wake, *behind)
            if pending:
                wake = min(wake, max(min(pending), started) + self.grace * 1000)
        if waiting is not None and self.batch is not None:
            wake = min(wake, waiting + self.batch * 1000)
        wait = (wake - self._now_ms()) / 1000
        events = [feed.wake] if feed is not None else []
        if inflight and arrived is not None:
            events.append(arrived)
        if not events or wait <= 0:
            await (self.sleep(wait) if wait > 0 else asyncio.sleep(0))
            return
        if any(event.is_set() for event in events):
            await asyncio.sleep(0)
            return
        woken = [asyncio.ensure_future(event.wait()) for event in events]
        sleeper = asyncio.ensure_future(self.sleep(wait)) if wait != float("inf") else None
        waits = {*woken, sleeper} if sleeper is not None else set(woken)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)


def _frame(close_ms: int, rows: dict[str, Row]) -> Frame:
    keys = np.array(list(rows), dtype=str)
    values = np.array(list(rows.values()), dtype=np.float64).reshape(len(rows), 5)
    return Frame(
        keys=keys,
        times=np.full(len(rows), close_ms * 1_000_000, dtype=np.int64).view("datetime64[ns]"),
        columns={name: values[:, i].copy() for i, name in enumerate(("open", "high", "low", "close", "volume"))},
    )
