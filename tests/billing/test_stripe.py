"""The Stripe provider against a local fake Stripe API (uvicorn on 127.0.0.1): prices, checkouts,
the portal, cancellation, meter events, and idempotency keys that survive a crash and a replay."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import stripe

from signalmint.accounts.mail import LogMailer
from signalmint.billing.metering import report_meter_events
from signalmint.billing.service import Billing
from signalmint.billing.stripe_events import apply_event, fetch_for
from signalmint.billing.stripe_provider import StripeProvider, subscription_view
from signalmint.config import BillingConfig, PlanConfig, Settings, StripeConfig
from signalmint.errors import BillingError
from signalmint.records import Checkout, MeterEvent, Plan, Subscriber
from signalmint.store import Database
from signalmint.store.accounts import confirm_subscriber, current_subscription, ensure_subscriber, get_subscriber
from signalmint.store.billing import create_checkout, customer_ref, get_checkout, price_ref
from signalmint.store.ledger import get_meter_event, insert_meter_event
from signalmint.store.plans import sync_plans

from ..conftest import LiveServer
from .fake_stripe import FakeStripe

API_KEY = "sk_test_signalmint"
WEBHOOK_SECRET = "whsec_test_signalmint"


def stripe_plans(premium_price: int = 2900) -> list[PlanConfig]:
    return [
        PlanConfig(id="free", delay="15m"),
        PlanConfig(id="premium", name="Premium", price=premium_price, trial_days=7, channels=["web", "email"]),
        PlanConfig(id="pro", name="Pro", price=9900, channels=["web", "api"], api_quota=1000, overage_price=1),
    ]


def stripe_settings(db: Database, url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database": db.url,
        "secret": "test-secret-0123456789abcdef",
        "plans": stripe_plans(),
        "billing": BillingConfig(
            provider="stripe",
            stripe=StripeConfig(secret_key=API_KEY, webhook_secret=WEBHOOK_SECRET, base_url=url),
        ),
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    """The fake Stripe API, served on 127.0.0.1 (its ``url`` set)."""
    fake = FakeStripe(API_KEY)
    with LiveServer(fake) as server:
        fake.url = server.url
        yield fake


def synced(db: Database, settings: Settings) -> dict[str, Plan]:
    """The settings' plans stored (versions assigned), by id."""
    return {p.id: p for p in db.write_sync(sync_plans, settings.current_plans(), datetime.now(UTC))}


def person(db: Database, email: str) -> Subscriber:
    def write(conn: Any) -> int:
        found = ensure_subscriber(conn, email, datetime.now(UTC))
        confirm_subscriber(conn, found.id, datetime.now(UTC))
        return found.id

    found = db.read_sync(get_subscriber, db.write_sync(write))
    assert found is not None
    return found


class Shop:
    """A Billing with the Stripe provider, over a database with the plans stored."""

    def __init__(self, db: Database, fake: FakeStripe, **overrides: Any) -> None:
        self.db = db
        self.fake = fake
        self.settings = stripe_settings(db, fake.url, **overrides)
        self.plans = synced(db, self.settings)
        self.provider = StripeProvider(self.settings, db)
        self.billing = Billing(
            self.settings, db, self.provider, LogMailer(), current_plans=lambda: list(self.plans.values())
        )

    def restarted(self, **kwargs: Any) -> StripeProvider:
        """A new provider, as after a crash and a restart (nothing carried over in memory)."""
        return StripeProvider(self.settings, self.db, **kwargs)


@pytest.fixture
def shop(db: Database, fake_stripe: FakeStripe) -> Shop:
    return Shop(db, fake_stripe)


def keys(fake: FakeStripe, path: str) -> list[str | None]:
    return [r.idempotency_key for r in fake.posts(path)]


# --- plans: a Product per plan, a Price per version -------------------------------------------


def test_sync_prices_makes_one_product_and_price_per_paid_plan_once(shop: Shop) -> None:
    asyncio.run(shop.provider.sync_prices(list(shop.plans.values())))
    products = shop.fake.created("signalmint-")
    prices = shop.fake.created("price_")
    assert sorted(p["id"] for p in products) == ["signalmint-premium", "signalmint-pro"]  # free: nothing to sell
    assert sorted((p["lookup_key"], p["unit_amount"], p["recurring"]["interval"]) for p in prices) == [
        ("premium-v1", 2900, "month"),
        ("pro-v1", 9900, "month"),
    ]
    assert keys(shop.fake, "/v1/products") == ["product-premium", "product-pro"]
    assert keys(shop.fake, "/v1/prices") == ["price-premium-v1", "price-pro-v1"]
    stored = shop.db.read_sync(price_ref, "stripe", "premium", 1)
    assert stored == next(p["id"] for p in prices if p["lookup_key"] == "premium-v1")
    before = len(shop.fake.requests)
    asyncio.run(shop.restarted().sync_prices(list(shop.plans.values())))
    assert len(shop.fake.requests) == before  # known prices: not even a lookup


