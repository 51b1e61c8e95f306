"""The engine: one task per automation from source to committed signals (:mod:`.runner`), with its
guardrails on the data (:mod:`.freshness`, :mod:`.watchdog`), the outcomes it measures after each
signal (:mod:`.outcomes`), the wake-ups live pages wait on (:mod:`.hub`) and the process's metrics
(:mod:`.metrics`).

The engine knows nothing of delivery: whoever runs it (:mod:`signalmint.serve`) hands it an
on-commit hook (the fan-out) and the operator's alert sender.
"""

from __future__ import annotations

from .hub import SignalHub
from .metrics import Metrics
from .runner import Engine, OnCommit, commit_tick, without_retractions
from .watchdog import OperatorAlerts, Staleness

__all__ = [
    "Engine",
    "Metrics",
    "OnCommit",
    "OperatorAlerts",
    "SignalHub",
    "Staleness",
    "commit_tick",
    "without_retractions",
]
