"""Stripe, through the official ``stripe`` library.

Every request that creates something carries an idempotency key made from our own row ids
(``customer-{subscriber_id}``, ``checkout-{checkout_id}``, ``price-{plan}-v{version}``...), so a
crash between Stripe's answer and our commit, then a retry, finds the object Stripe already
made instead of making (and charging) a second one. Plans are sold as one Product per plan id
(its id is ``signalmint-{plan_id}``) and one Price per plan version, found again by its lookup
key ``{plan_id}-v{version}``: a changed price is a new version, hence a new Price, and
subscribers on the old one keep it.

Webhook events are applied by :mod:`signalmint.web.routes.stripe_webhook` with the mapping
below (:func:`subscription_view`): a subscription is always re-fetched, so the order in which
Stripe delivers events does not matter.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import cache
from typing import Any

import aiohttp
import stripe
from stripe.params import PriceCreateParams
from stripe.params.checkout import SessionCreateParams

from ..config import Settings
from ..errors import BillingError
from ..records import Checkout, MeterEvent, Plan, Subscriber, Subscription
from ..store import Connection, Database
from ..store.billing import (
    customer_ref,
    plan_of_price,
    price_ref,
    save_customer,
    save_price,
    set_checkout_ref,
    subscriber_of_customer,
)
from .core import ProviderSubscription
from .service import apply_subscription

__all__ = ["StripeProvider", "lookup_key", "subscriber_of", "subscription_view"]

NAME = "stripe"
log = logging.getLogger("signalmint.billing.stripe")


def lookup_key(plan_id: str, version: int) -> str:
    """The Price lookup key of one plan version.

    >>> lookup_key("premium", 3)
    'premium-v3'
    """
    return f"{plan_id}-v{version}"


def product_id(plan_id: str) -> str:
    return f"signalmint-{plan_id}"


def _at(timestamp: int | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp, UTC) if timestamp else None


def subscription_view(conn: Connection, sub: Mapping[str, Any]) -> ProviderSubscription | None:
    """Our view of a Stripe subscription object (None: its price is none of our plans).

    The plan comes from the Price (our ``provider_prices``, else the Price's metadata);
    the period end from the items (API versions since 2025-03) or the subscription itself.
    """
    items = (sub.get("items") or {}).get("data") or []
    if not items:
        return None
    price = items[0].get("price") or {}
    found = plan_of_price(conn, NAME, price.get("id", ""))
    if found is None:
        meta = price.get("metadata") or {}
        version = str(meta.get("plan_version", ""))
        if not meta.get("plan_id") or not (version.isascii() and version.isdigit() and len(version) <= 9):
            return None
        found = (meta["plan_id"], int(meta["plan_version"]))
    ends = [i["current_period_end"] for i in items if i.get("current_period_end")]
    period_end = max(ends) if ends else sub.get("current_period_end")
    return ProviderSubscription(
        ref=sub["id"],
        status=sub["status"],
        plan_id=found[0],
        plan_version=found[1],
        period_end=_at(period_end),
        trial_end=_at(sub.get("trial_end")),
        cancel_at_period_end=bool(sub.get("cancel_at_period_end") or sub.get("cancel_at")),
    )


def subscriber_of(conn: Connection, obj: Mapping[str, Any]) -> int | None:
    """Whose object this is: the Stripe customer we made for them, else our metadata on it."""
    customer = obj.get("customer")
    if isinstance(customer, Mapping):
        customer = customer.get("id")
    if customer:
        found = subscriber_of_customer(conn, NAME, customer)
        if found is not None:
            return found
    meta = obj.get("metadata") or {}
    value = str(meta.get("subscriber_id", ""))
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else None


@cache
def _stripe_tls() -> ssl.SSLContext:
    """The TLS context stripe's aiohttp client would make for each session: its CA bundle."""
    return ssl.create_default_context(cafile=stripe.ca_bundle_path)


class StripeProvider:
    """Payments through Stripe (``test_mode`` with an ``sk_test_`` key: Stripe moves no money)."""

    name = NAME

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        max_network_retries: int = 2,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        config = settings.billing.stripe
        if not config.secret_key:
            raise BillingError("billing.provider is stripe but billing.stripe.secret_key is not set")
        self.settings = settings
        self.config = config
        self.secret_key = config.secret_key
        self.db = db
        self.max_network_retries = max_network_retries
        self.clock = clock
        self.test_mode = config.secret_key.startswith(("sk_test_", "rk_test_"))

    @asynccontextmanager
    async def client(self) -> AsyncIterator[stripe.StripeClient]:
        """A client for one operation: its connections close with it, whatever loop runs it."""
        # aiohttp, not the library's first choice httpx: stripe 16 hands httpx raw bytes as
        # ``data=``, which httpx 0.28 deprecates with a warning on every request.
        # The library's own TLS set-up (its CA bundle), loaded once rather than for every
        # operation: loading the bundle costs ~15 ms of CPU.
        connector = aiohttp.TCPConnector(ssl=_stripe_tls())
        http = stripe.AIOHTTPClient(timeout=aiohttp.ClientTimeout(total=30), connector=connector)
        try:
            yield stripe.StripeClient(
                self.secret_key,
                base_addresses={"api": self.config.base_url},
                max_network_retries=self.max_network_retries,
                http_client=http,
            )
        finally:
            await http.close_async()  # type: ignore[no-untyped-call]  # untyped in stripe 16

    # -- plans --------------------------------------------------------------------------------

    async def sync_prices(self, plans: list[Plan]) -> None:
        """A Product per plan id and a Price per paid plan version, each made once."""
        async with self.client() as client:
            for plan in plans:
                if not plan.free:
                    await self._price(client, plan)

    async def _price(self, client: stripe.StripeClient, plan: Plan) -> str:
        known = await self.db.read(price_ref, NAME, plan.id, plan.version)
        if known is not None:
            return known
        product = await self._product(client, plan)
        key = lookup_key(plan.id, plan.version)
        found = await client.v1.prices.list_async({"lookup_keys": [key], "limit": 1})
        price = next(iter(found.data), None)
        terms = (plan.price, plan.currency, plan.interval)
        if price is None or (price.unit_amount, price.currency, price.recurring and price.recurring.interval) != terms:
            # A lookup key taken by other terms (a database started afresh) moves to the new Price.
            params: PriceCreateParams = {
                "product": product,
                "unit_amount": plan.price,
                "currency": plan.currency,
                "recurring": {"interval": "year" if plan.interval == "year" else "month"},
                "lookup_key": key,
                "nickname": f"{plan.name} v{plan.version}",
                "metadata": {"plan_id": plan.id, "plan_version": str(plan.version)},
            }
            idempotency = f"price-{plan.id}-v{plan.version}"
            if price is not None:
                params["transfer_lookup_key"] = True
                idempotency += f"-{plan.price}{plan.currency}-{plan.interval}"
            price = await client.v1.prices.create_async(params, {"idempotency_key": idempotency})
        await self.db.write(
            save_price,
            NAME,
            plan.id,
            plan.version,
            lookup_key=key,
            product_ref=product,
            price_ref=price.id,
            now=self.clock(),
        )
        return price.id

    async def _product(self, client: stripe.StripeClient, plan: Plan) -> str:
        ident = product_id(plan.id)
        try:
            return (await client.v1.products.retrieve_async(ident)).id
        except stripe.InvalidRequestError as exc:
            if exc.http_status != 404:
                raise
        try:
            created = await client.v1.products.create_async(
                {"id": ident, "name": plan.name, "metadata": {"plan_id": plan.id}},
                {"idempotency_key": f"product-{plan.id}"},
            )
        except stripe.InvalidRequestError as exc:
            if exc.code != "resource_already_exists":  # made meanwhile by another process
                raise
            return ident
        return created.id

    # -- customers and checkouts ----------------------------------------------------------------

    async def customer(self, subscriber: Subscriber) -> str:
        """The subscriber's Stripe customer, made once."""
        async with self.client() as client:
            return await self._customer(client, subscriber)

    async def _customer(self, client: stripe.StripeClient, subscriber: Subscriber) -> str:
        known = await self.db.read(customer_ref, subscriber.id, NAME)
        if known is not None:
            return known
        created = await client.v1.customers.create_async(
            {"email": subscriber.email, "metadata": {"subscriber_id": str(subscriber.id)}},
            {"idempotency_key": f"customer-{subscriber.id}"},
        )
        await self.db.write(save_customer, subscriber.id, NAME, created.id, self.clock())
        return created.id

    async def start(
        self, checkout: Checkout, *, subscriber: Subscriber | None, plan: Plan | None, success_url: str, cancel_url: str
    ) -> str:
        """A Checkout Session: ``subscription`` mode for a plan, ``payment`` mode for credits and tips."""
        meta = {"checkout_id": str(checkout.id), "kind": checkout.kind}
        if checkout.subscriber_id is not None:
            meta["subscriber_id"] = str(checkout.subscriber_id)
        async with self.client() as client:
            params: SessionCreateParams = {
                "client_reference_id": checkout.token,
                "metadata": meta,
                "success_url": success_url,
                "cancel_url": cancel_url,
            }
            if subscriber is not None:
                params["customer"] = await self._customer(client, subscriber)
            elif checkout.email:
                params["customer_email"] = checkout.email
            if checkout.kind == "subscription":
                if plan is None or subscriber is None:
                    raise BillingError("a subscription checkout needs a plan and a subscriber")
                params["mode"] = "subscription"
                params["line_items"] = [{"price": await self._price(client, plan), "quantity": 1}]
                params["allow_promotion_codes"] = True
                params["subscription_data"] = {"metadata": meta}
                if plan.trial_days:
                    params["subscription_data"]["trial_period_days"] = plan.trial_days
            else:
                label = "Credits" if checkout.kind == "credits" else "Tip"
                if checkout.automation:
                    label += f" for {checkout.automation}"
                params["mode"] = "payment"
                params["line_items"] = [
                    {
                        "price_data": {
                            "currency": checkout.currency,
                            "unit_amount": checkout.amount,
                            "product_data": {"name": label},
                        },
                        "quantity": 1,
                    }
                ]
                params["payment_intent_data"] = {"metadata": meta}
            session = await client.v1.checkout.sessions.create_async(
                params, {"idempotency_key": f"checkout-{checkout.id}"}
            )
        await self.db.write(set_checkout_ref, checkout.id, session.id)
        if not session.url:
            raise BillingError(f"Stripe gave checkout session {session.id} no URL")
        return session.url

    async def portal(self, subscriber: Subscriber, return_url: str) -> str | None:
        """Stripe's Customer Portal (cards, invoices, cancellation); None before any payment."""
        customer = await self.db.read(customer_ref, subscriber.id, NAME)
        if customer is None:
            return None
        minute = int(self.clock().timestamp()) // 60  # a double click within a minute gets the same session
        page = hashlib.sha256(return_url.encode()).hexdigest()[:12]
        async with self.client() as client:
            session = await client.v1.billing_portal.sessions.create_async(
                {"customer": customer, "return_url": return_url},
                {"idempotency_key": f"portal-{subscriber.id}-{minute}-{page}"},
            )
        return session.url

    async def cancel(self, subscription: Subscription) -> None:
        """Cancel at period end at Stripe, and apply Stripe's answer now (the webhook agrees later).

        Setting a flag creates nothing and is safe to repeat, so no key of ours: a fixed one would
        make Stripe replay the first cancel, unapplied, after a resume in the portal.
        """
        if subscription.provider != NAME or not subscription.provider_ref:
            raise BillingError(f"subscription {subscription.id} is not billed by Stripe")
        async with self.client() as client:
            updated = await client.v1.subscriptions.update_async(
                subscription.provider_ref, {"cancel_at_period_end": True}
            )
        stripe_sub = updated.to_dict()

        def write(conn: Connection) -> None:
            view = subscription_view(conn, stripe_sub)
            if view is not None:
                apply_subscription(conn, NAME, subscription.subscriber_id, view, self.clock())

        await self.db.write(write)

    # -- reading back (webhooks re-fetch what they name) ------------------------------------------

    async def fetch_subscription(self, ref: str) -> dict[str, Any] | None:
        """The subscription as Stripe has it now (None: Stripe does not know it)."""
        async with self.client() as client:
            try:
                return (await client.v1.subscriptions.retrieve_async(ref)).to_dict()
            except stripe.InvalidRequestError as exc:
                if exc.http_status == 404:
                    return None
                raise

    async def invoice_of_payment(self, payment_intent: str) -> str | None:
        """The invoice a PaymentIntent paid, if any (charges no longer name their invoice)."""
        async with self.client() as client:
            found = await client.v1.invoice_payments.list_async(
                {"payment": {"type": "payment_intent", "payment_intent": payment_intent}, "limit": 1}
            )
        for item in found.data:
            invoice = item.invoice
            return invoice if isinstance(invoice, str) else invoice.id
        return None

    # -- metered overage ------------------------------------------------------------------------

    async def send_meter_event(self, event: MeterEvent) -> None:
        """Report one ``meter_events`` row (the ``send`` of :func:`.metering.report_meter_events`).

        Its identifier, which Stripe deduplicates on, and the idempotency key made from it
        make a replay after a crash a no-op; a refusal raises :class:`BillingError`.
        """
        customer = await self.db.read(customer_ref, event.subscriber_id, NAME)
        if customer is None:
            raise BillingError(f"subscriber {event.subscriber_id} has no Stripe customer to bill the overage to")
        try:
            async with self.client() as client:
                await client.v1.billing.meter_events.create_async(
                    {
                        "event_name": event.event_name,
                        "identifier": event.identifier,
                        "payload": {"stripe_customer_id": customer, "value": str(event.value)},
                        "timestamp": int(event.created_at.timestamp()),
                    },
                    {"idempotency_key": f"meter-{event.identifier}"},
                )
        except stripe.StripeError as exc:
            raise BillingError(f"Stripe did not take meter event {event.identifier}: {exc}") from exc
