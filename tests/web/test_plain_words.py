"""Small things pages and the CLI say: amounts in currency units, plurals, whole API keys, how a run ends."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from rich.console import Console
from sqlalchemy import select

from signalmint.cli import print_accounts, stop_hint
from signalmint.config import PlanConfig
from signalmint.demo.seed import DemoAccount
from signalmint.store import Database
from signalmint.store.tables import checkouts, payments

from .test_account_pages import FREE_MASK, client_for, csrf_of, make_app, sign_up


@pytest.fixture
def app(db: Database) -> FastAPI:
    one = PlanConfig(id="free", delay="15m", watchlist=3, masked_fields=FREE_MASK, rate_per_second=1)
    return make_app(db, plans=[one, PlanConfig(id="premium", price=2900, rate_per_second=5)])


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with client_for(app) as c:
        yield c


def test_the_tip_form_asks_for_dollars_and_reads_them(client: TestClient, db: Database) -> None:
    page = client.get("/tip", params={"amount": "300"})
    assert page.status_code == 200
    assert "cents" not in page.text.lower()
    assert "Or your own amount, in USD" in page.text and 'value="$3"' in page.text
    csrf = csrf_of(page.text)
    for typed in ("$5", "5.50", " 12 "):
        answer = client.post("/billing/tip", data={"price": typed, "csrf": csrf})
        assert answer.status_code == 303, (typed, answer.text)
    bad = client.post("/billing/tip", data={"price": "five", "csrf": csrf})
    assert bad.status_code == 400 and "like 5 or 5.50" in bad.text
    too_fine = client.post("/billing/tip", data={"price": "5.555", "csrf": csrf})
    assert too_fine.status_code == 400
    picked = client.post("/billing/tip", data={"amount": "1000", "csrf": csrf})  # a one-click amount
    assert picked.status_code == 303
    amounts = db.read_sync(lambda c: c.execute(select(checkouts.c.amount).order_by(checkouts.c.id)).scalars().all())
    assert amounts == [500, 550, 1200, 1000]
    assert db.read_sync(lambda c: c.execute(select(payments)).all()) == []  # nothing paid yet


def test_one_request_a_second_is_singular(client: TestClient, app: FastAPI) -> None:
    sign_up(client, app, "ann@example.com", "free")
    text = client.get("/dashboard").text
    assert "1 requests" not in text
    # the dashboard words API rates through api_terms (h-apiaccess): "up to 1 a second", never "1 requests"
    from dataclasses import replace

    from signalmint.records import Plan
    from signalmint.web.money import api_terms

    plan = Plan(id="p", version=1, name="P", automations=("*",), channels=frozenset({"api"}), api_quota=300)
    worded = api_terms(replace(plan, rate_per_second=1))
    assert "up to 1 a second" in worded and "requests" not in worded


def test_demo_keys_are_never_cut_in_a_narrow_terminal() -> None:
    key = "sm_abcdefgh_" + "K" * 43
    accounts = [DemoAccount("premium", "premium@demo.invalid", "premium", key)]
    buffer = io.StringIO()
    print_accounts(Console(file=buffer, width=40, color_system=None), accounts)
    lines = buffer.getvalue().splitlines()
    assert any(key in line for line in lines), buffer.getvalue()  # whole, on one line
    assert "…" not in buffer.getvalue()


def test_the_demo_says_how_it_stops() -> None:
    assert stop_hint(None) == "Stop with Ctrl+C."
    assert stop_hint(30) == "Stops by itself after 30 seconds (or press Ctrl+C)."
    assert stop_hint(1) == "Stops by itself after 1 second (or press Ctrl+C)."
