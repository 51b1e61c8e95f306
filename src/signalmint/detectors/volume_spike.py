"""Unusual volume: a bar many times its key's rolling median and far outside its spread.

The rule, per key, for a bar of volume ``v`` whose previous ``window`` bars are ``w``
(the bar itself is not part of ``w``)::

    med = median(w)                      # numpy's median: mean of the two middle values
    mad = median(|w - med|)
    ratio = v / med                      # relative volume
    z = (v - med) / (1.4826 * mad)       # robust z-score
    flag = ratio >= options.ratio and z >= options.z

A key cannot flag before it has ``window`` bars of history; every usable bar, flagged or
not, then joins the window (a spike becomes part of the history).

Edge cases, decided here:

- ``med == 0``: the relative volume is undefined, so ``ratio``, ``z`` and ``mad`` are NaN
  and the bar does not flag. Divisions by zero are expected and never warn.
- ``mad == 0`` (a flat window): ``z`` is ``+inf`` when ``v > med``, ``-inf`` when
  ``v < med`` and ``0`` when ``v == med``; the ratio test still applies.
- A volume that is negative, NaN, infinite or ``>= 1e300`` is not usable: the bar is
  reported with NaN scores, never flags and leaves the key's volume window untouched
  (its price still counts as the key's latest price).

The work per tick is incremental. Each key keeps a ring buffer of its raw volumes and the
same values sorted; the sorted windows of all keys sit side by side in blocks of
``_BLOCK`` keys, one row per rank. A tick replaces every key's oldest value by its new one
with five branch-free numpy passes over a block (no sort), reads the median off the
middle rows and computes the median absolute deviation only for the few bars that pass
the cheap ratio test, so ``z``, ``mad`` and the score are NaN for bars whose ratio is below
``options.ratio`` (they could not flag anyway). The keys, times and volume column of the
returned :class:`Scores` are the frame's own arrays: records are not mutated.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import DetectorError
from ..records import Frame, OutcomeRule, Schema, Scores
from ._keyed import update_in_rounds
from .volume_spike_batch import batch_scores

__all__ = ["VolumeSpike", "VolumeSpikeOptions"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
#: State rows of a tick's keys: an index array, or a slice when they are rows 0..n-1.
Index = IntArray | slice

#: Keys per block of the sorted-window store. A block and its scratch (2 x 600 kB) stay in
#: a 2 MB L2 cache; measured on the benchmark machine against 512 to 5120.
_BLOCK = 2560
#: Tops every sorted window and fills ring slots not used yet; usable volumes are below it.
_PAD = 1e300
#: Makes the MAD a consistent estimator of the standard deviation for normal data.
_MAD_SCALE = 1.4826

DETAILS: tuple[str, ...] = (
    "volume",
    "baseline",
    "ratio",
    "z",
    "mad",
    "price_change",
    "history",
)


class VolumeSpikeOptions(BaseModel):
    """Settings of :class:`VolumeSpike` (its ``Options``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: int = Field(30, ge=3, description="bars of history the baseline is taken over")
    ratio: float = Field(3.0, gt=0, description="minimum volume / rolling median")
    z: float = Field(4.0, gt=0, description="minimum robust z-score (rolling MAD)")
    volume_column: str = "volume"
    price_column: str = "close"


def _replace_sorted(block: FloatArray, old: FloatArray, new: FloatArray, rest: FloatArray) -> None:
    """In every column of ``block``, replace one value ``old`` by ``new``, keeping it sorted.

    ``block`` is ``(window + 1, m)``: each column a sorted window of values ``>= 0`` topped
    by ``_PAD``; ``rest`` is scratch of the same shape with ``rest[0] == -_PAD``. Five
    branch-free passes, no sort: ``rest[1:]`` becomes the window without ``old`` (a value
    below ``old`` stays, from ``old`` on each position takes the next value), then the new
    window is ``clip(new, rest[i], rest[i + 1])``.
    """
    window, following, without = block[:-1], block[1:], rest[1:]
    np.greater_equal(window, old, out=without)  # 1.0 from old on, 0.0 below
    np.multiply(without, following, out=without)  # the next value from old on, 0.0 below
    np.maximum(without, window, out=without)  # values are >= 0, so 0.0 never wins
    np.maximum(rest[:-1], new, out=window)
    np.minimum(window, without, out=window)


class VolumeSpike:
    """Flags bars whose volume is far above the key's rolling median (see the module doc).

    ``update(frame)`` learns and scores one tick for any number of keys at once; keys may
    appear, skip ticks or repeat within a frame (repeats are taken in row order).
    ``Scores.score`` is the robust z; ``details`` holds ``volume``, ``baseline`` (the
    median), ``ratio``, ``z``, ``mad``, ``price_change`` (fractional change of the price
    column against the key's previous bar) and ``history`` (bars seen before this one).

    >>> det = VolumeSpike(window=3)
    >>> det
    VolumeSpike(window=3, ratio=3.0, z=4.0, volume_column='volume', price_column='close')
    >>> start = np.datetime64("2024-01-02T14:30", "ns")
    >>> ticks = [(100.0, 50.0), (110.0, 55.0), (90.0, 45.0), (400.0, 50.0)]
    >>> for minute, (aapl, msft) in enumerate(ticks):
    ...     scores = det.update(Frame(
    ...         keys=np.array(["AAPL", "MSFT"]),
    ...         times=np.full(2, start + np.timedelta64(minute, "m")),
    ...         columns={"volume": np.array([aapl, msft]), "close": np.array([10.0, 20.0])},
    ...     ))
    ...     print(minute, scores.flags)
    0 [False False]
    1 [False False]
    2 [False False]
    3 [ True False]
    >>> scores.details["baseline"], scores.details["ratio"], scores.score.round(2)
    (array([100.,  50.]), array([4., 1.]), array([20.23,   nan]))
    """

    kind: ClassVar[str] = "volume_spike"
    Options: ClassVar[type[BaseModel]] = VolumeSpikeOptions

    @classmethod
    def needs(cls, options: VolumeSpikeOptions) -> Schema:
        """The volume column (the price column is optional: its change is NaN without it)."""
        return {options.volume_column: "metric"}

    @classmethod
    def outcome(cls, options: VolumeSpikeOptions) -> OutcomeRule:
        """A market signal: the return of the close ``horizon`` bars later, against random bars."""
        return OutcomeRule("return")

    def __init__(
        self,
        window: int = 30,
        ratio: float = 3.0,
        z: float = 4.0,
        volume_column: str = "volume",
        price_column: str = "close",
    ) -> None:
        try:
            options = VolumeSpikeOptions(
                window=window,
                ratio=ratio,
                z=z,
                volume_column=volume_column,
                price_column=price_column,
            )
        except ValidationError as exc:
            raise DetectorError(f"VolumeSpike: invalid options\n{exc}") from None
        self._configure(options)
        self._reset(0)

    def _configure(self, options: VolumeSpikeOptions) -> None:
        self.window = options.window
        self.ratio = options.ratio
        self.z = options.z
        self.volume_column = options.volume_column
        self.price_column = options.price_column

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._arg_names())
        return f"{type(self).__name__}({args})"

    @staticmethod
    def _arg_names() -> tuple[str, ...]:
        return tuple(VolumeSpikeOptions.model_fields)

    # -- state -----------------------------------------------------------------------

    def _reset(self, n_keys: int) -> None:
        """Empty state with room for ``n_keys`` keys.

        Key ``k`` owns row ``k`` of the per-key arrays and lane ``k % _BLOCK`` of block
        ``k // _BLOCK`` of ``_sorted`` (``(blocks, window + 1, _BLOCK)``: the sorted
        window topped by ``_PAD``). ``_ring`` is ``(window, capacity)``: the raw values
        by slot, ``_PAD`` in slots not filled yet; ``_pos`` is each key's oldest slot.
        """
        self._rows: dict[Any, int] = {}
        self._n = 0
        self._sorted = np.empty((0, self.window + 1, _BLOCK))
        self._ring = np.empty((self.window, 0))
        self._pos = np.zeros(0, dtype=np.intp)
        self._count = np.zeros(0, dtype=np.int64)
        self._price = np.zeros(0)
        self._scratch: FloatArray | None = None
        self._last_keys: npt.NDArray[Any] | None = None
        self._last_bytes = b""
        self._last_rows: Index = np.zeros(0, dtype=np.intp)
        self._grow(n_keys)

    def _grow(self, n_keys: int) -> None:
        """Make room for ``n_keys`` keys, growing geometrically."""
        have = self._sorted.shape[0]
        need = -(-n_keys // _BLOCK)
        if need <= have:
            return
        blocks = max(need, 2 * have)
        grown = np.full((blocks, self.window + 1, _BLOCK), _PAD)
        grown[:have] = self._sorted
        self._sorted = grown
        old, capacity = have * _BLOCK, blocks * _BLOCK
        ring = np.full((self.window, capacity), _PAD)
        ring[:, :old] = self._ring
        self._ring = ring
        self._pos = np.concatenate([self._pos, np.zeros(capacity - old, dtype=np.intp)])
        self._count = np.concatenate([self._count, np.zeros(capacity - old, dtype=np.int64)])
        self._price = np.concatenate([self._price, np.full(capacity - old, np.nan)])

    def __getstate__(self) -> dict[str, Any]:
        n = self._n
        rows = np.arange(n)
        return {
            "options": {name: getattr(self, name) for name in self._arg_names()},
            "keys": sorted(self._rows, key=self._rows.__getitem__),
            "ring": self._ring[:, :n].T.copy(),  # (keys, window), slot order
            "pos": self._pos[:n].copy(),
            "count": self._count[:n].copy(),
            "price": self._price[:n].copy(),
            "sorted": self._sorted[rows // _BLOCK, :-1, rows % _BLOCK],  # (keys, window)
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._configure(VolumeSpikeOptions(**state["options"]))
        keys: list[Any] = state["keys"]
        n = len(keys)
        self._reset(n)
        self._rows = {key: row for row, key in enumerate(keys)}
        self._n = n
        rows = np.arange(n)
        self._sorted[rows // _BLOCK, :-1, rows % _BLOCK] = state["sorted"]
        self._ring[:, :n] = state["ring"].T
        self._pos[:n] = state["pos"]
        self._count[:n] = state["count"]
        self._price[:n] = state["price"]

    def reset(self, keys: Iterable[Any]) -> None:
        """Forget the history of ``keys`` (unknown keys are ignored): each starts its warm-up
        again, as if new. The engine calls this after a long gap in a key's bars, so a
        baseline is never taken across an outage.

        >>> det = VolumeSpike(window=3)
        >>> for v in (100.0, 110.0, 90.0):
        ...     _ = det.update(Frame(np.array(["A"]), np.array([np.datetime64(0, "ns")]), {"volume": np.array([v])}))
        >>> det.reset(["A", "unknown"])
        >>> det.update(Frame(np.array(["A"]), np.array([np.datetime64(0, "ns")]), {"volume": np.array([900.0])})
        ...     ).details["history"]
        array([0.])
        """
        found = [self._rows[k] for k in keys if k in self._rows]
        if not found:
            return
        rows = np.array(found, dtype=np.intp)
        self._sorted[rows // _BLOCK, :, rows % _BLOCK] = _PAD
        self._ring[:, rows] = _PAD
        self._pos[rows] = 0
        self._count[rows] = 0
        self._price[rows] = np.nan

    # -- keys ------------------------------------------------------------------------

    def _rows_of(self, keys: npt.NDArray[Any]) -> Index | None:
        """The state rows of the keys (new keys get rows), ``None`` if a key repeats.

        Rows ``0..n-1`` in order come back as a slice, which indexes without copying.
        The answer is cached for the next tick, which usually has the same keys.
        """
        last = self._last_keys
        if last is not None and last.shape == keys.shape and last.dtype == keys.dtype:
            # fixed-width strings: equal bytes, equal keys
            same = keys.tobytes() == self._last_bytes if keys.dtype.kind in "US" else bool(np.array_equal(last, keys))
            if same:
                return self._last_rows
        rows_map = self._rows
        listed = keys.tolist()
        found = [rows_map.get(key, -1) for key in listed]
        if -1 in found:
            for i, key in enumerate(listed):
                if found[i] == -1:
                    row = rows_map.get(key)
                    if row is None:
                        row = rows_map[key] = self._n
                        self._n += 1
                    found[i] = row
            self._grow(self._n)
        rows = np.array(found, dtype=np.intp)
        if len(rows) and np.bincount(rows).max() > 1:
            return None
        index: Index = rows
        if np.array_equal(rows, np.arange(len(rows))):
            index = slice(0, len(rows))
        self._last_keys = keys.copy()
        self._last_bytes = keys.tobytes() if keys.dtype.kind in "US" else b""
        self._last_rows = index
        return index

    # -- batch -----------------------------------------------------------------------

    def batch(self, history: Frame) -> Scores:
        """Score a whole history at once, as a fresh detector streaming it tick by tick would
        (rows in time order; see :mod:`~signalmint.detectors.volume_spike_batch`). The
        detector's own state is neither read nor changed."""
        if self.volume_column not in history.columns:
            raise DetectorError(
                f"VolumeSpike: the frame has no {self.volume_column!r} column "
                f"(it has {sorted(history.columns)}); set volume_column to one of them"
            )
        return batch_scores(history, self.window, self.ratio, self.z, self.volume_column, self.price_column)

    # -- update ----------------------------------------------------------------------

    def update(self, frame: Frame) -> Scores:
        """Score every row of ``frame`` against its key's history, then learn from it."""
        if self.volume_column not in frame.columns:
            raise DetectorError(
                f"VolumeSpike: the frame has no {self.volume_column!r} column "
                f"(it has {sorted(frame.columns)}); set volume_column to one of them"
            )
        rows = self._rows_of(frame.keys)
        if rows is None:
            return update_in_rounds(frame, self.update, DETAILS)  # a key repeated: in rounds
        # v / 0, 0 / 0 and NaN arithmetic are handled after the fact; overflow is +inf.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return self._update_unique(frame, rows)

    def _update_unique(self, frame: Frame, rows: Index) -> Scores:
        n, window = len(frame), self.window
        volume = np.asarray(frame.columns[self.volume_column], dtype=np.float64)
        all_valid = bool(volume.min(initial=0.0) >= 0 and volume.max(initial=0.0) < _PAD)
        valid = None if all_valid else (volume >= 0) & (volume < _PAD)  # False for NaN
        history = self._count[rows].astype(np.float64)  # a copy: learning moves the count
        all_ready = all_valid and bool(history.min(initial=window) >= window)

        half = window // 2  # the median is row half (odd) or the mean of rows half - 1, half
        if window % 2:
            baseline = self._sorted[:, half, :].flatten()[rows]
        else:
            middle = self._sorted[:, half - 1, :] + self._sorted[:, half, :]
            baseline = middle.reshape(-1)[rows]
            baseline *= 0.5
        if not all_ready:
            baseline[history < window] = np.nan
            if valid is not None:
                baseline[~valid] = np.nan
        ratio = volume / baseline
        if not baseline.all():  # a zero median: no relative volume
            ratio[baseline == 0] = np.nan
        z, mad = np.full((2, n), np.nan)
        candidates = np.flatnonzero(ratio >= self.ratio)
        if len(candidates):
            at = candidates + rows.start if isinstance(rows, slice) else rows[candidates]
            med = baseline[candidates]
            mad[candidates] = self._mad(at, med)
            z[candidates] = _robust_z(volume[candidates], med, mad[candidates])
        flags = z >= self.z

        price_change = self._learn_price(frame, rows)
        if valid is None:
            self._learn_volume(rows, volume)
        else:
            self._learn_volume(np.arange(self._n)[rows][valid], volume[valid])

        details = {
            "volume": volume,
            "baseline": baseline,
            "ratio": ratio,
            "z": z,
            "mad": mad,
            "price_change": price_change,
            "history": history,
        }
        return Scores(frame.keys, frame.times, z.copy(), flags, details)

    def _mad(self, rows: IntArray, med: FloatArray) -> FloatArray:
        """The median absolute deviation from ``med`` of the given keys' windows."""
        deviation = np.abs(self._sorted[rows // _BLOCK, :-1, rows % _BLOCK] - med[:, None])
        deviation.sort(axis=1)
        half = self.window // 2
        if self.window % 2:
            return deviation[:, half]
        return (deviation[:, half - 1] + deviation[:, half]) * 0.5

    def _learn_price(self, frame: Frame, rows: Index) -> FloatArray:
        column = frame.columns.get(self.price_column)
        if column is None:
            self._price[rows] = np.nan
            return np.full(len(frame), np.nan)
        price = np.asarray(column, dtype=np.float64)
        previous = self._price[rows]
        change = (price - previous) / previous
        if not np.isfinite(change).all():
            change[~np.isfinite(change)] = np.nan  # no previous price, or it was 0
        self._price[rows] = price
        return change

    def _learn_volume(self, rows: Index, volume: FloatArray) -> None:
        """Put each key's new volume in place of its oldest (or of an empty slot)."""
        if not len(volume):
            return
        slot = self._pos[rows]
        if isinstance(rows, slice) and (slot == slot[0]).all():
            # The usual tick: keys that arrived together share their oldest slot.
            oldest = self._ring[slot[0], rows]
            self._replace_in_blocks(rows, oldest, volume)
            oldest[:] = volume
            self._pos[rows] = (slot[0] + 1) % self.window
        else:
            capacity = self._ring.shape[1]
            cell = slot * capacity
            cell += np.arange(capacity)[rows]
            ring = self._ring.reshape(-1)
            old = ring[cell]
            if 5 * len(volume) >= 3 * self._n:  # measured: below 60% of keys, gathering wins
                self._replace_in_blocks(rows, old, volume)
            else:
                self._replace_gathered(np.arange(capacity)[rows], old, volume)
            ring[cell] = volume
            slot += 1
            slot[slot == self.window] = 0
            self._pos[rows] = slot
        self._count[rows] += 1

    def _buffer(self, width: int) -> FloatArray:
        """Scratch for :func:`_replace_sorted`, at least ``width`` keys wide."""
        if self._scratch is None or self._scratch.shape[1] < width:
            self._scratch = np.empty((self.window + 1, max(width, _BLOCK)))
            self._scratch[0] = -_PAD
        return self._scratch

    def _replace_in_blocks(self, rows: Index, old: FloatArray, volume: FloatArray) -> None:
        """Most keys tick: update whole blocks in place. A key not in the tick replaces
        its oldest value by itself, which leaves its window as it was."""
        n = self._n
        if isinstance(rows, slice) and rows.stop == n:
            olds, news = old, volume  # every key, in row order
        else:
            olds = self._ring.reshape(-1)[self._pos[:n] * self._ring.shape[1] + np.arange(n)]
            news = olds.copy()
            news[rows] = volume
        rest = self._buffer(_BLOCK)
        for b in range(-(-n // _BLOCK)):
            lo = b * _BLOCK
            hi = min(lo + _BLOCK, n)
            m = hi - lo
            _replace_sorted(self._sorted[b, :, :m], olds[lo:hi], news[lo:hi], rest[:, :m])

    def _replace_gathered(self, rows: IntArray, old: FloatArray, volume: FloatArray) -> None:
        """Few keys tick: copy their windows out, update them, write them back."""
        block, lane = rows // _BLOCK, rows % _BLOCK
        windows = np.ascontiguousarray(self._sorted[block, :, lane].T)
        m = len(rows)
        _replace_sorted(windows, old, volume, self._buffer(m)[:, :m])
        self._sorted[block, :, lane] = windows.T


def _robust_z(volume: FloatArray, med: FloatArray, mad: FloatArray) -> FloatArray:
    """``(volume - med) / (1.4826 * mad)``; ±inf (or 0 when equal) where ``mad == 0``."""
    diff = volume - med
    z = diff / (_MAD_SCALE * mad)  # x / 0 is ±inf, 0 / 0 is NaN (warnings are off)
    z[diff == 0] = 0.0
    return z
