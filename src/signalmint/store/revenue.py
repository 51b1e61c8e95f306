"""The rows revenue analytics reads, as records (:mod:`signalmint.billing.analytics` computes from them)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, exists, select

from ..records import CreditLine, HistoryPoint, LegacySubscription, PaymentLine, RevenueData
from .plans import load_plans
from .tables import ledger, payments, subscription_history, subscriptions

__all__ = ["load_revenue"]


def load_revenue(
    conn: Connection,
    start: datetime,
    end: datetime,
    *,
    automations: Sequence[str],
    now: datetime,
    credit_currency: str = "usd",
) -> RevenueData:
    """Every subscription's history (the figures need each one's state before ``start``), and the
    payments and credit movements of ``[start, end)``.

    Subscriptions opened before migration 0005 have no history rows: their rows come as
    :class:`LegacySubscription` for the analytics to rebuild a history from.
    """
    history = tuple(
        HistoryPoint(r.subscription_id, r.subscriber_id, r.plan_id, r.plan_version, r.state, r.mrr, r.currency, r.at)
        for r in conn.execute(
            select(subscription_history).order_by(subscription_history.c.at, subscription_history.c.id)
        )
    )
    without_history = ~exists().where(subscription_history.c.subscription_id == subscriptions.c.id)
    legacy = tuple(
        LegacySubscription(
            id=r.id,
            subscriber_id=r.subscriber_id,
            plan_id=r.plan_id,
            plan_version=r.plan_version,
            state=r.state,
            started_at=r.started_at,
            trial_end=r.trial_end,
            ended_at=r.ended_at,
            origin=r.origin,
        )
        for r in conn.execute(select(subscriptions).where(without_history).order_by(subscriptions.c.id))
    )
    trial_ends = {
        r.id: r.trial_end
        for r in conn.execute(
            select(subscriptions.c.id, subscriptions.c.trial_end).where(subscriptions.c.trial_end.is_not(None))
        )
    }
    paid = conn.execute(
        select(payments)
        .where(payments.c.created_at >= start, payments.c.created_at < end, payments.c.status != "failed")
        .order_by(payments.c.id)
    )
    moves = conn.execute(
        select(ledger.c.delta, ledger.c.reason, ledger.c.created_at)
        .where(ledger.c.created_at >= start, ledger.c.created_at < end)
        .order_by(ledger.c.id)
    )
    return RevenueData(
        history=history,
        plans=load_plans(conn),
        automations=tuple(automations),
        now=now,
        credit_currency=credit_currency,
        legacy=legacy,
        trial_ends=trial_ends,
        payments=tuple(
            PaymentLine(
                kind=r.kind,
                amount=r.amount,
                currency=r.currency,
                fee=r.fee,
                refunded=r.refunded,
                status=r.status,
                created_at=r.created_at,
                subscriber_id=r.subscriber_id,
                plan_id=r.plan_id,
                automation=r.automation,
            )
            for r in paid
        ),
        credits=tuple(CreditLine(r.delta, r.reason, r.created_at) for r in moves),
    )
