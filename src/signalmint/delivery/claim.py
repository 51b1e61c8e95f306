"""Claiming: lease due outbox rows, load everything they need, and group them into messages.

The lease is one transaction (:func:`~signalmint.store.outbox.claim`); loading is one read
of a handful of queries for the whole batch (not a few per subscriber), so the sends that
follow run outside any transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from ..records import Delivery
from ..store import Connection, list_automations
from ..store.accounts import open_subscriptions_of, own_daily_budgets, subscribers_by_id, watchlists_of
from ..store.outbox import list_endpoints, sent_since_by_channel, sent_since_many
from ..store.plans import load_plans
from ..store.series import signal_series
from ..store.signals import signals_by_id
from .batch import Allowance, Batch
from .decide import views_of
from .send import renders_chart

__all__ = ["load_batch", "messages"]


def load_batch(conn: Connection, claimed: Sequence[Delivery], now: datetime) -> Batch:
    """The signals, endpoints, subscribers' views and budgets, and chart data of ``claimed``."""
    found = signals_by_id(conn, (d.signal_id for d in claimed))
    endpoints = {e.id: e for e in list_endpoints(conn, ids=sorted({d.endpoint_id for d in claimed}))}
    automations = list_automations(conn, enabled_only=False)
    plans = load_plans(conn)
    subscriber_ids = sorted({d.subscriber_id for d in claimed})
    holdings = open_subscriptions_of(conn, subscriber_ids)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    budgeted = [
        sid for sid, sub in holdings.items()
        if (plan := plans.get((sub.plan_id, sub.plan_version))) is not None and plan.alerts_per_day is not None
    ]  # fmt: skip
    views = views_of(
        subscriber_ids,
        subscribers_by_id(conn, subscriber_ids),
        holdings,
        plans,
        watchlists_of(conn, subscriber_ids),
        sent_since_many(conn, budgeted, day) if budgeted else {},
        [a.name for a in automations],
        now,
    )
    batch = Batch(found, endpoints, views, {a.name: a.title for a in automations}, now)
    own = own_daily_budgets(
        conn, subscriber_ids
    )  # the subscriber's own daily budget per channel (on top of the plan's)
    if own:
        sent = sent_since_by_channel(conn, sorted({sid for sid, _ in own}), day)
        batch.own_budgets = {key: Allowance(limit - sent.get(key, 0)) for key, limit in own.items()}
    sizes: dict[str, int] = {}
    for d in claimed:
        if d.group_key is not None:
            sizes[d.group_key] = sizes.get(d.group_key, 0) + 1
    readers = {  # a group's message has no chart
        d.signal_id
        for d in claimed
        if (endpoint := endpoints.get(d.endpoint_id)) is not None
        and renders_chart(endpoint.channel)
        and sizes.get(d.group_key or "", 1) == 1
    }
    windows = {a.name: int(a.detector_options.get("window", 30)) for a in automations}
    for signal_id in sorted(readers):
        signal = found.get(signal_id)
        if signal is not None:
            batch.series[signal_id] = signal_series(conn, signal, windows.get(signal.automation, 30), shown=60, after=5)
    return batch


def messages(claimed: Sequence[Delivery]) -> list[list[Delivery]]:
    """Claimed rows by the message they go out in: each row alone, the rows of a group together.

    >>> from datetime import UTC
    >>> at = datetime(2024, 1, 2, tzinfo=UTC)
    >>> rows = [Delivery(i, i, 1, 1, f"m{i}", "sending", at, at, 1, group_key=g)
    ...         for i, g in enumerate([None, "g:1:60", None, "g:1:60"])]
    >>> [[d.id for d in message] for message in messages(rows)]
    [[0], [1, 3], [2]]
    """
    out: list[list[Delivery]] = []
    groups: dict[str, list[Delivery]] = {}
    for delivery in claimed:
        if delivery.group_key is None:
            out.append([delivery])
        elif delivery.group_key in groups:
            groups[delivery.group_key].append(delivery)
        else:
            out.append(groups.setdefault(delivery.group_key, [delivery]))
    return out
