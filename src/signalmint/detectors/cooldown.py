"""Cooldown: a wrapper that stops a detector from flagging the same key again too soon.

Like river's ``AnomalyFilter``, it wraps any detector: the inner detector learns and
scores every row as usual, then a flag is cleared when the same key's last *kept* flag
is less than ``period`` earlier (by bar time). Suppressed flags do not restart the
cooldown. Only flagged rows are looked at in Python; they are rare.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel

from ..errors import DetectorError
from ..records import Frame, Scores
from ..registry import Detector

__all__ = ["Cooldown"]


class _FromInner:
    """A class attribute of the wrapper that reads the wrapped detector's attribute."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, wrapper: Cooldown | None, owner: type) -> Any:
        if wrapper is None:
            return self
        return getattr(wrapper.detector, self.name)


class Cooldown:
    """Clears a key's flags for ``period`` after each flag it keeps.

    ``kind`` and ``Options`` are the inner detector's, so signals keep its kind.
    A zero ``period`` passes every flag through.

    >>> from signalmint.detectors import VolumeSpike
    >>> det = Cooldown(VolumeSpike(window=3), period=timedelta(minutes=5))
    >>> det  # doctest: +ELLIPSIS
    Cooldown(detector=VolumeSpike(window=3, ...), period=datetime.timedelta(seconds=300))
    >>> det.kind
    'volume_spike'
    >>> start = np.datetime64("2024-01-02T14:30", "ns")
    >>> volumes = [100.0, 110.0, 90.0, 1000.0, 9000.0, 100.0, 95.0, 105.0, 99000.0]
    >>> for minute, volume in enumerate(volumes):
    ...     scores = det.update(Frame(
    ...         keys=np.array(["AAPL"]),
    ...         times=np.array([start + np.timedelta64(minute, "m")]),
    ...         columns={"volume": np.array([volume])},
    ...     ))
    ...     raw = scores.details["ratio"][0] >= 3 and scores.details["z"][0] >= 4
    ...     print(minute, bool(raw), bool(scores.flags[0]))
    0 False False
    1 False False
    2 False False
    3 True True
    4 True False
    5 False False
    6 False False
    7 False False
    8 True True
    """

    if TYPE_CHECKING:
        kind: ClassVar[str]
        Options: ClassVar[type[BaseModel]]
    else:
        kind = _FromInner()
        Options = _FromInner()

    def __init__(self, detector: Detector, period: timedelta) -> None:
        if not isinstance(period, timedelta):
            raise DetectorError(f"Cooldown: period must be a timedelta, not {period!r}")
        if period < timedelta(0):
            raise DetectorError(f"Cooldown: period must not be negative, got {period}")
        self.detector = detector
        self.period = period
        self._period = np.timedelta64(period // timedelta(microseconds=1), "us").astype("timedelta64[ns]")
        self._last: dict[Any, np.datetime64] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(detector={self.detector!r}, period={self.period!r})"

    def reset(self, keys: Iterable[Any]) -> None:
        """Restart the warm-up of ``keys`` in the wrapped detector (if it can) and forget their
        last kept flag."""
        keys = list(keys)
        inner = getattr(self.detector, "reset", None)
        if inner is not None:
            inner(keys)
        for key in keys:
            self._last.pop(key, None)

    def update(self, frame: Frame) -> Scores:
        """The inner detector's scores, with flags inside a key's cooldown cleared."""
        return self._apply(self.detector.update(frame))

    def batch(self, history: Frame) -> Scores:
        """The inner detector's batch scores of a whole history (rows in time order), with
        the cooldown applied row by row as :meth:`update` would. Raises ``AttributeError``
        when the inner detector has no ``batch``."""
        batch = self.detector.batch  # type: ignore[attr-defined]
        return self._apply(batch(history))

    def _apply(self, scores: Scores) -> Scores:
        flagged = np.flatnonzero(scores.flags)
        if not len(flagged) or not self._period:
            return scores
        flags = scores.flags.copy()
        last = self._last
        times = scores.times[flagged].astype("datetime64[ns]")
        for row, key, time in zip(flagged.tolist(), scores.keys[flagged].tolist(), times, strict=True):
            previous = last.get(key)
            if previous is not None and time - previous < self._period:
                flags[row] = False
            else:
                last[key] = time
        return dataclasses.replace(scores, flags=flags)
