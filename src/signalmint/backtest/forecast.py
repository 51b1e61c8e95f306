"""How many alerts a subscriber of each plan would get a day, from a backtest's signals.

Per plan, with the entitlement rules of :mod:`signalmint.access` (the same pure functions the
delivery path uses):

* **delay**: a signal reaches the plan at ``time + delay`` and counts on that UTC day (the day
  the daily budget is counted on); a signal pushed past the end of the range is not counted;
* **keys**: a plan with fixed ``keys`` receives those; a plan without keys or watchlist receives
  every key; a plan with a ``watchlist`` of N keys receives the N keys its subscriber picks.
  **The assumption:** a subscriber picks N keys uniformly at random among the keys seen in the
  history (all sets of N keys when there are at most ``samples`` of them, else ``samples``
  random sets from a seeded generator). ``per_day`` is the expected number over those
  watchlists (the average subscriber), ``typical_per_day`` the median over watchlists of each
  watchlist's daily average (the typical one). Real subscribers pick popular, busy keys more
  often than quiet ones: read the forecast as a baseline, not a promise;
* **budget**: at most ``alerts_per_day`` alerts a day (:func:`~signalmint.access.budget_allows`),
  the rest held back (``capped`` is the share held back).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, timedelta
from typing import Any

import numpy as np

from ..access import budget_allows, key_allowed
from ..records import Plan, Signal

__all__ = ["PlanForecast", "forecast_plan"]

_ZERO = timedelta(0)


@dataclass(frozen=True, slots=True)
class PlanForecast:
    """Alerts a subscriber of ``plan`` would have received a day over a backtest's range."""

    plan: str
    keys: int  # keys one subscriber receives
    watchlists: int  # watchlists averaged over
    per_day: float  # expected alerts per subscriber per day
    typical_per_day: float  # median over watchlists of the daily average
    busiest_day: float  # expected alerts on the busiest day
    capped: float  # share of the subscriber's alerts the daily budget held back
    delay: timedelta
    budget: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "keys": self.keys,
            "watchlists": self.watchlists,
            "per_day": round(self.per_day, 4),
            "typical_per_day": round(self.typical_per_day, 4),
            "busiest_day": round(self.busiest_day, 4),
            "capped": round(self.capped, 4),
            "delay_seconds": self.delay.total_seconds(),
            "alerts_per_day": self.budget,
        }


def _delivered(count: int, plan: Plan) -> int:
    """How many of ``count`` alerts on one day fit the plan's daily budget."""
    sent = 0
    while sent < count and budget_allows(sent, plan, None):
        sent += 1
    return sent


def _watchlists(plan: Plan, keys: Sequence[str], samples: int, seed: int) -> list[frozenset[str]]:
    size = plan.watchlist
    if size is None or size >= len(keys):
        return [frozenset(keys)]
    if math.comb(len(keys), size) <= samples:
        return [frozenset(c) for c in itertools.combinations(keys, size)]
    rng = np.random.default_rng(seed)
    return [frozenset(rng.choice(np.array(keys), size, replace=False).tolist()) for _ in range(samples)]


def forecast_plan(
    plan: Plan,
    signals: Iterable[Signal],
    keys: Sequence[str],
    days: Sequence[date],
    *,
    samples: int = 200,
    seed: int = 0,
) -> PlanForecast:
    """The :class:`PlanForecast` of ``plan`` over ``days`` (see the module docstring).

    Two keys, four signals on one day, a plan with a one-key watchlist and a budget of 2:
    a subscriber watching A gets 2 of its 3, one watching B gets its 1; on average 1.5.

    >>> from datetime import datetime
    >>> t = datetime(2024, 1, 2, 15, tzinfo=UTC)
    >>> sig = [Signal("a", k, t, "spike", 5.0, {}) for k in "AAAB"]
    >>> plan = Plan(id="free", version=0, name="Free", automations=("a",), watchlist=1, alerts_per_day=2)
    >>> f = forecast_plan(plan, sig, ["A", "B"], [t.date()])
    >>> f.per_day, f.watchlists, f.capped
    (1.5, 2, 0.25)
    """
    index = {key: i for i, key in enumerate(keys)}
    day_index = {day: i for i, day in enumerate(days)}
    counts = np.zeros((len(keys), len(days)), dtype=np.int64)
    delay = max(plan.delay, _ZERO)
    for s in signals:
        day = (s.time + delay).astimezone(UTC).date()
        if s.key in index and day in day_index:
            counts[index[s.key], day_index[day]] += 1
    lists = _watchlists(plan, keys, samples, seed)
    daily = np.zeros((len(lists), len(days)))
    raw = delivered = 0
    covered = 0
    for w, watchlist in enumerate(lists):
        allowed = [index[k] for k in keys if key_allowed(k, plan, watchlist)]
        covered += len(allowed)
        per_day = counts[allowed].sum(axis=0) if allowed else np.zeros(len(days), dtype=np.int64)
        for d, count in enumerate(per_day.tolist()):
            daily[w, d] = _delivered(count, plan)
        raw += int(per_day.sum())
        delivered += int(daily[w].sum())
    n_days = max(len(days), 1)
    averages = daily.sum(axis=1) / n_days
    return PlanForecast(
        plan=plan.id,
        keys=round(covered / len(lists)),
        watchlists=len(lists),
        per_day=float(averages.mean()),
        typical_per_day=float(statistics.median(averages.tolist())),
        busiest_day=float(daily.mean(axis=0).max(initial=0.0)),
        capped=1 - delivered / raw if raw else 0.0,
        delay=delay,
        budget=plan.alerts_per_day,
    )
