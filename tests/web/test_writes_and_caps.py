"""Anonymous requests write nothing, and every per-subscriber cap holds on every path."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from signalmint.errors import LimitError
from signalmint.store import Database
from signalmint.store.accounts import MAX_WATCHLIST, get_watchlist, set_watchlist
from signalmint.store.auth import MAX_KEYS, create_api_key, list_api_keys
from signalmint.store.outbox import MAX_ENDPOINTS, add_endpoint, list_endpoints
from signalmint.store.tables import metadata
from tests.web.test_access_api import World
from tests.web.test_bad_input import api_routes

NEVER_ENDS = {"/api/v1/stream"}  # an event stream answers for as long as the client listens


# The shared token buckets (PostgreSQL's web replicas share them, store/limits.py) are the rate
# limiter's memory, not data: counting an anonymous request is what they are for.
LIMITER_STATE = {"rate_buckets"}


def snapshot(db: Database) -> dict[str, list[Any]]:
    def read(conn: Any) -> dict[str, list[Any]]:
        tables = [t for t in metadata.sorted_tables if t.name not in LIMITER_STATE]
        return {t.name: sorted(map(repr, conn.execute(select(t)).all())) for t in tables}

    return db.read_sync(read)


@pytest.fixture
def world(db: Database) -> World:
    return World(db)


def test_anonymous_requests_write_nothing(world: World) -> None:
    before = snapshot(world.db)
    visitor = TestClient(world.app, follow_redirects=False)
    routes = api_routes(world.app.routes)
    gets = sorted(r.path for r in routes if "GET" in (r.methods or ()) and r.path not in NEVER_ENDS)
    assert "/feeds/{subscriber_id}/{token}.atom" in gets and len(gets) > 30
    for path in gets:
        url = re.sub(r"\{[^}]*_id\}", "900001", path)
        url = re.sub(r"\{[^}]+\}", "0000", url)
        for params in ({}, {"token": "x" * 40, "checkout": "x", "plan": "pro", "automation": "spikes"}):
            assert visitor.get(url, params=params).status_code < 500, url
    for _ in range(5):  # the probe's request, again and again
        assert visitor.get("/feeds/900001/0000.atom").status_code in {404, 429}
        assert visitor.get(f"/feeds/{world.ids['pro']}/{'0' * 40}.atom").status_code in {404, 429}
    assert snapshot(world.db) == before


def test_wrong_feed_addresses_are_throttled_and_the_right_one_still_works(world: World) -> None:
    url = world.get("/api/v1/me/feed", "premium").json()["url"]
    path = url.split("://", 1)[1].split("/", 1)[1]
    visitor = TestClient(world.app)
    answers = [visitor.get(f"/feeds/{world.ids['premium']}/{'0' * 40}.atom").status_code for _ in range(12)]
    assert answers[:10] == [404] * 10 and answers[10:] == [429, 429]
    assert TestClient(world.app).get("/" + path).status_code in {200, 403}  # the plan decides, not the throttle


def test_api_keys_are_capped_on_the_api_as_on_the_dashboard(world: World) -> None:
    made = [world.request("POST", "/api/v1/me/keys", "pro", json={"name": f"k{i}"}) for i in range(MAX_KEYS + 2)]
    codes = [r.status_code for r in made]
    assert codes == [201] * (MAX_KEYS - 1) + [422] * 3, codes  # the fixture's key is the first of ten
    assert "revoke one first" in made[-1].json()["detail"]
    active = [k for k in world.db.read_sync(list_api_keys, world.ids["pro"]) if k.revoked_at is None]
    assert len(active) == MAX_KEYS
    # the dashboard meets the same cap
    session = asyncio.run(world.ctx.accounts.new_session(world.ids["pro"], admin=False))
    from signalmint.accounts.credentials import csrf_token

    browser = TestClient(world.app, follow_redirects=False, cookies={"sm_session": session})
    form = {"name": "one more", "csrf": csrf_token(session, world.ctx.pepper)}
    refused = browser.post("/dashboard/keys", data=form, headers={"Origin": world.ctx.settings.base_url.rstrip("/")})
    assert refused.status_code == 400 and "revoke one first" in refused.text
    # revoking one makes room again
    first = next(k for k in active if k.name == "k0")
    assert world.request("DELETE", f"/api/v1/me/keys/{first.id}", "pro").status_code == 204
    assert world.request("POST", "/api/v1/me/keys", "pro", json={"name": "again"}).status_code == 201


def test_every_cap_lives_in_the_store_function_that_adds(world: World) -> None:
    now = datetime.now(UTC)
    sid = world.ids["pro"]
    with pytest.raises(LimitError, match="revoke one first"):
        for i in range(MAX_KEYS + 1):
            world.db.write_sync(
                create_api_key, prefix=f"p{i:06d}", hash="h", name="k", now=now, subscriber_id=sid, admin=False
            )
    for i in range(MAX_ENDPOINTS):
        world.db.write_sync(add_endpoint, sid, "webhook", f"webhook+https://example.com/{i}", now)
    with pytest.raises(LimitError, match="at most 20 endpoints"):
        world.db.write_sync(add_endpoint, sid, "telegram", "telegram://42", now)
    assert len(world.db.read_sync(list_endpoints, sid)) == MAX_ENDPOINTS
    free = world.ids["free"]  # the free plan lets a subscriber watch 2 keys
    with pytest.raises(LimitError, match="at most 2 keys"):
        world.db.write_sync(set_watchlist, free, ["AAPL", "MSFT", "IBM"], now)
    assert world.db.read_sync(get_watchlist, free) == {"AAPL", "MSFT"}
    over = world.request("PUT", "/api/v1/me/watchlist", "free", json={"keys": ["AAPL", "MSFT", "IBM"]})
    assert over.status_code == 422 and "at most 2 keys" in over.json()["detail"]
    assert MAX_WATCHLIST >= 1000
