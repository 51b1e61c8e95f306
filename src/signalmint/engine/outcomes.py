"""Outcomes: what the price did after each signal, against random bars of the same key.

For a signal at bar ``i`` of its key and a horizon of ``h`` bars, the outcome is the return
``close[i + h] / close[i] - 1`` and the volume of bars ``i + 1 .. i + h``. It exists once bar
``i + h`` is stored (the horizon has passed) and uses no bar after it.

The baseline draws (seeded by the automation's ``seed``, the horizon and the signal's time, so
it is reproducible) up to ``baseline_samples`` start bars ``s`` among the ``lookback`` bars of
the same key before the signal, and takes the median of ``|close[s + h] / close[s] - 1|``.
Every such window ends at or before bar ``i + h - 1``: the baseline too sees nothing after the
horizon. A signal is a *hit* when its absolute return beats that median, so random bars hit
about half the time: a detector is worth paying for when its hit rate's interval lies above 50%.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from ..config import OutcomesConfig
from ..records import Outcome, OutcomeRule, OutcomeSummary, Signal, to_datetime
from ..store import Connection, list_signals
from ..store.bars import bar_window
from ..store.outcomes import newest_observation, observation_window, outcomes_by_signal, signals_awaiting_outcomes
from .outcome_rules import UNIT_SECONDS, measure_observed, measure_ranking

__all__ = ["due_outcomes", "measure", "summarize", "summarize_by_key"]

Z95 = 1.959963984540054


def measure(
    signal: Signal,
    times: npt.NDArray[np.datetime64],
    close: npt.NDArray[np.float64],
    volume: npt.NDArray[np.float64],
    horizon: int,
    spec: OutcomesConfig,
) -> Outcome | None:
    """The outcome of ``signal`` at ``horizon`` from its key's bars (time order); None if not due yet.

    None too when the signal's own bar is not among ``times`` (removed by retention) or its
    close is not positive.
    """
    at = np.datetime64(signal.time.replace(tzinfo=None), "ns")
    i = int(np.searchsorted(times, at))
    if i >= len(times) or times[i] != at or signal.id is None:
        return None
    j = i + horizon
    if j >= len(times) or not close[i] > 0:
        return None
    ret = float(close[j] / close[i] - 1.0)
    starts = np.arange(max(0, i - spec.lookback), i)
    starts = starts[close[starts] > 0]
    rng = np.random.default_rng([spec.seed, horizon, int(at.astype(np.int64))])
    if len(starts) > spec.baseline_samples:
        starts = np.sort(rng.choice(starts, size=spec.baseline_samples, replace=False))
    moves = np.abs(close[starts + horizon] / close[starts] - 1.0)
    moves = moves[np.isfinite(moves)]
    baseline = float(np.median(moves)) if len(moves) else math.nan
    return Outcome(
        signal_id=signal.id,
        automation=signal.automation,
        key=signal.key,
        time=signal.time,
        horizon=horizon,
        end_time=to_datetime(int(times[j].astype("datetime64[ns]").astype(np.int64))),
        entry=float(close[i]),
        exit=float(close[j]),
        ret=ret,
        volume=float(volume[i + 1 : j + 1].sum()),
        baseline=baseline,
        samples=len(moves),
        hit=bool(len(moves) and abs(ret) > baseline),
    )


def due_outcomes(
    conn: Connection, automation: str, spec: OutcomesConfig, limit: int = 500, rule: OutcomeRule | None = None
) -> list[Outcome]:
    """The outcomes of ``automation``'s signals whose horizons have passed and are not stored yet.

    ``rule`` (the detector's, see :mod:`.outcome_rules`; market returns when None) says what
    they measure."""
    rule = rule or OutcomeRule("return")
    if rule.measure == "none":
        return []
    if rule.measure == "holds_rank":
        return _due_rankings(conn, automation, spec)
    waiting = signals_awaiting_outcomes(conn, automation, len(spec.horizons), limit, observed=rule.observed)
    have = outcomes_by_signal(conn, [s.id for s in waiting if s.id is not None])
    latest = newest_observation(conn, automation) if rule.observed and waiting else None
    newest = None if latest is None else np.datetime64(latest.replace(tzinfo=None), "ns")
    out: list[Outcome] = []
    for signal in waiting:
        done = {o.horizon for o in have.get(signal.id or 0, [])}
        todo = [h for h in spec.horizons if h not in done]
        if rule.observed:
            span = max(todo) * UNIT_SECONDS.get(spec.unit, 0)
            until = None if spec.unit == "bars" else signal.time + timedelta(seconds=span)
            times, values = observation_window(
                conn, automation, signal.key, signal.time, before=spec.lookback, after=max(todo), until=until
            )
            out.extend(
                o for h in todo if (o := measure_observed(signal, times, values, h, spec, rule, newest)) is not None
            )
            continue
        window = bar_window(conn, automation, signal.key, signal.time, before=spec.lookback, after=max(todo))
        for horizon in todo:
            found = measure(signal, window["time"], window["close"], window["volume"], horizon, spec)
            if found is not None and math.isfinite(found.baseline):
                out.append(found)
    return out


def _due_rankings(conn: Connection, automation: str, spec: OutcomesConfig) -> list[Outcome]:
    """Rankings are measured on the rankings after them (the signal log), not on observations."""
    rankings = list_signals(conn, automation=automation, limit=100_000)[::-1]  # oldest first
    have = outcomes_by_signal(conn, [s.id for s in rankings if s.id is not None])
    out: list[Outcome] = []
    for index, signal in enumerate(rankings):
        done = {o.horizon for o in have.get(signal.id or 0, [])}
        for horizon in spec.horizons:
            if horizon not in done and (found := measure_ranking(rankings, index, horizon, spec)) is not None:
                out.append(found)
    return out


def _wilson(hits: int, n: int) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p, z2 = hits / n, Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarize(outcomes: Iterable[Outcome]) -> list[OutcomeSummary]:
    """Per horizon (shortest first): hit rate with its Wilson 95% interval, mean and median moves.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> rows = [Outcome(i, "a", "K", t, 5, t, 1.0, 1.0 + r, r, 0.0, 0.01, 50, abs(r) > 0.01)
    ...         for i, r in enumerate([0.02, -0.03, 0.005, 0.04])]
    >>> s = summarize(rows)[0]
    >>> (s.horizon, s.count, s.hits, s.hit_rate, round(s.mean, 4), round(s.median, 4))
    (5, 4, 3, 0.75, 0.0088, 0.0125)
    """
    groups: dict[int, list[Outcome]] = {}
    for outcome in outcomes:
        groups.setdefault(outcome.horizon, []).append(outcome)
    out = []
    for horizon in sorted(groups):
        rows = groups[horizon]
        rets = np.array([o.ret for o in rows], dtype=np.float64)
        n, hits = len(rows), sum(o.hit for o in rows)
        mean = float(rets.mean())
        half = Z95 * float(rets.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
        low, high = _wilson(hits, n)
        out.append(
            OutcomeSummary(
                horizon=horizon, count=n, hits=hits, hit_rate=hits / n, hit_low=low, hit_high=high,
                mean=mean, median=float(np.median(rets)), mean_abs=float(np.abs(rets).mean()),
                mean_low=mean - half, mean_high=mean + half,
                baseline=_median_finite([o.baseline for o in rows]),
            )
        )  # fmt: skip
    return out


def _median_finite(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.median(finite)) if finite else math.nan


def summarize_by_key(outcomes: Sequence[Outcome]) -> dict[str, list[OutcomeSummary]]:
    """:func:`summarize` for each key, keys in order of their number of outcomes (most first)."""
    keys: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        keys.setdefault(outcome.key, []).append(outcome)
    return {k: summarize(v) for k, v in sorted(keys.items(), key=lambda kv: (-len(kv[1]), kv[0]))}


def as_of(outcomes: Iterable[Outcome], moment: datetime) -> list[Outcome]:
    """The outcomes whose horizon had passed by ``moment`` (their last bar at or before it)."""
    return [o for o in outcomes if o.end_time <= moment]
