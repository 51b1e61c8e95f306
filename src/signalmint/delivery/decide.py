"""Whether a claimed message goes out: entitlement (checked again at send time), the daily
budgets, and for a pay-per-alert plan, the subscriber's credits.

A plan that ended since the fan-out gets nothing; a row no longer entitled is skipped on its
own, the rest of its group still goes. A message (one signal, or a whole group) counts once
against the plan's alerts per day and the subscriber's own daily budget for the channel.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from ..access import Grant, grants, is_entitled
from ..records import Delivery, Plan, Signal, Subscriber, Subscription
from ..store import Connection, Database
from ..store.ledger import charge_alert
from .batch import Allowance, Batch, SubscriberView

__all__ = ["entitled", "pay", "release", "subscriber_view", "take_budgets", "views_of"]


def subscriber_view(
    subscriber: Subscriber | None,
    subscription: Subscription | None,
    plan: Plan | None,
    expanded: Plan | None,
    watchlist: frozenset[str],
    sent_today: int,
    now: datetime,
    shared: dict[tuple[str, int, frozenset[str] | None], Mapping[str, Grant]] | None = None,
) -> SubscriberView | None:
    """What a subscriber holds at ``now`` (None: no plan any more); ``expanded`` is ``plan``
    with its automations spelled out, ``sent_today`` the messages already sent today.

    ``shared``: grants already worked out this round. A subscription that entitles gives the
    same grants to everyone on its plan version with the same watchlist (or any watchlist, when
    the plan counts none), so thousands of subscribers of a round share a few."""
    if subscriber is None or subscription is None or plan is None or expanded is None:
        return None
    if shared is not None and is_entitled(subscription, expanded, subscriber, now):
        key = (expanded.id, expanded.version, watchlist if expanded.watchlist is not None else None)
        held = shared.get(key)
        if held is None:
            held = shared[key] = grants([(subscription, expanded)], subscriber, watchlist, now)
    else:
        held = grants([(subscription, expanded)], subscriber, watchlist, now)
    budget = Allowance(plan.alerts_per_day - sent_today) if plan.alerts_per_day is not None else None
    return SubscriberView(held, plan, budget)


def entitled(delivery: Delivery, batch: Batch, now: datetime) -> tuple[Signal, frozenset[str]] | str:
    """The signal and the fields its subscriber may not see, or why the delivery is skipped."""
    signal = batch.signals.get(delivery.signal_id)
    endpoint = batch.endpoints.get(delivery.endpoint_id)
    view = batch.views.get(delivery.subscriber_id)
    if signal is None or endpoint is None:
        return "the signal or endpoint no longer exists"
    if endpoint.status != "active":
        return f"the endpoint is {endpoint.status}"
    if view is None:
        return "the subscriber has no plan any more"
    grant = view.grants.get(signal.automation)
    hidden = grant.hidden_at(signal, now, endpoint.channel) if grant is not None else None
    if hidden is None:
        return "not entitled to this signal on this channel any more"
    return signal, hidden


def take_budgets(view: SubscriberView, own: Allowance | None, channel: str) -> list[Allowance] | str:
    """Take one message from the plan's and the subscriber's own daily budgets (all or none):
    the budgets taken from, or why the message is skipped."""
    if view.budget is not None and view.budget.left <= 0:  # a message counts once, however many signals
        return "the daily alert budget is used up"
    if own is not None and own.left <= 0:
        return f"the subscriber's daily {channel} budget is used up"
    taken = [a for a in (view.budget, own) if a is not None]
    for allowance in taken:
        allowance.left -= 1
    return taken


def release(taken: Iterable[Allowance]) -> None:
    """Give back what :func:`take_budgets` took (the message did not go out after all)."""
    for allowance in taken:
        allowance.left += 1


class _Unpaid(Exception):
    """A pay-per-alert message the subscriber's credits cannot pay."""


async def pay(db: Database, delivery_ids: Sequence[int], subscriber_id: int, price: int, now: datetime) -> bool:
    """Debit ``price`` per alert from the subscriber's credits, all or none.

    Each charge is named by its delivery, so a retried delivery is never charged twice.
    """

    def charge(conn: Connection) -> None:
        for delivery_id in delivery_ids:
            if not charge_alert(conn, subscriber_id, delivery_id, price, now):
                raise _Unpaid  # roll back the charges of this message's other alerts

    try:
        await db.write(charge)
    except _Unpaid:
        return False
    return True


def views_of(
    subscriber_ids: Iterable[int],
    people: Mapping[int, Subscriber],
    holdings: Mapping[int, Subscription],
    plans: Mapping[tuple[str, int], Plan],
    watching: Mapping[int, frozenset[str]],
    sent_today: Mapping[int, int],
    automations: Sequence[str],
    now: datetime,
) -> dict[int, SubscriberView | None]:
    """:func:`subscriber_view` of each subscriber, expanding each plan version once."""
    expanded: dict[tuple[str, int], Plan] = {}
    shared: dict[tuple[str, int, frozenset[str] | None], Mapping[str, Grant]] = {}
    out: dict[int, SubscriberView | None] = {}
    for subscriber_id in subscriber_ids:
        subscription = holdings.get(subscriber_id)
        plan = plans.get((subscription.plan_id, subscription.plan_version)) if subscription else None
        full = None
        if plan is not None:
            key = (plan.id, plan.version)
            full = expanded.get(key)
            if full is None:
                full = expanded[key] = plan.expanded(automations)
        out[subscriber_id] = subscriber_view(
            people.get(subscriber_id),
            subscription,
            plan,
            full,
            watching.get(subscriber_id, frozenset()),
            sent_today.get(subscriber_id, 0),
            now,
            shared,
        )
    return out
