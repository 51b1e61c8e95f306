"""Threshold: a metric crosses above (or below) a level, with hysteresis against flapping.

The rule, per key, for ``direction: above`` (``below`` mirrors it)::

    beyond = value >= level
    fire   = armed and beyond                 # then disarmed
    re-arm = value < level - hysteresis       # strictly past the band

A key's first value only arms it (when below the level) or leaves it disarmed (when already
above): a crossing needs a value seen on the other side first. A NaN value (missing) changes
nothing. With ``hysteresis: 0`` a value sitting exactly on the level fires once, not on
every row. ``Scores.score`` is the distance beyond the level (positive once beyond).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..records import Frame, OutcomeRule, Schema, Scores
from ._keyed import Configured, KeyRows

__all__ = ["Threshold", "ThresholdOptions"]

_UNKNOWN, _DISARMED, _ARMED = -1, 0, 1


class ThresholdOptions(BaseModel):
    """Settings of :class:`Threshold`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field("close", description="the metric watched")
    level: float = Field(description="the level crossed")
    direction: Literal["above", "below"] = "above"
    hysteresis: float = Field(0.0, ge=0, description="how far back past the level re-arms")


class Threshold(Configured):
    """Fires when a key's ``column`` crosses ``level`` (see the module doc).

    ``details``: ``value``, ``previous`` (the key's last value before this row, NaN
    for the first) and ``level``.

    >>> det = Threshold(column="price", level=100.0, hysteresis=5.0)
    >>> det
    Threshold(column='price', level=100.0, direction='above', hysteresis=5.0)
    >>> start = np.datetime64("2024-01-02T09:00", "ns")
    >>> for tick, (a, b) in enumerate([(90, 120), (101, 99), (97, 94), (94, 101), (100, 103)]):
    ...     scores = det.update(Frame(
    ...         keys=np.array(["A", "B"]),
    ...         times=np.full(2, start + np.timedelta64(tick, "h")),
    ...         columns={"price": np.array([a, b], dtype=float)},
    ...     ))
    ...     print(tick, scores.flags, scores.score)
    0 [False False] [-10.  20.]
    1 [ True False] [ 1. -1.]
    2 [False False] [-3. -6.]
    3 [False  True] [-6.  1.]
    4 [ True False] [0. 3.]
    """

    kind: ClassVar[str] = "threshold"
    Options: ClassVar[type[BaseModel]] = ThresholdOptions
    column: str
    level: float
    direction: str
    hysteresis: float

    def __init__(
        self, column: str = "close", level: float = 0.0, direction: str = "above", hysteresis: float = 0.0
    ) -> None:
        super().__init__(column=column, level=level, direction=direction, hysteresis=hysteresis)
        self._state = KeyRows(armed=(_UNKNOWN, np.int8), last=(np.nan, np.float64))

    @classmethod
    def needs(cls, options: ThresholdOptions) -> Schema:
        return {options.column: "metric"}

    @classmethod
    def outcome(cls, options: ThresholdOptions) -> OutcomeRule:
        """Did the metric keep moving past the level: on from the crossing value, the crossing's way."""
        return OutcomeRule("continues", column=options.column, direction=1 if options.direction == "above" else -1)

    def update(self, frame: Frame) -> Scores:
        value = np.asarray(frame.columns[self.column], dtype=np.float64)
        n = len(frame)
        flags = np.zeros(n, dtype=bool)
        previous = np.full(n, np.nan)
        rows, batches = self._state.locate(frame.keys)
        armed, last = self._state["armed"], self._state["last"]
        sign = 1.0 if self.direction == "above" else -1.0
        distance = sign * (value - self.level)
        beyond = distance >= 0  # NaN compares False: missing values change nothing
        short = distance < 0
        back = distance < -self.hysteresis
        for batch in batches:
            at = rows[batch]
            state = armed[at]
            fire = (state == _ARMED) & beyond[batch]
            flags[batch] = fire
            state[fire] = _DISARMED
            state[back[batch]] = _ARMED
            fresh = state == _UNKNOWN  # a first value: below the level arms, beyond it does not
            state[fresh & beyond[batch]] = _DISARMED
            state[fresh & short[batch]] = _ARMED
            armed[at] = state
            previous[batch] = last[at]
            seen = ~np.isnan(value[batch])
            last[at[seen]] = value[batch][seen]
        details = {"value": value, "previous": previous, "level": np.full(n, self.level)}
        return Scores(frame.keys, frame.times, distance, flags, details)
