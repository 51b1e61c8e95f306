"""Outcomes of a backtest's signals, measured the way the live engine measures them.

The measures are the engine's own (:func:`signalmint.engine.outcomes.measure` for market
returns, :func:`~signalmint.engine.outcome_rules.measure_observed` and
:func:`~signalmint.engine.outcome_rules.measure_ranking` for the other detectors, chosen by
:func:`~signalmint.engine.outcome_rules.rule_for`), aggregated per horizon by
:func:`~signalmint.engine.outcomes.summarize` as the track record is. They read only the
backtest's own history, cut at its end (``--to``): a signal whose horizon runs past the last
bar has no outcome yet and is counted as *pending*, never measured on later data.

The horizons are the automation's ``outcomes:`` setting, else its defaults (``configured``
says which), so a detector can be judged before its outcomes are switched on.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from ..config import AutomationConfig, OutcomesConfig
from ..engine.outcome_rules import UNIT_SECONDS, measure_observed, measure_ranking, rule_for
from ..engine.outcomes import measure, summarize
from ..records import Frame, Outcome, OutcomeRule, OutcomeSummary, Signal, to_datetime64

__all__ = ["BacktestOutcomes", "backtest_outcomes", "measure_outcomes"]


@dataclass(frozen=True, slots=True)
class BacktestOutcomes:
    """The outcomes of a backtest's signals per horizon, and those not measurable (yet)."""

    measure: str  # what a hit means (see :class:`~signalmint.records.OutcomeRule`)
    unit: str
    horizons: tuple[int, ...]
    configured: bool  # the automation's own ``outcomes:`` (False: the defaults)
    outcomes: tuple[Outcome, ...]
    summaries: tuple[OutcomeSummary, ...]
    pending: dict[int, int]  # per horizon: signals whose horizon runs past the data's end
    unmeasured: dict[int, int]  # per horizon: signals without an outcome for another reason
    reason: str = ""  # why there are none at all (``measure`` is ``none``)

    def to_json(self) -> dict[str, Any]:
        def num(value: float) -> float | None:
            return round(value, 6) if math.isfinite(value) else None

        return {
            "measure": self.measure,
            "unit": self.unit,
            "horizons": list(self.horizons),
            "configured": self.configured,
            "reason": self.reason,
            "per_horizon": [
                {
                    "horizon": s.horizon,
                    "count": s.count,
                    "hits": s.hits,
                    "hit_rate": num(s.hit_rate),
                    "hit_low": num(s.hit_low),
                    "hit_high": num(s.hit_high),
                    "mean": num(s.mean),
                    "median": num(s.median),
                    "mean_abs": num(s.mean_abs),
                    "mean_low": num(s.mean_low),
                    "mean_high": num(s.mean_high),
                    "baseline": num(s.baseline),
                }
                for s in self.summaries
            ],
            "pending": {str(h): n for h, n in self.pending.items()},
            "unmeasured": {str(h): n for h, n in self.unmeasured.items()},
        }


def backtest_outcomes(
    config: AutomationConfig, signals: Sequence[Signal], history: Frame, end: datetime
) -> BacktestOutcomes:
    """:func:`measure_outcomes` with the automation's detector rule and ``outcomes:`` setting."""
    rule = rule_for(config.detector.kind, config.detector.options)
    spec = config.outcomes or OutcomesConfig()
    return measure_outcomes(signals, history, end, rule, spec, configured=config.outcomes is not None)


def _series(history: Frame) -> dict[str, npt.NDArray[np.intp]]:
    """Each key's rows of ``history``, in time order."""
    order = np.lexsort((history.times, history.keys))
    keys = history.keys[order]
    cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    return {
        str(part[0]): idx for part, idx in zip(np.split(keys, cuts), np.split(order, cuts), strict=True) if len(idx)
    }


def measure_outcomes(
    signals: Sequence[Signal],
    history: Frame,
    end: datetime,
    rule: OutcomeRule,
    spec: OutcomesConfig,
    *,
    configured: bool = True,
) -> BacktestOutcomes:
    """The outcomes of ``signals`` (time order) at each of ``spec``'s horizons, from the bars of
    ``history`` before ``end`` only."""
    horizons = tuple(spec.horizons)
    pending = dict.fromkeys(horizons, 0)
    unmeasured = dict.fromkeys(horizons, 0)

    def result(found: list[Outcome], reason: str = "") -> BacktestOutcomes:
        return BacktestOutcomes(
            rule.measure, spec.unit, horizons, configured, tuple(found), tuple(summarize(found)),
            pending, unmeasured, reason,
        )  # fmt: skip

    if rule.measure == "none":
        return result([], rule.reason)
    numbered = [dataclasses.replace(s, id=i + 1) for i, s in enumerate(signals)]  # measure needs an id
    found: list[Outcome] = []
    if rule.measure == "holds_rank":
        for index in range(len(numbered)):
            for h in horizons:
                if (o := measure_ranking(numbered, index, h, spec)) is not None:
                    found.append(o)
                else:
                    (pending if index + h >= len(numbered) else unmeasured)[h] += 1
        return result(found)
    column = rule.column if rule.observed else "close"
    if column not in history.columns or (not rule.observed and "volume" not in history.columns):
        return result([], f"the data has no {column} column to measure outcomes on")
    history = history.take(np.flatnonzero(history.times < to_datetime64(end)))  # never past --to
    newest = history.times.max() if len(history) else None
    rows = _series(history)
    for signal in numbered:
        idx = rows.get(signal.key, np.empty(0, dtype=np.intp))
        times = history.times[idx]
        at = np.datetime64(signal.time.replace(tzinfo=None), "ns")
        i = int(np.searchsorted(times, at))
        for h in horizons:
            if rule.observed:
                o = measure_observed(signal, times, history.columns[column][idx], h, spec, rule, newest)
            else:
                o = measure(signal, times, history.columns["close"][idx], history.columns["volume"][idx], h, spec)
                if o is not None and not math.isfinite(o.baseline):
                    o = None  # no earlier bars to compare with: the engine keeps none either
            if o is not None:
                found.append(o)
            elif _past_the_end(times, i, at, h, spec.unit if rule.observed else "bars", newest):
                pending[h] += 1
            else:
                unmeasured[h] += 1
    return result(found)


def _past_the_end(
    times: npt.NDArray[np.datetime64], i: int, at: np.datetime64, horizon: int, unit: str, newest: Any
) -> bool:
    """Whether the horizon of the observation at ``at`` (index ``i``) ends after the data does."""
    if i >= len(times) or times[i] != at:
        return False  # the signal's own bar is missing: not a matter of waiting
    if unit == "bars":
        return i + horizon >= len(times)
    return newest is None or bool(newest < at + np.timedelta64(horizon * UNIT_SECONDS[unit], "s"))
