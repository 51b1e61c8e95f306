"""The batch path of :class:`~signalmint.detectors.volume_spike.VolumeSpike`: a whole history at once.

:func:`spike_scores` gives, for a ``(keys, bars)`` matrix of volumes, the flags, robust z and
details that streaming the same bars tick by tick through a fresh detector would give,
exactly (the same floating-point operations on the same values; a test compares them).

How, per key and vectorized across keys:

1. Unusable volumes (negative, NaN, infinite, ``>= 1e300``) never join a window, so each key's
   usable volumes are packed to the left; a bar's window is then the ``window`` packed values
   before it (its position among the usable bars is its ``history``).
2. A rolling minimum of every window (log2(window) passes of ``np.minimum`` over doubling
   spans) rules out most bars: the median is at least the minimum, and IEEE division is
   monotone, so ``v / min < ratio`` proves ``v / median < ratio``.
3. For the few bars left, the window is gathered and sorted; the median, the ratio, the MAD
   and the z are computed with the streaming path's own formulas.

``baseline``, ``ratio``, ``mad`` and ``z`` are NaN where the bar was ruled out in step 2
(the streaming path leaves ``z`` and ``mad`` NaN there too; it does compute ``baseline`` and
``ratio`` for every bar, which a backtest does not need).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ..records import Frame, Scores
from .volume_spike import DETAILS

__all__ = ["batch_scores", "rolling_min", "spike_scores"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
_PAD = 1e300
_MAD_SCALE = 1.4826


def rolling_min(x: FloatArray, window: int) -> FloatArray:
    """``out[:, j] = x[:, j : j + window].min(axis=1)`` for ``j`` in ``0 .. n - window``.

    >>> rolling_min(np.array([[5.0, 3.0, 4.0, 1.0, 2.0]]), 2)
    array([[3., 3., 1., 1.]])
    """
    n = x.shape[1]
    if n < window:
        return np.empty((x.shape[0], 0))
    span, m = 1, x
    while 2 * span <= window:  # m[:, j] = min(x[:, j : j + span])
        m = np.minimum(m[:, :-span], m[:, span:])
        span *= 2
    if span == window:
        return m[:, : n - window + 1]
    return np.minimum(m[:, : n - window + 1], m[:, window - span : n - span + 1])


def _median_sorted(rows: FloatArray, window: int) -> FloatArray:
    half = window // 2
    if window % 2:
        return rows[:, half].copy()
    return (rows[:, half - 1] + rows[:, half]) * 0.5


def spike_scores(
    volume: FloatArray, window: int, ratio: float, z: float
) -> tuple[npt.NDArray[np.bool_], dict[str, FloatArray]]:
    """Flags and details (``volume``, ``baseline``, ``ratio``, ``z``, ``mad``, ``history``) of
    every bar of ``volume`` (``(keys, bars)``, each row one key's bars in time order; NaN where a
    key has no bar). See the module docstring.

    >>> vol = np.array([[100.0, 110.0, 90.0, 400.0], [50.0, 55.0, 45.0, 50.0]])
    >>> flags, details = spike_scores(vol, window=3, ratio=3.0, z=4.0)
    >>> flags
    array([[False, False, False,  True],
           [False, False, False, False]])
    >>> details["z"][0, 3].round(2), details["history"][0]
    (np.float64(20.23), array([0., 1., 2., 3.]))
    """
    volume = np.asarray(volume, dtype=np.float64)
    keys, bars = volume.shape
    valid = (volume >= 0) & (volume < _PAD)  # False for NaN
    all_valid = bool(valid.all())
    if all_valid:
        packed = volume
        history = np.broadcast_to(np.arange(bars, dtype=np.float64), (keys, bars)).copy()
    else:
        position = np.cumsum(valid, axis=1) - 1  # a usable bar's index among its key's usable bars
        history = (position + ~valid).astype(np.float64)  # usable bars before this one
        packed = np.full((keys, bars), _PAD)
        row, col = np.nonzero(valid)
        packed[row, position[row, col]] = volume[row, col]
    baseline, ratios, zs, mads = np.full((4, keys, bars), np.nan)
    flags = np.zeros((keys, bars), dtype=np.bool_)
    details = {"volume": volume, "baseline": baseline, "ratio": ratios, "z": zs, "mad": mads, "history": history}
    if bars <= window:
        return flags, details
    # lows[:, j] is the minimum of packed[:, j : j + window], the window of packed bar j + window
    lows = rolling_min(packed, window)[:, :-1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if all_valid:
            maybe = volume[:, window:] / lows >= ratio
            key, at = np.nonzero(maybe)
            at = at + window
            packed_at = at
        else:
            bound = np.full((keys, bars), np.nan)
            bound[:, window:] = lows
            row, col = np.nonzero(valid)
            pos = position[row, col]
            low = np.full(len(row), np.nan)
            ready = pos >= window
            low[ready] = bound[row[ready], pos[ready]]
            keep = volume[row, col] / low >= ratio
            key, at, packed_at = row[keep], col[keep], pos[keep]
        if not len(key):
            return flags, details
        windows = packed[key[:, None], packed_at[:, None] - window + np.arange(window)]
        windows.sort(axis=1)
        med = _median_sorted(windows, window)
        v = volume[key, at]
        r = v / med
        r[med == 0] = np.nan  # a zero median: no relative volume
        baseline[key, at] = med
        ratios[key, at] = r
        hit = r >= ratio
        key, at, v, med, windows = key[hit], at[hit], v[hit], med[hit], windows[hit]
        deviation = np.abs(windows - med[:, None])
        deviation.sort(axis=1)
        mad = _median_sorted(deviation, window)
        diff = v - med
        score = diff / (_MAD_SCALE * mad)
        score[diff == 0] = 0.0
    mads[key, at] = mad
    zs[key, at] = score
    flags[key, at] = score >= z
    return flags, details


def batch_scores(history: Frame, window: int, ratio: float, z: float, volume_column: str, price_column: str) -> Scores:
    """:func:`spike_scores` of a long history (rows in time order, any keys), as :class:`Scores`
    row for row, with the ``price_change`` detail (the change from the key's previous bar)."""
    n = len(history)
    cells = _key_cells(history.keys)
    volume = np.asarray(history.columns[volume_column], dtype=np.float64)
    price = history.columns.get(price_column)
    flags, details = spike_scores(cells.spread(volume), window, ratio, z)
    out = {name: cells.gather(values) for name, values in details.items()}
    if price is None:
        out["price_change"] = np.full(n, np.nan)
    else:
        matrix = cells.spread(np.asarray(price, dtype=np.float64))
        previous = np.full_like(matrix, np.nan)
        previous[:, 1:] = matrix[:, :-1]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            change = cells.gather((matrix - previous) / previous)
        change[~np.isfinite(change)] = np.nan
        out["price_change"] = change
    out["volume"] = volume
    ordered = {name: out[name] for name in DETAILS}
    return Scores(history.keys, history.times, ordered["z"].copy(), cells.gather(flags), ordered)


class _Cells:
    """Where each row of a long history sits in a ``(keys, bars)`` matrix (a key's rows in order)."""

    def __init__(self, key: IntArray, bar: IntArray, shape: tuple[int, int], rectangular: bool) -> None:
        self.key, self.bar, self.shape, self.rectangular = key, bar, shape, rectangular

    def spread(self, values: FloatArray) -> FloatArray:
        if self.rectangular:  # rows are tick after tick of the same keys in the same order
            return np.ascontiguousarray(values.reshape(self.shape[1], self.shape[0]).T)
        matrix = np.full(self.shape, np.nan)
        matrix[self.key, self.bar] = values
        return matrix

    def gather(self, matrix: npt.NDArray[Any]) -> npt.NDArray[Any]:
        if self.rectangular:
            return np.ascontiguousarray(matrix.T).reshape(-1)
        return matrix[self.key, self.bar]


def _key_cells(keys: npt.NDArray[Any]) -> _Cells:
    n = len(keys)
    if n == 0:
        return _Cells(np.zeros(0, np.intp), np.zeros(0, np.intp), (0, 0), False)
    first = keys[0]
    width = int(np.argmax(keys[1:] == first)) + 1 if (keys[1:] == first).any() else n
    rectangular = n % width == 0 and len(set(keys[:width].tolist())) == width
    if rectangular and bool((keys.reshape(-1, width) == keys[:width]).all()):
        return _Cells(np.zeros(0, np.intp), np.zeros(0, np.intp), (width, n // width), True)
    _, code = np.unique(keys, return_inverse=True)
    code = code.reshape(-1).astype(np.intp)
    order = np.argsort(code, kind="stable")
    counts = np.bincount(code)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    bar = np.empty(n, dtype=np.intp)
    bar[order] = np.arange(n) - starts[code[order]]
    return _Cells(code, bar, (len(counts), int(counts.max())), False)
