"""The series behind a signal: the bars around it and their rolling baseline.

The signal page draws it as SVG, the email and Telegram channels as a PNG; both read it here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from signalmint.store import Connection

from ..records import Signal
from .bars import bar_window

__all__ = ["CHART_FIELDS", "Series", "rolling_baseline", "signal_series"]

#: Payload fields a volume chart reveals: a plan that masks any of them gets no chart.
CHART_FIELDS = frozenset({"volume", "baseline", "ratio", "z", "mad", "*"})


def rolling_baseline(volume: npt.NDArray[np.float64], window: int) -> npt.NDArray[np.float64]:
    """Median of the previous ``window`` bars for each bar (NaN until there are that many).

    >>> rolling_baseline(np.array([1.0, 2.0, 3.0, 10.0]), 3)
    array([nan, nan, nan,  2.])
    """
    out = np.full(len(volume), np.nan)
    if len(volume) > window:
        windows = np.lib.stride_tricks.sliding_window_view(volume[:-1], window)
        out[window:] = np.median(windows, axis=1)
    return out


@dataclass(frozen=True, slots=True)
class Series:
    """Bars around a signal; ``highlight`` is the signal's bar (None: its bars were pruned)."""

    times: npt.NDArray[np.datetime64]
    volume: npt.NDArray[np.float64]
    baseline: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]
    highlight: int | None
    pruned_history: bool  # fewer than ``window`` bars before it are left (retention)


def signal_series(conn: Connection, signal: Signal, window: int, *, shown: int = 90, after: int = 15) -> Series:
    """Up to ``shown`` bars before the signal's bar, it, and ``after`` bars past it."""
    bars = bar_window(conn, signal.automation, signal.key, signal.time, before=shown + window, after=after)
    times, volume = bars["time"], bars["volume"]
    baseline = rolling_baseline(volume, window)
    hits = np.flatnonzero(times == np.datetime64(signal.time.replace(tzinfo=None), "ns"))
    if not len(hits):
        return Series(times[:0], volume[:0], baseline[:0], bars["close"][:0], None, True)
    first = max(0, int(hits[0]) - shown)
    return Series(
        times[first:], volume[first:], baseline[first:], bars["close"][first:], int(hits[0]) - first,
        int(hits[0]) < window,
    )  # fmt: skip
