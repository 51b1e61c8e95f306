"""US stock minute bars from Alpaca through the official ``alpaca-py``: REST backfill, then the websocket.

On ``stream(since)`` the source subscribes to minute bars on the websocket
(``StockDataStream.subscribe_bars``, the IEX feed unless ``feed: sip``) and,
while it connects, backfills over REST (``StockHistoricalDataClient.get_stock_bars``):
from ``since`` when resuming, else enough of the latest sessions to hold
``warmup`` market minutes (nights, weekends and holidays skipped with
:mod:`~signalmint.sources.calendar`). Only closed minutes are backfilled: a bar
still forming is left to the stream, which sends it when its minute closes.
The backfill comes out as one frame per minute, then the live bars.

The seam has no gap and no duplicate: bars the websocket delivers at or before
the last backfilled minute are dropped (they were already emitted), and when
the first live minute is more than one minute after the backfill, the minutes
in between are fetched over REST before it. Only times after the last emitted
one are ever emitted.

Live bars of one minute arrive one message per symbol; they are gathered into
one frame, emitted as soon as every symbol has reported, a later minute
begins, or ``settle`` seconds have passed since the minute's first bar (an
illiquid symbol may have no bar in a minute). A bar arriving after its minute
went out is counted as ``out_of_order``. Malformed bars (missing or non-numeric
fields, bad times) and bars failing the
:class:`~signalmint.sources.validate.RowValidator` are dropped and counted.

Keys come from the environment (``APCA_API_KEY_ID`` and ``APCA_API_SECRET_KEY``,
or the variables named by ``key_env`` and ``secret_env``), never from the
config file; they are read when the stream starts, so ``signalmint check``
does not need them. ``data_url`` and ``stream_url`` point the clients at a
proxy or a test server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import warnings
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import SourceError
from ..records import BAR_COLUMNS, Frame, to_datetime, to_datetime64
from . import calendar
from .file import split_ticks
from .validate import RowValidator

__all__ = ["AlpacaBars", "AlpacaOptions"]

log = logging.getLogger("signalmint.sources")

_MINUTE_NS = 60_000_000_000
_FIELDS = {"open": "o", "high": "h", "low": "l", "close": "c", "volume": "v"}
Row = tuple[str, int, tuple[float, ...]]


class AlpacaOptions(BaseModel):
    """Settings of the ``alpaca`` source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbols: list[str] = Field(min_length=1, description="Stock symbols to follow, e.g. [AAPL, MSFT].")
    timeframe: Literal["1Min"] = Field("1Min", description="Bar size (minute bars, as the stream sends).")
    feed: Literal["iex", "sip"] = Field("iex", description="iex (free) or sip (all US exchanges, paid plan).")
    warmup: int = Field(60, ge=0, le=100_000, description="Market minutes of bars backfilled on a fresh start.")
    data_url: str | None = Field(None, description="REST base address (default https://data.alpaca.markets).")
    stream_url: str | None = Field(
        None, description="Websocket address (default wss://stream.data.alpaca.markets/v2/<feed>)."
    )
    key_env: str = Field("APCA_API_KEY_ID", description="Environment variable holding the API key id.")
    secret_env: str = Field("APCA_API_SECRET_KEY", description="Environment variable holding the secret key.")
    settle: float = Field(5.0, ge=0, le=60, description="Seconds to wait for the other symbols' bars of a minute.")

    @field_validator("symbols")
    @classmethod
    def _clean(cls, value: list[str]) -> list[str]:
        cleaned = [s.strip().upper() for s in value]
        if any(not s for s in cleaned):
            raise ValueError("a symbol cannot be empty")
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("symbols are listed twice")
        return cleaned


def _alpaca() -> Any:
    """alpaca-py's modules, imported on first use (they import websockets.legacy, which warns)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from alpaca.data import enums, requests, timeframe
        from alpaca.data.historical.stock import StockHistoricalDataClient
        from alpaca.data.live.stock import StockDataStream
    return enums, requests, timeframe, StockHistoricalDataClient, StockDataStream


def _time_ns(value: Any) -> int | None:
    """A bar's ``t``: RFC 3339 text (REST) or a msgpack Timestamp (websocket)."""
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return None
        return None if dt.tzinfo is None else int(to_datetime64(dt).astype(np.int64))
    to_ns = getattr(value, "to_unix_nano", None)
    return int(to_ns()) if callable(to_ns) else None


