"""Running a detector over a history: the batch path when the detector has one, else tick by tick."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from ..config import AutomationConfig
from ..detectors.cooldown import Cooldown
from ..errors import SourceError
from ..pipeline import signals_from_scores
from ..records import Frame, Signal, to_datetime64
from ..registry import Detector
from ..sources.file import FileReplay, split_ticks
from .forecast import PlanForecast
from .outcomes import BacktestOutcomes

__all__ = ["Backtest", "days_between", "has_batch", "load_history", "run_backtest"]

#: ``progress(done, total)``: bars scored so far out of the history's bars.
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Backtest:
    """What a backtest found between ``start`` (inclusive) and ``end`` (exclusive)."""

    automation: str
    start: datetime
    end: datetime
    bars: int  # bars scored, warm-up before ``start`` included
    keys: tuple[str, ...]  # every key seen in the history
    path: str  # "batch" or "streaming"
    seconds: float
    signals: tuple[Signal, ...]
    forecasts: tuple[PlanForecast, ...] = ()
    per_day: dict[str, int] = field(default_factory=dict)
    per_key: dict[str, int] = field(default_factory=dict)
    outcomes: BacktestOutcomes | None = None

    @property
    def days(self) -> list[date]:
        return days_between(self.start, self.end)

    def to_json(self) -> dict[str, Any]:
        return {
            "automation": self.automation,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "bars": self.bars,
            "keys": len(self.keys),
            "path": self.path,
            "seconds": round(self.seconds, 3),
            "signals": len(self.signals),
            "per_day": self.per_day,
            "per_key": self.per_key,
            "forecasts": [f.to_json() for f in self.forecasts],
            "outcomes": self.outcomes.to_json() if self.outcomes is not None else None,
        }


def days_between(start: datetime, end: datetime) -> list[date]:
    """The UTC calendar days that ``[start, end)`` touches."""
    first, last = start.astimezone(UTC).date(), (end.astimezone(UTC) - timedelta(microseconds=1)).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def has_batch(detector: Detector) -> bool:
    """Whether the detector (inside its cooldown, if any) offers ``batch(history) -> Scores``."""
    inner = detector.detector if isinstance(detector, Cooldown) else detector
    return callable(getattr(inner, "batch", None))


def load_history(
    config: AutomationConfig, until: datetime, data: Path | None, read_bars: Callable[[datetime], Frame]
) -> Frame:
    """The bars before ``until``, in time order: from ``data`` (CSV or Parquet), else from the
    automation's own file source, else from the stored bars (``read_bars``, read-only)."""
    options = dict(config.source.options) if config.source.kind == "file" else {}
    options.pop("pace", None)
    if data is not None:
        options["path"] = str(data)
        options.pop("format", None)
    frame = FileReplay(**options).read_all() if "path" in options else read_bars(until)
    frame = frame.take(np.flatnonzero(frame.times < to_datetime64(until)))
    if not len(frame):
        raise SourceError(f"no bars to backtest {config.name} on before {until.isoformat()}")
    return frame


def run_backtest(
    detector: Detector,
    history: Frame,
    automation: str,
    start: datetime,
    end: datetime,
    *,
    progress: Progress | None = None,
) -> Backtest:
    """Score ``history`` (bars in time order, all before ``end``; the bars before ``start`` warm
    the detector up) and keep the signals from ``start`` on. ``detector`` must be fresh."""
    began = time.perf_counter()
    n = len(history)
    signals: list[Signal] = []
    path = "batch" if has_batch(detector) else "streaming"
    if path == "batch":
        batch = detector.batch  # type: ignore[attr-defined]
        signals = signals_from_scores(automation, detector.kind, batch(history))
        if progress:
            progress(n, n)
    else:
        done = 0
        for tick in split_ticks(history):
            signals += signals_from_scores(automation, detector.kind, detector.update(tick))
            done += len(tick)
            if progress:
                progress(done, n)
    kept = tuple(s for s in signals if start <= s.time < end)
    daily = Counter(s.time.astimezone(UTC).date() for s in kept)
    per_key = Counter(s.key for s in kept)
    per_day = {day.isoformat(): daily.get(day, 0) for day in days_between(start, end)}
    return Backtest(
        automation=automation,
        start=start,
        end=end,
        bars=n,
        keys=tuple(sorted(set(history.keys.tolist()))),
        path=path,
        seconds=time.perf_counter() - began,
        signals=kept,
        per_day=per_day,
        per_key=dict(sorted(per_key.items(), key=lambda kv: (-kv[1], kv[0]))),
    )
