"""Plugging the later stages into the engine, which must not import them.

The engine commits signals; what happens to them next belongs to delivery. It gets that as
hooks: the fan-out (:class:`~signalmint.delivery.fanout.FanOut`) runs in each tick's
transaction and writes the outbox rows, and the operator's channels
(:class:`~signalmint.delivery.operator.OperatorChannels`) hear the watchdog's news.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from ..config import Settings, delivery_channels
from ..delivery.fanout import FanOut
from ..delivery.operator import OperatorChannels
from ..engine.hub import SignalHub
from ..engine.metrics import Metrics
from ..engine.runner import Engine
from ..registry import Registry
from ..store import Database

__all__ = ["wire_engine"]


def wire_engine(
    settings: Settings,
    db: Database,
    registry: Registry,
    *,
    metrics: Metrics | None = None,
    hub: SignalHub | None = None,
    clock: Callable[[], datetime] | None = None,
    watch_every: float | None = 1.0,
) -> tuple[Engine, FanOut]:
    """An engine whose commits fan out to every entitled endpoint and whose watchdog alerts the
    operator, and its fan-out (which rebuilds its audience when ``db.audience_changed()`` is called)."""
    fanout = FanOut(delivery_channels(settings), version=lambda: db.audience_version)
    engine = Engine(
        settings,
        db,
        registry,
        metrics=metrics,
        hub=hub,
        watch_every=watch_every,
        on_commit=fanout,
        alerts=OperatorChannels(settings),
        clock=clock or (lambda: datetime.now(UTC)),
    )
    return engine, fanout
