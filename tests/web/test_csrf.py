"""Cross-site writes: every state-changing route that a session cookie authenticates refuses them.

The routes are enumerated from the app itself, so a route added later is covered without
anyone remembering to list it here.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute, Mount

from signalmint.accounts.credentials import csrf_token
from signalmint.store import Database
from signalmint.store.accounts import subscriber_by_email
from signalmint.web.security import CROSS_SITE, EXEMPT_PATHS

from .test_account_pages import client_for, csrf_of, make_app, sign_up

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
EVIL = "https://evil.example"


def _walk(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, BaseRoute]]:
    """Every route with its full path, through included routers (FastAPI keeps them as branches)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _walk(included.routes, prefix + route.include_context.prefix)  # type: ignore[attr-defined]
        elif isinstance(route, Mount):
            assert route.path == "/static", f"a mount could hide routes: {route.path}"
        else:
            yield prefix + route.path, route  # type: ignore[attr-defined]


def unsafe_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every state-changing route the app serves."""
    found = {
        (method, path)
        for path, route in _walk(app.routes)
        for method in getattr(route, "methods", None) or ()
        if method in UNSAFE
    }
    return sorted(found)


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


@pytest.fixture
def app(sqlite_db: Database) -> FastAPI:
    return make_app(sqlite_db)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with client_for(app) as c:
        yield c


def _session(app: FastAPI, path: str) -> str:
    """A new session: the operator's for the admin routes, else Ann's."""
    ctx = app.state.ctx
    if path.startswith(("/admin", "/api/v1/admin")):
        return str(asyncio.run(ctx.accounts.new_session(None, admin=True)))
    ann = ctx.db.read_sync(subscriber_by_email, "ann@example.com")
    return str(asyncio.run(ctx.accounts.new_session(ann.id, admin=False)))


def _browser(app: FastAPI, session: str) -> TestClient:
    """A client holding only this session (no lifespan: the app's state is already built)."""
    browser = TestClient(app, follow_redirects=False)
    browser.cookies.set("sm_session", session)
    return browser


def test_the_enumeration_sees_every_kind_of_write(app: FastAPI) -> None:
    routes = unsafe_routes(app)
    paths = {path for _, path in routes}
    assert len(routes) >= 40
    for expected in ("/api/v1/me/feed/rotate", "/api/v1/me/watchlist", "/dashboard/keys", "/admin/keys", "/logout"):
        assert expected in paths
    assert ("DELETE", "/api/v1/me/keys/{key_id}") in routes
    exempt = sorted(p for p in paths if p.startswith(EXEMPT_PATHS))
    assert exempt == [
        "/api/v1/email/events",
        "/api/v1/ingest/{automation}",  # pushed points: the automation's signature, no cookie
        "/billing/stripe/webhook",
        "/demo/inspect/{token}",  # demo mode only: records what is posted, changes nothing else
        "/unsubscribe/{endpoint_id}/{token}",
    ]


def test_every_cookie_authenticated_write_refuses_another_site(client: TestClient, app: FastAPI) -> None:
    """The probe's request (session cookie, a form body, Origin: evil) on every route: 403."""
    sign_up(client, app, "ann@example.com", "premium")
    checked = 0
    for method, template in unsafe_routes(app):
        if template.startswith(EXEMPT_PATHS):
            continue
        path = concrete(template)
        session = _session(app, template)
        token = csrf_token(session, app.state.ctx.pepper)
        form = {"content-type": "application/x-www-form-urlencoded"}
        for name, headers, body in (
            ("evil origin", {**form, "origin": EVIL}, f"csrf={token}&name=x"),  # even with the token
            ("origin null, no token", {**form, "origin": "null"}, "name=x"),
            ("origin null, wrong token", {**form, "origin": "null"}, f"csrf={token[:-2]}xx&name=x"),
            ("evil referer", {**form, "referer": f"{EVIL}/page"}, "name=x"),
            ("no origin, no token", form, "name=x"),
            ("no origin, wrong token", {**form, "x-csrf-token": token[:-2] + "xx"}, "{}"),
            ("json, evil origin", {"content-type": "application/json", "origin": EVIL}, "{}"),
        ):
            answer = _browser(app, session).request(method, path, headers=headers, content=body)
            assert answer.status_code == 403, f"{method} {path} ({name}): {answer.status_code} {answer.text[:200]}"
            assert answer.json()["detail"] == CROSS_SITE
        checked += 1
    assert checked >= 37


def test_same_site_writes_still_work_on_every_route(client: TestClient, app: FastAPI) -> None:
    """A matching Origin, or a valid token without one, passes the guard (the route then decides)."""
    sign_up(client, app, "ann@example.com", "premium")
    for method, template in unsafe_routes(app):
        path = concrete(template)
        for how in ("origin", "site origin", "form token", "header token", "null origin, form token"):
            session = _session(app, template)  # fresh: a route may be sign-out
            token = csrf_token(session, app.state.ctx.pepper)
            headers: dict[str, str] = {"content-type": "application/x-www-form-urlencoded"}
            body = "name=x"
            if how == "origin":
                headers["origin"] = "http://testserver"
            elif how == "site origin":
                headers["origin"] = "http://127.0.0.1:8000"  # the base_url
            elif how == "form token":
                body = f"csrf={token}&name=x"
            elif how == "null origin, form token":  # a form on a Referrer-Policy: no-referrer page
                headers["origin"] = "null"
                body = f"csrf={token}&name=x"
            else:
                headers["x-csrf-token"] = token
            answer = _browser(app, session).request(method, path, headers=headers, content=body)
            assert CROSS_SITE not in answer.text, f"{method} {path} ({how}) was refused"
            assert answer.status_code < 500, f"{method} {path} ({how}): {answer.status_code}"


def test_the_probes_rotate_request_changes_nothing(client: TestClient, app: FastAPI) -> None:
    sign_up(client, app, "ann@example.com", "premium")
    before = client.get("/api/v1/me/feed").json()["url"]
    attack = client.post(
        "/api/v1/me/feed/rotate",
        content="x=1",
        headers={"content-type": "application/x-www-form-urlencoded", "origin": EVIL},
    )
    assert attack.status_code == 403 and "url" not in attack.text
    assert client.get("/api/v1/me/feed").json()["url"] == before
    own = client.post("/api/v1/me/feed/rotate", headers={"origin": "http://testserver"})
    assert own.status_code == 200 and own.json()["url"] != before


def test_api_keys_and_visitors_are_not_cookie_authenticated(client: TestClient, app: FastAPI) -> None:
    sign_up(client, app, "ann@example.com", "pro")
    key = client.post("/api/v1/me/keys", json={"name": "k"}, headers={"origin": "http://testserver"}).json()["key"]
    with TestClient(app) as api:
        answer = api.post("/api/v1/me/feed/rotate", headers={"Authorization": f"Bearer {key}", "origin": EVIL})
        assert answer.status_code == 200 and "url" in answer.json()
    with client_for(app) as visitor:  # no session: the forms' own double-submit check decides
        page = visitor.get("/login")
        answer = visitor.post("/login", data={"email": "bob@example.com", "csrf": csrf_of(page.text)})
        assert answer.status_code == 200


def test_a_refused_browser_form_gets_the_error_page(client: TestClient, app: FastAPI) -> None:
    sign_up(client, app, "ann@example.com", "premium")
    answer = client.post("/dashboard/keys", data={"name": "x"}, headers={"accept": "text/html", "origin": EVIL})
    assert answer.status_code == 403
    assert "text/html" in answer.headers["content-type"] and "did not come from this site" in answer.text
    assert answer.headers["x-frame-options"] == "DENY"


def test_the_dashboard_forms_post_with_their_token(client: TestClient, app: FastAPI) -> None:
    """What the HTML forms send (no Origin from the test client, the page's token) is accepted."""
    sign_up(client, app, "ann@example.com", "premium")
    token = csrf_of(client.get("/dashboard").text)
    made = client.post("/dashboard/keys", data={"name": "laptop", "csrf": token})
    assert made.status_code == 200 and "sm_" in made.text


def test_a_tossed_second_session_cookie_or_an_empty_authorization_does_not_pass(
    client: TestClient, app: FastAPI
) -> None:
    """The guard checks the token against the session the app will use, and an empty
    Authorization header (which the app ignores) does not make a request key-authenticated."""
    sign_up(client, app, "ann@example.com", "premium")
    victim = _session(app, "/dashboard/keys")
    attacker = _session(app, "/dashboard/keys")
    theirs = csrf_token(attacker, app.state.ctx.pepper)
    form = {"content-type": "application/x-www-form-urlencoded", "origin": "null"}
    with TestClient(app, follow_redirects=False) as browser:
        tossed = browser.post(
            "/dashboard/keys",
            headers={**form, "cookie": f"sm_session={attacker}; sm_session={victim}"},
            content=f"csrf={theirs}&name=x",
        )
        assert tossed.status_code == 403 and tossed.json()["detail"] == CROSS_SITE
        doubled = browser.post(  # a visitor's double-submit pair is no key to the JSON API
            "/api/v1/me/feed/rotate",
            headers={**form, "cookie": f"sm_session={victim}; sm_csrf={'v' * 43}"},
            content=f"csrf={'v' * 43}",
        )
        assert doubled.status_code == 403
        empty = browser.post(
            "/api/v1/me/feed/rotate",
            headers={"authorization": "", "origin": EVIL, "cookie": f"sm_session={victim}"},
        )
        assert empty.status_code == 403
