"""The subscriber dashboard: plan and standing, feed, watchlist, notifications and API keys."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from signalmint.config import PlanConfig
from signalmint.records import Signal
from signalmint.store import Database, append_signals
from signalmint.store.accounts import get_preferences, get_watchlist, subscriber_by_email
from signalmint.store.tables import api_keys
from signalmint.web.routes.dashboard import parse_keys

from .test_account_pages import AUTOMATION, client_for, csrf_of, make_app, new_key, plans, sign_up

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


@pytest.fixture
def app(db: Database) -> FastAPI:
    return make_app(db)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with client_for(app) as c:
        yield c


def signed_in(client: TestClient, app: FastAPI, plan: str, email: str = "ann@example.com") -> str:
    sign_up(client, app, email, plan)
    return csrf_of(client.get("/dashboard").text)


def subscriber_id(db: Database, email: str = "ann@example.com") -> int:
    found = db.read_sync(subscriber_by_email, email)
    assert found is not None
    return found.id


def test_the_dashboard_needs_a_subscriber_session(client: TestClient, app: FastAPI) -> None:
    assert client.get("/dashboard").headers["location"] == "/login"
    assert client.post("/dashboard/watchlist", data={"keys": "AAPL"}).headers["location"] == "/login"
    page = client.get("/admin/login")
    client.post("/admin/login", data={"password": "correct horse battery", "csrf": csrf_of(page.text)})
    assert client.get("/dashboard").headers["location"] == "/admin"


def test_dashboard_shows_plan_state_and_live_feed(client: TestClient, app: FastAPI) -> None:
    signed_in(client, app, "premium")
    html = client.get("/dashboard").text
    assert "Premium plan" in html and 'data-tone="brand">Trial' in html
    assert "Free trial until" in html and "7 days left" in html
    assert 'data-stream-url="/api/v1/stream"' in html and '<template id="feed-row">' in html
    assert '<script src="/static/live.js" defer></script>' in html
    assert "Email" in html and 'action="/dashboard/preferences"' in html  # premium includes email
    assert "plan does not include the API" in html  # issue 9.3: no API term, no free API read
    assert client.get("/dashboard").headers["cache-control"] == "no-store"


def test_the_feed_holds_exactly_what_the_plan_gives(db: Database) -> None:
    app = make_app(db, automations=[AUTOMATION], plans=plans(["us-stocks"]))
    for i, key in enumerate(["K1", "K2", "K1"]):
        signal = Signal("us-stocks", key, T0 + timedelta(minutes=i), "volume_spike", 7.0, {"volume": 987654.0 + i})
        db.write_sync(append_signals, "us-stocks", [signal], datetime.now(UTC))
    with client_for(app) as client:
        csrf = signed_in(client, app, "free")
        assert "Your watchlist is empty" in client.get("/dashboard").text
        client.post("/dashboard/watchlist", data={"keys": "K1", "csrf": csrf})
        html = client.get("/dashboard").text
        feed = html.split("<tbody data-feed>")[1].split("</tbody>")[0]
        assert feed.count('class="feed-row"') == 2 and "K2" not in feed
        assert "987" not in feed  # the free plan hides the numbers


def test_watchlist_is_capped_by_the_plan(client: TestClient, app: FastAPI, db: Database) -> None:
    csrf = signed_in(client, app, "free")
    over = client.post("/dashboard/watchlist", data={"keys": "AAPL, MSFT NVDA,TSLA", "csrf": csrf})
    assert over.status_code == 400
    assert "watches up to 3 symbols; you listed 4" in over.text
    assert "AAPL, MSFT NVDA,TSLA" in over.text  # what they typed stays in the box
    assert db.read_sync(get_watchlist, subscriber_id(db)) == frozenset()

    at_cap = client.post("/dashboard/watchlist", data={"keys": "AAPL, MSFT NVDA, AAPL", "csrf": csrf})
    assert at_cap.status_code == 303 and at_cap.headers["location"].startswith("/dashboard?saved=watchlist")
    assert db.read_sync(get_watchlist, subscriber_id(db)) == {"AAPL", "MSFT", "NVDA"}
    html = client.get(at_cap.headers["location"]).text
    assert "Your watchlist is saved" in html and "3 of 3 symbols" in html
    assert re.search(r'<textarea[^>]*name="keys"[^>]*>AAPL, MSFT, NVDA</textarea>', html)


def test_watchlist_keys_are_validated(client: TestClient, app: FastAPI, db: Database) -> None:
    csrf = signed_in(client, app, "free")
    for bad in ["<script>", "A" * 33, "BRK/B"]:
        answer = client.post("/dashboard/watchlist", data={"keys": f"AAPL {bad}", "csrf": csrf})
        assert answer.status_code == 400 and "Not a symbol" in answer.text
        assert "<script>" not in answer.text.split("<main")[1].split("</main>")[0].replace("<script src=", "")
    assert db.read_sync(get_watchlist, subscriber_id(db)) == frozenset()
    assert parse_keys(" BRK.B, btc-usd  x_1 ") == (["BRK.B", "btc-usd", "x_1"], [])


def test_dashboard_forms_need_the_session_token(client: TestClient, app: FastAPI, db: Database) -> None:
    csrf = signed_in(client, app, "pro")
    forms = {
        "/dashboard/watchlist": {"keys": "AAPL"},
        "/dashboard/preferences": {"channel": "email", "enabled": "on"},
        "/dashboard/keys": {"name": "bot"},
        "/dashboard/keys/1/revoke": {},
        "/logout": {},
    }
    with client_for(app) as other:  # a token of another session does not pass either
        other_csrf = signed_in(other, app, "pro", email="bob@example.com")
    for path, form in forms.items():
        assert client.post(path, data=form).status_code == 403, path
        assert client.post(path, data={**form, "csrf": "x" * 64}).status_code == 403, path
        assert client.post(path, data={**form, "csrf": other_csrf}).status_code == 403, path
    assert client.get("/dashboard").status_code == 200  # still signed in
    assert db.read_sync(lambda conn: conn.execute(select(api_keys)).all()) == []
    assert client.post("/dashboard/watchlist", data={"keys": "", "csrf": csrf}).status_code == 400  # pro: all keys


def test_fixed_keys_are_shown_read_only(db: Database) -> None:
    fixed = [PlanConfig(id="dow", name="Dow 2", keys=["AAPL", "MSFT"])]
    app = make_app(db, plans=fixed)
    with client_for(app) as client:
        csrf = signed_in(client, app, "dow")
        html = client.get("/dashboard").text
        assert '<span class="chip">AAPL</span>' in html and '<span class="chip">MSFT</span>' in html
        assert 'name="keys"' not in html
        refused = client.post("/dashboard/watchlist", data={"keys": "TSLA", "csrf": csrf})
        assert refused.status_code == 400 and "fixed set of symbols" in refused.text


def test_notification_preferences(client: TestClient, app: FastAPI, db: Database) -> None:
    csrf = signed_in(client, app, "premium")
    saved = client.post(
        "/dashboard/preferences",
        data={"channel": "email", "enabled": "on", "quiet_start": "22:00", "quiet_end": "07:30", "daily_budget": "5",
              "csrf": csrf},
    )  # fmt: skip
    assert saved.status_code == 303
    prefs = db.read_sync(get_preferences, subscriber_id(db))["email"]
    assert (prefs.enabled, prefs.quiet_start, prefs.quiet_end, prefs.daily_budget) == (True, 1320, 450, 5)
    html = client.get("/dashboard").text
    assert 'value="22:00"' in html and 'value="07:30"' in html and 'value="5"' in html

    off = client.post("/dashboard/preferences", data={"channel": "email", "csrf": csrf})
    assert off.status_code == 303
    prefs = db.read_sync(get_preferences, subscriber_id(db))["email"]
    assert (prefs.enabled, prefs.quiet_start, prefs.daily_budget) == (False, None, None)

    for form, message in [
        ({"quiet_start": "25:00", "quiet_end": "07:00"}, "is not a time"),
        ({"quiet_start": "22:00"}, "both a start and an end"),
        ({"daily_budget": "-1"}, "whole number"),
    ]:
        bad = client.post("/dashboard/preferences", data={"channel": "email", "csrf": csrf, **form})
        assert bad.status_code == 400 and message in bad.text
    assert client.post("/dashboard/preferences", data={"channel": "telegram", "csrf": csrf}).status_code == 400
    assert "telegram" not in db.read_sync(get_preferences, subscriber_id(db))


def test_api_key_is_shown_once_and_stored_hashed(client: TestClient, app: FastAPI, db: Database) -> None:
    csrf = signed_in(client, app, "pro")
    created = client.post("/dashboard/keys", data={"name": "trading bot", "csrf": csrf})
    assert created.status_code == 200 and created.headers["cache-control"] == "no-store"
    found = re.search(r"sm_[a-z2-7]{8}_[A-Za-z0-9_-]{43}", created.text)
    assert found is not None and "only time it is shown" in created.text
    text = found.group(0)

    rows = db.read_sync(lambda conn: [tuple(r) for r in conn.execute(select(api_keys))])
    assert len(rows) == 1
    assert all(text not in str(value) for value in rows[0])  # only the prefix and a hash are kept
    dashboard = client.get("/dashboard").text
    assert text not in dashboard and f"sm_{text[3:11]}_…" in dashboard and "trading bot" in dashboard

    with TestClient(app) as api:
        assert api.get("/api/v1/signals", headers={"Authorization": f"Bearer {text}"}).status_code == 200


def test_a_key_on_a_plan_without_the_api_reads_only_what_the_plan_shows(
    client: TestClient, app: FastAPI, db: Database
) -> None:
    csrf = signed_in(client, app, "free")
    text = new_key(client, csrf)
    assert len(db.read_sync(lambda conn: conn.execute(select(api_keys)).all())) == 1
    with TestClient(app) as api:
        me = api.get("/api/v1/me", headers={"Authorization": f"Bearer {text}"}).json()
    assert me["plan"] == "free" and me["usage"]["quota"] is None
    assert all(access["delay_seconds"] == 900 for access in me["access"].values())


def test_only_the_owner_can_revoke_a_key(app: FastAPI, db: Database) -> None:
    with client_for(app) as ann, client_for(app) as bob, TestClient(app) as api:
        ann_csrf = signed_in(ann, app, "pro", email="ann@example.com")
        bob_csrf = signed_in(bob, app, "pro", email="bob@example.com")
        text = new_key(ann, ann_csrf)
        key_id = db.read_sync(lambda conn: conn.execute(select(api_keys.c.id)).scalar_one())
        bearer = {"Authorization": f"Bearer {text}"}

        stolen = bob.post(f"/dashboard/keys/{key_id}/revoke", data={"csrf": bob_csrf})
        assert stolen.status_code == 404
        assert api.get("/api/v1/signals", headers=bearer).status_code == 200  # still works
        assert bob.post("/dashboard/keys/999/revoke", data={"csrf": bob_csrf}).status_code == 404

        mine = ann.post(f"/dashboard/keys/{key_id}/revoke", data={"csrf": ann_csrf})
        assert mine.status_code == 303
        assert api.get("/api/v1/signals", headers=bearer).status_code == 401
        assert "Revoked" in ann.get("/dashboard").text
        assert ann.post(f"/dashboard/keys/{key_id}/revoke", data={"csrf": ann_csrf}).status_code == 404


def test_the_dashboard_says_when_an_automation_s_data_is_delayed(db: Database) -> None:
    from signalmint.store.health import close_stale_period, open_stale_period

    app = make_app(db, automations=[AUTOMATION])
    with client_for(app) as client:
        signed_in(client, app, "premium")
        assert "data delayed since" not in client.get("/dashboard").text
        since = datetime(2026, 11, 30, 10, 42, tzinfo=UTC)
        db.write_sync(open_stale_period, AUTOMATION.name, since, since + timedelta(minutes=3), None)
        html = client.get("/dashboard").text
        assert f"{AUTOMATION.title}: data delayed since" in html and "2026-11-30 10:42 UTC" in html
        db.write_sync(close_stale_period, AUTOMATION.name, since + timedelta(minutes=9))
        assert "data delayed since" not in client.get("/dashboard").text
