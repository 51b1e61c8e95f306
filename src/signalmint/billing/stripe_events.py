"""What a Stripe webhook event does here, in two steps: fetch, then apply in one transaction.

:func:`fetch_for` does the network part first (the subscription an event names, as Stripe
has it *now*; the invoice a refunded charge paid), outside any transaction. :func:`apply_event`
then records the event as seen and applies its effect on the same connection, so both commit
together or neither does (an error rolls back and Stripe delivers the event again).

Because subscriptions are re-fetched, whichever event arrives last carries the current truth:
shuffled, duplicated or late events converge to the same state.

======================================  =====================================================
event                                   effect
======================================  =====================================================
checkout.session.completed              the checkout is fulfilled once (subscription opened,
(and ``async_payment_succeeded``)       credits added, tip recorded)
customer.subscription.created/updated/  our subscription converges to Stripe's (deleted:
deleted                                 it ends, the free plan takes over)
invoice.paid                            the payment is recorded once (by invoice id)
invoice.payment_failed                  past_due with the plan's grace days, a dunning email
charge.refunded                         the payment's refunded total is set
anything else                           stored as seen, ignored
======================================  =====================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..config import Settings
from ..errors import BillingError
from ..records import Plan
from ..store import Connection
from ..store.billing import first_seen, get_checkout, refund_payment
from ..store.plans import load_plans
from .service import PaymentInfo, apply_payment, apply_subscription, fulfil_checkout
from .stripe_provider import NAME, StripeProvider, subscriber_of, subscription_view

__all__ = ["Fetched", "Outcome", "RetryLater", "apply_event", "fetch_for"]

CHECKOUT_DONE = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded"})
SUBSCRIPTION = frozenset(
    {"customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted"}
)
INVOICE = frozenset({"invoice.paid", "invoice.payment_failed"})


class RetryLater(BillingError):
    """The event cannot apply yet (what it refers to has not arrived): Stripe should resend it."""


@dataclass(frozen=True, slots=True)
class Fetched:
    """What :func:`fetch_for` read from Stripe for one event."""

    subscription: Mapping[str, Any] | None = None
    invoice: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What applying an event did; ``dunning`` is (subscriber, plan) to email after the commit."""

    detail: str
    subscriber_id: int | None = None
    state: str | None = None  # our subscription's state after it ("ended": none billed by Stripe)
    dunning: tuple[int, Plan] | None = None


def _ref(value: Any) -> str | None:
    """An id from an expandable field (a string, or an expanded object)."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def invoice_subscription(invoice: Mapping[str, Any]) -> str | None:
    """The subscription an invoice bills (``parent.subscription_details`` since API 2025-03)."""
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    return _ref(details.get("subscription")) or _ref(invoice.get("subscription"))


async def fetch_for(provider: StripeProvider, event: Mapping[str, Any]) -> Fetched:
    """The network reads an event needs, done before its transaction."""
    kind, obj = event["type"], event["data"]["object"]
    ref: str | None = None
    if kind in SUBSCRIPTION:
        ref = _ref(obj.get("id"))
    elif kind in INVOICE:
        ref = invoice_subscription(obj)
    elif kind in CHECKOUT_DONE and obj.get("mode") == "subscription":
        ref = _ref(obj.get("subscription"))
    elif kind == "charge.refunded":
        intent = _ref(obj.get("payment_intent"))
        return Fetched(invoice=await provider.invoice_of_payment(intent) if intent else None)
    if ref is None:
        return Fetched()
    current = await provider.fetch_subscription(ref)
    if current is None and kind in SUBSCRIPTION:
        current = obj  # gone at Stripe: the event's own copy is all there is
    return Fetched(subscription=current)


def apply_event(
    conn: Connection, settings: Settings, event: Mapping[str, Any], fetched: Fetched, now: datetime
) -> Outcome:
    """Record ``event`` as seen and apply it, on the caller's transaction (once per event id)."""
    kind, obj = event["type"], event["data"]["object"]
    if not first_seen(conn, NAME, event["id"], kind, _ref(obj.get("id")), now):
        return Outcome("already processed")
    if kind in CHECKOUT_DONE:
        return _checkout_done(conn, settings, obj, fetched, now)
    if kind in SUBSCRIPTION:
        return _converge(conn, fetched.subscription, now)
    if kind in INVOICE:
        return _invoice(conn, settings, kind, obj, fetched, now)
    if kind == "charge.refunded":
        return _refund(conn, obj, fetched)
    return Outcome(f"ignored: {kind} changes nothing here")


