"""Outcomes beyond market returns: what each detector kind's outcome measures, and measuring it.

Each detector states its measure in one place, a classmethod ``outcome(options) ->
OutcomeRule`` beside ``needs`` (a plugin without one gets ``none``). :func:`rule_for` reads it.
The measures, for a signal and a horizon of ``h`` (observations of the signal's key, or
rankings), using only what was observed after the signal and up to the horizon:

============== ===================== ===================================================================
measure        detectors             a *hit* when ...
============== ===================== ===================================================================
return         volume_spike          the absolute ``h``-bar return beat random bars (:mod:`.outcomes`)
stays_down     price_drop            every one of the next ``h`` prices stayed at or below the alerted one
stays_in_stock restock               the item was in stock (``> 0``) at each of the next ``h`` observations
continues      threshold, pct_move,  the value ``h`` observations later is past the signal's value, the
               anomaly               signal's way (up for a rise, a crossing above, a high anomaly)
holds_rank     ranking               the top mover is still listed in the ``h``-th next ranking
none           new_item, change      never: the track record says why instead (``reason``)
============== ===================== ===================================================================

The base rate (``baseline``) asks the same question from up to ``baseline_samples`` random
starts (seeded) among the ``lookback`` observations of the key before the signal (for
``holds_rank``: the earlier rankings), so a hit rate reads against how often it holds anyway:
prices that rarely move "stay down" after almost any observation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..config import OutcomesConfig
from ..records import Outcome, OutcomeRule, Signal, to_datetime
from ..registry import default_registry

__all__ = ["HEADLINES", "UNIT_SECONDS", "measure_observed", "measure_ranking", "rule_for"]

#: What a hit means, per measure, in a few words for pages (``{h}``: the horizon and its unit).
HEADLINES: Mapping[str, str] = {
    "return": "the move beat random bars",
    "stays_down": "the price stayed at or below the alerted price",
    "stays_in_stock": "the item stayed in stock",
    "continues": "the metric kept moving the signal's way",
    "holds_rank": "the top mover was still listed",
    "none": "",
}
_EPS = 1e-9


def rule_for(kind: str, options: Mapping[str, Any] | None = None) -> OutcomeRule:
    """The outcome rule the detector ``kind`` states for ``options`` (``none`` when it states none).

    >>> rule_for("price_drop", {"pct": 10})
    OutcomeRule(measure='stays_down', column='price', direction=0, sign_of='', reason='')
    >>> rule_for("new_item").measure
    'none'
    """
    try:
        cls = default_registry().get("detector", kind)
    except Exception:  # an uninstalled plugin: its signals stay, with no outcome
        return OutcomeRule("none", reason=f"the {kind} detector is not installed here")
    declare = getattr(cls, "outcome", None)
    if declare is None:
        return OutcomeRule("none", reason=f"the {kind} detector states no outcome measure")
    known = getattr(cls.Options, "model_fields", {})
    try:  # stored options may carry the wrappers' too (``cooldown``): only the detector's own count
        validated = cls.Options.model_validate({k: v for k, v in (options or {}).items() if k in known})
    except Exception:
        return OutcomeRule("none", reason=f"the {kind} detector's options are not valid here")
    rule = declare(validated)
    if not isinstance(rule, OutcomeRule):
        return OutcomeRule("none", reason=f"the {kind} detector states an outcome this version cannot measure")
    return rule


def _direction(signal: Signal, rule: OutcomeRule) -> int:
    if rule.direction:
        return rule.direction
    value = signal.score if rule.sign_of == "score" else signal.payload.get(rule.sign_of)
    if not isinstance(value, int | float) or not math.isfinite(value) or value == 0:
        return 0
    return 1 if value > 0 else -1


def _held(measure: str, entry: float, path: npt.NDArray[np.float64], direction: int) -> npt.NDArray[np.bool_]:
    """Per observation of ``path`` (those after the start), whether the measure held there."""
    if measure == "stays_down":
        return np.asarray(path <= entry + _EPS * abs(entry))
    if measure == "stays_in_stock":
        return np.asarray(path > 0)
    return np.asarray((path - entry) * direction > 0)  # continues


def _hit(measure: str, entry: float, path: npt.NDArray[np.float64], direction: int) -> bool:
    if measure == "continues":  # judged at the horizon, not on the way
        last = path[-1] if len(path) else entry
        return bool((last - entry) * direction > 0)
    return bool(_held(measure, entry, path, direction).all())


#: Seconds per horizon unit (``bars`` counts observations instead).
UNIT_SECONDS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}


def _stop(times: npt.NDArray[np.datetime64], k: int, horizon: int, unit: str) -> int:
    """One past the last observation within ``horizon`` of observation ``k``."""
    if unit == "bars":
        return k + horizon + 1
    end = times[k] + np.timedelta64(horizon * UNIT_SECONDS[unit], "s")
    return int(np.searchsorted(times, end, side="right"))


def measure_observed(
    signal: Signal,
    times: npt.NDArray[np.datetime64],
    values: npt.NDArray[np.float64],
    horizon: int,
    spec: OutcomesConfig,
    rule: OutcomeRule,
    newest: np.datetime64 | None = None,
) -> Outcome | None:
    """The outcome of ``signal`` at ``horizon`` from its key's observations (``times``/``values``,
    time order; all those up to the horizon). None until the horizon has passed, or when the
    signal's own observation is not among them (retention) or a ``continues`` signal has no
    direction.

    With ``spec.unit`` ``bars`` the horizon counts the key's next observations. With a time
    unit it is a duration: the path is every observation of the key within it (none: the value
    held unchanged), ``exit`` the value in force at its end, and it has passed once the
    automation observed anything (``newest``, any key) at or after its end, so a source that
    reports changes only is not taken as having watched a time it did not.
    """
    at = np.datetime64(signal.time.replace(tzinfo=None), "ns")
    i = int(np.searchsorted(times, at))
    if i >= len(times) or times[i] != at or signal.id is None:
        return None
    direction = _direction(signal, rule)
    if rule.measure == "continues" and not direction:
        return None
    if rule.measure == "stays_in_stock" and not values[i] > 0:
        return None  # not in stock at the signal: nothing to stay
    stop = _stop(times, i, horizon, spec.unit)
    if spec.unit == "bars":
        if stop > len(times):
            return None
        end = times[stop - 1]
    else:
        end = at + np.timedelta64(horizon * UNIT_SECONDS[spec.unit], "s")
        if newest is None or newest < end:
            return None
    entry = float(values[i])
    path = values[i + 1 : stop]
    exit_ = float(path[-1]) if len(path) else entry
    starts = np.arange(max(0, i - spec.lookback), i)
    if rule.measure == "stays_in_stock":
        starts = starts[values[starts] > 0]
    rng = np.random.default_rng([spec.seed, horizon, int(at.astype(np.int64))])
    if len(starts) > spec.baseline_samples:
        starts = np.sort(rng.choice(starts, size=spec.baseline_samples, replace=False))
    base = [
        _hit(rule.measure, float(values[s]), values[s + 1 : _stop(times, int(s), horizon, spec.unit)], direction)
        for s in starts
    ]
    held = _held(rule.measure, entry, path, direction)
    return Outcome(
        signal_id=signal.id,
        automation=signal.automation,
        key=signal.key,
        time=signal.time,
        horizon=horizon,
        end_time=to_datetime(int(end.astype("datetime64[ns]").astype(np.int64))),
        entry=entry,
        exit=exit_,
        ret=(exit_ - entry) / abs(entry) if entry else exit_ - entry,
        volume=float(held.mean()) if len(held) else 1.0,
        baseline=float(np.mean(base)) if base else math.nan,
        samples=len(base),
        hit=_hit(rule.measure, entry, path, direction),
        measure=rule.measure,
    )


def _ranks(signal: Signal) -> list[str]:
    ranks = signal.payload.get("ranks")
    if not isinstance(ranks, list):
        return []
    return [str(r.get("key")) for r in ranks if isinstance(r, dict) and r.get("key") is not None]


def measure_ranking(signals: Sequence[Signal], index: int, horizon: int, spec: OutcomesConfig) -> Outcome | None:
    """The outcome of ranking ``signals[index]`` (the automation's rankings in time order) at
    the ``horizon``-th ranking after it; None until that ranking exists.

    ``entry`` is 1 (the top), ``exit`` the top mover's rank in the later ranking (its length
    plus one when it is not listed), ``ret`` the places lost, ``volume`` the share of the
    ``horizon`` next rankings that list it.
    """
    signal = signals[index]
    listed = _ranks(signal)
    j = index + horizon
    if j >= len(signals) or not listed or signal.id is None:
        return None

    def held(k: int) -> bool:
        top = _ranks(signals[k])
        return bool(top) and top[0] in _ranks(signals[k + horizon])

    later = _ranks(signals[j])
    top = listed[0]
    exit_rank = later.index(top) + 1 if top in later else len(later) + 1
    starts = np.arange(max(0, index - spec.lookback), index)
    rng = np.random.default_rng([spec.seed, horizon, int(signal.time.timestamp() * 1e6)])
    if len(starts) > spec.baseline_samples:
        starts = np.sort(rng.choice(starts, size=spec.baseline_samples, replace=False))
    base = [held(int(k)) for k in starts]
    return Outcome(
        signal_id=signal.id,
        automation=signal.automation,
        key=signal.key,
        time=signal.time,
        horizon=horizon,
        end_time=signals[j].time,
        entry=1.0,
        exit=float(exit_rank),
        ret=float(exit_rank - 1),
        volume=float(np.mean([top in _ranks(signals[k]) for k in range(index + 1, j + 1)])),
        baseline=float(np.mean(base)) if base else math.nan,
        samples=len(base),
        hit=top in later,
        measure="holds_rank",
    )
