"""Detection: signalmint's VolumeSpike against pandas and a naive numpy loop, same data, same run.

The data come from ``bench/data.py`` (seeded; an intraday U-shape; several spikes per
symbol, each isolated; see its docstring): by default 5,000 symbols x 2,000 one-minute bars
with 4 spikes a symbol. Rule: W=30, ratio=3, z=4. Every variant runs ``--runs`` times,
alternated (signalmint, naive numpy, pandas, then again), on the same arrays:

1. signalmint: ``VolumeSpike.update`` fed one Frame of all symbols per tick (frames built
   before timing; every call timed for the p99 per tick);
2. naive numpy: a (symbols, W) ring buffer, median and MAD by ``np.sort`` every tick;
3. pandas: ``groupby().rolling(W, closed="left")`` median and a rolling-apply MAD, as a
   typical user writes it, on the first ``--pandas-symbols`` symbols, as bars/s.

All three must flag the same bars (pandas on its subset), and the recall of the injected
spikes is printed. Figures are medians of the runs; ratios are medians of the per-run ratios,
with their range.

    uv run python bench/detect.py [--symbols 5000] [--bars 2000] [--runs 3]

Last line: RESULT bars_per_s=... pandas_bars_per_s=... naive_bars_per_s=... ratio=... (vs pandas)
ratio_min=... ratio_max=... naive_ratio=... recall=... p99_tick_ms=... load1=...
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import numpy.typing as npt
import pandas as pd
from _common import add_common, describe_ratio, print_result, ratio_fields, ratios, span
from data import SEED, market

from signalmint.detectors import VolumeSpike
from signalmint.records import Frame

WINDOW = 30
RATIO = 3.0
Z = 4.0

Flags = npt.NDArray[np.bool_]


def frames(
    volume: npt.NDArray[np.float64], close: npt.NDArray[np.float64], times: npt.NDArray[np.datetime64]
) -> list[Frame]:
    bars, symbols = volume.shape
    keys = np.array([f"SYM{i:04d}" for i in range(symbols)])
    return [
        Frame(
            keys=keys.copy(),  # a source hands a new array each tick
            times=np.full(symbols, times[t]),
            columns={"volume": volume[t].copy(), "close": close[t].copy()},
        )
        for t in range(bars)
    ]


def run_signalmint(ticks: list[Frame]) -> tuple[float, npt.NDArray[np.float64], Flags]:
    """Total seconds, seconds per tick, flags (bars, symbols)."""
    detector = VolumeSpike(window=WINDOW, ratio=RATIO, z=Z)
    per_tick = np.empty(len(ticks))
    flags = np.empty((len(ticks), len(ticks[0].keys)), dtype=bool)
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
    bars, symbols = volume.shape
    ring = np.empty((symbols, WINDOW))
    half = WINDOW // 2
    began = time.perf_counter()
    for t in range(bars):
        v = volume[t]
        if t >= WINDOW:
            window = np.sort(ring, axis=1)
            med = (window[:, half - 1] + window[:, half]) / 2
            deviation = np.sort(np.abs(window - med[:, None]), axis=1)
            mad = (deviation[:, half - 1] + deviation[:, half]) / 2
            flags[t] = (v / med >= RATIO) & ((v - med) / (1.4826 * mad) >= Z)
        ring[:, t % WINDOW] = v
    return time.perf_counter() - began, flags


def run_pandas(volume: npt.NDArray[np.float64], count: int) -> tuple[float, Flags]:
    """groupby().rolling() as a pandas user writes it, on the first ``count`` symbols."""
    subset = volume[:, :count]
    bars = volume.shape[0]
    df = pd.DataFrame(
        {
            "symbol": np.repeat(np.arange(count), bars),
            "bar": np.tile(np.arange(bars), count),
            "volume": subset.T.reshape(-1),
        }
    )
    began = time.perf_counter()
    rolling = df.groupby("symbol")["volume"].rolling(WINDOW, closed="left")
    med = rolling.median().reset_index(level=0, drop=True)
    mad = rolling.apply(lambda w: np.median(np.abs(w - np.median(w))), raw=True).reset_index(level=0, drop=True)
    flag = (df["volume"] / med >= RATIO) & ((df["volume"] - med) / (1.4826 * mad) >= Z)
    seconds = time.perf_counter() - began
    return seconds, flag.to_numpy().reshape(count, bars).T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=5_000, help="symbols per tick (default 5000)")
    parser.add_argument("--bars", type=int, default=2_000, help="one-minute bars per symbol (default 2000)")
    parser.add_argument("--spikes", type=int, default=4, help="injected spikes per symbol (default 4)")
    parser.add_argument("--seed", type=int, default=SEED, help=f"seed of bench/data.py's generator (default {SEED})")
    parser.add_argument(
        "--pandas-symbols", type=int, default=100, help="symbols the pandas variant runs on (default 100)"
    )
    add_common(parser, runs=3, ports=False)
    args = parser.parse_args()
    symbols, bars_per_symbol = args.symbols, args.bars
    pandas_symbols = min(args.pandas_symbols, symbols)
    bars = symbols * bars_per_symbol
    print(
        f"VolumeSpike benchmark: {symbols} symbols x {bars_per_symbol} bars, W={WINDOW}, ratio={RATIO}, z={Z}; "
        f"{args.runs} alternated runs of each variant"
    )
    data = market(symbols, bars_per_symbol, seed=args.seed, spikes_per_symbol=args.spikes, window=WINDOW)
    volume, spikes = data.volume, data.spikes
    ticks = frames(volume, data.close, data.times)
    print(
        f"  data (bench/data.py, seed {args.seed}): {bars:,} bars, {int(spikes.sum()):,} injected spikes, U-shaped days"
    )

    rates: list[float] = []
    p99s: list[float] = []
    naive_rates: list[float] = []
    pandas_rates: list[float] = []
    flags = naive_flags = pandas_flags = None
    for run in range(args.runs):
        seconds, per_tick, got = run_signalmint(ticks)
        rates.append(bars / seconds)
        p99s.append(float(np.percentile(per_tick, 99)) * 1e3)
        if flags is None:
            flags = got
        elif not np.array_equal(flags, got):
            raise SystemExit("signalmint runs disagree")
        naive_seconds, naive_flags = run_naive(volume)
        naive_rates.append(bars / naive_seconds)
        pandas_seconds, pandas_flags = run_pandas(volume, pandas_symbols)
        pandas_rates.append(pandas_symbols * bars_per_symbol / pandas_seconds)
        print(
            f"  run {run + 1}: signalmint {rates[-1]:,.0f} bars/s (median tick {np.median(per_tick) * 1e3:.3f} ms, "
            f"p99 {p99s[-1]:.3f} ms); naive numpy {naive_rates[-1]:,.0f} bars/s; "
            f"pandas ({pandas_symbols} symbols) {pandas_rates[-1]:,.0f} bars/s",
            flush=True,
        )
    assert flags is not None and naive_flags is not None and pandas_flags is not None

    same_naive = np.array_equal(flags, naive_flags)
    same_pandas = np.array_equal(flags[:, :pandas_symbols], pandas_flags)
    print(f"  flags: signalmint {int(flags.sum())}, naive {int(naive_flags.sum())}, same: {same_naive}")
    print(
        f"  flags on the pandas subset: signalmint {int(flags[:, :pandas_symbols].sum())}, "
        f"pandas {int(pandas_flags.sum())}, same: {same_pandas}"
    )
    if not (same_naive and same_pandas):
        raise SystemExit("the three implementations do not flag the same bars")
    recall = float(flags[spikes].mean())
    print(f"  recall of injected spikes: {recall:.4f}; other flags: {int(flags[~spikes].sum())}")
    pandas_stats, naive_stats = ratios(rates, pandas_rates), ratios(rates, naive_rates)
    rate, lo, hi = span(rates)
    print(
        f"median: signalmint {rate:,.0f} bars/s (runs {lo:,.0f}-{hi:,.0f}), p99 {span(p99s)[0]:.3f} ms a tick; "
        f"{describe_ratio(pandas_stats, 0)} pandas ({span(pandas_rates)[0]:,.0f} bars/s), "
        f"{describe_ratio(naive_stats)} naive numpy ({span(naive_rates)[0]:,.0f} bars/s)"
    )
    print_result(
        {
            "bars_per_s": f"{rate:.0f}",
            "pandas_bars_per_s": f"{span(pandas_rates)[0]:.0f}",
            "naive_bars_per_s": f"{span(naive_rates)[0]:.0f}",
            **ratio_fields("ratio", pandas_stats, 1),
            **ratio_fields("naive_ratio", naive_stats, 2),
            "recall": f"{recall:.4f}",
            "p99_tick_ms": f"{span(p99s)[0]:.3f}",
            "symbols": symbols,
            "bars": bars_per_symbol,
            "spikes": int(spikes.sum()),
            "runs": args.runs,
        }
    )


if __name__ == "__main__":
    main()
