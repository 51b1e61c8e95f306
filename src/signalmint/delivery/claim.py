"""Claiming: lease due outbox rows, load everything they need, and group them into messages.

The lease and the load are one transaction (:func:`claim_batch`, on the writer): the lease
(:func:`~signalmint.store.outbox.claim`), then a handful of queries for the whole batch (not a
few per subscriber), so the sends that follow run outside any transaction. On PostgreSQL with
no group due (the usual case) one statement leases the rows and reads their signals,
endpoints, subscribers and subscriptions (:func:`~signalmint.store.outbox_claim.claim_loaded`);
only what a plan needs beyond that (watchlists, daily budgets, charts) takes more queries.
Round trips are what a round's latency is made of on a busy machine, so the load reads what it
can together: each signal with its automation (its
title, its chart window), each subscriber with their open subscription and own daily
budgets; watchlists only of subscribers whose plan counts one. Plan versions never
change once stored (new terms make a new version), so a worker keeps the ones it has read
(:class:`Plans`) and reads them again only when a subscription names one it has not seen.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from ..records import Delivery, Plan
from ..store import Connection
from ..store.accounts import subscribers_with_subscriptions, watchlists_of
from ..store.outbox import claim, list_endpoints, sent_since_by_channel, sent_since_many
from ..store.outbox_claim import Loaded, claim_loaded
from ..store.plans import load_plans
from ..store.series import signal_series
from ..store.signals import signals_with_automations
from ..store.sql import autocommitting
from .batch import Allowance, Batch
from .decide import views_of
from .send import renders_chart

__all__ = ["Plans", "claim_batch", "load_batch", "messages"]


class Plans:
    """The stored plan versions a worker has read, by (id, version): immutable once stored."""

    def __init__(self) -> None:
        self.known: dict[tuple[str, int], Plan] = {}
        self.loads = 0  # how often they were read (a version not seen before)

    def get(self, conn: Connection, wanted: Collection[tuple[str, int]]) -> dict[tuple[str, int], Plan]:
        if any(key not in self.known for key in wanted):
            self.known = load_plans(conn)
            self.loads += 1
        return self.known


def claim_batch(
    conn: Connection, owner: str, now: datetime, lease: timedelta, limit: int, plans: Plans | None = None
) -> tuple[list[Delivery], Batch | None] | None:
    """Lease up to about ``limit`` due rows to ``owner`` and load what they need (one transaction).

    None, having leased nothing, when ``conn`` commits each statement alone (on PostgreSQL,
    ``Database.write(..., autocommit=True)``) and a group is due: claim again in a transaction."""
    loaded = claim_loaded(conn, owner, now, lease=lease, limit=limit)
    if loaded is not None:
        return loaded.claimed, _complete(conn, loaded, now, plans) if loaded.claimed else None
    if autocommitting(conn):
        return None
    claimed = claim(conn, owner, now, lease=lease, limit=limit)
    return claimed, load_batch(conn, claimed, now, plans) if claimed else None


def load_batch(conn: Connection, claimed: Sequence[Delivery], now: datetime, plans: Plans | None = None) -> Batch:
    """The signals, endpoints, subscribers' views and budgets, and chart data of ``claimed``."""
    found, automations = signals_with_automations(conn, (d.signal_id for d in claimed))
    endpoints = {e.id: e for e in list_endpoints(conn, ids=sorted({d.endpoint_id for d in claimed}))}
    people, holdings, own = subscribers_with_subscriptions(conn, sorted({d.subscriber_id for d in claimed}))
    loaded = Loaded(list(claimed), found, automations, endpoints, people, holdings, own)
    return _complete(conn, loaded, now, plans)


def _complete(conn: Connection, loaded: Loaded, now: datetime, plans: Plans | None) -> Batch:
    """The batch of ``loaded``: plans, views, budgets and charts on top of what the claim read."""
    claimed, found, automations, endpoints = loaded.claimed, loaded.signals, loaded.automations, loaded.endpoints
    people, holdings, own = loaded.people, loaded.holdings, loaded.own_budgets
    subscriber_ids = sorted({d.subscriber_id for d in claimed})
    stored = (plans or Plans()).get(conn, {(sub.plan_id, sub.plan_version) for sub in holdings.values()})
    held = {sid: plan for sid, sub in holdings.items() if (plan := stored.get((sub.plan_id, sub.plan_version)))}
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    budgeted = [sid for sid, plan in held.items() if plan.alerts_per_day is not None]
    watching = [sid for sid, plan in held.items() if plan.watchlist is not None]  # nobody else's matters
    views = views_of(
        subscriber_ids,
        people,
        holdings,
        stored,
        watchlists_of(conn, watching) if watching else {},
        sent_since_many(conn, budgeted, day) if budgeted else {},
        # a plan's "*" spelled out with the batch's automations: the only grants a round asks about
        sorted(automations),
        now,
    )
    batch = Batch(found, endpoints, views, {a.name: a.title for a in automations.values()}, now)
    if own:  # the subscriber's own daily budget per channel (on top of the plan's)
        sent = sent_since_by_channel(conn, sorted({sid for sid, _ in own}), day)
        batch.own_budgets = {key: Allowance(limit - sent.get(key, 0)) for key, limit in own.items()}
    sizes: dict[str, int] = {}
    for d in claimed:
        if d.group_key is not None:
            sizes[d.group_key] = sizes.get(d.group_key, 0) + 1
    charted = {kind: renders_chart(kind) for kind in {e.channel for e in endpoints.values()}}  # once per kind
    readers = {  # a group's message has no chart
        d.signal_id
        for d in claimed
        if (endpoint := endpoints.get(d.endpoint_id)) is not None
        and charted[endpoint.channel]
        and sizes.get(d.group_key or "", 1) == 1
    }
    windows = {a.name: int(a.detector_options.get("window", 30)) for a in automations.values()}
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
