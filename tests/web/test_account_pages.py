"""Sign-up, confirmation, sign-in and sign-out through the real app, on real databases.

The helpers here (``build_app``, ``sign_up``...) are shared with the dashboard and admin tests.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from signalmint.accounts.credentials import hash_password
from signalmint.config import AdminConfig, AutomationConfig, DetectorConfig, PlanConfig, PluginConfig, Settings
from signalmint.records import Automation
from signalmint.store import Database, sync_automations
from signalmint.store.accounts import current_subscription, subscriber_by_email
from signalmint.web import app as web_app
from signalmint.web.money import register_money_filters
from signalmint.web.routes import account, admin, dashboard

FREE_MASK = ["volume", "ratio", "z", "baseline", "mad", "price_change", "score"]
AUTOMATION = AutomationConfig(
    name="us-stocks",
    title="US stocks: unusual volume",
    description="Daily bars of large US stocks.",
    source=PluginConfig(kind="synthetic"),
    detector=DetectorConfig(kind="volume_spike"),
)


def plans(automations: list[str] | str = "*") -> list[PlanConfig]:
    covers: Any = automations
    return [
        PlanConfig(id="free", automations=covers, delay="15m", watchlist=3, masked_fields=FREE_MASK),
        PlanConfig(id="premium", automations=covers, price=2900, trial_days=7, channels=["web", "email"]),
        PlanConfig(id="pro", automations=covers, price=9900, trial_days=7, channels=["web", "api"], api_quota=1000),
    ]


@functools.cache
def admin_password_hash() -> str:
    """The admin password's argon2 hash, made once: hashing costs ~0.2 s of CPU and every app here has
    an admin (test_admin_pages.py::test_password_sign_in configures the password itself)."""
    return hash_password("correct horse battery")


def settings(db: Database, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database": db.url,
        "plans": plans(),
        "admin": AdminConfig(email="owner@example.com", password_hash=admin_password_hash()),
        "demo": False,
    }
    values.update(overrides)
    return Settings(**values)


def make_app(db: Database, **overrides: Any) -> FastAPI:
    """The real app; adds these routers and the money filters until app.py wires them itself."""
    config = settings(db, **overrides)
    if config.automations:
        found = [Automation(a.name, a.title, a.description, a.source.kind, a.detector.kind) for a in config.automations]
        db.write_sync(sync_automations, found, datetime.now(UTC))
    app = web_app.create_app(config, db)
    for module in (account, dashboard, admin):
        if module not in web_app.ROUTES:
            app.include_router(module.router)
    env = app.state.templates.env
    if "fmt_price" not in env.filters:
        register_money_filters(env)
    return app


@contextmanager
def client_for(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, follow_redirects=False) as client:
        yield client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]*)"', html)
    assert found is not None, "the page has no csrf field"
    return found.group(1)


def last_link(app: FastAPI, to: str | None = None) -> str:
    """The path and query of the link in the newest email (to ``to``, if given)."""
    outbox = app.state.ctx.mailer.outbox
    message = outbox[-1]
    if to is not None:
        assert message["To"] == to
    found = re.search(r"https?://\S+", message.get_content())
    assert found is not None
    parts = urlsplit(found.group(0))
    return f"{parts.path}?{parts.query}"


def new_key(client: TestClient, csrf: str, name: str = "key") -> str:
    """Create an API key on the dashboard; the page shows its text once."""
    page = client.post("/dashboard/keys", data={"name": name, "csrf": csrf})
    found = re.search(r"sm_[a-z2-7]{8}_[A-Za-z0-9_-]{43}", page.text)
    assert found is not None, page.text
    return found.group(0)


def sign_up(client: TestClient, app: FastAPI, email: str, plan: str) -> None:
    """Sign up, open the confirmation link: the client then holds a subscriber session."""
    page = client.get("/signup", params={"plan": plan})
    answer = client.post("/signup", data={"email": email, "plan": plan, "csrf": csrf_of(page.text)})
    assert answer.status_code == 200, answer.text
    assert client.get(last_link(app, to=email)).status_code == 303


@pytest.fixture
def app(db: Database) -> FastAPI:
    return make_app(db)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with client_for(app) as c:
        yield c


def set_cookie_headers(response: Any, name: str) -> list[str]:
    return [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]


# ------------------------------------------------------------------ sign-up and confirmation


def test_signup_confirm_then_dashboard(client: TestClient, app: FastAPI, db: Database) -> None:
    page = client.get("/signup?plan=premium")
    assert page.status_code == 200
    assert re.search(r'value="premium" checked', page.text)
    csrf_cookie = set_cookie_headers(page, "sm_csrf")[0].lower()
    assert "httponly" in csrf_cookie and "samesite=lax" in csrf_cookie

    inbox = client.post("/signup", data={"email": "Ann@Example.com", "plan": "premium", "csrf": csrf_of(page.text)})
    assert inbox.status_code == 200
    assert "Check your inbox" in inbox.text and "ann@example.com" in inbox.text
    assert "/confirm?token=" not in inbox.text and "Demo mode" not in inbox.text  # demo is off

    link = last_link(app, to="ann@example.com")
    assert link.startswith("/confirm?token=")
    confirmed = client.get(link)
    assert confirmed.status_code == 303 and confirmed.headers["location"] == "/dashboard"
    cookie = set_cookie_headers(confirmed, "sm_session")[0]
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags and "samesite=lax" in flags and "path=/" in flags
    assert f"max-age={30 * 86400}" in flags and "secure" not in flags

    dash = client.get("/dashboard")
    assert dash.status_code == 200
    assert "Premium plan" in dash.text and "Free trial until" in dash.text
    subscriber = db.read_sync(subscriber_by_email, "ann@example.com")
    assert subscriber is not None and subscriber.confirmed


def test_a_link_works_once(client: TestClient, app: FastAPI) -> None:
    sign_up(client, app, "ann@example.com", "free")
    link = last_link(app)
    with client_for(app) as other:
        again = other.get(link)
        assert again.status_code == 400
        assert "This link no longer works" in again.text
        assert 'action="/login"' in again.text and "Email me a new link" in again.text
        assert "sm_session" not in again.headers.get("set-cookie", "")
        assert other.get("/dashboard").headers["location"] == "/login"


def test_an_expired_link_is_refused(client: TestClient, app: FastAPI) -> None:
    page = client.get("/login")
    sign_up(client, app, "ann@example.com", "free")
    client.post("/logout", data={"csrf": csrf_of(client.get("/dashboard").text)})
    client.post("/login", data={"email": "ann@example.com", "csrf": csrf_of(page.text)})
    link = last_link(app, to="ann@example.com")
    assert link.startswith("/auth?token=")
    accounts = app.state.ctx.accounts
    accounts.clock = lambda: datetime.now(UTC) + timedelta(minutes=16)  # sign-in links last 15 minutes
    try:
        expired = client.get(link)
    finally:
        accounts.clock = lambda: datetime.now(UTC)
    assert expired.status_code == 400 and "This link no longer works" in expired.text
    assert client.get("/dashboard").status_code == 303


def test_garbage_and_wrong_purpose_tokens_are_refused(client: TestClient, app: FastAPI) -> None:
    page = client.get("/signup")
    client.post("/signup", data={"email": "ann@example.com", "plan": "free", "csrf": csrf_of(page.text)})
    token = last_link(app).split("token=")[1]
    assert client.get("/auth", params={"token": token}).status_code == 400  # a confirm token is no login token
    assert client.get("/admin/auth", params={"token": token}).status_code == 400
    assert client.get("/confirm", params={"token": "x" * 5000}).status_code == 400
    assert client.get("/confirm").status_code == 400
    assert client.get("/confirm", params={"token": token}).status_code == 303  # still unused


def test_signup_takes_only_its_fields(client: TestClient, app: FastAPI, db: Database) -> None:
    page = client.get("/signup")
    form = {
        "email": "mallory@example.com",
        "plan": "pro",
        "csrf": csrf_of(page.text),
        "state": "comped",
        "plan_version": "99",
        "confirmed_at": "2020-01-01",
        "admin": "true",
    }
    assert client.post("/signup", data=form).status_code == 200
    subscriber = db.read_sync(subscriber_by_email, "mallory@example.com")
    assert subscriber is not None and not subscriber.confirmed
    sub = db.read_sync(current_subscription, subscriber.id)
    assert sub is not None and (sub.plan_id, sub.state, sub.plan_version) == ("pro", "trialing", 1)


def test_signup_problems_are_shown_on_the_form(client: TestClient) -> None:
    page = client.get("/signup")
    bad = client.post("/signup", data={"email": "not an email", "plan": "free", "csrf": csrf_of(page.text)})
    assert bad.status_code == 400
    assert "does not look like an email address" in bad.text and 'value="not an email"' in bad.text
    unknown = client.post("/signup", data={"email": "a@example.com", "plan": "gold", "csrf": csrf_of(page.text)})
    assert unknown.status_code == 400 and "no plan" in unknown.text


def test_signup_page_lists_the_plans_with_prices(client: TestClient) -> None:
    html = client.get("/signup").text
    for text in ("Free", "$29", "$99", "/month", "15 min delay", "Real time", "7-day free trial"):
        assert text in html
    assert "Watchlist of up to 3 symbols" in html and "1,000 calls/month" in html
    assert re.search(r'value="free" checked', html)  # no ?plan=: the first plan one can start
    prefilled = client.get("/signup", params={"plan": "pro", "email": "ann@example.com"}).text  # the pricing cards' GET
    assert re.search(r'value="pro" checked', prefilled) and 'value="ann@example.com"' in prefilled
    assert re.search(r'value="free" checked', client.get("/signup?plan=gold").text)


# ------------------------------------------------------------------ sign-in without enumeration


def _normalise(html: str, email: str) -> str:
    html = html.replace(email, "EMAIL")
    return re.sub(r'name="csrf" value="[^"]*"', "", html)


def test_login_answers_the_same_for_unknown_addresses(client: TestClient, app: FastAPI) -> None:
    sign_up(client, app, "ann@example.com", "free")
    sent = len(app.state.ctx.mailer.outbox)
    with client_for(app) as visitor:
        token = csrf_of(visitor.get("/login").text)
        known = visitor.post("/login", data={"email": "ann@example.com", "csrf": token})
        assert len(app.state.ctx.mailer.outbox) == sent + 1
        assert last_link(app, to="ann@example.com").startswith("/auth?token=")
        unknown = visitor.post("/login", data={"email": "nobody@example.com", "csrf": token})
        assert len(app.state.ctx.mailer.outbox) == sent + 1  # nothing sent, nothing said
    assert known.status_code == unknown.status_code == 200
    assert _normalise(known.text, "ann@example.com") == _normalise(unknown.text, "nobody@example.com")
    assert "/auth?token=" not in known.text


def test_login_link_signs_in(client: TestClient, app: FastAPI) -> None:
    sign_up(client, app, "ann@example.com", "premium")
    with client_for(app) as laptop:
        laptop.post("/login", data={"email": "ann@example.com", "csrf": csrf_of(laptop.get("/login").text)})
        signed_in = laptop.get(last_link(app, to="ann@example.com"))
        assert signed_in.headers["location"] == "/dashboard"
        assert "ann@example.com" in laptop.get("/dashboard").text
        assert laptop.get("/login").headers["location"] == "/dashboard"


def test_demo_mode_shows_the_link_on_the_page(db: Database) -> None:
    app = make_app(db, demo=True)
    with client_for(app) as client:
        page = client.get("/signup")
        inbox = client.post("/signup", data={"email": "ann@example.com", "plan": "free", "csrf": csrf_of(page.text)})
        assert "Demo mode: no email was sent; here is your link" in inbox.text
        link = last_link(app)
        assert link.replace("&", "&amp;") in inbox.text or link in inbox.text
        assert client.get(link).status_code == 303
        client.post("/logout", data={"csrf": csrf_of(client.get("/dashboard").text)})
        token = csrf_of(client.get("/login").text)
        again = client.post("/login", data={"email": "ann@example.com", "csrf": token})
        assert "Demo mode" in again.text and "/auth?token=" in again.text


# ------------------------------------------------------------------ CSRF and cookies


@pytest.mark.parametrize(
    "page, action, form",
    [
        ("/signup", "/signup", {"email": "ann@example.com", "plan": "free"}),
        ("/login", "/login", {"email": "ann@example.com"}),
        ("/admin/login", "/admin/login", {"password": "correct horse battery"}),
        ("/admin/login", "/admin/link", {"email": "owner@example.com"}),
    ],
)
def test_anonymous_forms_need_the_double_submit_token(
    client: TestClient, app: FastAPI, page: str, action: str, form: dict[str, str]
) -> None:
    token = csrf_of(client.get(page).text)
    assert client.cookies.get("sm_csrf") == token
    missing = client.post(action, data=form)
    assert missing.status_code == 403
    wrong = client.post(action, data={**form, "csrf": token[:-2] + "xx"})
    assert wrong.status_code == 403
    with client_for(app) as cookieless:  # a page on another site can send the field, not our cookie
        assert cookieless.post(action, data={**form, "csrf": token}).status_code == 403
    assert len(app.state.ctx.mailer.outbox) == 0
    assert "sm_session" not in client.cookies
    browser = client.post(action, data=form, headers={"accept": "text/html"})
    assert "Reload the page" in browser.text
    assert client.post(action, data={**form, "csrf": token}).status_code in {200, 303}


def test_session_cookie_is_secure_behind_https(db: Database) -> None:
    app = make_app(db, base_url="https://alerts.example.com")
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as client:
        page = client.get("/signup")
        assert "secure" in set_cookie_headers(page, "sm_csrf")[0].lower()
        client.post("/signup", data={"email": "ann@example.com", "plan": "free", "csrf": csrf_of(page.text)})
        confirmed = client.get(last_link(app))
        flags = [p.strip().lower() for p in set_cookie_headers(confirmed, "sm_session")[0].split(";")]
        assert "secure" in flags and "httponly" in flags


def test_logout_revokes_the_session(client: TestClient, app: FastAPI) -> None:
    sign_up(client, app, "ann@example.com", "free")
    session = client.cookies["sm_session"]
    token = csrf_of(client.get("/dashboard").text)
    assert client.post("/logout", data={}).status_code == 403  # no token: still signed in
    assert client.get("/dashboard").status_code == 200
    out = client.post("/logout", data={"csrf": token})
    assert out.status_code == 303 and out.headers["location"] == "/"
    assert 'sm_session=""' in out.headers["set-cookie"] or "max-age=0" in out.headers["set-cookie"].lower()
    with client_for(app) as thief:  # the old cookie no longer opens anything
        thief.cookies.set("sm_session", session)
        assert thief.get("/dashboard").headers["location"] == "/login"


# ------------------------------------------------------------------ the automation page sells the plans


def test_automation_page_pricing_and_public_banner(db: Database) -> None:
    app = make_app(db, automations=[AUTOMATION], plans=plans(["us-stocks"]))
    with client_for(app) as client:
        html = client.get("/automations/us-stocks").text
        assert "You are seeing the public view:</strong> signals 15 minutes late, numbers hidden" in html
        assert 'id="pricing"' in html
        for text in ("Free", "$29", "$99", "15 min delay", "Real time", "1,000 calls/month", "Start 7-day trial"):
            assert text in html
        assert "Current plan" not in html
        sign_up(client, app, "ann@example.com", "pro")
        mine = client.get("/automations/us-stocks").text
        assert "You are seeing the public view" not in mine
        assert "Current plan" in mine and "Open your dashboard" in mine
