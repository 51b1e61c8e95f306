"""Fan-out: for each committed signal, one outbox row per entitled subscriber endpoint.

Runs inside the transaction that commits the signals (called from the engine's
``commit_tick``), so a signal is never stored without its deliveries. Who is entitled comes
from :class:`~signalmint.access.Audience`, compiled from the store and refreshed every few
seconds; the worker checks entitlement again when it sends, so a subscription that ends in
between receives nothing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from ..access import Audience, quiet_until
from ..records import Plan, Preferences, Signal, Subscriber, Subscription, to_datetime
from ..store import list_automations
from ..store.accounts import open_subscriptions
from ..store.outbox import Endpoint, list_endpoints
from ..store.plans import load_plans
from ..store.tables import preferences, watchlist

__all__ = ["FanOut"]


class FanOut:
    """Compiles the audience of subscribers with endpoints and turns signals into outbox rows.

    ``channels`` are the channel kinds this installation can send (email needs an SMTP
    server, Telegram a bot token); endpoints of other kinds get no rows.
    """

    def __init__(self, channels: Iterable[str], *, refresh_seconds: float = 5.0) -> None:
        self.channels = frozenset(channels)
        self.refresh_seconds = refresh_seconds
        self._built = float("-inf")
        self.audience = Audience.build([])
        self.rows: list[tuple[Subscription, Plan, Subscriber, frozenset[str]]] = []
        self.endpoints: dict[int, list[Endpoint]] = {}
        self.prefs: dict[tuple[int, str], Preferences] = {}

    def invalidate(self) -> None:
        self._built = float("-inf")

    def refresh(self, conn: Connection) -> None:
        names = [a.name for a in list_automations(conn, enabled_only=False)]
        plans = load_plans(conn)
        by_subscriber: dict[int, list[Endpoint]] = defaultdict(list)
        for endpoint in list_endpoints(conn, active_only=True):
            if endpoint.channel in self.channels:
                by_subscriber[endpoint.subscriber_id].append(endpoint)
        watch: dict[int, set[str]] = defaultdict(set)
        for subscriber_id, key in conn.execute(select(watchlist.c.subscriber_id, watchlist.c.key)):
            watch[subscriber_id].add(key)
        self.prefs = {
            (r.subscriber_id, r.channel): Preferences(r.channel, r.enabled, r.quiet_start, r.quiet_end, r.daily_budget)
            for r in conn.execute(select(preferences))
        }
        rows = []
        for subscription, subscriber in open_subscriptions(conn):
            plan = plans.get((subscription.plan_id, subscription.plan_version))
            if plan is None or subscriber.id not in by_subscriber:
                continue
            rows.append((subscription, plan.expanded(names), subscriber, frozenset(watch.get(subscriber.id, ()))))
        self.rows = rows
        self.audience = Audience.build(rows)
        self.endpoints = dict(by_subscriber)
        self._built = time.monotonic()

    def deliveries_for(self, conn: Connection, signals: Sequence[Signal], now: datetime) -> list[dict[str, Any]]:
        """Outbox rows for ``signals`` (stored, with ids): entitled endpoints, when each may be sent."""
        if not signals:
            return []
        if time.monotonic() - self._built > self.refresh_seconds:
            self.refresh(conn)
        out: list[dict[str, Any]] = []
        for signal in signals:
            decided = self.audience.decide(signal, now)
            for row, at in zip(decided.row.tolist(), decided.deliver_at, strict=True):
                _subscription, plan, subscriber, _ = self.rows[row]
                deliver_at = to_datetime(at)
                for endpoint in self.endpoints.get(subscriber.id, ()):
                    if endpoint.channel not in plan.channels:
                        continue
                    pref = self.prefs.get((subscriber.id, endpoint.channel))
                    if pref is not None and not pref.enabled:
                        continue
                    not_before = deliver_at
                    if pref is not None:
                        quiet = quiet_until(deliver_at, pref, subscriber.timezone)
                        if quiet is not None:
                            not_before = quiet  # held until the quiet hours end
                    out.append(
                        {
                            "signal_id": signal.id,
                            "endpoint_id": endpoint.id,
                            "subscriber_id": subscriber.id,
                            "not_before": not_before,
                        }
                    )
        return out