def test_a_price_stored_at_stripe_but_not_here_is_found_by_its_lookup_key(shop: Shop) -> None:
    premium = shop.plans["premium"]
    shop.fake.lose_answers("/v1/prices")  # the Price is made, the answer never arrives
    with pytest.raises(stripe.APIError):
        asyncio.run(shop.restarted(max_network_retries=0).sync_prices([premium]))
    assert shop.db.read_sync(price_ref, "stripe", "premium", 1) is None
    asyncio.run(shop.restarted().sync_prices([premium]))
    assert len(shop.fake.created("price_")) == 1
    assert shop.db.read_sync(price_ref, "stripe", "premium", 1) == shop.fake.created("price_")[0]["id"]


def test_a_changed_price_is_a_new_price_and_subscribers_keep_theirs(db: Database, fake_stripe: FakeStripe) -> None:
    shop = Shop(db, fake_stripe)
    ann = person(db, "ann@example.com")
    checkout, _ = asyncio.run(shop.billing.subscribe(ann.id, "premium"))
    events = fake_stripe.complete_checkout(_session_of(db, checkout))
    old_price = db.read_sync(price_ref, "stripe", "premium", 1)

    raised = Shop(db, fake_stripe, plans=stripe_plans(premium_price=3900))  # the operator raises the price
    assert raised.plans["premium"].version == 2
    asyncio.run(raised.provider.sync_prices(list(raised.plans.values())))
    new_price = db.read_sync(price_ref, "stripe", "premium", 2)
    assert new_price is not None and new_price != old_price
    by_id = {p["id"]: p for p in fake_stripe.created("price_")}
    assert (by_id[new_price]["unit_amount"], by_id[new_price]["lookup_key"]) == (3900, "premium-v2")
    assert (by_id[old_price]["unit_amount"], by_id[old_price]["lookup_key"]) == (2900, "premium-v1")
    # Ann's Stripe subscription still bills the old Price, which still maps to version 1
    sub = next(iter(fake_stripe.created("sub_")))
    assert sub["items"]["data"][0]["price"]["id"] == old_price
    view = db.read_sync(subscription_view, sub)
    assert view is not None and (view.plan_id, view.plan_version) == ("premium", 1)
    for event in [*events, *fake_stripe.renew(sub["id"])]:  # and her renewal keeps her on version 1
        fetched = asyncio.run(fetch_for(raised.provider, event))
        db.write_sync(apply_event, raised.settings, event, fetched, datetime.now(UTC))
    hers = db.read_sync(current_subscription, ann.id)
    assert hers is not None and (hers.plan_id, hers.plan_version, hers.state) == ("premium", 1, "active")
    # a new subscriber pays the new price
    bob = person(db, "bob@example.com")
    asyncio.run(raised.billing.subscribe(bob.id, "premium"))
    session = fake_stripe.posts("/v1/checkout/sessions")[-1]
    assert session.params["line_items"] == [{"price": new_price, "quantity": "1"}]


def _session_of(db: Database, checkout: Checkout) -> str:
    stored = db.read_sync(get_checkout, checkout_id=checkout.id)
    assert stored is not None and stored.provider_ref is not None
    return stored.provider_ref


# --- checkouts ----------------------------------------------------------------------------------


