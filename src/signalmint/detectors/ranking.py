"""Ranking: the top N movers of an interval across all keys, one signal per interval.

Time is cut into intervals of ``interval`` (aligned to the Unix epoch: hours on the hour).
At each boundary (the first row whose time falls in a later interval), every key's move over
the interval that just closed is measured::

    move = 100 * (latest - base) / |base|      # by: pct  (base 0: no move)
    move = latest - base                       # by: change

where ``base`` is the key's value at the previous boundary (its latest value then) and
``latest`` its latest value before this boundary. Keys are ranked by ``|move|`` (``both``),
by the largest rises (``up``) or by the largest falls (``down``); ties go by key. The top
``top`` make one signal: its payload lists the ranks (``rank``, ``key``, ``move``, ``from``,
``to``) and the interval's ``start`` and ``end``.

The first interval the detector sees is partial (it starts mid-way), so it only sets the
bases: rankings always cover whole intervals, and a key first seen mid-interval joins the
next one. The signal is put on a row of the frame that crossed the boundary: the top
mover's row of the new interval when it is in that frame, else the frame's first row of
the new interval (the payload's ranks name the movers either way).
Values are kept in per-key numpy arrays and ranked with one sort per interval.
"""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..config import Duration
from ..records import Frame, OutcomeRule, Schema, Scores, to_datetime
from ._keyed import Configured, KeyRows, rounds

__all__ = ["Ranking", "RankingOptions"]


