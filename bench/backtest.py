"""Backtest speed: volume_spike's batch path against its streaming path and pandas, same data, same run.

The data come from ``bench/data.py`` (seeded; see its docstring), by default 5,000 symbols x
2,000 one-minute bars, written once to a Parquet file in the long layout the ``file`` source
reads (symbol, time, open, high, low, close, volume) and read back with polars (the read is
timed and printed, not counted in the rates). Rule: W=30, ratio=3, z=4. Every variant runs
``--runs`` times, alternated, on the same arrays:

1. batch: ``spike_hits`` over the ``(symbols, bars)`` volume matrix: the vectorized function
   that gives every bar's flag at once (``bars_per_s``, the figure of issue 14);
2. batch, whole Scores: ``VolumeSpike.batch(frame)`` on the long frame, with every detail
   array of every row built, as a backtest uses it (``frame_bars_per_s``);
3. streaming: ``VolumeSpike.update`` fed one frame per tick (frames built before timing),
   what the engine and a detector without a batch path do (``streaming_bars_per_s``);
4. pandas: ``groupby().rolling(W, closed="left")`` median and a rolling-apply MAD on the
   first ``--pandas-symbols`` symbols (``pandas_bars_per_s``; bench/detect.py's variant).

``equal`` is true when the batch flags (both batch variants) equal the streaming flags bar for
bar over all symbols, and pandas's equal them on its subset. Ratios are medians of per-run ratios.

    uv run python bench/backtest.py [--symbols 5000] [--bars 2000] [--runs 3]

Last line: RESULT bars_per_s=... streaming_bars_per_s=... pandas_bars_per_s=... equal=true|false
frame_bars_per_s=... read_s=... ratio_streaming=... ratio_pandas=... load1=...
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl
from _common import add_common, describe_ratio, print_result, ratio_fields, ratios, span
from data import market
from detect import RATIO, WINDOW, Z, run_pandas

from signalmint.detectors import VolumeSpike
from signalmint.detectors.volume_spike_batch import spike_hits
from signalmint.records import Frame

Flags = npt.NDArray[np.bool_]


def write_parquet(path: Path, symbols: int, bars: int) -> None:
    data = market(symbols, bars)
    names = np.array([f"SYM{i:04d}" for i in range(symbols)])
    close = data.close.reshape(-1)
    pl.DataFrame(
        {
            "symbol": np.tile(names, bars),
            "time": np.repeat(data.times, symbols),
            "open": close,
            "high": close,
            "low": close,
            "close": close,
            "volume": data.volume.reshape(-1),
        }
    ).write_parquet(path)


def read_parquet(path: Path) -> Frame:
    df = pl.read_parquet(path).sort("time", maintain_order=True)
    return Frame(
        keys=df["symbol"].to_numpy().astype(str),
        times=df["time"].to_numpy().astype("datetime64[ns]"),
        columns={name: df[name].to_numpy().astype(np.float64) for name in ("volume", "close")},
    )


def run_batch(matrix: npt.NDArray[np.float64]) -> tuple[float, Flags]:
    began = time.perf_counter()
    hits = spike_hits(matrix, WINDOW, RATIO, Z)
    seconds = time.perf_counter() - began
    flags = np.zeros(matrix.shape, dtype=bool)
    passed = hits.passed
    flags[hits.key[passed], hits.at[passed]] = hits.flag
    return seconds, flags


def run_frame(frame: Frame, shape: tuple[int, int]) -> tuple[float, Flags]:
    began = time.perf_counter()
    scores = VolumeSpike(window=WINDOW, ratio=RATIO, z=Z).batch(frame)
    seconds = time.perf_counter() - began
    return seconds, scores.flags.reshape(shape[1], shape[0]).T


def run_streaming(ticks: list[Frame]) -> tuple[float, Flags]:
    detector = VolumeSpike(window=WINDOW, ratio=RATIO, z=Z)
    flags = np.empty((len(ticks[0]), len(ticks)), dtype=bool)
    began = time.perf_counter()
    for t, tick in enumerate(ticks):
        flags[:, t] = detector.update(tick).flags
    return time.perf_counter() - began, flags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=5000, help="symbols (default 5000)")
    parser.add_argument("--bars", type=int, default=2000, help="bars a symbol (default 2000)")
    parser.add_argument("--pandas-symbols", type=int, default=100, help="symbols pandas runs on (default 100)")
    add_common(parser, ports=False)
    args = parser.parse_args()
    symbols, bars = args.symbols, args.bars
    pandas_symbols = min(args.pandas_symbols, symbols)
    total = symbols * bars
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bars.parquet"
        write_parquet(path, symbols, bars)
        began = time.perf_counter()
        frame = read_parquet(path)
        read_s = time.perf_counter() - began
        size = path.stat().st_size
    print(f"{symbols:,} symbols x {bars:,} bars from Parquet ({size / 1e6:.0f} MB) read in {read_s:.2f} s", flush=True)
    matrix = np.ascontiguousarray(frame.columns["volume"].reshape(bars, symbols).T)  # (symbols, bars)
    ticks = [frame.take(np.arange(t * symbols, (t + 1) * symbols)) for t in range(bars)]

    batch_rates, frame_rates, stream_rates, pandas_rates = [], [], [], []
    equal = True
    for run in range(args.runs):
        batch_s, batch_flags = run_batch(matrix)
        frame_s, frame_flags = run_frame(frame, (symbols, bars))
        stream_s, stream_flags = run_streaming(ticks)
        pandas_s, pandas_flags = run_pandas(matrix.T, pandas_symbols)
        batch_rates.append(total / batch_s)
        frame_rates.append(total / frame_s)
        stream_rates.append(total / stream_s)
        pandas_rates.append(pandas_symbols * bars / pandas_s)
        same = np.array_equal(batch_flags, stream_flags) and np.array_equal(frame_flags, stream_flags)
        same_pandas = np.array_equal(stream_flags[:pandas_symbols].T, pandas_flags)
        equal = equal and same and same_pandas
        print(
            f"run {run + 1}: batch {batch_rates[-1]:,.0f} bars/s, batch Scores {frame_rates[-1]:,.0f}, "
            f"streaming {stream_rates[-1]:,.0f}, pandas ({pandas_symbols} symbols) {pandas_rates[-1]:,.0f}; "
            f"{int(stream_flags.sum())} flags, batch = streaming: {same}, pandas agrees: {same_pandas}",
            flush=True,
        )
    vs_stream, vs_pandas = ratios(batch_rates, stream_rates), ratios(batch_rates, pandas_rates)
    print(f"batch: {describe_ratio(vs_stream, 1)} streaming, {describe_ratio(vs_pandas, 0)} pandas", flush=True)
    print_result(
        {
            "bars_per_s": f"{span(batch_rates)[0]:.0f}",
            "streaming_bars_per_s": f"{span(stream_rates)[0]:.0f}",
            "pandas_bars_per_s": f"{span(pandas_rates)[0]:.0f}",
            "equal": "true" if equal else "false",
            "frame_bars_per_s": f"{span(frame_rates)[0]:.0f}",
            "read_s": f"{read_s:.2f}",
            **ratio_fields("ratio_streaming", vs_stream, 1),
            **ratio_fields("ratio_pandas", vs_pandas, 0),
        }
    )


if __name__ == "__main__":
    main()
