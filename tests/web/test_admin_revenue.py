"""The revenue page, its CSV and the admin API: who gets in, the figures, and that all three agree."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Connection

from signalmint.config import AutomationConfig, DetectorConfig, PlanConfig, PluginConfig
from signalmint.store import Database
from signalmint.store.accounts import ensure_subscriber, set_subscription_state, start_subscription
from signalmint.store.plans import load_plans
from signalmint.store.tables import payments

from .test_account_pages import AUTOMATION, client_for, csrf_of, make_app, new_key, sign_up
from .test_admin_pages import admin_session

HOSTILE = '=HYPERLINK("http://x")<script>'  # an automation named by a payment: CSV and HTML must defuse it
PERIOD = {"start": "2024-02-15", "end": "2024-04-01"}
OTHER = AutomationConfig(
    name="eu-stocks",
    title="EU stocks",
    source=PluginConfig(kind="synthetic"),
    detector=DetectorConfig(kind="volume_spike"),
)


def day(month: int, d: int) -> datetime:
    return datetime(2024, month, d, tzinfo=UTC)


def history(conn: Connection) -> None:
    """p1 pays pro (9900) from Jan 5; p2 premium (2900) Feb 1 to Mar 15, then free; p3 trials
    premium from Mar 1 and pays from Mar 8. Plans cover both automations ("*")."""
    plans = {p.id: p for p in load_plans(conn, current_only=True).values()}
    p1 = ensure_subscriber(conn, "p1@example.com", day(1, 1)).id
    start_subscription(conn, p1, plans["pro"], day(1, 5), origin="test", state="active")
    p2 = ensure_subscriber(conn, "p2@example.com", day(1, 1)).id
    start_subscription(conn, p2, plans["premium"], day(2, 1), origin="test", state="active")
    start_subscription(conn, p2, plans["free"], day(3, 15), origin="test")
    p3 = ensure_subscriber(conn, "p3@example.com", day(1, 1)).id
    trial = start_subscription(conn, p3, plans["premium"], day(3, 1), origin="test")
    set_subscription_state(conn, trial.id, day(3, 8), state="active")
    for automation, amount, fee in (("us-stocks", 500, 30), (HOSTILE, 300, 0)):
        conn.execute(
            payments.insert().values(provider="local", kind="tip", amount=amount, currency="usd", fee=fee,
                                     refunded=0, status="paid", note="", created_at=day(3, 3), automation=automation)
        )  # fmt: skip


@pytest.fixture
def app(db: Database) -> FastAPI:
    built = make_app(db, automations=[AUTOMATION, OTHER])
    db.write_sync(history)
    return built


@pytest.fixture
def operator(app: FastAPI) -> Iterator[TestClient]:
    with client_for(app) as client:
        admin_session(client)
        yield client


def admin_key(app: FastAPI) -> dict[str, str]:
    text = asyncio.run(app.state.ctx.accounts.create_key("admin", subscriber_id=None, admin=True))[1]
    return {"Authorization": f"Bearer {text}"}


def usd(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return next(r for r in rows if r["currency"] == "usd")


def test_only_the_operator_gets_in(app: FastAPI) -> None:
    pages = ["/admin/revenue", "/admin/revenue.csv"]
    with client_for(app) as public:
        for path in pages:
            answer = public.get(path, headers={"accept": "text/html"})
            assert answer.status_code == 303 and answer.headers["location"] == "/admin/login", path
        assert public.get("/api/v1/admin/revenue").status_code == 401
        assert public.get("/admin/revenue", headers={"Authorization": "Bearer nonsense"}).status_code == 401
    with client_for(app) as ann:
        sign_up(ann, app, "ann@example.com", "pro")
        text = new_key(ann, csrf_of(ann.get("/dashboard").text))
        for path in [*pages, "/api/v1/admin/revenue"]:
            assert ann.get(path).status_code == 403, path  # a subscriber's session
    with TestClient(app, follow_redirects=False) as script:
        for path in [*pages, "/api/v1/admin/revenue"]:
            assert script.get(path, headers={"Authorization": f"Bearer {text}"}).status_code == 403, path
        for path in [*pages, "/api/v1/admin/revenue"]:
            assert script.get(path, headers=admin_key(app)).status_code == 200, path


def test_api_figures(app: FastAPI) -> None:
    with TestClient(app) as client:
        body = client.get("/api/v1/admin/revenue", params=PERIOD, headers=admin_key(app)).json()
    assert body["start"] == "2024-02-15T00:00:00+00:00" and body["end"] == "2024-04-01T00:00:00+00:00"
    assert body["step"] == "day" and len(body["series"]) == 46  # Feb 15 to Mar 31
    assert body["currencies"] == ["usd"] and "split equally" in body["attribution"]
    total = usd(body["period"]["total"])
    # Feb 15: p1 9900 + p2 2900; Apr 1: p1 9900 + p3 2900. p2 churned (1 of 2), p3 is new and converted.
    expected = {
        "mrr_start": 12800, "mrr": 12800, "arr": 153600, "paying_start": 2, "paying": 2, "new": 1, "churned": 1,
        "churn_rate": 0.5, "arpu": 6400, "trials_ended": 1, "trials_converted": 1, "trial_conversion": 1.0,
        "gross": 800, "fees": 30, "refunds": 0, "net": 770, "paid_tips": 800, "credits_sold": 0, "credits_consumed": 0,
    }  # fmt: skip
    assert {k: total[k] for k in expected} == expected
    assert total["by_plan"] == [
        {"plan": "free", "subscribers": 1, "paying": 0, "trialing": 0, "mrr": 0},
        {"plan": "premium", "subscribers": 1, "paying": 1, "trialing": 0, "mrr": 2900},
        {"plan": "pro", "subscribers": 1, "paying": 1, "trialing": 0, "mrr": 9900},
    ]
    automations = {a["name"]: usd(a["figures"]) for a in body["period"]["automations"]}
    assert list(automations) == ["eu-stocks", "us-stocks", HOSTILE]  # the store's, then those only payments name
    # pro 9900 and premium 2900 each split in half between the two automations the plans cover.
    assert [(automations[n]["mrr"], automations[n]["paying"]) for n in ("eu-stocks", "us-stocks")] == [(6400, 2)] * 2
    assert (automations["us-stocks"]["paid_tips"], automations[HOSTILE]["paid_tips"], automations[HOSTILE]["mrr"]) == (
        500, 300, 0,
    )  # fmt: skip
    assert body["period"]["unattributed"] is None
    # by the end of Mar 8: p1 9900, p2 2900 (until Mar 15) and p3 2900, paying since that day.
    mar8 = next(w for w in body["series"] if w["start"].startswith("2024-03-08"))
    assert (usd(mar8["total"])["new"], usd(mar8["total"])["mrr"], "by_plan" in usd(mar8["total"])) == (1, 15700, False)
    mar15 = next(w for w in body["series"] if w["start"].startswith("2024-03-15"))
    assert (usd(mar15["total"])["churned"], usd(mar15["total"])["mrr"]) == (1, 9900 + 2900)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"months": "0"}, "months"),
        ({"months": "121"}, "months"),
        ({"months": "3", "start": "2024-01-01"}, "not both"),
        ({"start": "yesterday"}, "is not a date"),
        ({"start": "2024-03-01", "end": "2024-02-01"}, "start must come before end"),
        ({"end": "2024-02-01"}, "end needs a start"),
        ({"start": "1999-12-31"}, "from 2000 on"),
        ({"start": "2000-01-01", "end": "2024-01-01"}, "at most 120 months"),
    ],
)
def test_bad_periods_are_refused_with_a_reason(app: FastAPI, params: dict[str, str], message: str) -> None:
    with TestClient(app) as client:
        answer = client.get("/api/v1/admin/revenue", params=params, headers=admin_key(app))
    assert answer.status_code == 422 and message in answer.text, answer.text


def test_csv_matches_the_json_and_is_safe(app: FastAPI, operator: TestClient) -> None:
    body = operator.get("/api/v1/admin/revenue", params=PERIOD).json()  # an admin session works here too
    answer = operator.get("/admin/revenue.csv", params=PERIOD)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    assert 'filename="revenue-2024-02-15-2024-04-01.csv"' in answer.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    expected: dict[tuple[str, str, str, str, str], dict[str, Any]] = {}
    for kind, window in [("period", body["period"]), *(("day", w) for w in body["series"])]:
        scopes = [
            ("total", "", window["total"]),
            *(("automation", a["name"], a["figures"]) for a in window["automations"]),
        ]
        for scope, name, figures in scopes:
            for f in figures:
                expected[kind, window["start"], scope, name, f["currency"]] = f
    assert len(rows) == len(expected) == 47 * 4
    for row in rows:
        name = row["automation"][1:] if row["automation"].startswith("'") else row["automation"]
        figures = expected[row["window"], row["start"], row["scope"], name, row["currency"]]
        for field, value in figures.items():
            if field != "by_plan":
                assert row[field] == ("" if value is None else str(value)), (field, row)
    hostile = [r for r in rows if HOSTILE in r["automation"]]
    assert hostile and all(r["automation"] == "'" + HOSTILE for r in hostile)
    period_total = next(r for r in rows if r["window"] == "period" and r["scope"] == "total")
    assert (period_total["mrr"], period_total["churn_rate"], period_total["net"]) == ("12800", "0.5", "770")


def test_page_shows_the_portfolio(operator: TestClient) -> None:
    page = operator.get("/admin/revenue", params=PERIOD)
    assert page.status_code == 200
    html = page.text
    assert 'href="/admin/revenue" aria-current="page">Revenue' in html  # the admin tabs
    assert "$128" in html and "$1,536" in html  # MRR 12800 and ARR 153600 minor units
    assert "50.0%" in html and "100.0%" in html  # churn rate, trial conversion
    assert "$64" in html  # each automation's MRR share, and the ARPU
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-price"') == 1
    assert 'class="chart chart-volume"' in html and html.count('class="chart sparkline"') == 3  # one per automation
    assert 'href="/admin/revenue.csv?start=2024-02-15&amp;end=2024-04-01"' in html
    assert "<script>" not in html.split("</header>", 1)[1] and "&lt;script&gt;" in html  # escaped
    for name in ("us-stocks", "eu-stocks", "premium", "pro"):
        assert name in html
    default = operator.get("/admin/revenue")
    assert default.status_code == 200 and 'href="/admin/revenue?months=12" aria-current="page"' in default.text
    assert 'href="/admin/revenue.csv"' in default.text
    assert "Test mode" in html  # the default provider is local
    payments_table = html.split('id="payments-title"', 1)[1]
    assert payments_table.count("<tr data-payment=") == 2
    assert "$5" in payments_table and "$0.30" in payments_table and "6.0%" in payments_table  # a tip's fee
    assert "data-fee-warning" not in html  # 29 and 99 a month: fees are small
    bad = operator.get("/admin/revenue", params={"start": "nope"}, headers={"accept": "text/html"})
    assert bad.status_code == 422 and "is not a date" in bad.text


def test_months_period_ends_now_and_starts_on_the_first(app: FastAPI) -> None:
    with TestClient(app) as client:
        body = client.get("/api/v1/admin/revenue", params={"months": "3"}, headers=admin_key(app)).json()
    now = datetime.now(UTC)
    start = datetime.fromisoformat(body["start"])
    assert (start.day, start.hour) == (1, 0) and (now.year * 12 + now.month) - (start.year * 12 + start.month) == 2
    assert abs((datetime.fromisoformat(body["end"]) - now).total_seconds()) < 60
    assert usd(body["period"]["total"])["mrr"] == 12800  # nothing changed since April 2024


def test_the_page_warns_when_fees_eat_a_price_point(db: Database) -> None:
    cheap = [PlanConfig(id="free"), PlanConfig(id="coffee", price=100)]
    with client_for(make_app(db, plans=cheap)) as client:
        admin_session(client)
        html = client.get("/admin/revenue").text
    assert html.count("data-fee-warning") == 1
    assert "plan coffee ($1/mo): fees of $0.33 take 33.0%" in html and "prepaid credits" in html


def test_the_revenue_charts_have_titles_units_and_start_at_zero(operator: TestClient) -> None:
    """Both charts say what they show and in what unit; money never dips below $0 on the axis."""
    html = operator.get("/admin/revenue", params=PERIOD).text
    mrr = html.split('class="chart chart-price"', 1)[1].split("</svg>", 1)[0]
    paying = html.split('class="chart chart-volume"', 1)[1].split("</svg>", 1)[0]
    assert 'class="chart-title"' in mrr and "Monthly recurring revenue (USD)" in mrr
    assert 'class="chart-title"' in paying and "Paying subscribers" in paying
    labels = re.findall(r'<text class="axis"[^>]*dominant-baseline="middle"[^>]*>([^<]+)</text>', mrr)
    assert labels and labels[0] == "$0" and all(label.startswith("$") for label in labels), labels
    counts = re.findall(r'<text class="axis"[^>]*dominant-baseline="middle"[^>]*>([^<]+)</text>', paying)
    assert counts and counts[0] == "0" and all(c.isdigit() for c in counts), counts  # whole people