def test_a_subscription_checkout_is_a_stripe_checkout_session(shop: Shop) -> None:
    ann = person(shop.db, "ann@example.com")
    checkout, url = asyncio.run(shop.billing.subscribe(ann.id, "premium"))
    session = shop.fake.created("cs_test_")[0]
    assert url == session["url"] and url.startswith("https://checkout.stripe.com/")
    assert _session_of(shop.db, checkout) == session["id"]
    sent = shop.fake.posts("/v1/checkout/sessions")[0]
    assert sent.idempotency_key == f"checkout-{checkout.id}"
    customer = shop.db.read_sync(customer_ref, ann.id, "stripe")
    assert sent.params["mode"] == "subscription"
    assert sent.params["customer"] == customer
    assert sent.params["client_reference_id"] == checkout.token
    assert sent.params["allow_promotion_codes"] == "true"
    assert sent.params["subscription_data"]["trial_period_days"] == "7"
    assert sent.params["metadata"] == {
        "checkout_id": str(checkout.id),
        "kind": "subscription",
        "subscriber_id": str(ann.id),
    }
    assert sent.params["line_items"] == [
        {"price": shop.db.read_sync(price_ref, "stripe", "premium", 1), "quantity": "1"}
    ]
    assert sent.params["success_url"].endswith(f"/billing/done?checkout={checkout.token}")
    assert keys(shop.fake, "/v1/customers") == [f"customer-{ann.id}"]
    assert shop.fake.created("cus_")[0]["email"] == "ann@example.com"


def test_credits_and_tips_are_payment_mode_sessions_with_their_amount(shop: Shop) -> None:
    ann = person(shop.db, "ann@example.com")
    top_up, _ = asyncio.run(shop.billing.top_up(ann.id, 1000))
    tip, _ = asyncio.run(shop.billing.tip(500, subscriber_id=None, email="fan@example.com", automation=None))
    first, second = shop.fake.posts("/v1/checkout/sessions")
    assert first.params["mode"] == "payment"
    assert first.params["line_items"][0]["price_data"] == {
        "currency": "usd",
        "unit_amount": "1000",
        "product_data": {"name": "Credits"},
    }
    assert first.params["payment_intent_data"]["metadata"]["checkout_id"] == str(top_up.id)
    assert (second.params["mode"], second.params["customer_email"]) == ("payment", "fan@example.com")
    assert second.params["line_items"][0]["price_data"]["unit_amount"] == "500"
    assert "customer" not in second.params  # a visitor's tip makes no customer
    assert [first.idempotency_key, second.idempotency_key] == [f"checkout-{top_up.id}", f"checkout-{tip.id}"]


def test_a_crash_between_stripe_and_our_commit_then_a_retry_creates_nothing_twice(shop: Shop) -> None:
    ann = person(shop.db, "ann@example.com")
    plan = shop.plans["premium"]
    asyncio.run(shop.provider.sync_prices([plan]))
    checkout = shop.db.write_sync(
        create_checkout,
        token="tok-crash",
        now=datetime.now(UTC),
        provider="stripe",
        kind="subscription",
        subscriber_id=ann.id,
        plan_id="premium",
        plan_version=plan.version,
        amount=plan.price,
        currency="usd",
    )

    def start(provider: StripeProvider) -> str:
        return asyncio.run(
            provider.start(checkout, subscriber=ann, plan=plan, success_url="https://x/ok", cancel_url="https://x/no")
        )

    # 1: the customer is made at Stripe, the answer is lost: nothing stored here
    shop.fake.lose_answers("/v1/customers")
    with pytest.raises(stripe.APIError):
        start(shop.restarted(max_network_retries=0))
    assert shop.db.read_sync(customer_ref, ann.id, "stripe") is None
    # 2: the session is made at Stripe, the answer is lost
    shop.fake.lose_answers("/v1/checkout/sessions")
    with pytest.raises(stripe.APIError):
        start(shop.restarted(max_network_retries=0))
    # 3: the replay after the restart
    url = start(shop.restarted(max_network_retries=0))
    assert keys(shop.fake, "/v1/customers") == [f"customer-{ann.id}", f"customer-{ann.id}"]
    assert keys(shop.fake, "/v1/checkout/sessions") == [f"checkout-{checkout.id}", f"checkout-{checkout.id}"]
    assert len(shop.fake.created("cus_")) == 1
    sessions = shop.fake.created("cs_test_")
    assert len(sessions) == 1 and url == sessions[0]["url"]
    first, replay = shop.fake.posts("/v1/checkout/sessions")
    assert first.params == replay.params  # same key, same request: Stripe replays instead of refusing
    # and the library's own retries (on by default) reuse our key too
    shop.fake.lose_answers("/v1/checkout/sessions")
    assert start(shop.restarted()) == url
    assert set(keys(shop.fake, "/v1/checkout/sessions")) == {f"checkout-{checkout.id}"}
    assert len(shop.fake.created("cs_test_")) == 1


