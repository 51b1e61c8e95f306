"""A paid plan's button sells it: email, confirm, checkout, paid dashboard, with no other stop.

Through the real app in-process, on real databases; the magic link is read from the
captured outbox, and the checkout is the local provider's TEST MODE page.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from signalmint.config import BillingConfig, PlanConfig, StripeConfig
from signalmint.store import Database
from signalmint.store.accounts import current_subscription, subscriber_by_email
from signalmint.store.tables import payments

from ..billing.fake_stripe import FakeStripe
from ..billing.test_stripe import API_KEY, WEBHOOK_SECRET
from ..conftest import LiveServer
from .test_account_pages import AUTOMATION, FREE_MASK, client_for, csrf_of, last_link, make_app, sign_up

PAGE = f"/automations/{AUTOMATION.name}"


def shop() -> list[PlanConfig]:
    """The demo's shape: free, Premium paid from day one, Pro with a trial."""
    return [
        PlanConfig(id="free", delay="15m", watchlist=3, masked_fields=FREE_MASK),
        PlanConfig(id="premium", name="Premium", price=2900, channels=["web", "email"]),
        PlanConfig(id="pro", name="Pro", price=9900, trial_days=7, channels=["web", "api"], api_quota=1000),
    ]


@pytest.fixture
def app(db: Database) -> FastAPI:
    return make_app(db, plans=shop(), automations=[AUTOMATION])


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with client_for(app) as c:
        yield c


def card_form(html: str, plan: str) -> tuple[str, str, str]:
    """The action, csrf and button label of the form on ``plan``'s pricing card."""
    for form in re.findall(r"<form[^>]*>.*?</form>", html, flags=re.S):
        if f'name="plan" value="{plan}"' in form:
            action = re.search(r'action="([^"]+)"', form)
            button = re.search(r"<button[^>]*>(.*?)</button>", form, flags=re.S)
            assert action is not None and button is not None
            return action.group(1), csrf_of(form), button.group(1).strip()
    raise AssertionError(f"no form for the {plan} plan on the page")


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def pay(client: TestClient, checkout: str) -> str:
    page = client.get(checkout)
    assert page.status_code == 200 and "TEST MODE" in page.text, page.text
    paid = client.post(checkout, data={"action": "pay", "csrf": csrf_of(page.text)})
    assert paid.status_code == 303
    return str(paid.headers["location"])


def test_the_premium_button_goes_email_confirm_checkout_paid_dashboard(
    client: TestClient, app: FastAPI, db: Database
) -> None:
    action, csrf, label = card_form(client.get(PAGE).text, "premium")
    assert (action, label) == ("/signup", "Get Premium")
    answer = client.post(action, data={"email": "ann@example.com", "plan": "premium", "csrf": csrf})
    assert answer.status_code == 200 and "checkout for the Premium plan" in answer.text
    confirmed = client.get(last_link(app, to="ann@example.com"))  # the link in the email
    assert confirmed.status_code == 303
    checkout = path_of(confirmed.headers["location"])
    assert re.fullmatch(r"/billing/checkout/[A-Za-z0-9_-]{32}", checkout), checkout  # no stop on the way
    assert "$29" in client.get(checkout).text
    done = pay(client, checkout)
    landed = client.get(done)
    assert landed.status_code == 303 and landed.headers["location"] == "/dashboard?saved=subscribed"
    dashboard = client.get(landed.headers["location"])
    assert dashboard.status_code == 200
    assert "Thank you" in dashboard.text and "Premium plan" in dashboard.text
    found = db.read_sync(subscriber_by_email, "ann@example.com")
    assert found is not None and found.confirmed
    sub = db.read_sync(current_subscription, found.id)
    assert sub is not None and (sub.plan_id, sub.state, sub.provider) == ("premium", "active", "local")
    rows = db.read_sync(lambda c: c.execute(select(payments)).all())
    assert [(r.kind, r.amount, r.plan_id) for r in rows] == [("subscription", 2900, "premium")]


def test_the_sign_up_page_sells_paid_plans_too(client: TestClient, app: FastAPI) -> None:
    page = client.get("/pricing", params={"plan": "premium"})
    assert page.status_code == 200
    assert "opens soon" not in page.text
    radio = re.search(r'<input type="radio" name="plan" value="premium"[^>]*>', page.text)
    assert radio is not None and "disabled" not in radio.group(0) and "checked" in radio.group(0)
    client.post("/signup", data={"email": "bob@example.com", "plan": "premium", "csrf": csrf_of(page.text)})
    confirmed = client.get(last_link(app, to="bob@example.com"))
    assert path_of(confirmed.headers["location"]).startswith("/billing/checkout/")


def test_the_link_carries_the_plan_not_its_price(client: TestClient, app: FastAPI, db: Database) -> None:
    """The checkout's amount is the plan's price when the link is used, whatever the form said."""
    csrf = csrf_of(client.get("/pricing").text)
    form = {"email": "cy@example.com", "plan": "premium", "csrf": csrf, "price": "1", "amount": "1"}
    client.post("/signup", data=form)
    checkout = path_of(client.get(last_link(app)).headers["location"])
    pay(client, checkout)
    rows = db.read_sync(lambda c: c.execute(select(payments.c.amount)).scalars().all())
    assert rows == [2900]


def test_a_signed_in_subscriber_goes_straight_to_checkout(client: TestClient, app: FastAPI) -> None:
    sign_up(client, app, "dee@example.com", "free")
    for page in (PAGE, "/pricing"):
        action, csrf, label = card_form(client.get(page).text, "premium")
        assert (action, label) == ("/billing/subscribe", "Get Premium")
        started = client.post(action, data={"plan": "premium", "csrf": csrf})
        assert started.status_code == 303
        assert path_of(started.headers["location"]).startswith("/billing/checkout/")


def test_with_stripe_the_link_opens_stripe_checkout(db: Database) -> None:
    """Configured for Stripe, the confirmation link goes straight to Stripe Checkout for the plan."""
    fake = FakeStripe(API_KEY)
    with LiveServer(fake) as server:
        fake.url = server.url
        stripe = BillingConfig(
            provider="stripe", stripe=StripeConfig(secret_key=API_KEY, webhook_secret=WEBHOOK_SECRET, base_url=fake.url)
        )
        app = make_app(db, plans=shop(), billing=stripe, secret="test-secret-0123456789abcdef")
        with client_for(app) as client:
            csrf = csrf_of(client.get("/pricing").text)
            client.post("/signup", data={"email": "fay@example.com", "plan": "premium", "csrf": csrf})
            confirmed = client.get(last_link(app, to="fay@example.com"))
    assert confirmed.status_code == 303
    assert confirmed.headers["location"].startswith("https://checkout.stripe.com/c/pay/")
    sessions = fake.posts("/v1/checkout/sessions")
    assert len(sessions) == 1 and sessions[0].params["mode"] == "subscription"
    found = db.read_sync(subscriber_by_email, "fay@example.com")
    assert found is not None and found.confirmed
    sub = db.read_sync(current_subscription, found.id)
    assert sub is not None and sub.plan_id == "free"  # Premium starts when Stripe says it is paid
