"""Records passed between pipeline stages.

Frozen, slotted dataclasses with typed fields. Times are UTC. Only ``store/``
knows about database rows; every other stage speaks in these records.

A :class:`Frame` is columnar: one row per (key, time), with value columns as
numpy arrays, so a detector can update thousands of series in one call.
Times inside a frame are ``datetime64[ns]`` values meaning UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "BAR_COLUMNS",
    "Automation",
    "Frame",
    "Scores",
    "Signal",
    "to_datetime",
    "to_datetime64",
]

#: The value columns of a market bar, in order.
BAR_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")

FloatArray = npt.NDArray[np.float64]


def to_datetime(value: np.datetime64 | int) -> datetime:
    """A ``datetime64[ns]`` (or integer nanoseconds) as an aware UTC datetime.

    >>> to_datetime(np.datetime64("2024-01-02T03:04:05", "ns"))
    datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    """
    ns = value if isinstance(value, int) else int(np.asarray(value, dtype="datetime64[ns]").astype(np.int64))
    seconds, rest = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=rest // 1000)


def to_datetime64(value: datetime) -> np.datetime64:
    """An aware datetime as ``datetime64[ns]`` in UTC; naive datetimes are refused.

    >>> to_datetime64(datetime(2024, 1, 2, tzinfo=UTC))
    np.datetime64('2024-01-02T00:00:00.000000000')
    """
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: give it a timezone (UTC)")
    utc = value.astimezone(UTC).replace(tzinfo=None)
    return np.datetime64(utc, "ns")


@dataclass(frozen=True, slots=True)
class Frame:
    """A columnar batch of rows: ``keys[i]`` at ``times[i]`` with ``columns[c][i]``.

    ``keys`` is an array of str (series ids such as symbols), ``times`` is
    ``datetime64[ns]`` (UTC), each column a float64 array of the same length.
    """

    keys: npt.NDArray[np.str_]
    times: npt.NDArray[np.datetime64]
    columns: Mapping[str, FloatArray]

    def __post_init__(self) -> None:
        n = len(self.keys)
        if len(self.times) != n or any(len(c) != n for c in self.columns.values()):
            raise ValueError("Frame: keys, times and every column must have the same length")

    def __len__(self) -> int:
        return len(self.keys)

    def column(self, name: str) -> FloatArray:
        return self.columns[name]

    def take(self, index: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> Frame:
        """The rows selected by an integer index or a boolean mask."""
        return Frame(
            keys=self.keys[index],
            times=self.times[index],
            columns={name: col[index] for name, col in self.columns.items()},
        )

    @classmethod
    def empty(cls, columns: tuple[str, ...] = BAR_COLUMNS) -> Frame:
        return cls(
            keys=np.array([], dtype=str),
            times=np.array([], dtype="datetime64[ns]"),
            columns={c: np.array([], dtype=np.float64) for c in columns},
        )


@dataclass(frozen=True, slots=True)
class Scores:
    """What a detector says about each row of the frame it was given.

    Row ``i`` scores row ``i`` of the input frame. ``flags`` marks the rows the
    detector's own rule considers signals; ``score`` is its main number
    (higher is more unusual, NaN before enough history); ``details`` holds the
    numbers behind each score, which become the signal's payload.
    """

    keys: npt.NDArray[np.str_]
    times: npt.NDArray[np.datetime64]
    score: FloatArray
    flags: npt.NDArray[np.bool_]
    details: Mapping[str, FloatArray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True, slots=True)
class Signal:
    """One detected event, as stored in an automation's append-only signal log.

    ``seq`` numbers the signals of one automation from 1; ``prev_hash`` is the
    ``hash`` of signal ``seq - 1`` (empty for the first), which makes the track
    record tamper-evident. ``id`` is global across automations and increases
    with insertion order; it is ``None`` until stored.
    """

    automation: str
    key: str
    time: datetime
    kind: str
    score: float
    payload: Mapping[str, Any]
    seq: int = 0
    prev_hash: str = ""
    hash: str = ""
    id: int | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Automation:
    """An automation as the web and API show it: one pipeline, one product."""

    name: str
    title: str
    description: str
    source_kind: str
    detector_kind: str
    detector_options: Mapping[str, Any] = field(default_factory=dict)
