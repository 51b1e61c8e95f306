"""Malformed input gets a 4xx with a message, never a 500: ids past the store's int64, Unicode digits.

Every route with an integer path parameter is found by walking the app (so a new route is covered
without editing this file) and called with 2^63 and 2^64 by every kind of caller, so that each
route is reached past its sign-in check by at least one of them.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from signalmint.accounts.credentials import csrf_token
from signalmint.store import Database
from tests.web.test_access_api import World

HUGE = [2**63, 2**64]
UNICODE_DIGITS = ["²", "①", "\u0661\u0662"]  # superscript two, circled one, Arabic-Indic twelve


class Caller:
    """A way in: no credentials, an API key, or a browser session (with its CSRF token and Origin)."""

    def __init__(self, name: str, headers: dict[str, str], cookies: dict[str, str], csrf: str = "") -> None:
        self.name, self.headers, self.cookies, self.csrf = name, headers, cookies, csrf


def callers(world: World) -> list[Caller]:
    out = [Caller("anonymous", {}, {})]
    for who in ("free", "pro", "admin"):
        out.append(Caller(f"{who} key", {"Authorization": f"Bearer {world.keys[who]}"}, {}))
    for who, subscriber_id, admin in (("pro session", world.ids["pro"], False), ("admin session", None, True)):
        session = asyncio.run(world.ctx.accounts.new_session(subscriber_id, admin=admin))
        origin = {"Origin": world.ctx.settings.base_url.rstrip("/")}
        out.append(Caller(who, origin, {"sm_session": session}, csrf_token(session, world.ctx.pepper)))
    return out


def api_routes(routes: Any) -> Iterator[APIRoute]:
    """Every FastAPI route, inside included routers too (FastAPI 0.16x keeps those as one entry)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif getattr(route, "original_router", None) is not None:
            yield from api_routes(route.original_router.routes)


def integer_path_routes(world: World) -> list[tuple[str, str, list[str]]]:
    """(method, path, integer parameters) for every route that takes an integer in its path."""
    found = []
    for route in api_routes(world.app.routes):
        names = [p.name for p in route.dependant.path_params if p.field_info.annotation is int]
        if names:
            found += [(method, route.path, names) for method in sorted(route.methods or ())]
    return found


def bearer(world: World, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.keys[who]}"}


def as_bytes(headers: dict[str, str]) -> dict[bytes, bytes]:
    return {name.encode(): value.encode() for name, value in headers.items()}


def _says_why(response: Any) -> bool:
    if "json" in response.headers.get("content-type", ""):
        return bool(response.json().get("detail"))
    return len(response.text.strip()) > 0


@pytest.fixture
def world(db: Database) -> World:
    return World(db)


def test_every_integer_path_parameter_refuses_ids_past_int64(world: World) -> None:
    routes = integer_path_routes(world)
    paths = {path for _, path, _ in routes}
    # the routes the outside probe found answering 500 are among them
    assert {"/api/v1/signals/{signal_id}", "/signals/{signal_id}", "/api/v1/me/endpoints/{endpoint_id}"} <= paths
    assert len(routes) >= 20, routes
    who = callers(world)
    client = TestClient(world.app, follow_redirects=False)
    for method, path, names in routes:
        for value in HUGE:
            url = path
            for name in names:
                url = url.replace("{" + name + "}", str(value))
            url = re.sub(r"\{[^}]+\}", "x" * 40, url)  # tokens and the like
            reached = []
            for caller in who:
                client.cookies.clear()
                for name, cookie in caller.cookies.items():
                    client.cookies.set(name, cookie)
                kwargs: dict[str, Any] = {"headers": caller.headers}
                if method == "POST" and caller.csrf:
                    kwargs["data"] = {"csrf": caller.csrf, "amount": "100", "months": "1", "days": "1", "plan": "pro"}
                response = client.request(method, url, **kwargs)
                # a caller stopped at the door is sent to sign in (303) or refused (401, 403)
                assert response.status_code in {303, 400, 401, 403, 404, 422}, (method, url, caller.name, response)
                assert response.status_code == 303 or _says_why(response), (method, url, caller.name)
                if response.status_code in {404, 422}:
                    reached.append(caller.name)
            assert reached, f"{method} {path}: no caller got past the sign-in check"


def test_ids_in_cursors_and_headers_past_int64_are_refused(world: World) -> None:
    for value in HUGE:
        cursor = base64.urlsafe_b64encode(f"id:{value}".encode()).decode().rstrip("=")
        answer = world.get("/api/v1/signals", "pro", params={"cursor": cursor})
        assert answer.status_code == 400 and "cursor" in answer.json()["detail"]
        for path, param in (("/api/v1/admin/subscribers", "after"), ("/api/v1/admin/deliveries", "before")):
            answer = world.get(path, "admin", params={param: str(value)})
            assert answer.status_code == 422 and param in answer.json()["detail"], answer.text
        answer = world.client.get("/api/v1/stream", headers={**bearer(world, "pro"), "Last-Event-ID": str(value)})
        assert answer.status_code == 400 and "Last-Event-ID" in answer.json()["detail"]
    session = asyncio.run(world.ctx.accounts.new_session(None, admin=True))
    world.client.cookies.set("sm_session", session)
    assert world.client.get("/admin/subscribers", params={"after": str(2**64)}).status_code == 422
    world.client.cookies.clear()
    for digit in UNICODE_DIGITS:
        cursor = base64.urlsafe_b64encode(f"id:{digit}".encode()).decode().rstrip("=")
        assert world.get("/api/v1/signals", "pro", params={"cursor": cursor}).status_code == 400
    # header values travel as bytes and Starlette reads them as latin-1: b"\xb2" arrives as "²"
    answer = world.client.get("/api/v1/stream", headers={**as_bytes(bearer(world, "pro")), b"Last-Event-ID": b"\xb2"})
    assert answer.status_code == 400 and "Last-Event-ID" in answer.json()["detail"]


def test_unicode_digits_in_amounts_are_refused_with_a_message(world: World) -> None:
    visitor = TestClient(world.app, follow_redirects=False)
    page = visitor.get("/tip")
    found = re.search(r'name="csrf" value="([^"]*)"', page.text)
    assert found is not None
    for digit in UNICODE_DIGITS:
        answer = visitor.post("/billing/tip", data={"amount": digit, "csrf": found.group(1)})
        assert answer.status_code == 400 and "digits 0-9" in answer.text, answer.text
    subscriber, admin = callers(world)[4:6]
    signed_in = TestClient(world.app, follow_redirects=False, cookies=subscriber.cookies)
    for digit in UNICODE_DIGITS:
        answer = signed_in.post("/billing/credits", data={"amount": digit, "csrf": subscriber.csrf})
        assert answer.status_code == 400 and "digits 0-9" in answer.text, answer.text
        for field in ("daily_budget", "group_seconds"):
            form = {"channel": "email", "csrf": subscriber.csrf, field: digit}
            answer = signed_in.post("/dashboard/preferences", data=form)
            assert answer.status_code == 400, answer.text
    operator = TestClient(world.app, follow_redirects=False, cookies=admin.cookies)
    target = world.ids["free"]
    for digit in UNICODE_DIGITS:
        for action, form in (
            ("payment", {"plan": "pro", "amount": digit, "months": "1"}),
            ("payment", {"plan": "pro", "amount": "100", "months": digit}),
            ("trial", {"days": digit}),
        ):
            answer = operator.post(f"/admin/subscribers/{target}/{action}", data={**form, "csrf": admin.csrf})
            assert answer.status_code == 400 and "digits 0-9" in answer.text, (action, form, answer.text)