def test_portal_and_cancel(shop: Shop) -> None:
    ann = person(shop.db, "ann@example.com")
    assert asyncio.run(shop.provider.portal(ann, "https://x/billing")) is None  # never paid: our own page
    checkout, _ = asyncio.run(shop.billing.subscribe(ann.id, "pro"))
    events = shop.fake.complete_checkout(_session_of(shop.db, checkout))
    sub_id = events[0]["data"]["object"]["id"]
    for event in events:
        fetched = asyncio.run(fetch_for(shop.provider, event))
        shop.db.write_sync(apply_event, shop.settings, event, fetched, datetime.now(UTC))
    ours = shop.db.read_sync(current_subscription, ann.id)
    assert ours is not None and (ours.plan_id, ours.state, ours.provider_ref) == ("pro", "active", sub_id)

    url = asyncio.run(shop.provider.portal(ann, "https://x/billing"))
    portal = shop.fake.posts("/v1/billing_portal/sessions")[0]
    assert url is not None and url.startswith("https://billing.stripe.com/")
    assert portal.params == {
        "customer": shop.db.read_sync(customer_ref, ann.id, "stripe"),
        "return_url": "https://x/billing",
    }
    assert portal.idempotency_key is not None and portal.idempotency_key.startswith(f"portal-{ann.id}-")

    asyncio.run(shop.provider.cancel(ours))
    assert shop.fake.objects[sub_id]["cancel_at_period_end"] is True
    after = shop.db.read_sync(current_subscription, ann.id)
    assert after is not None and (after.id, after.state) == (ours.id, "canceled")  # paid until period end
    shop.fake.update(sub_id, cancel_at_period_end=False)  # resumed in the portal
    asyncio.run(shop.provider.cancel(ours))  # and canceled again: done again, not replayed
    assert shop.fake.objects[sub_id]["cancel_at_period_end"] is True


# --- metered overage ----------------------------------------------------------------------------


def test_meter_events_carry_our_identifier_and_a_replay_charges_nothing_twice(shop: Shop) -> None:
    ann = person(shop.db, "ann@example.com")
    asyncio.run(shop.provider.customer(ann))
    at = datetime(2026, 5, 3, 12, 0, tzinfo=UTC)
    event = MeterEvent(f"ovg-{ann.id}-2026-05-40", ann.id, "api_overage", 40, "2026-05", at)
    assert shop.db.write_sync(insert_meter_event, event)

    shop.fake.lose_answers("/v1/billing/meter_events")  # Stripe takes it; we never hear back
    send = shop.restarted(max_network_retries=0).send_meter_event
    assert asyncio.run(report_meter_events(shop.db, send)) == 0
    stored = shop.db.read_sync(get_meter_event, event.identifier)
    assert stored is not None and stored.reported_at is None and stored.attempts == 1
    assert asyncio.run(report_meter_events(shop.db, shop.restarted().send_meter_event)) == 1  # the replay
    assert asyncio.run(report_meter_events(shop.db, shop.restarted().send_meter_event)) == 0  # nothing pending

    customer = shop.db.read_sync(customer_ref, ann.id, "stripe")
    assert shop.fake.meter_events == [
        {
            "object": "billing.meter_event",
            "event_name": "api_overage",
            "identifier": f"ovg-{ann.id}-2026-05-40",
            "payload": {"stripe_customer_id": customer, "value": "40"},
            "timestamp": int(at.timestamp()),
            "created": shop.fake.meter_events[0]["created"],
            "livemode": False,
        }
    ]
    assert keys(shop.fake, "/v1/billing/meter_events") == [f"meter-ovg-{ann.id}-2026-05-40"] * 2


def test_a_meter_event_without_a_stripe_customer_is_refused_as_a_billing_error(shop: Shop) -> None:
    ann = person(shop.db, "ann@example.com")
    event = MeterEvent(f"ovg-{ann.id}-2026-05-1", ann.id, "api_overage", 1, "2026-05", datetime.now(UTC))
    with pytest.raises(BillingError, match="no Stripe customer"):
        asyncio.run(shop.provider.send_meter_event(event))
    assert shop.fake.meter_events == []


def test_a_wrong_api_key_is_refused_by_the_fake_as_by_stripe(db: Database, fake_stripe: FakeStripe) -> None:
    wrong = StripeConfig(secret_key="sk_test_wrong", webhook_secret=WEBHOOK_SECRET, base_url=fake_stripe.url)
    settings = stripe_settings(db, fake_stripe.url, billing=BillingConfig(provider="stripe", stripe=wrong))
    provider = StripeProvider(settings, db)
    with pytest.raises(stripe.AuthenticationError):
        asyncio.run(provider.sync_prices(list(synced(db, settings).values())))
    assert provider.test_mode
