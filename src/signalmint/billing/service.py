"""Billing as the app uses it: start a checkout, apply what a provider reports, once.

Providers call the ``apply_*`` functions inside the transaction that also records the
provider's event as seen (:func:`~signalmint.store.billing.first_seen`), so an event's
effect and its "seen" mark commit together: a redelivered event changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..config import Settings
from ..errors import AccessError
from ..mail import Email, Mailer
from ..records import Checkout, Plan, Subscription
from ..store import Connection, Database
from ..store.accounts import get_subscriber
from ..store.billing import complete_checkout, create_checkout, get_checkout, record_payment
from ..store.plans import load_plans
from .core import PaymentProvider, ProviderSubscription, converge
from .fees import fee_for
from .tips import check_tip, record_credit_topup, record_tip_payment

__all__ = ["Billing", "PaymentInfo", "apply_payment", "apply_subscription", "fulfil_checkout"]

log = logging.getLogger("signalmint.billing")


@dataclass(frozen=True, slots=True)
class PaymentInfo:
    """Money received, as the provider reports it (minor units); ``fee`` None: use the fee model."""

    ref: str
    amount: int
    currency: str
    fee: int | None = None


def _free_plan(conn: Connection) -> Plan | None:
    free = [p for p in load_plans(conn, current_only=True).values() if p.free and p.public]
    return min(free, key=lambda p: p.id) if free else None


def apply_subscription(
    conn: Connection, provider: str, subscriber_id: int, view: ProviderSubscription, now: datetime
) -> Subscription | None:
    """Converge our subscription to the provider's ``view`` (see :func:`.core.converge`)."""
    return converge(conn, provider, subscriber_id, view, load_plans(conn), now, fallback=_free_plan(conn))


def apply_payment(
    conn: Connection,
    settings: Settings,
    provider: str,
    payment: PaymentInfo,
    now: datetime,
    *,
    kind: str,
    subscriber_id: int | None,
    plan_id: str | None = None,
    automation: str | None = None,
    note: str = "",
) -> int | None:
    """Record a payment once (by its provider ref); credits top-ups also fill the wallet."""
    fees = settings.billing.fees
    if kind == "credits" and subscriber_id is not None:
        return record_credit_topup(
            conn, subscriber_id=subscriber_id, provider=provider, provider_ref=payment.ref, amount=payment.amount,
            currency=payment.currency, fees=fees, now=now, fee=payment.fee, note=note,
        )  # fmt: skip
    if kind == "tip":
        return record_tip_payment(
            conn, provider=provider, provider_ref=payment.ref, amount=payment.amount, currency=payment.currency,
            fees=fees, now=now, subscriber_id=subscriber_id, automation=automation, fee=payment.fee, note=note,
        )  # fmt: skip
    return record_payment(
        conn,
        provider=provider,
        provider_ref=payment.ref,
        kind=kind,
        amount=payment.amount,
        currency=payment.currency,
        fee=payment.fee if payment.fee is not None else fee_for(payment.amount, fees),
        now=now,
        subscriber_id=subscriber_id,
        plan_id=plan_id,
        automation=automation,
        note=note,
    )


def fulfil_checkout(
    conn: Connection,
    settings: Settings,
    checkout: Checkout,
    now: datetime,
    *,
    payment: PaymentInfo | None,
    subscription: ProviderSubscription | None = None,
) -> bool:
    """Apply a completed checkout once: open the subscription, credit the wallet, record the tip.

    Returns False when the checkout was already fulfilled (a redelivered webhook, a double click).
    """
    ref = subscription.ref if subscription is not None else payment.ref if payment is not None else None
    if not complete_checkout(conn, checkout.id, now, provider_ref=ref):
        return False
    if checkout.kind == "subscription":
        if subscription is None or checkout.subscriber_id is None:
            raise ValueError("a subscription checkout completes with a subscription")
        apply_subscription(conn, checkout.provider, checkout.subscriber_id, subscription, now)
    if payment is not None and payment.amount > 0:
        apply_payment(
            conn,
            settings,
            checkout.provider,
            payment,
            now,
            kind=checkout.kind,
            subscriber_id=checkout.subscriber_id,
            plan_id=checkout.plan_id,
            automation=checkout.automation,
        )
    return True


