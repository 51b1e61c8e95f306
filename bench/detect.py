"""Benchmark: signalmint's VolumeSpike against pandas and a naive numpy loop, same run.

5,000 symbols x 2,000 one-minute bars of synthetic lognormal volumes with 5,000 injected
spikes (8-20x the symbol's level, one per symbol, so each is isolated), rule W=30,
ratio=3, z=4. Measured:

1. signalmint: ``VolumeSpike.update`` fed one Frame of 5,000 symbols per tick (frames
   built before timing; every call timed for the p99), several runs, median quoted;
2. pandas: ``groupby().rolling(W, closed="left")`` median and a rolling-apply MAD, as a
   typical user writes it, on a subset of symbols, extrapolated to bars/s;
3. naive numpy: a (5000, W) ring buffer, median and MAD by ``np.sort`` every tick.

All three must flag the same bars (pandas on its subset). Run with
``uv run python bench/detect.py``; the last line is machine-readable.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt
import pandas as pd

from signalmint.detectors import VolumeSpike
from signalmint.records import Frame

SYMBOLS = 5_000
BARS = 2_000
WINDOW = 30
RATIO = 3.0
Z = 4.0
PANDAS_SYMBOLS = 100
RUNS = 3
SEED = 20240102

Flags = npt.NDArray[np.bool_]


def market() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], Flags]:
    """Volumes and closes, (bars, symbols), and where the spikes were injected."""
    rng = np.random.default_rng(SEED)
    level = rng.uniform(6.0, 12.0, SYMBOLS)  # log of each symbol's typical volume
    volume = np.round(rng.lognormal(level, 0.35, (BARS, SYMBOLS)))
    spikes = np.zeros((BARS, SYMBOLS), dtype=bool)
    at = rng.integers(WINDOW, BARS, SYMBOLS)  # one spike per symbol, after W bars
    spikes[at, np.arange(SYMBOLS)] = True
    volume[at, np.arange(SYMBOLS)] = np.round(np.exp(level) * rng.uniform(8.0, 20.0, SYMBOLS))
    steps = rng.normal(0.0, 0.001, (BARS, SYMBOLS))
    close = 100.0 * np.exp(np.cumsum(steps, axis=0))
    return volume, close, spikes


def frames(volume: npt.NDArray[np.float64], close: npt.NDArray[np.float64]) -> list[Frame]:
    keys = np.array([f"SYM{i:04d}" for i in range(SYMBOLS)])
    start = np.datetime64("2024-01-02T14:30", "ns")
    return [
        Frame(
            keys=keys.copy(),  # a source hands a new array each tick
            times=np.full(SYMBOLS, start + np.timedelta64(t, "m")),
            columns={"volume": volume[t].copy(), "close": close[t].copy()},
        )
        for t in range(BARS)
    ]


def run_signalmint(ticks: list[Frame]) -> tuple[float, npt.NDArray[np.float64], Flags]:
    """Total seconds, seconds per tick, flags (bars, symbols)."""
    detector = VolumeSpike(window=WINDOW, ratio=RATIO, z=Z)
    per_tick = np.empty(len(ticks))
    flags = np.empty((len(ticks), SYMBOLS), dtype=bool)
    clock = time.perf_counter
    for t, frame in enumerate(ticks):
        began = clock()
        scores = detector.update(frame)
        per_tick[t] = clock() - began
        flags[t] = scores.flags
    return float(per_tick.sum()), per_tick, flags


def run_naive(volume: npt.NDArray[np.float64]) -> tuple[float, Flags]:
    """The obvious numpy loop: a ring buffer, sorted afresh every tick."""
    flags = np.zeros(volume.shape, dtype=bool)
    ring = np.empty((SYMBOLS, WINDOW))
    half = WINDOW // 2
    began = time.perf_counter()
    for t in range(BARS):
        v = volume[t]
        if t >= WINDOW:
            window = np.sort(ring, axis=1)
            med = (window[:, half - 1] + window[:, half]) / 2
            deviation = np.sort(np.abs(window - med[:, None]), axis=1)
            mad = (deviation[:, half - 1] + deviation[:, half]) / 2
            flags[t] = (v / med >= RATIO) & ((v - med) / (1.4826 * mad) >= Z)
        ring[:, t % WINDOW] = v
    return time.perf_counter() - began, flags


def run_pandas(volume: npt.NDArray[np.float64]) -> tuple[float, Flags]:
    """groupby().rolling() as a pandas user writes it, on the first PANDAS_SYMBOLS symbols."""
    subset = volume[:, :PANDAS_SYMBOLS]
    df = pd.DataFrame(
        {
            "symbol": np.repeat(np.arange(PANDAS_SYMBOLS), BARS),
            "bar": np.tile(np.arange(BARS), PANDAS_SYMBOLS),
            "volume": subset.T.reshape(-1),
        }
    )
    began = time.perf_counter()
    rolling = df.groupby("symbol")["volume"].rolling(WINDOW, closed="left")
    med = rolling.median().reset_index(level=0, drop=True)
    mad = rolling.apply(lambda w: np.median(np.abs(w - np.median(w))), raw=True).reset_index(level=0, drop=True)
    flag = (df["volume"] / med >= RATIO) & ((df["volume"] - med) / (1.4826 * mad) >= Z)
    seconds = time.perf_counter() - began
    return seconds, flag.to_numpy().reshape(PANDAS_SYMBOLS, BARS).T


def main() -> None:
    bars = SYMBOLS * BARS
    print(f"VolumeSpike benchmark: {SYMBOLS} symbols x {BARS} bars, W={WINDOW}, ratio={RATIO}, z={Z}")
    volume, close, spikes = market()
    ticks = frames(volume, close)
    print(f"  data ready: {bars:,} bars, {int(spikes.sum())} injected spikes")

    rates, p99s, flags = [], [], None
    for run in range(RUNS):
        seconds, per_tick, got = run_signalmint(ticks)
        rates.append(bars / seconds)
        p99s.append(float(np.percentile(per_tick, 99)) * 1e3)
        print(
            f"  signalmint run {run + 1}: {seconds:.2f}s, {bars / seconds:,.0f} bars/s, "
            f"median tick {np.median(per_tick) * 1e3:.3f} ms, p99 {p99s[-1]:.3f} ms"
        )
        if flags is None:
            flags = got
        elif not np.array_equal(flags, got):
            raise SystemExit("signalmint runs disagree")
    assert flags is not None
    rate, p99 = float(np.median(rates)), float(np.median(p99s))

    naive_rates, naive_flags = [], None
    for run in range(RUNS):
        seconds, naive_flags = run_naive(volume)
        naive_rates.append(bars / seconds)
        print(f"  naive numpy run {run + 1}: {seconds:.2f}s, {bars / seconds:,.0f} bars/s")
    assert naive_flags is not None
    naive_rate = float(np.median(naive_rates))

    pandas_seconds, pandas_flags = run_pandas(volume)
    pandas_bars = PANDAS_SYMBOLS * BARS
    pandas_rate = pandas_bars / pandas_seconds
    print(f"  pandas ({PANDAS_SYMBOLS} symbols): {pandas_seconds:.2f}s, {pandas_rate:,.0f} bars/s (extrapolated)")

    same_naive = np.array_equal(flags, naive_flags)
    same_pandas = np.array_equal(flags[:, :PANDAS_SYMBOLS], pandas_flags)
    print(f"  flags: signalmint {int(flags.sum())}, naive {int(naive_flags.sum())}, same: {same_naive}")
    print(
        f"  flags on the pandas subset: signalmint {int(flags[:, :PANDAS_SYMBOLS].sum())}, "
        f"pandas {int(pandas_flags.sum())}, same: {same_pandas}"
    )
    if not (same_naive and same_pandas):
        raise SystemExit("the three implementations do not flag the same bars")
    recall = float(flags[spikes].mean())
    print(f"  recall of injected spikes: {recall:.4f}; other flags: {int(flags[~spikes].sum())}")
    print(
        f"RESULT bars_per_s={rate:.0f} pandas_bars_per_s={pandas_rate:.0f} "
        f"naive_bars_per_s={naive_rate:.0f} ratio={rate / pandas_rate:.1f} "
        f"naive_ratio={rate / naive_rate:.2f} recall={recall:.4f} p99_tick_ms={p99:.3f}"
    )


if __name__ == "__main__":
    main()
