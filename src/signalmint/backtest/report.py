"""A backtest as rich tables (the ``--json`` form is :meth:`Backtest.to_json`)."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from ..engine.outcome_rules import HEADLINES
from .outcomes import BacktestOutcomes
from .run import Backtest

__all__ = ["print_backtest", "print_outcomes"]

#: Keys listed in the per-key table (the busiest); the JSON lists them all.
TOP_KEYS = 20


def _duration(seconds: float) -> str:
    if not seconds:
        return "none"
    minutes = seconds / 60
    return f"{minutes:g} min" if minutes < 120 else f"{minutes / 60:g} h"


def print_backtest(console: Console, bt: Backtest) -> None:
    days = len(bt.per_day) or 1
    rate = bt.bars / bt.seconds if bt.seconds else float("inf")
    console.print(
        f"[bold]{bt.automation}[/]: {len(bt.signals)} signals from {bt.start:%Y-%m-%d %H:%M} to "
        f"{bt.end:%Y-%m-%d %H:%M} UTC over {len(bt.keys)} keys ({bt.bars:,} bars scored, warm-up included; "
        f"{bt.path} path, {bt.seconds:.2f} s, {rate:,.0f} bars/s); nothing was written",
        highlight=False,
    )
    per_day = Table(title="signals per day (UTC)", title_justify="left")
    per_day.add_column("day")
    per_day.add_column("signals", justify="right")
    for day, n in bt.per_day.items():
        per_day.add_row(day, str(n))
    per_day.add_row("[bold]mean[/]", f"{len(bt.signals) / days:.2f}")
    console.print(per_day)
    per_key = Table(title="signals per key", title_justify="left")
    per_key.add_column("key")
    per_key.add_column("signals", justify="right")
    per_key.add_column("per day", justify="right")
    for key, n in list(bt.per_key.items())[:TOP_KEYS]:
        per_key.add_row(key, str(n), f"{n / days:.2f}")
    quiet = len(bt.keys) - len(bt.per_key)
    more = len(bt.per_key) - TOP_KEYS
    if more > 0:
        per_key.add_row(f"({more} more keys)", "", "")
    if quiet > 0:
        per_key.add_row(f"({quiet} keys without a signal)", "0", "0")
    console.print(per_key)
    _print_forecasts(console, bt)
    if bt.outcomes is not None:
        print_outcomes(console, bt.outcomes)


def _print_forecasts(console: Console, bt: Backtest) -> None:
    if not bt.forecasts:
        console.print("no plan covers this automation: nothing to forecast")
        return
    plans = Table(title="forecast: alerts per subscriber per day", title_justify="left")
    for column in ("plan", "delay", "keys", "budget", "mean", "typical", "busiest", "held back"):
        plans.add_column(column, justify="left" if column == "plan" else "right")
    for f in bt.forecasts:
        plans.add_row(
            f.plan,
            _duration(f.delay.total_seconds()),
            f"{f.keys}*" if f.watchlists > 1 else str(f.keys),
            "-" if f.budget is None else str(f.budget),
            f"{f.per_day:.2f}",
            f"{f.typical_per_day:.2f}",
            f"{f.busiest_day:.2f}",
            f"{f.capped:.0%}",
        )
    console.print(plans)
    console.print(
        "* a watchlist: its subscriber is assumed to pick keys at random among the keys seen; mean: over "
        "all such watchlists (or 200 drawn); typical: the median watchlist (README, Backtests)",
        style="dim",
        highlight=False,
    )


def _pct(value: float, signed: bool = True) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value:+.2%}" if signed else f"{value:.2%}"


def print_outcomes(console: Console, found: BacktestOutcomes) -> None:
    """Per horizon, like the track record: hit rate and its 95% interval, moves, the baseline."""
    if found.measure == "none":
        console.print(f"outcomes: none measured ({found.reason})", highlight=False)
        return
    unit = "bars" if found.unit == "bars" or found.measure == "return" else found.unit
    setting = "" if found.configured else ", the default horizons: set `outcomes:` to choose"
    headline = HEADLINES.get(found.measure, "")
    table = Table(title=f"outcomes ({found.measure}: a hit when {headline}{setting})", title_justify="left")
    for column in ("horizon", "n", "hit rate", "95% CI", "mean", "median", "baseline", "pending"):
        table.add_column(column, justify="right")
    ranks = found.measure == "holds_rank"
    summaries = {s.horizon: s for s in found.summaries}
    for h in found.horizons:
        s = summaries.get(h)
        pending = str(found.pending.get(h, 0))
        if s is None:
            table.add_row(f"{h} {unit}", "0", "-", "-", "-", "-", "-", pending)
            continue
        table.add_row(
            f"{h} {unit}",
            str(s.count),
            f"{s.hit_rate:.0%}",
            f"{s.hit_low:.0%}-{s.hit_high:.0%}",
            f"{s.mean:+.2f}" if ranks else _pct(s.mean),
            f"{s.median:+.2f}" if ranks else _pct(s.median),
            _pct(s.baseline, signed=False),
            pending,
        )
    console.print(table)
    console.print(
        "pending: the horizon runs past the end of the data (--to), so no outcome yet; baseline: "
        + ("the median absolute move of random earlier bars of the same key" if found.measure == "return" else
           "how often the same held from random earlier observations of the key"),
        style="dim",
        highlight=False,
    )  # fmt: skip
