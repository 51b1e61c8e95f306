"""The local provider: test mode, no money moves, the same state machine as Stripe.

The checkout is a page of this app, labelled TEST MODE, with a Pay and a Cancel button.
Paying drives :func:`~signalmint.billing.service.fulfil_checkout` exactly as a Stripe
``checkout.session.completed`` would; :meth:`LocalProvider.renew_due` plays the part of
Stripe's renewals (a payment each period, the end of a subscription canceled at period end),
so an operator can try the whole business, MRR included, before opening a Stripe account.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

from ..config import Settings
from ..records import Checkout, Plan, Subscriber, Subscription
from ..store import Connection, Database
from ..store.accounts import due_subscriptions, get_subscription
from ..store.plans import load_plans
from .core import ProviderSubscription
from .service import PaymentInfo, apply_payment, apply_subscription, fulfil_checkout

__all__ = ["LocalProvider", "add_interval"]


def add_interval(moment: datetime, interval: str, count: int = 1) -> datetime:
    """``moment`` plus ``count`` months or years, clamped to the month's end like Stripe does.

    >>> from datetime import UTC
    >>> add_interval(datetime(2026, 1, 31, tzinfo=UTC), "month").date()
    datetime.date(2026, 2, 28)
    >>> add_interval(datetime(2024, 2, 29, tzinfo=UTC), "year").date()
    datetime.date(2025, 2, 28)
    """
    months = count * (12 if interval == "year" else 1)
    year, month = divmod(moment.month - 1 + months, 12)
    year += moment.year
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


class LocalProvider:
    """Payments in test mode: every checkout is paid by pressing a button."""

    name = "local"
    test_mode = True

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db

    async def sync_prices(self, plans: list[Plan]) -> None:
        return None

    async def start(
        self, checkout: Checkout, *, subscriber: Subscriber | None, plan: Plan | None, success_url: str, cancel_url: str
    ) -> str:
        return f"/billing/checkout/{checkout.token}"

    async def portal(self, subscriber: Subscriber, return_url: str) -> str | None:
        return None  # our own billing page is the portal

    async def cancel(self, subscription: Subscription) -> None:
        def write(conn: Connection) -> None:
            view = _view(conn, subscription, cancel_at_period_end=True)
            if view is not None:
                apply_subscription(conn, self.name, subscription.subscriber_id, view, _now())

        await self.db.write(write)

    def pay(self, conn: Connection, checkout: Checkout, now: datetime) -> bool:
        """Complete ``checkout`` as if the card went through (False: it was already completed)."""
        if checkout.kind != "subscription":
            return fulfil_checkout(
                conn,
                self.settings,
                checkout,
                now,
                payment=PaymentInfo(f"local_pay_{checkout.id}", checkout.amount, checkout.currency),
            )
        plan = load_plans(conn).get((checkout.plan_id or "", checkout.plan_version or 0))
        if plan is None:
            raise LookupError(f"checkout {checkout.id} is for an unknown plan")
        trial_end = now + timedelta(days=plan.trial_days) if plan.trial_days else None
        view = ProviderSubscription(
            ref=f"local_sub_{checkout.id}",
            status="trialing" if trial_end else "active",
            plan_id=plan.id,
            plan_version=plan.version,
            period_end=trial_end or add_interval(now, plan.interval),
            trial_end=trial_end,
        )
        payment = None if trial_end else PaymentInfo(f"local_pay_{checkout.id}", plan.price, plan.currency)
        return fulfil_checkout(conn, self.settings, checkout, now, payment=payment, subscription=view)

    def renew_due(self, conn: Connection, now: datetime) -> int:
        """Renew (or end) local subscriptions whose period is over; how many changed."""
        due = due_subscriptions(conn, self.name, now)
        plans = load_plans(conn)

        changed = 0
        for subscription_id in due:
            sub = get_subscription(conn, subscription_id)
            plan = plans.get((sub.plan_id, sub.plan_version)) if sub is not None else None
            if sub is None or plan is None or sub.period_end is None or sub.provider_ref is None:
                continue
            if sub.state == "canceled":
                view = ProviderSubscription(sub.provider_ref, "canceled", plan.id, plan.version, sub.period_end)
            else:
                # Catch up every missed period: one payment each, named by the period, so a rerun pays nothing twice.
                period_end = sub.period_end
                while period_end <= now:
                    apply_payment(
                        conn,
                        self.settings,
                        self.name,
                        PaymentInfo(f"{sub.provider_ref}_{period_end:%Y%m%d}", plan.price, plan.currency),
                        now,
                        kind="subscription",
                        subscriber_id=sub.subscriber_id,
                        plan_id=plan.id,
                    )
                    period_end = add_interval(period_end, plan.interval)
                view = ProviderSubscription(sub.provider_ref, "active", plan.id, plan.version, period_end)
            apply_subscription(conn, self.name, sub.subscriber_id, view, now)
            changed += 1
        return changed


def _view(conn: Connection, sub: Subscription, *, cancel_at_period_end: bool) -> ProviderSubscription | None:
    if sub.provider_ref is None or sub.ended_at is not None:
        return None
    status = {"trialing": "trialing", "past_due": "past_due"}.get(sub.state, "active")
    return ProviderSubscription(
        sub.provider_ref,
        status,
        sub.plan_id,
        sub.plan_version,
        sub.period_end,
        sub.trial_end,
        cancel_at_period_end=cancel_at_period_end,
    )


def _now() -> datetime:
    return datetime.now(UTC)
