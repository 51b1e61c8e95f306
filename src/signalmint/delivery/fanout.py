"""Fan-out: for each committed signal, one outbox row per entitled subscriber endpoint.

Runs inside the transaction that commits the signals (the engine's on-commit hook, called
from ``commit_tick``), so a signal is never stored without its deliveries. Who is entitled comes
from :class:`~signalmint.access.Audience`, compiled from the store and refreshed every few
seconds, or at once when the store's ``audience_version`` moved (the web app bumps it when a
subscriber adds, pauses or removes an endpoint, or pays); the worker checks entitlement again
when it sends, so a subscription that ends in between receives nothing.

Noise control happens here too, as when a row may be sent and which message it joins
(``group_key``; the worker sends every row of a group as one message):

* grouping (``group_seconds`` = N): rows wait for the end of their N-second window, aligned on
  the clock (a 30 s window ends at :00 and :30), and share ``g:{endpoint}:{window end}``;
* quiet hours: rows wait for the end of the window; with ``quiet_mode`` ``digest`` they share
  ``d:{endpoint}:{quiet end}`` (one digest per quiet window), with ``hold`` they go one by one.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from ..access import Audience, quiet_until
from ..records import Endpoint, OutboxRow, Plan, Preferences, Signal, Subscriber, Subscription, to_datetime
from ..store import Connection, list_automations
from ..store.accounts import every_preference, every_watchlist, open_subscriptions
from ..store.outbox import enqueue, list_endpoints
from ..store.plans import load_plans
from .collector import fewer_collections

__all__ = ["FanOut", "send_window"]


def window_end(at: datetime, seconds: int) -> datetime:
    """The end of the ``seconds``-long window ``at`` falls in: the first multiple of ``seconds``
    since the epoch strictly after ``at``.

    >>> window_end(datetime(2024, 1, 2, 14, 30, 10, tzinfo=UTC), 30)
    datetime.datetime(2024, 1, 2, 14, 30, 30, tzinfo=datetime.timezone.utc)
    >>> window_end(datetime(2024, 1, 2, 14, 30, 30, tzinfo=UTC), 30)
    datetime.datetime(2024, 1, 2, 14, 31, tzinfo=datetime.timezone.utc)
    """
    whole = int(at.timestamp()) // seconds * seconds + seconds
    return datetime.fromtimestamp(whole, UTC)


def send_window(
    deliver_at: datetime, now: datetime, endpoint_id: int, pref: Preferences | None, timezone: str
) -> tuple[datetime, str | None]:
    """When a delivery may be sent (``not_before``) and the group it joins (None: on its own).

    >>> night = Preferences("webhook", quiet_start=22 * 60, quiet_end=7 * 60, quiet_mode="digest", group_seconds=60)
    >>> send_window(datetime(2024, 1, 2, 23, 5, 10, tzinfo=UTC), datetime(2024, 1, 2, 23, 5, 10, tzinfo=UTC), 7,
    ...             night, "UTC")
    (datetime.datetime(2024, 1, 3, 7, 0, tzinfo=datetime.timezone.utc), 'd:7:1704265200')
    >>> send_window(datetime(2024, 1, 2, 12, 5, 10, tzinfo=UTC), datetime(2024, 1, 2, 12, 5, 10, tzinfo=UTC), 7,
    ...             night, "UTC")
    (datetime.datetime(2024, 1, 2, 12, 6, tzinfo=datetime.timezone.utc), 'g:7:1704197160')
    """
    if pref is None:
        return deliver_at, None
    quiet = quiet_until(deliver_at, pref, timezone)
    if quiet is not None:  # held until the quiet hours end: one by one, or all in one digest
        return quiet, (f"d:{endpoint_id}:{int(quiet.timestamp())}" if pref.quiet_mode == "digest" else None)
    if pref.group_seconds:
        end = window_end(max(deliver_at, now), pref.group_seconds)
        return end, f"g:{endpoint_id}:{int(end.timestamp())}"
    return deliver_at, None


class FanOut:
    """Compiles the audience of subscribers with endpoints and turns signals into outbox rows.

    ``channels`` are the channel kinds this installation can send (email needs an SMTP
    server, Telegram a bot token); endpoints of other kinds get no rows.
    """

    def __init__(
        self, channels: Iterable[str], *, refresh_seconds: float = 5.0, version: Callable[[], int] | None = None
    ) -> None:
        """``version``: the store's audience version (``lambda: db.audience_version``); when it
        moves, the next signals rebuild the audience first."""
        self.channels = frozenset(channels)
        self.refresh_seconds = refresh_seconds
        self.version = version
        self._seen_version = version() if version is not None else 0
        self._built = float("-inf")
        self.audience = Audience.build([])
        self.rows: list[tuple[Subscription, Plan, Subscriber, frozenset[str]]] = []
        self.endpoints: dict[int, list[Endpoint]] = {}
        self.prefs: dict[tuple[int, str], Preferences] = {}

    def __call__(self, conn: Connection, signals: list[Signal], now: datetime) -> None:
        """The engine's on-commit hook (:data:`signalmint.engine.OnCommit`): the outbox rows of
        ``signals``, written in the transaction that commits them. Young collections are rarer
        meanwhile (collector.py): an audience and its rows live until the call ends."""
        with fewer_collections():
            enqueue(conn, self.deliveries_for(conn, signals, now), now)

    def invalidate(self) -> None:
        self._built = float("-inf")

    def refresh(self, conn: Connection) -> None:
        names = [a.name for a in list_automations(conn, enabled_only=False)]
        plans = load_plans(conn)
        by_subscriber: dict[int, list[Endpoint]] = defaultdict(list)
        for endpoint in list_endpoints(conn, active_only=True):
            if endpoint.channel in self.channels:
                by_subscriber[endpoint.subscriber_id].append(endpoint)
        watch = every_watchlist(conn)
        self.prefs = every_preference(conn)
        rows = []
        expanded: dict[tuple[str, int], Plan] = {}  # each plan version spelled out once, not per subscriber
        for subscription, subscriber in open_subscriptions(conn):
            key = (subscription.plan_id, subscription.plan_version)
            plan = plans.get(key)
            if plan is None or subscriber.id not in by_subscriber:
                continue
            full = expanded.get(key)
            if full is None:
                full = expanded[key] = plan.expanded(names)
            rows.append((subscription, full, subscriber, watch.get(subscriber.id, frozenset())))
        self.rows = rows
        self.audience = Audience.build(rows)
        self.endpoints = dict(by_subscriber)
        self._built = time.monotonic()

    def deliveries_for(self, conn: Connection, signals: Sequence[Signal], now: datetime) -> list[OutboxRow]:
        """Outbox rows for ``signals`` (stored, with ids): entitled endpoints, when each may be sent."""
        if not signals:
            return []
        version = self.version() if self.version is not None else 0
        if version != self._seen_version or time.monotonic() - self._built > self.refresh_seconds:
            self.refresh(conn)
            self._seen_version = version
        out: list[OutboxRow] = []
        for signal in signals:
            if signal.id is None:
                raise ValueError(f"{signal.key} {signal.kind}: only stored signals (with ids) fan out")
            signal_id = signal.id
            decided = self.audience.decide(signal, now)
            times = decided.deliver_at.astype("datetime64[ns]", copy=False).view("int64").tolist()
            converted: dict[int, datetime] = {}  # subscribers of one plan share a time: convert it once
            for row, at in zip(decided.row.tolist(), times, strict=True):
                _subscription, plan, subscriber, _ = self.rows[row]
                endpoints = self.endpoints.get(subscriber.id)
                if not endpoints:  # (a refresh leaves these out)
                    continue
                deliver_at = converted.get(at)
                if deliver_at is None:
                    deliver_at = converted[at] = to_datetime(at)
                for endpoint in endpoints:
                    if endpoint.channel not in plan.channels:
                        continue
                    pref = self.prefs.get((subscriber.id, endpoint.channel))
                    if pref is not None and not pref.enabled:
                        continue
                    not_before, group_key = send_window(deliver_at, now, endpoint.id, pref, subscriber.timezone)
                    out.append(OutboxRow(signal_id, endpoint.id, subscriber.id, not_before, group_key))
        return out
