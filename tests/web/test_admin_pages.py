"""The operator's pages: who gets in (OWASP API5), and that each action takes effect."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Connection, select

from signalmint.config import AdminConfig
from signalmint.store import Database
from signalmint.store.accounts import current_subscription, ensure_subscriber, start_subscription, subscriber_by_email
from signalmint.store.tables import api_keys

from .test_account_pages import client_for, csrf_of, last_link, make_app, new_key, sign_up

GETS = ["/admin", "/admin/subscribers", "/admin/subscribers/1", "/admin/subscribers.csv", "/admin/keys"]
POSTS = [
    "/admin/subscribers/1/plan",
    "/admin/subscribers/1/comp",
    "/admin/subscribers/1/trial",
    "/admin/keys",
    "/admin/keys/1/revoke",
    "/admin/logout",
]


@pytest.fixture
def app(db: Database) -> FastAPI:
    return make_app(db)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with client_for(app) as c:
        yield c


def admin_session(client: TestClient) -> str:
    page = client.get("/admin/login")
    signed = client.post("/admin/login", data={"password": "correct horse battery", "csrf": csrf_of(page.text)})
    assert signed.status_code == 303 and signed.headers["location"] == "/admin"
    return csrf_of(client.get("/admin").text)


def subscriber(db: Database, email: str = "ann@example.com") -> int:
    found = db.read_sync(subscriber_by_email, email)
    assert found is not None
    return found.id


def test_every_admin_route_turns_away_everyone_but_the_operator(app: FastAPI, db: Database) -> None:
    with client_for(app) as public:
        for path in GETS:
            answer = public.get(path, headers={"accept": "text/html"})
            assert answer.status_code == 303 and answer.headers["location"] == "/admin/login", path
        for path in POSTS:
            assert public.post(path, data={}).headers["location"] == "/admin/login", path

    with client_for(app) as ann:
        sign_up(ann, app, "ann@example.com", "pro")
        csrf = csrf_of(ann.get("/dashboard").text)
        text = new_key(ann, csrf)
        for path in GETS:
            assert ann.get(path).status_code == 403, path  # a subscriber's session
        for path in POSTS:
            assert ann.post(path, data={"csrf": csrf, "plan": "pro", "days": "30"}).status_code == 403, path

    with TestClient(app, follow_redirects=False) as script:
        bearer = {"Authorization": f"Bearer {text}"}
        for path in GETS:
            assert script.get(path, headers=bearer).status_code == 403, path  # a subscriber's API key
        for path in POSTS:
            assert script.post(path, headers=bearer, data={"plan": "pro"}).status_code == 403, path
        assert script.get("/admin", headers={"Authorization": "Bearer nonsense"}).status_code == 401

    sub = db.read_sync(current_subscription, subscriber(db))
    assert sub is not None and (sub.plan_id, sub.state) == ("pro", "trialing")  # nothing changed

    with client_for(app) as operator:
        admin_session(operator)
        for path in GETS:
            assert operator.get(path).status_code == 200, path


def test_password_sign_in(db: Database) -> None:
    # the password itself in the settings (hashed when the app starts), not a hash made beforehand
    app = make_app(db, admin=AdminConfig(email="owner@example.com", password="correct horse battery"))
    with client_for(app) as client:
        page = client.get("/admin/login")
        assert 'action="/admin/login"' in page.text and 'action="/admin/link"' in page.text
        wrong = client.post("/admin/login", data={"password": "wrong", "csrf": csrf_of(page.text)})
        assert wrong.status_code == 401 and "That password is not right" in wrong.text
        assert "sm_session" not in client.cookies
        right = client.post("/admin/login", data={"password": "correct horse battery", "csrf": csrf_of(page.text)})
        cookie = next(h for h in right.headers.get_list("set-cookie") if h.startswith("sm_session=")).lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and f"max-age={12 * 3600}" in cookie
        overview = client.get("/admin")
        assert overview.status_code == 200 and "Overview" in overview.text and "Plans on sale" in overview.text
        assert client.get("/admin/login").headers["location"] == "/admin"
        assert 'href="/admin" aria-current="page">Admin' in overview.text


def test_magic_link_sign_in_without_password(db: Database) -> None:
    app = make_app(db, admin=AdminConfig(email="owner@example.com"))
    with client_for(app) as client:
        page = client.get("/admin/login")
        assert 'action="/admin/login"' not in page.text and 'action="/admin/link"' in page.text
        token = csrf_of(page.text)
        stranger = client.post("/admin/link", data={"email": "ann@example.com", "csrf": token})
        assert len(app.state.ctx.mailer.outbox) == 0
        owner = client.post("/admin/link", data={"email": "Owner@Example.com", "csrf": token})
        assert stranger.text.replace("ann@example.com", "X") == owner.text.replace("Owner@Example.com", "X")
        link = last_link(app, to="owner@example.com")
        assert link.startswith("/admin/auth?token=") and link not in owner.text
        assert client.get(link).headers["location"] == "/admin"
        assert client.get("/admin").status_code == 200
        assert client.get(link).status_code == 400  # once only


def test_admin_logout_revokes_the_session(client: TestClient, app: FastAPI) -> None:
    csrf = admin_session(client)
    session = client.cookies["sm_session"]
    assert client.post("/admin/logout", data={"csrf": csrf}).headers["location"] == "/admin/login"
    with client_for(app) as thief:
        thief.cookies.set("sm_session", session)
        assert thief.get("/admin").headers["location"] == "/admin/login"


def test_overview_counts_subscribers_by_plan_and_state(client: TestClient, app: FastAPI, db: Database) -> None:
    with client_for(app) as ann:
        sign_up(ann, app, "ann@example.com", "premium")
    with client_for(app) as bob:
        sign_up(bob, app, "bob@example.com", "free")
    admin_session(client)
    html = client.get("/admin").text
    rows = {m[0]: m[1] for m in re.findall(r'<th scope="row"[^>]*>(\w+)</th>(.*?)</tr>', html, re.S)}
    assert set(rows) == {"free", "premium"}
    assert re.findall(r'<td class="num[^"]*">(\d+)</td>', rows["premium"]) == ["1", "0", "0", "0", "0", "0"]
    assert "$29/mo" in html and "$99/mo" in html and "15 min delay" in html and "1,000/mo" in html


def test_plan_comp_and_trial_take_effect(client: TestClient, app: FastAPI, db: Database) -> None:
    with client_for(app) as ann:
        sign_up(ann, app, "ann@example.com", "free")
        assert "Free plan" in ann.get("/dashboard").text
        csrf = admin_session(client)
        sid = subscriber(db)
        base = f"/admin/subscribers/{sid}"

        assert client.post(f"{base}/plan", data={"plan": "pro"}).status_code == 403  # no CSRF token
        changed = client.post(f"{base}/plan", data={"plan": "pro", "csrf": csrf})
        assert changed.headers["location"] == f"{base}?done=plan"
        dash = ann.get("/dashboard").text
        assert "Pro plan" in dash and 'action="/dashboard/keys"' in dash  # API keys now on offer

        until = (datetime.now(UTC) + timedelta(days=30)).date()
        comped = client.post(f"{base}/comp", data={"plan": "premium", "until": until.isoformat(), "csrf": csrf})
        assert comped.status_code == 303
        sub = db.read_sync(current_subscription, sid)
        assert sub is not None and (sub.plan_id, sub.state) == ("premium", "comped")
        assert sub.period_end == datetime.combine(until + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
        assert "Complimentary access until" in ann.get("/dashboard").text

        assert client.post(f"{base}/trial", data={"days": "10", "csrf": csrf}).status_code == 303
        sub = db.read_sync(current_subscription, sid)
        assert sub is not None and sub.state == "trialing" and sub.trial_end is not None
        assert sub.trial_end - datetime.now(UTC) > timedelta(days=9, hours=23)
        assert "10 days left" in ann.get("/dashboard").text

        for path, form, message in [
            ("plan", {"plan": "gold"}, "no plan"),
            ("comp", {"until": "yesterday"}, "is not a date"),
            ("comp", {"until": "2001-01-01"}, "in the past"),
            ("trial", {"days": "0"}, "1 to 365 days"),
            ("trial", {"days": "ten"}, "whole number"),
        ]:
            bad = client.post(f"{base}/{path}", data={**form, "csrf": csrf})
            assert bad.status_code == 400 and message in bad.text.lower(), path
        assert client.post("/admin/subscribers/999/plan", data={"plan": "pro", "csrf": csrf}).status_code == 404
        assert client.get("/admin/subscribers/999").status_code == 404


def test_subscribers_search_and_keyset_pages(client: TestClient, db: Database) -> None:
    now = datetime.now(UTC)

    def seed(conn: Connection) -> None:
        for i in range(55):
            ensure_subscriber(conn, f"user{i:02d}@{'corp' if i % 5 == 0 else 'mail'}.example.com", now)

    db.write_sync(seed)
    admin_session(client)
    first = client.get("/admin/subscribers").text
    assert first.count('class="email-cell"') == 50 and "user00@corp" in first and "user50" not in first
    after = re.search(r"/admin/subscribers\?after=(\d+)", first)
    assert after is not None
    second = client.get(f"/admin/subscribers?after={after.group(1)}").text
    assert second.count('class="email-cell"') == 5 and "user54@mail" in second and "user00" not in second
    assert "?after=" not in second  # the last page
    corp = client.get("/admin/subscribers", params={"q": "CORP"}).text
    assert corp.count('class="email-cell"') == 11
    assert "No subscriber's email contains" in client.get("/admin/subscribers", params={"q": "%"}).text


def test_csv_export(client: TestClient, app: FastAPI, db: Database) -> None:
    now = datetime.now(UTC)
    plan = next(p for p in app.state.ctx.access.current() if p.id == "premium")

    def seed(conn: Connection) -> None:
        ann = ensure_subscriber(conn, "ann@example.com", now)
        start_subscription(conn, ann.id, plan, now, origin="test")
        ensure_subscriber(conn, "=HYPERLINK(evil)@example.com", now)

    db.write_sync(seed)
    admin_session(client)
    answer = client.get("/admin/subscribers.csv")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    assert answer.headers["content-disposition"].startswith("attachment; filename=")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [r["email"] for r in rows] == ["ann@example.com", "'=hyperlink(evil)@example.com"]
    assert rows[0]["plan"] == "premium" and rows[0]["state"] == "trialing"
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row.values() if cell)


def test_admin_keys(client: TestClient, app: FastAPI, db: Database) -> None:
    csrf = admin_session(client)
    assert "No admin keys yet" in client.get("/admin/keys").text
    assert client.post("/admin/keys", data={"name": "sync"}).status_code == 403
    created = client.post("/admin/keys", data={"name": "billing sync", "csrf": csrf})
    text = re.findall(r"sm_[a-z2-7]{8}_[\w-]{43}", created.text)[0]
    assert "only time it is shown" in created.text
    row = db.read_sync(lambda conn: conn.execute(select(api_keys)).one())
    assert row.admin and row.subscriber_id is None and text not in (row.hash, row.prefix)
    listing = client.get("/admin/keys").text
    assert "billing sync" in listing and text not in listing
    with TestClient(app, follow_redirects=False) as script:
        bearer = {"Authorization": f"Bearer {text}"}
        assert script.get("/admin/subscribers", headers=bearer).status_code == 200
        assert client.post("/admin/keys/999/revoke", data={"csrf": csrf}).status_code == 404
        assert client.post(f"/admin/keys/{row.id}/revoke", data={"csrf": csrf}).status_code == 303
        assert script.get("/admin/subscribers", headers=bearer).status_code == 401
