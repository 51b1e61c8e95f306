"""The local (test-mode) provider end to end: subscribe, pay, renew, cancel; credits and tips."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from signalmint.config import PlanConfig
from signalmint.records import Subscription
from signalmint.store import Database
from signalmint.store.accounts import current_subscription, subscriber_by_email
from signalmint.store.tables import payments, subscription_history, wallets

from ..web.test_account_pages import client_for, csrf_of, make_app, plans, sign_up


def all_plans() -> list[PlanConfig]:
    return [*plans(), PlanConfig(id="basic", price=500, channels=["web", "email"])]


@pytest.fixture
def app(db: Database) -> FastAPI:
    return make_app(db, plans=all_plans())


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with client_for(app) as c:
        yield c


def sub_of(db: Database, email: str = "ann@example.com") -> tuple[int, Subscription | None]:
    found = db.read_sync(subscriber_by_email, email)
    assert found is not None
    return found.id, db.read_sync(current_subscription, found.id)


def start_checkout(client: TestClient, form: str, **fields: str) -> str:
    csrf = csrf_of(client.get("/dashboard/billing").text)
    answer = client.post(form, data={**fields, "csrf": csrf})
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    assert re.fullmatch(r"/billing/checkout/[A-Za-z0-9_-]{32}", location), location
    return location


def pay(client: TestClient, location: str, action: str = "pay") -> str:
    page = client.get(location)
    assert page.status_code == 200 and "TEST MODE" in page.text
    answer = client.post(location, data={"action": action, "csrf": csrf_of(page.text)})
    assert answer.status_code == 303
    return str(answer.headers["location"])


def test_subscribing_in_test_mode_opens_the_plan_and_records_the_payment(
    client: TestClient, app: FastAPI, db: Database
) -> None:
    sign_up(client, app, "ann@example.com", "basic")  # paid from day one: starts on the free plan
    subscriber_id, sub = sub_of(db)
    assert sub is not None and sub.plan_id == "free"
    location = start_checkout(client, "/billing/subscribe", plan="basic")
    done = pay(client, location)
    assert done.startswith("/billing/done?checkout=")
    assert "Thank you" in client.get(done, follow_redirects=True).text  # on the dashboard it bought
    _, sub = sub_of(db)
    assert sub is not None and (sub.plan_id, sub.state, sub.provider) == ("basic", "active", "local")
    assert sub.period_end is not None and sub.period_end > datetime.now(UTC) + timedelta(days=27)
    rows = db.read_sync(lambda c: c.execute(select(payments)).all())
    assert [(r.kind, r.amount, r.provider, r.subscriber_id) for r in rows] == [
        ("subscription", 500, "local", subscriber_id)
    ]
    assert rows[0].fee == 45  # Stripe's default fee model: 2.9% of 500 is 14.5, half up to 15, + 30
    # paying twice (a double click, a replayed form) changes nothing
    replay = client.post(location, data={"action": "pay", "csrf": client.cookies.get("sm_csrf")})
    assert replay.status_code == 303
    assert db.read_sync(lambda c: c.execute(select(func.count()).select_from(payments)).scalar()) == 1
    mrr = db.read_sync(
        lambda c: c.execute(
            select(subscription_history.c.mrr).order_by(subscription_history.c.id.desc()).limit(1)
        ).scalar()
    )
    assert mrr == 500
    assert "Plan" in client.get("/dashboard/billing").text and "$5" in client.get("/dashboard/billing").text


def test_a_trial_plan_starts_trialing_with_nothing_charged(client: TestClient, app: FastAPI, db: Database) -> None:
    sign_up(client, app, "ann@example.com", "free")
    pay(client, start_checkout(client, "/billing/subscribe", plan="premium"))
    _, sub = sub_of(db)
    assert sub is not None and (sub.plan_id, sub.state) == ("premium", "trialing")
    assert db.read_sync(lambda c: c.execute(select(func.count()).select_from(payments)).scalar()) == 0


def test_a_checkout_belongs_to_whoever_started_it(app: FastAPI, db: Database) -> None:
    with client_for(app) as ann, client_for(app) as bob:
        sign_up(ann, app, "ann@example.com", "free")
        sign_up(bob, app, "bob@example.com", "free")
        location = start_checkout(ann, "/billing/subscribe", plan="basic")
        assert bob.get(location).status_code == 404
        page = ann.get(location)
        bob.cookies.set("sm_csrf", csrf_of(page.text))
        assert bob.post(location, data={"action": "pay", "csrf": csrf_of(page.text)}).status_code == 404
        _, sub = sub_of(db)
        assert sub is not None and sub.plan_id == "free"


def test_canceling_the_checkout_changes_nothing(client: TestClient, app: FastAPI, db: Database) -> None:
    sign_up(client, app, "ann@example.com", "free")
    pay(client, start_checkout(client, "/billing/subscribe", plan="basic"), action="cancel")
    _, sub = sub_of(db)
    assert sub is not None and sub.plan_id == "free"


def test_bad_forms_get_a_4xx_with_a_message(client: TestClient, app: FastAPI) -> None:
    sign_up(client, app, "ann@example.com", "free")
    csrf = csrf_of(client.get("/dashboard/billing").text)
    assert client.post("/billing/subscribe", data={"plan": "nope", "csrf": csrf}).status_code == 400
    free = client.post("/billing/subscribe", data={"plan": "free", "csrf": csrf})
    assert free.status_code == 400 and "free" in free.text
    for amount in ["", "-5", "1e9", "12.50", "9999999999"]:
        answer = client.post("/billing/credits", data={"amount": amount, "csrf": csrf})
        assert answer.status_code == 400, amount
    assert client.post("/billing/subscribe", data={"plan": "basic", "csrf": "forged"}).status_code == 403
    assert client.get("/billing/checkout/not-a-token").status_code == 404


def test_credits_top_up_fills_the_wallet_once(client: TestClient, app: FastAPI, db: Database) -> None:
    sign_up(client, app, "ann@example.com", "free")
    subscriber_id, _ = sub_of(db)
    location = start_checkout(client, "/billing/credits", amount="1000")
    pay(client, location)
    replay = client.post(location, data={"action": "pay", "csrf": client.cookies.get("sm_csrf")})
    assert replay.status_code == 303
    balance = db.read_sync(
        lambda c: c.execute(select(wallets.c.balance).where(wallets.c.subscriber_id == subscriber_id)).scalar()
    )
    assert balance == 10_000_000  # 10.00 USD in micro-units
    assert "$10" in client.get("/dashboard/billing").text
    statement = client.get("/dashboard/ledger.csv")
    assert statement.status_code == 200 and statement.headers["content-type"].startswith("text/csv")
    lines = statement.text.strip().splitlines()
    assert len(lines) == 2 and "topup" in lines[1] and "10.000000" in lines[1], lines


def test_a_visitor_can_tip(app: FastAPI, db: Database) -> None:
    with client_for(app) as visitor:
        page = visitor.get("/tip", params={"amount": "300"})
        assert page.status_code == 200 and 'value="300"' in page.text
        assert visitor.get("/tip", params={"automation": "no-such"}).status_code == 404
        csrf = csrf_of(page.text)
        answer = visitor.post("/billing/tip", data={"amount": "300", "csrf": csrf})
        assert answer.status_code == 303
        assert "TEST MODE" in visitor.get(answer.headers["location"]).text
        pay(visitor, answer.headers["location"])
        too_small = visitor.post("/billing/tip", data={"amount": "5", "csrf": csrf})
        assert too_small.status_code == 400
    rows = db.read_sync(lambda c: c.execute(select(payments)).all())
    assert [(r.kind, r.amount, r.subscriber_id) for r in rows] == [("tip", 300, None)]


def test_renewals_charge_each_period_and_a_cancel_ends_at_period_end(
    client: TestClient, app: FastAPI, db: Database
) -> None:
    sign_up(client, app, "ann@example.com", "free")
    pay(client, start_checkout(client, "/billing/subscribe", plan="basic"))
    _, sub = sub_of(db)
    assert sub is not None and sub.period_end is not None
    provider = app.state.ctx.billing.provider
    later = sub.period_end + timedelta(days=40)  # two periods missed: two renewals, once each
    assert db.write_sync(provider.renew_due, later) == 1
    assert db.write_sync(provider.renew_due, later) == 0
    count = db.read_sync(lambda c: c.execute(select(func.count()).select_from(payments)).scalar())
    assert count == 3
    _, renewed = sub_of(db)
    assert renewed is not None and renewed.period_end is not None and renewed.period_end > later
    csrf = csrf_of(client.get("/dashboard/billing").text)
    assert client.post("/billing/cancel", data={"csrf": csrf}).status_code == 303
    _, canceled = sub_of(db)
    assert canceled is not None and (canceled.plan_id, canceled.state) == ("basic", "canceled")
    db.write_sync(provider.renew_due, renewed.period_end + timedelta(seconds=1))
    _, after = sub_of(db)
    assert after is not None and after.plan_id == "free"  # ended: back on the free plan
