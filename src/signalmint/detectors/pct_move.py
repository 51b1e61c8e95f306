"""Percent move: a metric moved by at least ``pct`` percent over a window of bars or a duration.

The rule, per key, for a value ``v`` and the key's base value ``b``::

    change = 100 * (v - b) / |b|             # NaN when b is 0 or there is no base yet
    beyond = |change| >= pct                 # only rises with `up`, only falls with `down`
    flag   = beyond and not beyond on the key's previous row

``b`` is the value ``window`` rows of the key earlier, or, when ``over`` is set, the key's
last value at or before ``time - over`` (the value in force that long ago). A move fires
when it first reaches ``pct`` and again only after it fell back below: a steady trend does
not repeat the signal on every bar. A NaN value (missing) is skipped: it neither scores nor
enters the history.

With ``window`` the history is a ring of the last ``window`` values per key, updated for
all keys of a tick at once with numpy. With ``over`` each key keeps the (time, value) pairs
of the last ``over`` in a deque, walked in Python per row (a duration has no fixed width).
"""

from __future__ import annotations

from collections import deque
from datetime import timedelta
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..config import Duration
from ..records import Frame, OutcomeRule, Schema, Scores
from ._keyed import Configured, KeyRows

__all__ = ["PctMove", "PctMoveOptions"]


class PctMoveOptions(BaseModel):
    """Settings of :class:`PctMove`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field("close", description="the metric watched")
    pct: float = Field(gt=0, description="the minimum move, in percent")
    window: int = Field(10, ge=1, description="rows of the key the move is measured over")
    over: Duration | None = Field(None, description="a duration to measure over instead of `window`")
    direction: Literal["both", "up", "down"] = "both"


class PctMove(Configured):
    """Fires when a key's ``column`` moved by ``pct`` percent (see the module doc).

    ``Scores.score`` is the change in percent (negative for a fall); ``details``:
    ``value``, ``base`` (the value the move is measured from) and ``change_pct``.

    >>> det = PctMove(column="close", pct=10, window=2)
    >>> start = np.datetime64("2024-01-02T09:00", "ns")
    >>> for tick, (a, b) in enumerate([(100, 50), (105, 50), (111, 44), (108, 40), (125, 41)]):
    ...     scores = det.update(Frame(
    ...         keys=np.array(["A", "B"]),
    ...         times=np.full(2, start + np.timedelta64(tick, "D")),
    ...         columns={"close": np.array([a, b], dtype=float)},
    ...     ))
    ...     print(tick, scores.flags, scores.score.round(1))
    0 [False False] [nan nan]
    1 [False False] [nan nan]
    2 [ True  True] [ 11. -12.]
    3 [False False] [  2.9 -20. ]
    4 [ True False] [12.6 -6.8]
    """

    kind: ClassVar[str] = "pct_move"
    Options: ClassVar[type[BaseModel]] = PctMoveOptions
    column: str
    pct: float
    window: int
    over: timedelta | None
    direction: str

    def __init__(
        self,
        column: str = "close",
        pct: float = 5.0,
        window: int = 10,
        over: timedelta | str | None = None,
        direction: str = "both",
    ) -> None:
        super().__init__(column=column, pct=pct, window=window, over=over, direction=direction)
        self._state = KeyRows(
            ring=(np.nan, np.float64, self.window), pos=(0, np.intp), count=(0, np.int64), beyond=(False, np.bool_)
        )
        self._history: dict[str, deque[tuple[int, float]]] = {}

    @classmethod
    def needs(cls, options: PctMoveOptions) -> Schema:
        return {options.column: "metric"}

    @classmethod
    def outcome(cls, options: PctMoveOptions) -> OutcomeRule:
        """Did the move go on: the metric kept moving the move's way (the sign of its score)."""
        direction = {"up": 1, "down": -1}.get(options.direction, 0)
        return OutcomeRule("continues", column=options.column, direction=direction, sign_of="score")

    def update(self, frame: Frame) -> Scores:
        value = np.asarray(frame.columns[self.column], dtype=np.float64)
        over = self.over
        base = self._bases_window(frame, value) if over is None else self._bases_over(frame, value, over)
        with np.errstate(divide="ignore", invalid="ignore"):
            change = 100.0 * (value - base) / np.abs(base)
        change[~np.isfinite(change)] = np.nan
        if self.direction == "up":
            beyond = change >= self.pct
        elif self.direction == "down":
            beyond = change <= -self.pct
        else:
            beyond = np.abs(change) >= self.pct
        flags = np.zeros(len(frame), dtype=bool)
        rows, batches = self._state.locate(frame.keys)
        was = self._state["beyond"]
        usable = ~np.isnan(value)
        for batch in batches:
            sel = batch[usable[batch]]
            at = rows[sel]
            flags[sel] = beyond[sel] & ~was[at]
            was[at] = beyond[sel]
        details = {"value": value, "base": base, "change_pct": change}
        return Scores(frame.keys, frame.times, change.copy(), flags, details)

    def _bases_window(self, frame: Frame, value: np.ndarray) -> np.ndarray:
        """The value ``window`` rows back of each row's key, then the row joins the ring."""
        state = self._state
        rows, batches = state.locate(frame.keys)
        base = np.full(len(frame), np.nan)
        usable = ~np.isnan(value)
        ring, pos, count = state["ring"], state["pos"], state["count"]
        for batch in batches:
            sel = batch[usable[batch]]
            at = rows[sel]
            slot = pos[at]
            full = count[at] >= self.window
            base[sel[full]] = ring[at[full], slot[full]]
            ring[at, slot] = value[sel]
            pos[at] = (slot + 1) % self.window
            count[at] += 1
        return base

    def _bases_over(self, frame: Frame, value: np.ndarray, over: timedelta) -> np.ndarray:
        """The key's last value at or before ``time - over``, then the row joins its history."""
        span = over // timedelta(microseconds=1) * 1000
        times = frame.times.astype("datetime64[ns]").astype(np.int64).tolist()
        base = np.full(len(frame), np.nan)
        history = self._history
        for i, (key, t, v) in enumerate(zip(frame.keys.tolist(), times, value.tolist(), strict=True)):
            if v != v:  # NaN: missing
                continue
            past = history.setdefault(key, deque())
            cutoff = t - span
            while len(past) > 1 and past[1][0] <= cutoff:
                past.popleft()
            if past and past[0][0] <= cutoff:
                base[i] = past[0][1]
            past.append((t, v))
        return base
