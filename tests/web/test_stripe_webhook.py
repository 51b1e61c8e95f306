"""Stripe webhooks posted to the running app (uvicorn on 127.0.0.1), signed with
``stripe.WebhookSignature.generate_signature_header``; the app reads back from a local fake
Stripe API. Refused deliveries change nothing, duplicates apply once, and any order of the
same events ends in the same subscription state."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, select

from signalmint.billing.core import our_state
from signalmint.billing.service import Billing
from signalmint.records import Subscriber
from signalmint.store import Database
from signalmint.store.accounts import current_subscription, start_subscription
from signalmint.store.billing import get_checkout, price_ref
from signalmint.store.plans import load_plans
from signalmint.store.tables import billing_events, checkouts, payments, subscription_history, subscriptions, wallets
from signalmint.web.app import create_app

from ..billing.fake_stripe import FakeStripe
from ..billing.test_stripe import API_KEY, WEBHOOK_SECRET, person, stripe_settings
from ..conftest import LiveServer

HOOK = "/billing/stripe/webhook"


class Site:
    """The app with Stripe as its provider, served on 127.0.0.1, next to the fake Stripe API."""

    def __init__(self, db: Database, fake: FakeStripe) -> None:
        self.db = db
        self.fake = fake
        self.app = create_app(stripe_settings(db, fake.url), db)
        self.ctx = self.app.state.ctx
        billing = self.ctx.billing
        assert isinstance(billing, Billing)
        self.billing = billing
        asyncio.run(billing.provider.sync_prices([p for p in billing.current_plans() if not p.free]))
        self.emails = itertools.count(1)
        self.url = ""  # where the app is served
        self.http = httpx.Client()  # one client: each new one loads the CA bundle again (~0.1 s of CPU)

    def post(self, event: dict[str, Any], *, secret: str = WEBHOOK_SECRET, **kw: Any) -> httpx.Response:
        body, headers = self.fake.signed(event, secret, **kw)
        return self.http.post(self.url + HOOK, content=body, headers=headers)

    def deliver(self, events: list[dict[str, Any]]) -> list[httpx.Response]:
        answers = [self.post(e) for e in events]
        assert [a.status_code for a in answers] == [200] * len(answers), [a.text for a in answers]
        return answers

    def subscriber(self) -> Subscriber:
        """A new confirmed subscriber on the free plan (as signing up leaves them)."""
        who = person(self.db, f"s{next(self.emails)}@example.com")
        free = next(p for p in self.billing.current_plans() if p.free)
        self.db.write_sync(start_subscription, who.id, free, datetime.now(UTC), origin="signup")
        return who

    def subscribe(self, who: Subscriber, plan: str) -> tuple[str, list[dict[str, Any]]]:
        """Check out ``plan`` and pay: the Stripe subscription id and the events Stripe sends."""
        checkout, _ = asyncio.run(self.billing.subscribe(who.id, plan))
        stored = self.db.read_sync(get_checkout, checkout_id=checkout.id)
        assert stored is not None and stored.provider_ref is not None
        events = self.fake.complete_checkout(stored.provider_ref)
        return str(events[0]["data"]["object"]["id"]), events


@pytest.fixture
def site(db: Database) -> Iterator[Site]:
    fake = FakeStripe(API_KEY)
    with LiveServer(fake) as stripe_server:
        fake.url = stripe_server.url
        made = Site(db, fake)
        with LiveServer(made.app) as app_server, made.http:
            made.url = app_server.url
            yield made


def snapshot(db: Database) -> dict[str, list[Any]]:
    """Every billing-related row, to show that a refused delivery changed nothing."""

    def read(conn: Connection) -> dict[str, list[Any]]:
        tables = (billing_events, checkouts, payments, subscriptions, subscription_history, wallets)
        return {t.name: [tuple(r) for r in conn.execute(select(t))] for t in tables}

    return db.read_sync(read)


def ours(site: Site, who: Subscriber) -> Any:
    return site.db.read_sync(current_subscription, who.id)


def paid(site: Site, who: Subscriber) -> list[tuple[str, str, int, int, str]]:
    rows = site.db.read_sync(lambda c: c.execute(select(payments).where(payments.c.subscriber_id == who.id)).all())
    return [(r.kind, r.provider_ref, r.amount, r.refunded, r.status) for r in rows]


# --- signatures --------------------------------------------------------------------------------


def _tampered(site: Site, event: dict[str, Any]) -> httpx.Response:
    body, headers = site.fake.signed(event, WEBHOOK_SECRET)
    return site.http.post(site.url + HOOK, content=body.replace(b'"paid"', b'"PAID"', 1), headers=headers)


def _no_header(site: Site, event: dict[str, Any]) -> httpx.Response:
    body, headers = site.fake.signed(event, WEBHOOK_SECRET)
    del headers["Stripe-Signature"]
    return site.http.post(site.url + HOOK, content=body, headers=headers)


def _garbled(site: Site, event: dict[str, Any]) -> httpx.Response:
    body, headers = site.fake.signed(event, WEBHOOK_SECRET)
    return site.http.post(site.url + HOOK, content=body, headers={**headers, "Stripe-Signature": "t=soon,v1=abc"})


REFUSED = {
    "tampered body": (_tampered, "No signatures found matching"),
    "wrong secret": (lambda s, e: s.post(e, secret="whsec_someone_else"), "No signatures found matching"),
    "stale timestamp": (lambda s, e: s.post(e, timestamp=int(time.time()) - 400), "tolerance"),
    "future timestamp": (lambda s, e: s.post(e, timestamp=int(time.time()) + 400), "in the future"),
    "missing header": (_no_header, "No Stripe-Signature header"),
    "garbled header": (_garbled, "Unable to extract timestamp"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_badly_signed_delivery_gets_400_and_changes_nothing(site: Site, case: str) -> None:
    who = site.subscriber()
    _, events = site.subscribe(who, "pro")
    completed = events[-1]
    assert completed["type"] == "checkout.session.completed"
    before, asked = snapshot(site.db), len(site.fake.requests)
    send, message = REFUSED[case]
    answer = send(site, completed)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["detail"]
    assert snapshot(site.db) == before
    assert len(site.fake.requests) == asked  # not even a read from Stripe
    # the same event, signed right (and a minute ahead, within the tolerance), is applied
    answer = site.post(completed, timestamp=int(time.time()) + 60)
    assert answer.status_code == 200, answer.text
    assert ours(site, who).plan_id == "pro"


# --- once, whatever the order ---------------------------------------------------------------------


def test_a_duplicate_event_applies_once(site: Site) -> None:
    who = site.subscriber()
    _, events = site.subscribe(who, "pro")
    first = site.deliver(events)
    assert [a.json()["detail"] for a in first][-1].endswith("fulfilled")
    state, money = snapshot(site.db), paid(site, who)
    assert money == [("subscription", money[0][1], 9900, 0, "paid")]
    again = site.deliver([*events, events[1]])  # Stripe delivers at least once
    assert {a.json()["detail"] for a in again} == {"already processed"}
    assert snapshot(site.db) == state
    seen = site.db.read_sync(lambda c: c.execute(select(billing_events.c.event_id)).scalars().all())
    assert sorted(seen) == sorted(e["id"] for e in events)


def test_credits_checkout_then_a_refund(site: Site) -> None:
    who = site.subscriber()
    checkout, _ = asyncio.run(site.billing.top_up(who.id, 1500))
    stored = site.db.read_sync(get_checkout, checkout_id=checkout.id)
    assert stored is not None and stored.provider_ref is not None
    events = site.fake.complete_checkout(stored.provider_ref)
    site.deliver(events * 2)
    intent = events[-1]["data"]["object"]["payment_intent"]
    assert paid(site, who) == [("credits", intent, 1500, 0, "paid")]
    balance = site.db.read_sync(lambda c: c.execute(select(wallets.c.balance)).scalar())
    assert balance == 15_000_000  # micro-units
    refund = site.fake.refund(intent, 500)
    assert site.deliver(refund)[0].json()["detail"] == f"payment {intent}: 500 refunded"
    assert paid(site, who) == [("credits", intent, 1500, 500, "refunded")]


def test_a_refund_before_its_payment_is_refused_until_the_payment_is_recorded(site: Site) -> None:
    who = site.subscriber()
    _, events = site.subscribe(who, "pro")
    invoice_paid = next(e for e in events if e["type"] == "invoice.paid")
    intent = next(o for o in site.fake.created("inpay_"))["payment"]["payment_intent"]
    refund = site.fake.refund(intent)[0]
    answer = site.post(refund)
    assert answer.status_code == 500  # Stripe will send it again
    seen = site.db.read_sync(lambda c: c.execute(select(billing_events.c.event_id)).scalars().all())
    assert refund["id"] not in seen  # rolled back with the (missing) effect
    site.deliver([invoice_paid, refund])
    invoice = invoice_paid["data"]["object"]["id"]
    assert paid(site, who) == [("subscription", invoice, 9900, 9900, "refunded")]


def test_a_failed_payment_is_past_due_with_grace_and_one_dunning_email(site: Site) -> None:
    who = site.subscriber()
    sub_id, events = site.subscribe(who, "pro")
    site.deliver(events)
    failed = site.fake.renew(sub_id, paid=False)
    site.deliver(failed + failed)
    now = ours(site, who)
    assert (now.plan_id, now.state, now.provider_ref) == ("pro", "past_due", sub_id)
    assert now.past_due_since is not None
    mail = [m for m in site.ctx.mailer.outbox if m["To"] == who.email]
    assert [m["Subject"] for m in mail] == ["Payment failed for Pro"]
    assert "continue for 3 more day(s)" in mail[0].get_content()
    site.deliver(site.fake.pay_again(sub_id))
    back = ours(site, who)
    assert (back.state, back.past_due_since) == ("active", None)
    assert len(paid(site, who)) == 2


def test_a_deleted_subscription_ends_and_the_free_plan_takes_over(site: Site) -> None:
    who = site.subscriber()
    sub_id, events = site.subscribe(who, "premium")
    site.deliver(events)
    trial = ours(site, who)
    assert (trial.plan_id, trial.state) == ("premium", "trialing")
    assert paid(site, who) == []  # a trial's $0 invoice is no payment
    site.deliver(site.fake.cancel_now(sub_id))
    after = ours(site, who)
    assert (after.plan_id, after.provider) == ("free", "none")
    ended = site.db.read_sync(lambda c: c.execute(select(subscriptions).where(subscriptions.c.id == trial.id)).one())
    assert ended.ended_at is not None


def test_an_unknown_event_is_remembered_and_ignored(site: Site) -> None:
    event = site.fake.event("customer.created", {"id": "cus_elsewhere", "object": "customer"})
    answer = site.post(event)
    assert (answer.status_code, answer.json()["detail"]) == (200, "ignored: customer.created changes nothing here")
    seen = site.db.read_sync(lambda c: c.execute(select(billing_events)).one())
    assert (seen.event_id, seen.type, seen.object_ref) == (event["id"], "customer.created", "cus_elsewhere")


# --- the property: any order of the same events, the same state -----------------------------------

ACTIONS = ["renew", "renew_fails", "pay_again", "cancel_at_period_end", "resume", "switch_plan", "cancel_now"]


def _act(site: Site, sub_id: str, action: str) -> list[dict[str, Any]]:
    sub = site.fake.objects[sub_id]
    if sub["status"] == "canceled":
        return []
    if action == "renew":
        return site.fake.renew(sub_id)
    if action == "renew_fails":
        return site.fake.renew(sub_id, paid=False)
    if action == "pay_again":
        return site.fake.pay_again(sub_id) if sub["status"] == "past_due" else []
    if action in ("cancel_at_period_end", "resume"):
        return site.fake.update(sub_id, cancel_at_period_end=action != "resume")
    if action == "switch_plan":
        now_on = sub["items"]["data"][0]["price"]["metadata"]["plan_id"]
        other = "pro" if now_on == "premium" else "premium"
        return site.fake.update(sub_id, price=site.db.read_sync(price_ref, "stripe", other, 1))
    return site.fake.cancel_now(sub_id)


def _expected(site: Site, sub_id: str) -> tuple[Any, ...]:
    """Our subscription as Stripe's final state says it must be."""
    sub = site.fake.objects[sub_id]
    if sub["status"] == "canceled":
        return ("free", 1, "active", "none", None, None, None, False)
    item = sub["items"]["data"][0]
    trial_end = datetime.fromtimestamp(sub["trial_end"], UTC) if sub["trial_end"] else None
    return (
        item["price"]["metadata"]["plan_id"],
        1,
        our_state(sub["status"], sub["cancel_at_period_end"]),
        "stripe",
        sub_id,
        datetime.fromtimestamp(item["current_period_end"], UTC),
        trial_end,
        sub["status"] == "past_due",
    )


