"""The manual provider: the operator records payments by hand (bank transfer, crypto, cash).

Subscribers see the operator's payment instructions instead of a card form; the operator
then records the payment on the subscriber's admin page, which opens (or extends) the
subscription for the months paid, through the same state machine as the other providers.
"""

from __future__ import annotations

from datetime import datetime

from ..config import Settings
from ..errors import AccessError
from ..records import Checkout, Plan, Subscriber, Subscription
from ..store import Connection, Database
from ..store.accounts import current_subscription
from .core import ProviderSubscription
from .local import add_interval
from .service import PaymentInfo, apply_payment, apply_subscription

__all__ = ["ManualProvider", "record_manual_payment"]


class ManualProvider:
    name = "manual"
    test_mode = False

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db

    async def sync_prices(self, plans: list[Plan]) -> None:
        return None

    async def start(
        self, checkout: Checkout, *, subscriber: Subscriber | None, plan: Plan | None, success_url: str, cancel_url: str
    ) -> str:
        return f"/billing/checkout/{checkout.token}"  # shows the operator's payment instructions

    async def portal(self, subscriber: Subscriber, return_url: str) -> str | None:
        return None

    async def cancel(self, subscription: Subscription) -> None:
        from .local import _now, _view

        def write(conn: Connection) -> None:
            view = _view(conn, subscription, cancel_at_period_end=True)
            if view is not None:
                apply_subscription(conn, self.name, subscription.subscriber_id, view, _now())

        await self.db.write(write)


def record_manual_payment(
    conn: Connection,
    settings: Settings,
    subscriber_id: int,
    plan: Plan,
    *,
    amount: int,
    months: int,
    reference: str,
    note: str,
    now: datetime,
) -> Subscription | None:
    """Record money the operator received and give ``months`` of ``plan`` for it.

    ``reference`` (the bank transfer's, or the form's) makes it idempotent: recording the same
    reference twice adds neither money nor months.
    """
    if not 1 <= months <= 36:
        raise AccessError("record 1 to 36 months")
    if amount < 0:
        raise AccessError("the amount cannot be negative")
    payment_id = apply_payment(
        conn,
        settings,
        "manual",
        PaymentInfo(f"manual_{reference}", amount, plan.currency, fee=0),
        now,
        kind="manual",
        subscriber_id=subscriber_id,
        plan_id=plan.id,
        note=note,
    )
    current = current_subscription(conn, subscriber_id)
    if payment_id is None:
        return current
    same = current is not None and current.provider == "manual" and current.plan_id == plan.id
    start = current.period_end if same and current and current.period_end and current.period_end > now else now
    view = ProviderSubscription(
        ref=current.provider_ref
        if same and current and current.provider_ref
        else f"manual_sub_{subscriber_id}_{reference}",
        status="active",
        plan_id=plan.id,
        plan_version=plan.version,
        period_end=add_interval(start, "month", months),
    )
    return apply_subscription(conn, "manual", subscriber_id, view, now)
