"""Real daily bars of AAPL, GOOG, IBM, MSFT and FB, replayed one trading day per tick.

The data are the ``stocks.csv.gz`` file of the ``bokeh_sampledata`` package
(Quandl WIKI prices, public domain): 2000-03-01 to 2013-03-01, FB from its
listing on 2012-05-18, GOOG from 2004-08-19. Prices are as traded, not adjusted
for splits (AAPL's 2-for-1 splits of 2000-06-21 and 2005-02-28 show as
halvings); volumes are shares.

Each bar is stamped with its trading date at 21:00 UTC: the US market close
(16:00 New York) in winter. It is one hour after the close in summer (EDT);
a fixed hour keeps every day's stamp the same and after the close.

With ``loop: true`` the replay never ends: after the last day the history plays again,
and again, each bar stamped on a grid of ``loop_step`` (15 minutes by default) that starts a
week after the file's last day. Times keep increasing, so signals append in order and the hash
chain stays valid; a stamp is a function of the bar's place in the endless replay, so a restart
resumes after the engine's cursor without repeating a bar; and no bar is stamped later than
the clock (the replay waits instead), so every plan's delay still means what it says. At the
default pace a loop lap takes about five and a half minutes, and the grid reaches the present
after about thirteen hours of running (later laps then follow the clock).

The file is read directly with polars (``bokeh_sampledata.stocks`` would parse
every column eagerly with pandas). Rows are checked like the ``file`` source's
(bad date: ``bad_timestamp``; text in a number: ``bad_value``; then the
:class:`~signalmint.sources.validate.RowValidator`); the shipped file has no bad
rows.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType
from typing import ClassVar, Literal, Self

import numpy as np
import numpy.typing as npt
import polars as pl
from bokeh_sampledata import package_path
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..config import Duration
from ..records import BAR_COLUMNS, Frame, to_datetime, to_datetime64
from .file import number_column, replay, split_ticks
from .validate import RowValidator

__all__ = ["TICKERS", "BokehStocks"]

Ticker = Literal["AAPL", "GOOG", "IBM", "MSFT", "FB"]

#: The tickers in the file.
TICKERS: tuple[Ticker, ...] = ("AAPL", "GOOG", "IBM", "MSFT", "FB")

#: Where each bar field is in the file.
FILE_COLUMNS = {
    "key": "Ticker",
    "time": "Date",
    "open": "Open",
    "high": "High",
    "low": "Low",
    "close": "Close",
    "volume": "Volume",
}

_CLOSE_NS = 21 * 3600 * 1_000_000_000  # 21:00 UTC


def data_path() -> str:
    """The path of the gzipped CSV inside the installed ``bokeh_sampledata``."""
    return str(package_path("stocks.csv.gz"))


class BokehStocksOptions(BaseModel):
    """Settings of the ``bokeh_stocks`` source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbols: list[Ticker] = Field(default_factory=lambda: list(TICKERS), min_length=1, description="Tickers to replay.")
    pace: float = Field(0.1, ge=0, description="Seconds between trading days (0: at once).")
    start: date | None = Field(None, description="First trading date replayed (inclusive).")
    end: date | None = Field(None, description="Last trading date replayed (inclusive).")
    loop: bool = Field(False, description="After the last day, replay the history again, forever.")
    loop_step: Duration = Field(
        timedelta(minutes=15), gt=timedelta(0), description="Time between the bars of a looped replay."
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self


class BokehStocks:
    """Replays real daily OHLCV of five US stocks, one trading day per tick."""

    kind: ClassVar[str] = "bokeh_stocks"
    Options: ClassVar[type[BokehStocksOptions]] = BokehStocksOptions
    #: A replay of history: never stale, never late. Trading days are not a fixed step on
    #: the clock (weekends, holidays of 2000-2013), so it declares no cadence: no gap count.
    live: ClassVar[bool] = False
    cadence: ClassVar[timedelta | None] = None

    def __init__(
        self,
        symbols: list[str] | None = None,
        pace: float = 0.1,
        start: date | None = None,
        end: date | None = None,
        loop: bool = False,
        loop_step: timedelta = timedelta(minutes=15),
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.symbols = list(symbols) if symbols is not None else list(TICKERS)
        self.pace = pace
        self.start = start
        self.end = end
        self.loop = loop
        self.loop_step = loop_step
        self.sleep = sleep
        self.clock = clock
        self._rejected: Counter[str] = Counter()

    def __repr__(self) -> str:
        looped = f", loop_step={self.loop_step!r}" if self.loop else ""
        return f"BokehStocks(symbols={self.symbols!r}, pace={self.pace}{looped})"

    @property
    def rejected(self) -> Mapping[str, int]:
        """Rows rejected so far, by reason."""
        return MappingProxyType(self._rejected)

    def _load(self, validator: RowValidator, since: datetime | None) -> Frame:
        df = (
            pl.scan_csv(data_path(), infer_schema=False)
            .select(pl.col(name).alias(field) for field, name in FILE_COLUMNS.items())
            .filter(pl.col("key").is_in(self.symbols))
            .with_columns(day=pl.col("time").str.strptime(pl.Date, "%Y-%m-%d", strict=False))
            .collect()
        )
        day = df["day"]
        good_time = day.is_not_null().to_numpy()
        validator.reject("bad_timestamp", int((~good_time).sum()))
        keep = good_time.copy()
        if self.start is not None:
            keep &= (day >= self.start).fill_null(False).to_numpy()
        if self.end is not None:
            keep &= (day <= self.end).fill_null(False).to_numpy()
        ns = day.cast(pl.Datetime("ns")).cast(pl.Int64).fill_null(0).to_numpy() + _CLOSE_NS
        if since is not None:
            keep &= ns > int(to_datetime64(since).astype(np.int64))
        bad = np.zeros(len(df), dtype=bool)
        values: dict[str, npt.NDArray[np.float64]] = {}
        for name in BAR_COLUMNS:
            values[name], text = number_column(df[name], FILE_COLUMNS[name], data_path())
            bad |= text
        validator.reject("bad_value", int((bad & keep).sum()))
        keep &= ~bad
        frame = Frame(
            keys=df["key"].to_numpy().astype(str)[keep],
            times=ns[keep].astype(np.int64).view("datetime64[ns]"),
            columns={name: col[keep] for name, col in values.items()},
        )
        return validator.check(frame)

    async def stream(self, since: datetime | None = None) -> AsyncIterator[Frame]:
        """One frame per trading day (all selected tickers that traded), ``pace`` apart.

        With ``loop``, the history then plays again forever on the ``loop_step`` grid.
        """
        validator = RowValidator(self._rejected, source=self.kind)
        try:
            frame = await asyncio.to_thread(self._load, validator, None if self.loop else since)
            ticks = split_ticks(frame)
            if not self.loop or not ticks:
                async for tick in replay(ticks, self.pace, self.sleep):
                    yield tick
                return
            origin = to_datetime(ticks[-1].times[0]) + timedelta(weeks=1)
            first = [t for t in ticks if since is None or to_datetime(t.times[0]) > since]
            async for tick in replay(first, self.pace, self.sleep):
                yield tick
            k = 0 if since is None or since < origin else (since - origin) // self.loop_step + 1
            if first:
                await self._wait(self.pace)
            while True:
                stamp = origin + k * self.loop_step
                ahead = (stamp - self.clock()).total_seconds()
                if ahead > 0:  # never a bar from the future: wait for the clock
                    await self._wait(ahead)
                yield restamp(ticks[k % len(ticks)], stamp)
                k += 1
                await self._wait(self.pace)
        finally:
            validator.flush()

    async def _wait(self, seconds: float) -> None:
        await (self.sleep(seconds) if seconds > 0 else asyncio.sleep(0))


def restamp(tick: Frame, at: datetime) -> Frame:
    """``tick`` with every bar at ``at`` (the same day's bars, replayed later)."""
    times = np.full(len(tick), to_datetime64(at), dtype="datetime64[ns]")
    return Frame(keys=tick.keys, times=times, columns=tick.columns)
