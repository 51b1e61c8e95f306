"""A live synthetic market: N symbols of bars, reproducible from a seed, with known spikes.

Bar ``i`` of a stream is stamped ``start + i * interval``: bars ``0 .. warmup-1``
are backfilled in the past at once (so a detector is warm immediately), bar
``warmup`` is stamped with the current time floored to the interval and emitted
at once, and each later bar is emitted when the clock reaches its stamp. If the
consumer falls behind, the missed bars follow back to back with their own
stamps, so no bar index is ever skipped.

Values depend only on the options and the bar index (random draws are seeded by
``(seed, i)``; the price walk is accumulated from bar 0 of the stream):

- volume: a per-symbol lognormal scale x an intraday U shape repeating every
  ``session_bars`` bars (4 times higher at the session's open and close than at
  midday) x lognormal noise;
- price: a geometric random walk; each bar opens at the previous close and
  high/low enclose open and close;
- spikes: each symbol's timeline is cut into blocks of ``2 * spike_gap`` bars;
  a block holds one spike with probability ``spike_rate * 2 * spike_gap``, at a
  seeded offset within its first ``spike_gap + 1`` bars, so spikes of one
  symbol are at least ``spike_gap`` bars apart. A spike multiplies that bar's
  volume by a seeded factor within ``spike_multiplier``. Warmup bars never
  spike. :meth:`SyntheticMarket.injected` says where they are.

A restart (``stream(since)``) begins a new stream at bar 0 on the current clock:
bars at or before ``since`` are skipped, so only the warmup bars newer than the
last committed one and then fresh live bars are emitted. Prices start again
from their initial levels; volume patterns are unchanged.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from functools import lru_cache
from types import MappingProxyType
from typing import ClassVar, Self

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..records import Frame, to_datetime, to_datetime64
from .validate import RowValidator

__all__ = ["SyntheticMarket"]

FloatArray = npt.NDArray[np.float64]

_U_MIN, _U_MAX = 0.5, 2.0  # intraday volume multiplier at midday / at open and close
_VOLUME_NOISE = 0.25  # sigma of the lognormal volume noise


def _rng(*words: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(words))))


class SyntheticOptions(BaseModel):
    """Settings of the ``synthetic`` source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbols: int = Field(500, ge=1, le=100_000, description="Number of symbols (SYN000...).")
    seed: int = Field(7, ge=0, description="Seed of every random draw.")
    interval: float = Field(60.0, ge=0.001, description="Wall-clock seconds between bars (the demo uses 1.0).")
    spike_rate: float = Field(0.002, ge=0.0, le=1.0, description="Probability of an injected spike per symbol-bar.")
    spike_multiplier: tuple[float, float] = Field(
        (6.0, 15.0), description="Range of a spike's volume, as a multiple of the normal volume."
    )
    spike_gap: int = Field(35, ge=1, description="Minimum bars between two spikes of a symbol.")
    warmup: int = Field(40, ge=0, description="Bars backfilled with past times at start.")
    session_bars: int = Field(390, ge=2, description="Bars per session (the U-shape period).")
    base_price: float = Field(100.0, gt=0, description="Typical starting price.")
    base_volume: float = Field(10_000.0, gt=0, description="Typical volume per bar.")
    volatility: float = Field(0.002, ge=0, le=0.2, description="Std of log return per bar.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        lo, hi = self.spike_multiplier
        if not 1.0 <= lo <= hi:
            raise ValueError(f"spike_multiplier must be (min, max) with 1 <= min <= max, not {lo, hi}")
        if self.spike_rate * 2 * self.spike_gap > 1.0:
            raise ValueError(
                f"spike_rate {self.spike_rate} is too high for spike_gap {self.spike_gap}: "
                f"at most 1 / (2 * spike_gap) = {1 / (2 * self.spike_gap):.4g}"
            )
        return self


class SyntheticMarket:
    """A seeded live market of one-interval bars for ``symbols`` symbols.

    ``clock`` (epoch seconds) and ``sleep`` are injectable so tests need not
    wait in real time; they are not options.
    """

    kind: ClassVar[str] = "synthetic"
    Options: ClassVar[type[SyntheticOptions]] = SyntheticOptions
    #: Bar times follow the clock: staleness and late signals apply (see freshness.py).
    live: ClassVar[bool] = True

    def __init__(
        self,
        symbols: int = 500,
        seed: int = 7,
        interval: float = 60.0,
        spike_rate: float = 0.002,
        spike_multiplier: tuple[float, float] = (6.0, 15.0),
        spike_gap: int = 35,
        warmup: int = 40,
        session_bars: int = 390,
        base_price: float = 100.0,
        base_volume: float = 10_000.0,
        volatility: float = 0.002,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.symbols = symbols
        self.seed = seed
        self.interval = interval
        self.spike_rate = spike_rate
        self.spike_multiplier = (float(spike_multiplier[0]), float(spike_multiplier[1]))
        self.spike_gap = spike_gap
        self.warmup = warmup
        self.session_bars = session_bars
        self.base_price = base_price
        self.base_volume = base_volume
        self.volatility = volatility
        self.clock = clock
        self.sleep = sleep
        self._rejected: Counter[str] = Counter()
        self._interval_ns = round(interval * 1e9)
        self._start_ns: int | None = None
        width = max(3, len(str(symbols - 1)))
        names = np.array([f"SYN{i:0{width}d}" for i in range(symbols)])
        names.flags.writeable = False
        self.names = names
        rng = _rng(seed, 0)
        self._volume_scale = base_volume * rng.lognormal(0.0, 0.6, symbols)
        self._price0 = base_price * rng.lognormal(0.0, 0.5, symbols)
        self._sigma = volatility * rng.lognormal(0.0, 0.3, symbols)
        phase = np.arange(session_bars) / (session_bars - 1)
        self._u_shape = _U_MIN + (_U_MAX - _U_MIN) * (2 * phase - 1) ** 2
        self._block = lru_cache(maxsize=8)(self._spike_block)

    @property
    def cadence(self) -> timedelta:
        """A key gets one bar per ``interval``."""
        return timedelta(seconds=self.interval)

    def __repr__(self) -> str:
        return f"SyntheticMarket(symbols={self.symbols}, seed={self.seed}, interval={self.interval})"

    @property
    def rejected(self) -> Mapping[str, int]:
        """Rows rejected by validation, by reason (always empty unless there is a bug)."""
        return MappingProxyType(self._rejected)

    # -- where the spikes are --------------------------------------------------

    def _spike_block(self, block: int) -> tuple[npt.NDArray[np.intp], FloatArray]:
        """Bar index of each symbol's spike in ``block`` (-1 for none), and its factor."""
        size = 2 * self.spike_gap
        rng = _rng(self.seed, 1, block)
        has = rng.random(self.symbols) < self.spike_rate * size
        offset = rng.integers(0, self.spike_gap + 1, self.symbols)
        lo, hi = self.spike_multiplier
        factor = rng.uniform(lo, hi, self.symbols)
        at = np.where(has, block * size + offset, -1)
        at[at < self.warmup] = -1
        return at, factor

    def spike_factors(self, bar_index: int) -> FloatArray:
        """The volume multiplier of every symbol at ``bar_index`` (1.0 where no spike)."""
        at, factor = self._block(bar_index // (2 * self.spike_gap))
        return np.where(at == bar_index, factor, 1.0)

    def injected(self, bar_index: int) -> list[str]:
        """The symbols with an injected spike at bar ``bar_index``."""
        at, _ = self._block(bar_index // (2 * self.spike_gap))
        return [str(s) for s in self.names[at == bar_index]]

    def spikes_between(self, first: int, stop: int) -> list[tuple[int, str]]:
        """``(bar index, symbol)`` of every spike with ``first <= bar index < stop``, in order."""
        size = 2 * self.spike_gap
        found: list[tuple[int, str]] = []
        for block in range(max(first, 0) // size, max(stop - 1, 0) // size + 1):
            at, _ = self._block(block)
            hit = (at >= first) & (at < stop)
            found.extend(zip(at[hit].tolist(), self.names[hit].tolist(), strict=True))
        return sorted(found)

    # -- the clock -------------------------------------------------------------

    @property
    def start(self) -> datetime | None:
        """The time of bar 0 of the current stream (None before it starts)."""
        return None if self._start_ns is None else to_datetime(self._start_ns)

    def bar_time(self, bar_index: int) -> np.datetime64:
        """The stamp of bar ``bar_index`` of the current stream."""
        if self._start_ns is None:
            raise RuntimeError("the stream has not started")
        return np.datetime64(self._start_ns + bar_index * self._interval_ns, "ns")

    def bar_index(self, when: np.datetime64 | datetime) -> int:
        """The index of the bar stamped ``when`` in the current stream."""
        if self._start_ns is None:
            raise RuntimeError("the stream has not started")
        t = to_datetime64(when) if isinstance(when, datetime) else when.astype("datetime64[ns]")
        return (int(t.astype(np.int64)) - self._start_ns) // self._interval_ns

    def _now_ns(self) -> int:
        return int(self.clock() * 1e9)

    # -- the bars --------------------------------------------------------------

    def _bar(self, i: int, open_: FloatArray, t_ns: int) -> Frame:
        z = _rng(self.seed, 2, i).standard_normal((4, self.symbols))
        sigma = self._sigma
        close = open_ * np.exp(sigma * z[0] - 0.5 * sigma**2)
        high = np.maximum(open_, close) * np.exp(0.5 * sigma * np.abs(z[1]))
        low = np.minimum(open_, close) * np.exp(-0.5 * sigma * np.abs(z[2]))
        noise = np.exp(_VOLUME_NOISE * z[3] - 0.5 * _VOLUME_NOISE**2)
        volume = self._volume_scale * self._u_shape[i % self.session_bars] * noise
        volume = np.rint(volume * self.spike_factors(i))
        return Frame(
            keys=self.names,
            times=np.full(self.symbols, t_ns, dtype=np.int64).view("datetime64[ns]"),
            columns={"open": open_, "high": high, "low": low, "close": close, "volume": volume},
        )

    async def stream(self, since: datetime | None = None) -> AsyncIterator[Frame]:
        """Warmup bars at once, then one bar per ``interval`` on the clock, forever."""
        step = self._interval_ns
        start = self._now_ns() // step * step - self.warmup * step
        self._start_ns = start
        since_ns = None if since is None else int(to_datetime64(since).astype(np.int64))
        validator = RowValidator(self._rejected, source=self.kind)
        price = self._price0.copy()
        i = 0
        try:
            while True:
                due = start + i * step
                frame = self._bar(i, price, due)
                price = frame.columns["close"]
                i += 1
                if since_ns is not None and due <= since_ns:
                    if i % 256 == 0:  # a far-future ``since`` must not block the loop
                        await asyncio.sleep(0)
                    continue
                while (wait := due - self._now_ns()) > 0:
                    await self.sleep(wait / 1e9)
                await asyncio.sleep(0)
                yield validator.check(frame)
        finally:
            validator.flush()
