"""Report pages: the archive, gating per plan, the public sample, buying with credits once, the PDF."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from signalmint.billing.credits import balance, credit
from signalmint.config import AutomationConfig
from signalmint.config.reports import ReportConfig
from signalmint.reports.scheduler import ReportScheduler
from signalmint.store import Database
from signalmint.store.accounts import subscriber_by_email
from signalmint.store.tables import ledger, report_purchases

from ..web.test_account_pages import client_for, csrf_of, make_app, plans, sign_up
from .conftest import seed_market

NOW = datetime(2026, 11, 30, 9, tzinfo=UTC)  # Monday after 2026-W48: W47 and W48 are due (catch_up 2)
W47 = "/automations/stocks/reports/weekly/2026-W47"  # the first stored: the public sample
W48 = "/automations/stocks/reports/weekly/2026-W48"


def _automation() -> AutomationConfig:
    return AutomationConfig.model_validate(
        {
            "name": "stocks",
            "title": "US stocks volume",
            "source": {"kind": "synthetic"},
            "detector": {"kind": "volume_spike"},
            "reports": [
                ReportConfig.model_validate(
                    {
                        "name": "weekly",
                        "schedule": "0 8 * * MON",
                        "period": "week",
                        "contents": {"top_signals": 3},
                        "audience": {"plans": ["premium"], "price": 300},
                        "catch_up": 2,
                    }
                )
            ],
        }
    )


@pytest.fixture
def app(db: Database) -> FastAPI:
    seed_market(db)
    application = make_app(db, automations=[_automation()], plans=plans())
    settings = application.state.ctx.settings
    stored = asyncio.run(ReportScheduler(settings, db, clock=lambda: NOW).step())
    assert [r.period_key for r in stored] == ["2026-W47", "2026-W48"]
    return application


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with client_for(app) as c:
        yield c


def _sid(db: Database, email: str) -> int:
    found = db.read_sync(subscriber_by_email, email)
    assert found is not None
    return found.id


def _body(html: str) -> str:
    return html.split('<main id="main">')[1].split("</main>")[0]


def test_the_archive_lists_every_report_with_what_the_viewer_may_do(client: TestClient) -> None:
    page = client.get("/automations/stocks/reports")
    assert page.status_code == 200
    html = page.text
    assert 'data-report-row="weekly/2026-W48"' in html and 'data-report-row="weekly/2026-W47"' in html
    assert html.index("2026-W48") < html.index("2026-W47")  # newest first
    assert 'data-access="sample"' in html and "$3 in credits" in html
    assert "Premium" in html  # the plan that includes it
    assert client.get("/automations/nope/reports").status_code == 404
    assert client.get("/automations/stocks").text.count("/automations/stocks/reports") == 1  # linked


def test_the_public_sees_a_teaser_without_numbers_and_the_sample_in_full(client: TestClient) -> None:
    teaser = _body(client.get(W48).text)
    assert "data-teaser" in teaser and "NVDA" in teaser  # the top keys, to tempt
    assert "31.50" not in teaser and "data-report-body" not in teaser  # but not their scores
    assert "Sign in to buy it" in teaser
    assert client.get(W48 + ".pdf").status_code == 403
    sample = client.get(W47)
    assert sample.status_code == 200 and "data-report-body" in sample.text and "Free sample" in sample.text
    pdf = client.get(W47 + ".pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert pdf.headers["content-disposition"] == 'attachment; filename="stocks-weekly-2026-W47.pdf"'
    assert client.get("/automations/stocks/reports/weekly/2026-W01").status_code == 404
    assert client.get("/automations/stocks/reports/monthly/2026-11").status_code == 404


@pytest.mark.parametrize(("plan", "reads"), [("premium", True), ("pro", False), ("free", False)])
def test_gating_follows_the_audience_plans(db: Database, app: FastAPI, plan: str, reads: bool) -> None:
    with client_for(app) as client:
        sign_up(client, app, f"{plan}@example.com", plan)
        html = _body(client.get(W48).text)
        assert ("data-report-body" in html) is reads and ("31.50" in html) is reads
        assert (client.get(W48 + ".pdf").status_code == 200) is reads
        tab = client.get("/dashboard/reports").text
        yours = tab.split("data-yours")[1].split("</table>")[0] if "data-yours" in tab else ""
        assert ("stocks/weekly/2026-W48" in yours) is reads
        assert "stocks/weekly/2026-W47" in yours  # the sample is everyone's


def test_buying_debits_once_and_opens_the_report_at_once(db: Database, app: FastAPI) -> None:
    with client_for(app) as client:
        sign_up(client, app, "bea@example.com", "pro")
        sid = _sid(db, "bea@example.com")
        db.write_sync(credit, sid, 5_000_000, "grant", "test-grant", datetime.now(UTC))
        csrf = csrf_of(client.get(W48).text)
        # without the session's token: refused, nothing taken
        assert client.post(W48 + "/buy", data={"csrf": "x" * 43}).status_code == 403
        assert db.read_sync(balance, sid) == 5_000_000
        first = client.post(W48 + "/buy", data={"csrf": csrf})
        assert first.status_code == 303 and first.headers["location"] == W48 + "?bought=1"
        again = client.post(W48 + "/buy", data={"csrf": csrf})  # a double click
        assert again.status_code == 303 and again.headers["location"] == W48
        assert db.read_sync(balance, sid) == 2_000_000  # 3.00 taken once
        html = client.get(first.headers["location"]).text
        assert "the report is yours" in html and "data-report-body" in html and "31.50" in html
        assert client.get(W48 + ".pdf").status_code == 200

        def count(conn: Any) -> tuple[int, int]:
            debits = conn.execute(select(func.count()).select_from(ledger).where(ledger.c.reason == "report"))
            bought = conn.execute(select(func.count()).select_from(report_purchases))
            return int(debits.scalar_one()), int(bought.scalar_one())

        assert db.read_sync(count) == (1, 1)
        assert "Bought" in client.get("/dashboard/reports").text


def test_buying_without_enough_credits_charges_nothing(db: Database, app: FastAPI) -> None:
    with client_for(app) as client:
        sign_up(client, app, "cy@example.com", "free")
        sid = _sid(db, "cy@example.com")
        db.write_sync(credit, sid, 1_000_000, "grant", "test-grant-2", datetime.now(UTC))
        csrf = csrf_of(client.get(W48).text)
        short = client.post(W48 + "/buy", data={"csrf": csrf})
        assert short.status_code == 402 and "Not enough credits" in short.text
        assert db.read_sync(balance, sid) == 1_000_000
        assert "data-report-body" not in short.text


def test_the_public_cannot_buy(client: TestClient) -> None:
    answer = client.post(W48 + "/buy", data={"csrf": "x"})
    assert answer.status_code in (303, 403)  # no session: sent to sign in (or refused as cross-site)