def _converge(conn: Connection, sub: Mapping[str, Any] | None, now: datetime) -> Outcome:
    if sub is None:
        return Outcome("ignored: no subscription")
    subscriber = subscriber_of(conn, sub)
    view = subscription_view(conn, sub)
    if subscriber is None or view is None:
        return Outcome(f"ignored: subscription {sub.get('id')} is not one of ours")
    ours = apply_subscription(conn, NAME, subscriber, view, now)
    state = ours.state if ours is not None and ours.provider_ref == view.ref else "ended"
    return Outcome(f"subscription {view.ref}: {state}", subscriber, state)


def _checkout_done(
    conn: Connection, settings: Settings, session: Mapping[str, Any], fetched: Fetched, now: datetime
) -> Outcome:
    token = session.get("client_reference_id")
    checkout = get_checkout(conn, token=token) if isinstance(token, str) else None
    if checkout is None or checkout.provider != NAME:
        return Outcome("ignored: not a checkout of ours")
    if session.get("payment_status") not in ("paid", "no_payment_required"):
        return Outcome("waiting for the payment to clear")
    if checkout.kind == "subscription":
        sub = fetched.subscription
        view = subscription_view(conn, sub) if sub is not None else None
        if view is None:
            raise RetryLater(f"checkout {checkout.id}: Stripe has no subscription of ours for it yet")
        done = fulfil_checkout(conn, settings, checkout, now, payment=None, subscription=view)
    else:
        intent = _ref(session.get("payment_intent")) or str(session["id"])
        payment = PaymentInfo(intent, int(session.get("amount_total") or 0), str(session.get("currency")))
        done = fulfil_checkout(conn, settings, checkout, now, payment=payment)
    return Outcome(
        f"checkout {checkout.id} " + ("fulfilled" if done else "was already fulfilled"), checkout.subscriber_id
    )


def _invoice(
    conn: Connection, settings: Settings, kind: str, invoice: Mapping[str, Any], fetched: Fetched, now: datetime
) -> Outcome:
    sub = fetched.subscription
    view = subscription_view(conn, sub) if sub is not None else None
    subscriber = subscriber_of(conn, invoice) or (subscriber_of(conn, sub) if sub is not None else None)
    if subscriber is None:
        return Outcome(f"ignored: invoice {invoice.get('id')} is not for one of ours")
    if kind == "invoice.paid":
        amount = int(invoice.get("amount_paid") or 0)
        if amount > 0:
            payment = PaymentInfo(str(invoice["id"]), amount, str(invoice.get("currency")))
            plan_id = view.plan_id if view is not None else None
            apply_payment(
                conn, settings, NAME, payment, now, kind="subscription", subscriber_id=subscriber, plan_id=plan_id
            )
    converged = _converge(conn, sub, now) if sub is not None else Outcome("no subscription", subscriber)
    detail = f"invoice {invoice.get('id')}; {converged.detail}"
    if kind == "invoice.payment_failed" and view is not None and converged.state == "past_due":
        plan = load_plans(conn).get((view.plan_id, view.plan_version))
        if plan is not None:
            return Outcome(detail, subscriber, converged.state, dunning=(subscriber, plan))
    return Outcome(detail, subscriber, converged.state)


def _refund(conn: Connection, charge: Mapping[str, Any], fetched: Fetched) -> Outcome:
    refunded = int(charge.get("amount_refunded") or 0)
    for ref in (_ref(charge.get("payment_intent")), fetched.invoice, _ref(charge.get("invoice")), charge.get("id")):
        if ref and refund_payment(conn, NAME, ref, refunded):
            return Outcome(f"payment {ref}: {refunded} refunded")
    if subscriber_of(conn, charge) is not None:
        raise RetryLater(f"charge {charge.get('id')} refunds a payment not recorded yet")
    return Outcome(f"ignored: charge {charge.get('id')} paid nothing of ours")
