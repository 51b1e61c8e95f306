"""The batch path of :class:`~signalmint.detectors.volume_spike.VolumeSpike`: a whole history at once.

:func:`spike_scores` gives, for a ``(keys, bars)`` matrix of volumes, the flags, robust z and
details that streaming the same bars tick by tick through a fresh detector would give,
exactly (the same floating-point operations on the same values; a test compares them).

How, per key and vectorized across keys:

1. Unusable volumes (negative, NaN, infinite, ``>= 1e300``) never join a window, so each key's
   usable volumes are packed to the left; a bar's window is then the ``window`` packed values
   before it (its position among the usable bars is its ``history``).
2. A lower bound of the windows' medians (:func:`median_bound`: one per group of a few
   window starts, an order statistic of the minimums of aligned chunks, taken with a pruned
   sorting network of whole-array ``np.minimum``/``np.maximum`` on a fifth of the data, in
   blocks of keys that stay in cache) rules out most bars: ``v < bound * ratio`` (with a
   hair of slack for rounding) proves ``v / median < ratio``.
3. For the bars left (about 5%), the window is gathered (one row of a sliding-window view
   each) and its values below ``v / ratio`` are counted, rank by rank down the columns:
   fewer than half prove the median is above it, which rules out all but the bars whose
   ratio does reach ``ratio``.
4. For those, the median, the ratio, the MAD and the z are computed with the streaming
   path's own formulas on the same values (so the same floating-point results).

``baseline``, ``ratio``, ``mad`` and ``z`` are NaN where the bar was ruled out in step 2 or 3
(the streaming path leaves ``z`` and ``mad`` NaN there too; it does compute ``baseline`` and
``ratio`` for every bar, which a backtest does not need).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from ..records import Frame, Scores

__all__ = ["Hits", "batch_scores", "chunk_size", "median_bound", "spike_hits", "spike_scores"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
_PAD = 1e300
_MAD_SCALE = 1.4826


def _network(wires: int, ranks: tuple[int, ...]) -> list[tuple[int, int, bool, bool]]:
    """Batcher's odd-even merge sort of ``wires`` values, pruned to the comparators that the
    wires ``ranks`` depend on: ``(a, b, keep_min, keep_max)``; afterwards wire ``r`` of ``ranks``
    holds the value of rank ``r``. A comparator writes only the outputs needed later.

    >>> _network(3, (1,))  # the median of three: four min/max
    [(0, 1, True, True), (0, 2, False, True), (1, 2, True, False)]
    """
    n = 1
    while n < wires:
        n *= 2
    comparators: list[tuple[int, int]] = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p) and i + j + k < wires:
                        comparators.append((i + j, i + j + k))  # a missing wire is +inf: never swaps
            k //= 2
        p *= 2
    need, kept = set(ranks), []
    for a, b in reversed(comparators):
        if a in need or b in need:
            kept.append((a, b, a in need, b in need))
            need |= {a, b}
    return kept[::-1]


def _median(rows: FloatArray, window: int) -> FloatArray:
    """The streaming path's median of each row: numpy's, the mean of the two middle values
    computed as ``(a + b) * 0.5``; ``rows`` is sorted in place (a sort of short rows is several
    times faster than numpy's partition along an axis)."""
    rows.sort(axis=1)
    half = window // 2
    if window % 2:
        return rows[:, half].copy()
    return (rows[:, half - 1] + rows[:, half]) * 0.5


def chunk_size(window: int) -> int:
    """Values per chunk of :func:`median_bound`: about a fifth of the window (so a window
    touches at most six chunks; measured against a third and a tenth on the bench data)."""
    return -(-window // 5)


def median_bound(padded: FloatArray, window: int, groups: int) -> FloatArray:
    """A lower bound of the median of every window, one per group of ``s = chunk_size(window)``
    window starts: ``out[:, q] <= median(padded[:, j : j + window])`` for ``q * s <= j < (q + 1) * s``.

    ``padded`` is cut into aligned chunks of ``s`` values (its width a multiple of ``s``, at
    least ``(groups + K - 1) * s``). The windows of group ``q`` lie within the ``K`` chunks
    from ``q`` on, and each of their values is at least its chunk's minimum; with ``m_0 <=
    m_1 <= ...`` those ``K`` minimums sorted, fewer than ``i * s`` values are below ``m_i``,
    so the value of rank ``r`` (from 0) is at least ``m_{r // s}``. The order statistics are
    taken with a pruned sorting network over ``K`` shifted views (whole-array min/max, on a
    ``s``-th of the data); every step rounds monotonically, so the bound holds for the
    floating-point median too.

    >>> median_bound(np.array([[5.0, 1.0, 4.0, 2.0, 3.0, 9.0]]), 3, 3)  # s = 1: exact
    array([[4., 2., 3.]])
    """
    s = chunk_size(window)
    keys, width = padded.shape
    chunks = padded.reshape(keys, width // s, s)
    mins = chunks[:, :, 0].copy()
    for i in range(1, s):
        np.minimum(mins, chunks[:, :, i], out=mins)
    lo, hi = ((window - 1) // 2) // s, (window // 2) // s
    wires_n = -(-(window + s - 1) // s)
    wires: list[FloatArray] = [mins[:, i : i + groups] for i in range(wires_n)]
    for a, b, keep_min, keep_max in _network(wires_n, (lo, hi)):
        x, y = wires[a], wires[b]
        if keep_min:
            wires[a] = np.minimum(x, y)
        if keep_max:
            wires[b] = np.maximum(x, y)
    if lo == hi:
        return wires[lo]
    out = wires[lo] + wires[hi]
    out *= 0.5
    return out


@dataclass(frozen=True, slots=True)
class Hits:
    """What :func:`spike_hits` found, by ``(key row, bar column)``.

    ``key``/``at`` are the bars checked exactly (those the bound did not rule out), with their
    ``baseline`` and ``ratio``; ``passed`` marks those whose ratio reached ``ratio``, and ``mad``,
    ``z`` and ``flag`` are given for those only. ``history`` is each bar's count of usable
    bars before it, or None when every bar is usable (then it is the bar's column).
    """

    key: IntArray
    at: IntArray
    baseline: FloatArray
    ratio: FloatArray
    passed: npt.NDArray[np.bool_]
    mad: FloatArray
    z: FloatArray
    flag: npt.NDArray[np.bool_]
    history: FloatArray | None


#: Keys per block when bounding medians: a block's few arrays stay in the L2 cache.
_KEYS_PER_BLOCK = 32


def spike_hits(volume: FloatArray, window: int, ratio: float, z: float) -> Hits:
    """The bars of ``volume`` (``(keys, bars)``, each row one key's bars in time order; NaN
    where a key has no bar) that could flag, checked exactly. See the module docstring."""
    volume = np.asarray(volume, dtype=np.float64)
    keys, bars = volume.shape
    history: FloatArray | None = None
    columns: IntArray | None = None
    if volume.size == 0 or (volume.min() >= 0 and volume.max() < _PAD):  # every bar usable (NaN fails)
        packed, counts = volume, np.full(keys, bars)
    else:
        valid = (volume >= 0) & (volume < _PAD)  # False for NaN
        position = np.cumsum(valid, axis=1) - 1  # a usable bar's index among its key's usable bars
        history = (position + ~valid).astype(np.float64)  # usable bars before this one
        packed = np.full((keys, bars), _PAD)
        columns = np.zeros((keys, bars), dtype=np.intp)
        row, col = np.nonzero(valid)
        packed[row, position[row, col]] = volume[row, col]
        columns[row, position[row, col]] = col
        counts = valid.sum(axis=1)
    found_key, found_pos = [], []
    s = chunk_size(window)
    groups = max(0, -(-(bars - window) // s))  # groups of window starts (bar p's window starts at p - window)
    wires = -(-(window + s - 1) // s)
    width = s * (groups + max(wires - 1, -(-window // s)))
    block_keys = min(_KEYS_PER_BLOCK, keys)
    buffer = np.full((block_keys, width), _PAD)  # a block of keys, padded to whole chunks
    # v / bound >= ratio (rounded) implies v >= bound * (ratio a hair lower) (rounded): the
    # multiplication keeps every bar the division would, and is cheaper.
    scale = ratio * (1 - 1e-12)
    lo = (window - 1) // 2  # the rank of the lower middle value
    count_type = np.int8 if window < 128 else np.int32
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for start in range(0, keys if bars > window else 0, _KEYS_PER_BLOCK):
            m = min(_KEYS_PER_BLOCK, keys - start)
            block = buffer[:m]
            block[:, :bars] = packed[start : start + m]
            bound = median_bound(block, window, groups)
            bound *= scale
            tested = block[:, window : window + groups * s].reshape(m, groups, s)
            k, p = np.divmod(np.flatnonzero(tested >= bound[:, :, None]), groups * s)  # faster than 3-d nonzero
            p += window
            inside = p < (bars if columns is None else counts[k + start])  # not the padding
            k, p = k[inside], p[inside]
            # Fewer than ``lo + 1`` values below ``v / ratio`` (a hair above it, so that rounding
            # cannot reach ``ratio``) put the median above it: the ratio cannot reach ``ratio``.
            # Counted block by block, so the gathered windows stay small and in cache.
            # Compared rank by rank (one row per position in the window) and summed down the
            # columns in small integers: several times faster than counting along each window.
            windows = sliding_window_view(block, window, axis=1)[k, p - window]
            below = np.empty((window, len(k)), dtype=np.bool_)
            np.less(windows.T, block[k, p] / ratio * (1 + 1e-12), out=below)
            kept = below.view(np.int8).sum(axis=0, dtype=count_type) > lo
            found_key.append(k[kept] + start)
            found_pos.append(p[kept])
        key = np.concatenate(found_key) if found_key else np.zeros(0, dtype=np.intp)
        pos = np.concatenate(found_pos) if found_pos else np.zeros(0, dtype=np.intp)
        windows = sliding_window_view(packed, window, axis=1)[key, pos - window]  # rows of the bars' windows
        v = packed[key, pos]
        at = pos if columns is None else columns[key, pos]
        med = _median(windows, window)
        r = v / med
        r[med == 0] = np.nan  # a zero median: no relative volume
        passed = r >= ratio
        deviation = np.abs(windows[passed] - med[passed, None])
        mad = _median(deviation, window)
        diff = v[passed] - med[passed]
        score = diff / (_MAD_SCALE * mad)
        score[diff == 0] = 0.0
    return Hits(key, at, med, r, passed, mad, score, score >= z, history)


def spike_scores(
    volume: FloatArray, window: int, ratio: float, z: float
) -> tuple[npt.NDArray[np.bool_], dict[str, FloatArray]]:
    """Flags and details (``volume``, ``baseline``, ``ratio``, ``z``, ``mad``, ``history``) of
    every bar of ``volume`` as ``(keys, bars)`` arrays (see :func:`spike_hits`).

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
    hits = spike_hits(volume, window, ratio, z)
    baseline, ratios, zs, mads = np.full((4, keys, bars), np.nan)
    flags = np.zeros((keys, bars), dtype=np.bool_)
    baseline[hits.key, hits.at] = hits.baseline
    ratios[hits.key, hits.at] = hits.ratio
    key, at = hits.key[hits.passed], hits.at[hits.passed]
    mads[key, at], zs[key, at], flags[key, at] = hits.mad, hits.z, hits.flag
    history = hits.history
    if history is None:
        history = np.broadcast_to(np.arange(bars, dtype=np.float64), (keys, bars)).copy()
    return flags, {"volume": volume, "baseline": baseline, "ratio": ratios, "z": zs, "mad": mads, "history": history}


def batch_scores(history: Frame, window: int, ratio: float, z: float, volume_column: str, price_column: str) -> Scores:
    """:func:`spike_hits` of a long history (rows in time order, any keys), as :class:`Scores`
    row for row, with the ``price_change`` detail (the change from the key's previous bar).
    The few checked bars are written straight into row order; no dense detail is transposed."""
    n = len(history)
    cells = _key_cells(history.keys)
    volume = np.asarray(history.columns[volume_column], dtype=np.float64)
    hits = spike_hits(cells.spread(volume), window, ratio, z)
    baseline, ratios, zs, mads = np.full((4, n), np.nan)
    flags = np.zeros(n, dtype=np.bool_)
    rows = cells.rows(hits.key, hits.at)
    baseline[rows], ratios[rows] = hits.baseline, hits.ratio
    rows = rows[hits.passed]
    mads[rows], zs[rows], flags[rows] = hits.mad, hits.z, hits.flag
    if hits.history is not None:
        bars_before = cells.gather(hits.history)
    elif cells.rectangular:
        bars_before = np.repeat(np.arange(cells.shape[1], dtype=np.float64), cells.shape[0])
    else:
        bars_before = cells.bar.astype(np.float64)
    details = {
        "volume": volume,
        "baseline": baseline,
        "ratio": ratios,
        "z": zs,
        "mad": mads,
        "price_change": _price_change(cells, history.columns.get(price_column), n),
        "history": bars_before,
    }
    return Scores(history.keys, history.times, zs.copy(), flags, details)  # VolumeSpike's DETAILS, in order


def _price_change(cells: _Cells, price: FloatArray | None, n: int) -> FloatArray:
    if price is None:
        return np.full(n, np.nan)
    price = np.asarray(price, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if cells.rectangular:  # the key's previous bar is ``width`` rows earlier
            width = cells.shape[0]
            change = np.full(n, np.nan)
            change[width:] = (price[width:] - price[:-width]) / price[:-width]
        else:
            matrix = cells.spread(price)
            previous = np.full_like(matrix, np.nan)
            previous[:, 1:] = matrix[:, :-1]
            change = cells.gather((matrix - previous) / previous)
    change[~np.isfinite(change)] = np.nan
    return change


class _Cells:
    """Where each row of a long history sits in a ``(keys, bars)`` matrix (a key's rows in order)."""

    def __init__(self, key: IntArray, bar: IntArray, shape: tuple[int, int], rectangular: bool) -> None:
        self.key, self.bar, self.shape, self.rectangular = key, bar, shape, rectangular
        self._rows: IntArray | None = None

    def spread(self, values: FloatArray) -> FloatArray:
        if self.rectangular:  # rows are tick after tick of the same keys in the same order
            return np.ascontiguousarray(values.reshape(self.shape[1], self.shape[0]).T)
        matrix = np.full(self.shape, np.nan)
        matrix[self.key, self.bar] = values
        return matrix

    def rows(self, key: IntArray, bar: IntArray) -> IntArray:
        """The history rows of the given cells."""
        if self.rectangular:
            return bar * self.shape[0] + key
        if self._rows is None:
            self._rows = np.zeros(self.shape, dtype=np.intp)
            self._rows[self.key, self.bar] = np.arange(len(self.key))
        return self._rows[key, bar]

    def gather(self, matrix: npt.NDArray[Any]) -> npt.NDArray[Any]:
        if self.rectangular:
            return np.ascontiguousarray(matrix.T).reshape(-1)
        return matrix[self.key, self.bar]


def _tick_width(keys: npt.NDArray[Any]) -> int:
    """``w`` when ``keys`` is the same ``w`` distinct keys over and over in the same order
    (every key in every tick: the usual market history), else 0."""
    n, first = len(keys), keys[0]
    width, limit = 0, 1024
    while not width:
        found = np.flatnonzero(keys[1 : limit + 1] == first)
        if len(found):
            width = int(found[0]) + 1
        elif limit >= n:
            width = n
        limit *= 4
    if n % width or len(set(keys[:width].tolist())) != width:
        return 0
    rows = keys.reshape(-1, width)
    if keys.dtype.kind in "US" and keys.flags.c_contiguous:  # compare the bytes: much faster
        rows = keys.view(np.uint8).reshape(n // width, -1)
        return width if bool((rows == rows[0]).all()) else 0
    return width if bool((rows == keys[:width]).all()) else 0


def _key_cells(keys: npt.NDArray[Any]) -> _Cells:
    n = len(keys)
    if n == 0:
        return _Cells(np.zeros(0, np.intp), np.zeros(0, np.intp), (0, 0), False)
    width = _tick_width(keys)
    if width:
        return _Cells(np.zeros(0, np.intp), np.zeros(0, np.intp), (width, n // width), True)
    _, code = np.unique(keys, return_inverse=True)
    code = code.reshape(-1).astype(np.intp)
    order = np.argsort(code, kind="stable")
    counts = np.bincount(code)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    bar = np.empty(n, dtype=np.intp)
    bar[order] = np.arange(n) - starts[code[order]]
    return _Cells(code, bar, (len(counts), int(counts.max())), False)
