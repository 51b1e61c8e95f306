"""Backtests: run an automation's detector over recorded history and forecast what each plan sends.

Nothing here writes: history comes from a CSV or Parquet file or from the stored bars (read
through a read-only connection), and the signals a backtest finds are returned, never appended
to the signal log. Their outcomes are measured on the same history, never past its end.
"""

from __future__ import annotations

from .forecast import PlanForecast, forecast_plan
from .outcomes import BacktestOutcomes, backtest_outcomes, measure_outcomes
from .run import Backtest, has_batch, load_history, run_backtest

__all__ = [
    "Backtest",
    "BacktestOutcomes",
    "PlanForecast",
    "backtest_outcomes",
    "forecast_plan",
    "has_batch",
    "load_history",
    "measure_outcomes",
    "run_backtest",
]