class RankingOptions(BaseModel):
    """Settings of :class:`Ranking`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field("close", description="the metric ranked")
    top: int = Field(5, ge=1, le=100, description="how many movers each signal lists")
    interval: Duration = Field(timedelta(hours=1), description="the period a ranking covers")
    by: Literal["pct", "change"] = "pct"
    direction: Literal["both", "up", "down"] = "both"

    @field_validator("interval")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("the interval must be longer than zero")
        return value


class Ranking(Configured):
    """One signal per interval listing the top movers (see the module doc).

    ``Scores.score`` is the top move on the flagged row (NaN elsewhere); ``details``:
    ``movers`` (how many keys had a move to rank); ``extras``: ``ranks``, ``start``, ``end``.

    >>> det = Ranking(column="close", top=2, interval=timedelta(hours=1))
    >>> start = np.datetime64("2024-01-02T09:30", "ns")
    >>> prices = {"A": [10, 10, 11, 12], "B": [20, 20, 18, 19], "C": [5, 5, 5.1, 5.2]}
    >>> for tick, minutes in enumerate([0, 40, 60, 100]):  # 09:30, 10:10, 10:30, 11:10
    ...     scores = det.update(Frame(
    ...         keys=np.array(list(prices)),
    ...         times=np.full(3, start + np.timedelta64(minutes, "m")),
    ...         columns={"close": np.array([p[tick] for p in prices.values()], dtype=float)},
    ...     ))
    ...     print(tick, scores.flags)
    0 [False False False]
    1 [False False False]
    2 [False False False]
    3 [ True False False]
    >>> [(r["rank"], r["key"], round(r["move"], 2)) for r in scores.extras["ranks"][0]]
    [(1, 'A', 10.0), (2, 'B', -10.0)]
    >>> scores.extras["start"][0], scores.extras["end"][0]
    ('2024-01-02T10:00:00+00:00', '2024-01-02T11:00:00+00:00')
    """

    kind: ClassVar[str] = "ranking"
    Options: ClassVar[type[BaseModel]] = RankingOptions
    column: str
    top: int
    interval: timedelta
    by: str
    direction: str

    def __init__(
        self,
        column: str = "close",
        top: int = 5,
        interval: timedelta | str = timedelta(hours=1),
        by: str = "pct",
        direction: str = "both",
    ) -> None:
        super().__init__(column=column, top=top, interval=interval, by=by, direction=direction)
        self._state = KeyRows(latest=(np.nan, np.float64), base=(np.nan, np.float64))
        self._bucket: int | None = None

    @classmethod
    def needs(cls, options: RankingOptions) -> Schema:
        return {options.column: "metric"}

    @classmethod
    def outcome(cls, options: RankingOptions) -> OutcomeRule:
        """Did the top mover hold its place: still among the top of the ``horizon``-th next ranking."""
        return OutcomeRule("holds_rank")

    def update(self, frame: Frame) -> Scores:
        n = len(frame)
        value = np.asarray(frame.columns[self.column], dtype=np.float64)
        score = np.full(n, np.nan)
        flags = np.zeros(n, dtype=bool)
        movers = np.zeros(n)
        extras: dict[str, npt.NDArray[Any]] = {
            name: np.full(n, None, dtype=object) for name in ("ranks", "start", "end")
        }
        rows = self._state.rows(frame.keys)
        span = self.interval // timedelta(microseconds=1) * 1000
        buckets = frame.times.astype("datetime64[ns]").astype(np.int64) // span
        for segment, bucket in self._segments(buckets):
            if self._bucket is not None and bucket > self._bucket:
                ranked, count = self._rank()
                if ranked:
                    opening = segment[buckets[segment] >= bucket]  # not rows arriving late
                    at = self._flag_row(frame, opening, ranked[0]["key"])
                    flags[at] = True
                    score[at] = ranked[0]["move"]
                    movers[at] = count
                    extras["ranks"][at] = ranked
                    extras["start"][at] = to_datetime((bucket - 1) * span).isoformat()
                    extras["end"][at] = to_datetime(bucket * span).isoformat()
            if self._bucket is None or bucket > self._bucket:
                self._state["base"][:] = self._state["latest"]
            self._bucket = bucket
            self._learn(frame, segment, rows, value)
        return Scores(frame.keys, frame.times, score, flags, {"movers": movers}, extras)

    def _segments(self, buckets: npt.NDArray[np.int64]) -> list[tuple[npt.NDArray[np.intp], int]]:
        """Row positions split where a row opens a later interval than every row before it.

        The first segment's bucket is the current one when no boundary is crossed (rows of
        an earlier interval, arriving late, count towards the current interval)."""
        current = -(2**62) if self._bucket is None else self._bucket
        running = np.maximum.accumulate(np.maximum(buckets, current)) if len(buckets) else buckets
        opens = np.flatnonzero(np.r_[running[:1] > current, running[1:] > running[:-1]])
        cuts = [0, *opens.tolist(), len(buckets)]
        return [(np.arange(lo, hi), int(running[lo])) for lo, hi in pairwise(cuts) if hi > lo]

    def _learn(
        self, frame: Frame, segment: npt.NDArray[np.intp], rows: npt.NDArray[np.intp], value: np.ndarray
    ) -> None:
        latest = self._state["latest"]
        for batch in rounds(rows[segment]):
            sel = segment[batch]
            sel = sel[~np.isnan(value[sel])]
            latest[rows[sel]] = value[sel]

    def _rank(self) -> tuple[list[dict[str, Any]], int]:
        """The top movers of the interval just closed, and how many keys had a move."""
        n = len(self._state)
        base, latest = self._state["base"][:n], self._state["latest"][:n]
        with np.errstate(divide="ignore", invalid="ignore"):
            move = 100.0 * (latest - base) / np.abs(base) if self.by == "pct" else latest - base
        ok = np.isfinite(move)
        if self.direction == "up":
            ok &= move > 0
            order_by = -move
        elif self.direction == "down":
            ok &= move < 0
            order_by = move
        else:
            order_by = -np.abs(move)
        candidates = np.flatnonzero(ok)
        if not len(candidates):
            return [], 0
        names = np.array(list(self._state.index), dtype=str)
        order = candidates[np.lexsort((names[candidates], order_by[candidates]))][: self.top]
        ranked = [
            {
                "rank": r + 1,
                "key": str(names[i]),
                "move": float(move[i]),
                "from": float(base[i]),
                "to": float(latest[i]),
            }
            for r, i in enumerate(order.tolist())
        ]
        return ranked, len(candidates)

    @staticmethod
    def _flag_row(frame: Frame, segment: npt.NDArray[np.intp], key: str) -> int:
        hits = segment[frame.keys[segment] == key]
        return int(hits[0]) if len(hits) else int(segment[0])
