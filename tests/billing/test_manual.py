"""The manual provider: the operator records a payment by hand and the plan runs for the months paid."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from signalmint.store import Database
from signalmint.store.accounts import current_subscription, subscriber_by_email
from signalmint.store.tables import payments

from ..web.test_account_pages import client_for, csrf_of, make_app, sign_up
from .test_local_checkout import all_plans


def admin_csrf(client: TestClient, subscriber_id: int) -> str:
    page = client.get("/admin/login")
    client.post("/admin/login", data={"password": "correct horse battery", "csrf": csrf_of(page.text)})
    return csrf_of(client.get(f"/admin/subscribers/{subscriber_id}").text)


def test_a_recorded_payment_opens_the_plan_once_per_reference(db: Database) -> None:
    app: FastAPI = make_app(db, plans=all_plans())
    with client_for(app) as ann, client_for(app) as operator:
        sign_up(ann, app, "ann@example.com", "free")
        found = db.read_sync(subscriber_by_email, "ann@example.com")
        assert found is not None
        csrf = admin_csrf(operator, found.id)
        form = {"plan": "basic", "amount": "1500", "months": "3", "reference": "SEPA-42", "note": "paid", "csrf": csrf}
        for _ in range(2):
            answer = operator.post(f"/admin/subscribers/{found.id}/payment", data=form)
            assert answer.status_code == 303
        assert "Payment recorded" in operator.get(answer.headers["location"]).text
        sub = db.read_sync(current_subscription, found.id)
        assert sub is not None and (sub.plan_id, sub.state, sub.provider) == ("basic", "active", "manual")
        assert sub.period_end is not None
        assert timedelta(days=88) < sub.period_end - datetime.now(UTC) < timedelta(days=93)
        rows = db.read_sync(lambda c: c.execute(select(payments)).all())
        assert [(r.kind, r.amount, r.fee, r.note) for r in rows] == [("manual", 1500, 0, "paid")]
        # a second payment with another reference extends the same subscription
        operator.post(f"/admin/subscribers/{found.id}/payment", data={**form, "reference": "SEPA-43", "months": "1"})
        later = db.read_sync(current_subscription, found.id)
        assert later is not None and later.id == sub.id and later.period_end is not None
        assert timedelta(days=27) < later.period_end - sub.period_end < timedelta(days=32)
        for bad in [{"amount": "12.5"}, {"months": "0"}, {"months": "x"}, {"plan": "nope"}]:
            assert operator.post(f"/admin/subscribers/{found.id}/payment", data={**form, **bad}).status_code == 400
        ledger = operator.get("/admin/ledger.csv")
        assert ledger.status_code == 200 and ledger.headers["content-type"].startswith("text/csv")
        assert ledger.text.splitlines()[0].startswith("id,")
        assert ann.get("/admin/ledger.csv").status_code in {303, 403}
        # a subscriber cannot record payments
        ann_csrf = csrf_of(ann.get("/dashboard").text)
        refused = ann.post(f"/admin/subscribers/{found.id}/payment", data={**form, "csrf": ann_csrf})
        assert refused.status_code in {303, 403} and db.read_sync(lambda c: len(c.execute(select(payments)).all())) == 2
