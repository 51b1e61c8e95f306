"""Synthetic one-minute market data shared by the benchmarks: seeded, documented, the same for every variant.

``market(symbols, bars, seed=SEED, spikes_per_symbol=4, window=30)`` returns a :class:`Market`:

* ``volume`` and ``close``, shape (bars, symbols), float64;
* ``spikes``, a (bars, symbols) boolean mask of the injected spikes;
* ``times``, datetime64[ns] per bar.

How it is made (everything from ``numpy.random.default_rng(seed)``, so a seed gives the same data):

* **Level.** Each symbol's typical log-volume is drawn uniformly from [6, 12] (about 400 to
  160,000 shares a minute), so symbols differ by orders of magnitude, as real ones do.
* **Intraday U-shape.** A session is 390 one-minute bars (09:30-16:00 New York). Bar m of the
  session is scaled by ``u(m) = 1 + 1.5 * (2m/389 - 1)**2``: 2.5x at the open and the close, 1x at
  midday. Sessions follow each other (bar 390 is the next day's open at 14:30 UTC).
* **Noise.** Volume is lognormal around ``level * u(m)`` with sigma 0.35, rounded to shares.
* **Spikes.** ``spikes_per_symbol`` per symbol. The bars after the first ``window`` are cut into
  that many equal segments and one spike falls at random in each, at least ``window`` bars after
  the segment's start, so two spikes of a symbol are always more than ``window`` bars apart and
  each is judged against a window free of earlier spikes. A spike is ``level * u(m)`` times a
  factor drawn uniformly from [8, 20].
* **Prices.** Closes are a random walk from 100 with 0.1% normal steps per bar.

The defaults of the detection bench (5,000 symbols x 2,000 bars, W=30, 4 spikes a symbol) give
20,000 spikes over a little more than five sessions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

SEED = 20240102
SESSION = 390  # one-minute bars from 09:30 to 16:00
OPEN_UTC = np.datetime64("2024-01-02T14:30", "ns")  # 09:30 in New York (EST)


@dataclass(frozen=True)
class Market:
    volume: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]
    spikes: npt.NDArray[np.bool_]
    times: npt.NDArray[np.datetime64]


def u_shape(bars: int) -> npt.NDArray[np.float64]:
    """The intraday volume multiplier of each bar: 2.5 at a session's open and close, 1 at midday."""
    minute = np.arange(bars) % SESSION
    return 1.0 + 1.5 * (2.0 * minute / (SESSION - 1) - 1.0) ** 2


def bar_times(bars: int) -> npt.NDArray[np.datetime64]:
    """Each bar's time: sessions of 390 minutes, one a day, from 2024-01-02 14:30 UTC."""
    index = np.arange(bars)
    day, minute = index // SESSION, index % SESSION
    return OPEN_UTC + day * np.timedelta64(1, "D") + minute * np.timedelta64(1, "m")


def spike_positions(
    rng: np.random.Generator, symbols: int, bars: int, per_symbol: int, window: int
) -> npt.NDArray[np.int64]:
    """(per_symbol, symbols) bar indexes, more than ``window`` apart within a symbol and none before ``window``."""
    segment = (bars - window) // per_symbol
    if segment <= 2 * window:
        raise ValueError(f"{bars} bars cannot hold {per_symbol} spikes a symbol more than {window} bars apart")
    starts = window + segment * np.arange(per_symbol)[:, None]
    return starts + window + rng.integers(0, segment - window, (per_symbol, symbols))


def market(symbols: int, bars: int, *, seed: int = SEED, spikes_per_symbol: int = 4, window: int = 30) -> Market:
    rng = np.random.default_rng(seed)
    level = rng.uniform(6.0, 12.0, symbols)  # log of each symbol's typical volume
    shape = u_shape(bars)[:, None]
    typical = np.exp(level)[None, :] * shape
    volume = np.round(rng.lognormal(np.log(typical), 0.35))
    spikes = np.zeros((bars, symbols), dtype=bool)
    at = spike_positions(rng, symbols, bars, spikes_per_symbol, window)
    columns = np.broadcast_to(np.arange(symbols), at.shape)
    spikes[at, columns] = True
    volume[at, columns] = np.round(typical[at, columns] * rng.uniform(8.0, 20.0, at.shape))
    steps = rng.normal(0.0, 0.001, (bars, symbols))
    close = 100.0 * np.exp(np.cumsum(steps, axis=0))
    return Market(volume=volume, close=close, spikes=spikes, times=bar_times(bars))