def _parse(symbol: Any, bar: Any, validator: RowValidator) -> Row | None:
    """One raw bar as (symbol, ns, values), or None after counting why it is bad."""
    if not isinstance(bar, Mapping):
        validator.reject("bad_value")
        return None
    t = _time_ns(bar.get("t"))
    if t is None:
        validator.reject("bad_timestamp")
        return None
    values = [bar.get(k) for k in _FIELDS.values()]
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if not isinstance(symbol, str) or not symbol or len(numbers) != len(values):
        validator.reject("bad_value")
        return None
    return symbol, t, tuple(numbers)


def _frame(rows: list[Row]) -> Frame:
    return Frame(
        keys=np.array([r[0] for r in rows], dtype=str),
        times=np.array([r[1] for r in rows], dtype=np.int64).view("datetime64[ns]"),
        columns={name: np.array([r[2][i] for r in rows], dtype=np.float64) for i, name in enumerate(BAR_COLUMNS)},
    )


class AlpacaBars:
    """Minute bars of US stocks from Alpaca (REST backfill, then the websocket stream).

    ``clock`` (epoch seconds) and ``env`` are injectable for tests; they are not options.
    """

    kind: ClassVar[str] = "alpaca"
    Options: ClassVar[type[AlpacaOptions]] = AlpacaOptions
    #: One bar per symbol per minute while the market is open.
    cadence: ClassVar[timedelta] = timedelta(minutes=1)

    def __init__(
        self,
        symbols: list[str],
        timeframe: Literal["1Min"] = "1Min",
        feed: Literal["iex", "sip"] = "iex",
        warmup: int = 60,
        data_url: str | None = None,
        stream_url: str | None = None,
        key_env: str = "APCA_API_KEY_ID",
        secret_env: str = "APCA_API_SECRET_KEY",
        settle: float = 5.0,
        *,
        clock: Callable[[], float] = time.time,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.symbols = list(symbols)
        self.timeframe = timeframe
        self.feed = feed
        self.warmup = warmup
        self.data_url = data_url
        self.stream_url = stream_url
        self.key_env = key_env
        self.secret_env = secret_env
        self.settle = settle
        self.clock = clock
        self.env = env if env is not None else os.environ
        self._rejected: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"AlpacaBars(symbols={self.symbols!r}, feed={self.feed!r})"

    @property
    def rejected(self) -> Mapping[str, int]:
        """Bars rejected so far, by reason."""
        return MappingProxyType(self._rejected)

    @staticmethod
    def market_open(at: datetime) -> bool:
        """Whether US stocks trade at ``at``: no bar is expected (nor stale) when this is False."""
        return calendar.market_open(at)

    @staticmethod
    def next_open(at: datetime) -> datetime:
        """``at`` if the market is open then, else when it next opens."""
        return calendar.next_open(at)

    def _keys(self) -> tuple[str, str]:
        key, secret = self.env.get(self.key_env), self.env.get(self.secret_env)
        if not key or not secret:
            missing = [name for name, v in ((self.key_env, key), (self.secret_env, secret)) if not v]
            raise SourceError(
                f"alpaca: set the environment variable(s) {', '.join(missing)} to your Alpaca API keys "
                "(paper-trading keys work for market data)"
            )
        return key, secret

    # -- REST ------------------------------------------------------------------

    def _fetch(self, keys: tuple[str, str], start: datetime, end: datetime, validator: RowValidator) -> list[Row]:
        """Every bar in ``[start, end]`` over REST (alpaca-py follows the pages), parsed."""
        enums, requests, timeframe, client_cls, _ = _alpaca()
        client = client_cls(keys[0], keys[1], raw_data=True, url_override=self.data_url)
        request = requests.StockBarsRequest(
            symbol_or_symbols=self.symbols,
            timeframe=timeframe.TimeFrame.Minute,
            start=start,
            end=end,
            feed=enums.DataFeed(self.feed),
        )
        try:
            raw = client.get_stock_bars(request)
        except Exception as exc:  # alpaca-py raises APIError, requests' errors, ValueError
            where = self.data_url or "data.alpaca.markets"
            raise SourceError(f"alpaca: bars request to {where} failed: {exc}") from exc
        rows: list[Row] = []
        for symbol, bars in (raw or {}).items():
            for bar in bars if isinstance(bars, list) else [bars]:
                if (row := _parse(symbol, bar, validator)) is not None:
                    rows.append(row)
        return rows

    async def _backfill(
        self, keys: tuple[str, str], start: datetime, end: datetime, after: int | None, validator: RowValidator
    ) -> list[Frame]:
        rows = await asyncio.to_thread(self._fetch, keys, start, end, validator)
        end_ns = int(to_datetime64(end).astype(np.int64))
        closed = end_ns - _MINUTE_NS  # a bar stamped later is still forming: the stream sends it when it closes
        rows = [r for r in rows if (after is None or r[1] > after) and r[1] <= closed]
        if not rows:
            return []
        rows.sort(key=lambda r: r[1])  # stable: each symbol's bars stay in the server's order
        return split_ticks(validator.check(_frame(rows)))

    # -- the stream ------------------------------------------------------------

    async def stream(self, since: datetime | None = None) -> AsyncGenerator[Frame, None]:
        """Backfilled minutes, then live minutes, one frame per minute, forever."""
        keys = self._keys()
        enums, _, _, _, stream_cls = _alpaca()
        validator = RowValidator(self._rejected, source=f"{self.kind} {','.join(self.symbols)}")
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def on_bar(bar: Any) -> None:
            queue.put_nowait(bar)

        live = stream_cls(keys[0], keys[1], raw_data=True, feed=enums.DataFeed(self.feed), url_override=self.stream_url)
        live.subscribe_bars(on_bar, *self.symbols)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            task = asyncio.create_task(live._run_forever())  # the body of alpaca-py's run(), on our loop
        last: int | None = None if since is None else int(to_datetime64(since).astype(np.int64))
        try:
            now = datetime.fromtimestamp(self.clock(), tz=UTC)
            if since is not None:
                start: datetime | None = since
            elif self.warmup:
                start = calendar.market_minutes_start(now, self.warmup)
            else:
                start = None
            if start is not None:
                ticks = await self._backfill(keys, start, now, last, validator)
                if since is None:
                    ticks = ticks[-self.warmup :]
                for tick in ticks:
                    last = int(tick.times[0].astype(np.int64))
                    yield tick
            live_ticks = self._live(queue, keys, last, validator)
            try:
                async for tick in live_ticks:
                    yield tick
            finally:
                await live_ticks.aclose()
        finally:
            await live.stop_ws()
            while not task.done():  # asyncio.wait_for inside alpaca-py may swallow one cancellation
                task.cancel()
                await asyncio.wait({task}, timeout=0.1)
            await live.close()
            validator.flush()

    async def _live(
        self, queue: asyncio.Queue[Any], keys: tuple[str, str], last: int | None, validator: RowValidator
    ) -> AsyncGenerator[Frame, None]:
        """Gather streamed bars into one frame per minute (see the module docstring)."""
        seam = last  # bars at or before it were backfilled: dropped without counting
        gap_checked = seam is None
        wanted = set(self.symbols)
        pending: dict[int, dict[str, Row]] = {}
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            ready: list[int] = []
            try:
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                bar = await asyncio.wait_for(queue.get(), timeout)
            except TimeoutError:
                ready = [min(pending)]
            else:
                row = _parse(bar.get("S") if isinstance(bar, Mapping) else None, bar, validator)
                if row is None:
                    continue
                symbol, t, _ = row
                if last is not None and t <= last:
                    if seam is None or t > seam:
                        validator.reject("out_of_order")  # its minute already went out
                    continue
                if not gap_checked and seam is not None:
                    gap_checked = True
                    if t - seam > _MINUTE_NS:  # minutes that closed while the stream connected
                        between = to_datetime(seam + 1000), to_datetime(t)  # the minutes before t
                        for tick in await self._backfill(keys, *between, seam, validator):
                            last = seam = int(tick.times[0].astype(np.int64))
                            yield tick
                if not len(validator.check(_frame([row]))):  # bad values, or a second bar of the minute
                    continue
                minute = pending.setdefault(t, {})
                minute[symbol] = row
                ready = [m for m in pending if m < t]
                if minute.keys() >= wanted:
                    ready.append(t)
            for t in sorted(ready):
                last = t
                yield _frame(list(pending.pop(t).values()))
            if not pending:
                deadline = None
            elif deadline is None or ready:
                deadline = loop.time() + self.settle