class Billing:
    """Starts checkouts with the configured provider and answers what a subscriber can buy."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        provider: PaymentProvider,
        mailer: Mailer,
        *,
        current_plans: Callable[[], list[Plan]],
        evict: Callable[[int], None] = lambda _id: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.db = db
        self.provider = provider
        self.mailer = mailer
        self.current_plans = current_plans
        self.evict = evict
        self.clock = clock

    @property
    def test_mode(self) -> bool:
        return self.provider.test_mode

    def _url(self, path: str) -> str:
        return self.settings.base_url.rstrip("/") + path

    def plan(self, plan_id: str) -> Plan:
        for plan in self.current_plans():
            if plan.id == plan_id and plan.public:
                return plan
        raise AccessError(f"no plan {plan_id!r} on sale")

    async def _start(self, plan: Plan | None, **values: Any) -> tuple[Checkout, str]:
        now = self.clock()
        token = secrets.token_urlsafe(24)
        checkout = await self.db.write(create_checkout, token=token, now=now, provider=self.provider.name, **values)
        subscriber = self.db.read_sync(get_subscriber, checkout.subscriber_id) if checkout.subscriber_id else None
        url = await self.provider.start(
            checkout,
            subscriber=subscriber,
            plan=plan,
            success_url=self._url(f"/billing/done?checkout={token}"),
            cancel_url=self._url("/pricing" if checkout.kind == "subscription" else "/dashboard"),
        )
        return checkout, url

    async def subscribe(self, subscriber_id: int, plan_id: str) -> tuple[Checkout, str]:
        """Checkout for a paid plan (trial days included, if the plan has them)."""
        plan = self.plan(plan_id)
        if plan.free:
            raise AccessError(f"the {plan.name} plan is free: no payment needed")
        return await self._start(
            plan,
            kind="subscription",
            subscriber_id=subscriber_id,
            plan_id=plan.id,
            plan_version=plan.version,
            amount=plan.price,
            currency=plan.currency,
        )

    async def top_up(self, subscriber_id: int, amount: int) -> tuple[Checkout, str]:
        """Checkout for prepaid credits worth ``amount`` minor units."""
        credits = self.settings.billing.credits
        if amount < credits.minimum:
            raise AccessError(f"the smallest top-up is {credits.minimum} (minor units)")
        if amount > 1_000_000:
            raise AccessError("that top-up is too large")
        return await self._start(
            None, kind="credits", subscriber_id=subscriber_id, amount=amount, currency=self.settings.billing.currency
        )

    async def tip(
        self, amount: int, *, subscriber_id: int | None, email: str | None, automation: str | None
    ) -> tuple[Checkout, str]:
        """Checkout for a tip (pay what you want) to the operator, for an automation or in general."""
        check_tip(amount, self.settings.billing.tips)
        return await self._start(
            None,
            kind="tip",
            subscriber_id=subscriber_id,
            email=email,
            automation=automation,
            amount=amount,
            currency=self.settings.billing.currency,
        )

    def checkout(self, token: str) -> Checkout | None:
        return self.db.read_sync(get_checkout, token=token)

    async def run(self, every: float = 30.0) -> None:
        """Background work while the app runs: sell every plan version at the provider, then
        renew due test-mode subscriptions (the local provider's stand-in for Stripe's renewals)."""
        try:
            await self.provider.sync_prices([p for p in self.current_plans() if not p.free])
        except Exception:
            log.exception("could not sync plans to %s; checkouts will retry", self.provider.name)
        renew = getattr(self.provider, "renew_due", None)
        send = getattr(self.provider, "send_meter_event", None)
        reporter = None
        if send is not None:  # Stripe: API overage goes out as Billing meter events
            from .metering import run_meter_reporter

            reporter = asyncio.create_task(run_meter_reporter(self.db, send, every=every))
        try:
            await self._renewals(renew, every)
        finally:
            if reporter is not None:
                reporter.cancel()

    async def _renewals(self, renew: Any, every: float) -> None:
        while True:
            if renew is not None:
                try:
                    changed = await self.db.write(renew, self.clock())
                    if changed:
                        log.info("renewed or ended %d test-mode subscription(s)", changed)
                except Exception:
                    log.exception("test-mode renewals failed; retrying in %.0f s", every)
            await asyncio.sleep(every)

    async def notify_payment_failed(self, subscriber_id: int, plan: Plan | None, grace_days: int) -> None:
        """The dunning email: the payment failed, access continues for the grace period."""
        if not self.settings.billing.dunning_email:
            return
        subscriber = self.db.read_sync(get_subscriber, subscriber_id)
        if subscriber is None or not subscriber.confirmed:
            return
        name = plan.name if plan else "your plan"
        text = (
            f"We could not take the payment for {name}.\n\n"
            f"Your alerts continue for {grace_days} more day(s). Update your card here:\n"
            f"{self._url('/billing/portal')}\n"
        )
        try:
            await self.mailer.send(Email(to=subscriber.email, subject=f"Payment failed for {name}", text=text))
        except Exception:  # a mail failure must not fail the webhook that reported the payment
            log.exception("could not send the payment-failed email to subscriber %s", subscriber_id)
