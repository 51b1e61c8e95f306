"""The subscription state machine every payment provider drives, and the provider interface.

A provider (Stripe, the local test mode, the operator by hand) never sets our states
directly: it describes a subscription as it stands there, a :class:`ProviderSubscription`,
and :func:`converge` makes ours match. Applying the same description twice changes
nothing, and applying descriptions fetched *now* makes the order of webhook events
irrelevant: the last one applied is the truth, whichever event carried it.

Provider states map to ours like this::

    trialing                        -> trialing
    active                          -> active (canceled, if it ends at period end)
    past_due, unpaid                -> past_due (access for the plan's grace days)
    canceled, incomplete_expired    -> the subscription ends (a free plan, if any, takes over)
    incomplete, paused              -> nothing yet (no access until the first payment)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ..records import Checkout, Plan, Subscriber, Subscription
from ..store import Connection
from ..store.accounts import current_subscription, set_subscription_state, start_subscription

__all__ = ["ENDED", "PaymentProvider", "ProviderSubscription", "converge", "our_state"]

ENDED = frozenset({"canceled", "incomplete_expired"})
_WAITING = frozenset({"incomplete", "paused"})


@dataclass(frozen=True, slots=True)
class ProviderSubscription:
    """One subscription as the provider has it now."""

    ref: str
    status: str
    plan_id: str
    plan_version: int
    period_end: datetime | None = None
    trial_end: datetime | None = None
    cancel_at_period_end: bool = False


def our_state(status: str, cancel_at_period_end: bool = False) -> str | None:
    """Our state for a provider's status (None: ended or not started).

    >>> our_state("active"), our_state("active", True), our_state("unpaid"), our_state("canceled")
    ('active', 'canceled', 'past_due', None)
    """
    if status in ENDED or status in _WAITING:
        return None
    if status == "trialing":
        return "trialing"
    if status in {"past_due", "unpaid"}:
        return "past_due"
    if status == "active":
        return "canceled" if cancel_at_period_end else "active"
    raise ValueError(f"unknown subscription status {status!r}")


def converge(
    conn: Connection,
    provider: str,
    subscriber_id: int,
    view: ProviderSubscription,
    plans: Mapping[tuple[str, int], Plan],
    now: datetime,
    *,
    fallback: Plan | None = None,
) -> Subscription | None:
    """Make our subscription billed as ``view.ref`` match ``view``; return the subscriber's open one.

    A plan change at the provider opens a subscription on the new plan version (history
    keeps both). When it ends, ``fallback`` (the free plan) opens if nothing else is open.
    """
    current = current_subscription(conn, subscriber_id)
    ours = current if current is not None and current.provider_ref == view.ref else None
    state = our_state(view.status, view.cancel_at_period_end)
    if view.status in ENDED:
        if ours is not None:
            set_subscription_state(conn, ours.id, now, state="expired", ended_at=now)
            current = None
        if current is None and fallback is not None:  # whatever order the events came in
            return start_subscription(conn, subscriber_id, fallback, now, origin="downgrade")
        return current
    if state is None:
        return current
    plan = plans.get((view.plan_id, view.plan_version))
    if plan is None:
        raise LookupError(f"{provider} subscription {view.ref} is on unknown plan {view.plan_id} v{view.plan_version}")
    past_due_since = None
    if state == "past_due":
        past_due_since = ours.past_due_since if ours is not None and ours.past_due_since is not None else now
    if ours is not None and (ours.plan_id, ours.plan_version) == (view.plan_id, view.plan_version):
        wanted = (state, view.period_end, view.trial_end, past_due_since)
        if (ours.state, ours.period_end, ours.trial_end, ours.past_due_since) == wanted:
            return ours
        return set_subscription_state(
            conn,
            ours.id,
            now,
            state=state,
            period_end=view.period_end,
            trial_end=view.trial_end,
            past_due_since=past_due_since,
        )
    opened = start_subscription(
        conn,
        subscriber_id,
        plan,
        now,
        origin=provider,
        state=state,
        period_end=view.period_end,
        trial_end=view.trial_end,
        provider=provider,
        provider_ref=view.ref,
    )
    if past_due_since is not None:
        opened = set_subscription_state(conn, opened.id, now, past_due_since=past_due_since)
    return opened


class PaymentProvider(Protocol):
    """Takes payments. ``test_mode`` providers move no money and say so on every page."""

    name: str
    test_mode: bool

    async def sync_prices(self, plans: list[Plan]) -> None:
        """Make sure every paid plan version can be sold (Stripe: a Product and a Price)."""

    async def start(
        self, checkout: Checkout, *, subscriber: Subscriber | None, plan: Plan | None, success_url: str, cancel_url: str
    ) -> str:
        """Begin paying for ``checkout``; the URL to send the payer to."""
        ...

    async def portal(self, subscriber: Subscriber, return_url: str) -> str | None:
        """Where the subscriber manages cards, invoices and cancellation (None: our own page)."""
        ...

    async def cancel(self, subscription: Subscription) -> None:
        """Cancel at the end of the paid period."""