def test_shuffled_and_repeated_events_converge_to_stripes_final_state(site: Site) -> None:
    plans = site.db.read_sync(load_plans)
    assert {k for k in plans if k[0] != "free"} == {("premium", 1), ("pro", 1)}

    @settings(max_examples=20, deadline=None, derandomize=True)
    @given(
        plan=st.sampled_from(["premium", "pro"]),
        actions=st.lists(st.sampled_from(ACTIONS), max_size=5),
        data=st.data(),
    )
    def check(plan: str, actions: list[str], data: st.DataObject) -> None:
        who = site.subscriber()
        sub_id, events = site.subscribe(who, plan)
        for action in actions:
            events += _act(site, sub_id, action)
        order = data.draw(st.permutations(events), label="delivery order")
        again = data.draw(st.lists(st.sampled_from(events), max_size=3), label="delivered again")
        site.deliver([*order, *again])
        now = ours(site, who)
        got = (
            now.plan_id,
            now.plan_version,
            now.state,
            now.provider,
            now.provider_ref,
            now.period_end,
            now.trial_end,
            now.past_due_since is not None,
        )
        assert got == _expected(site, sub_id)
        invoices = [o for o in site.fake.objects.values() if o["object"] == "invoice" and o["customer"]]
        mine = {
            i["id"]: i["amount_paid"] for i in invoices if i["parent"]["subscription_details"]["subscription"] == sub_id
        }
        assert sorted((ref, amount) for _, ref, amount, _, _ in paid(site, who)) == sorted(
            (ref, amount) for ref, amount in mine.items() if amount > 0
        )

    check()
