"""Who sees what through the API: authorization matrix, keys, limits, quotas, delays and masks."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection

from signalmint.config import AdminConfig, PlanConfig, Settings, WebConfig
from signalmint.records import Automation, Signal
from signalmint.store import Database, append_signals, sync_automations
from signalmint.store.accounts import confirm_subscriber, ensure_subscriber, set_watchlist, start_subscription
from signalmint.store.plans import load_plans
from signalmint.web.app import create_app
from tests.conftest import stored_id

NUMBERS = ["volume", "baseline", "ratio", "z", "mad", "price_change", "score"]
SECRET = "test-secret-0123456789abcdef"


def settings(db: Database, **overrides: Any) -> Settings:
    plans = [
        # Every plan here reads the API (the tier-leak tests read through it); API access as a plan
        # term, and plans without it, are tested below ("API access is a plan term").
        PlanConfig(
            id="free",
            delay="15m",
            watchlist=2,
            masked_fields=NUMBERS,
            channels=["web", "api"],
            rate_per_second=50,
            burst=100,
        ),
        PlanConfig(
            id="premium", price=2900, trial_days=7, channels=["web", "email", "api"], rate_per_second=50, burst=100
        ),
        PlanConfig(id="pro", price=9900, channels=["web", "api"], api_quota=1000, rate_per_second=50, burst=100),
    ]
    values: dict[str, Any] = {
        "database": db.url,
        "web": WebConfig(public_rate_per_second=1000, public_burst=1000),
        "secret": SECRET,
        "plans": plans,
        "admin": AdminConfig(email="owner@example.com"),
    }
    values.update(overrides)
    return Settings(**values)


class World:
    """An app with automations, signals of various ages, and subscribers on each plan with keys."""

    def __init__(self, db: Database, **overrides: Any) -> None:
        self.db = db
        self.now = datetime.now(UTC)
        db.write_sync(
            sync_automations,
            [
                Automation("spikes", "Spikes", "", "synthetic", "volume_spike", {}),
                Automation("other", "Other", "", "synthetic", "volume_spike", {}),
            ],
            self.now,
        )
        self.app = create_app(settings(db, **overrides), db)
        self.ctx = self.app.state.ctx
        self.signals: list[Signal] = []
        ages = [0.05, 1, 5, 14, 16, 30, 120]  # minutes before now (the API may show a signal a second late)
        for i, minutes in enumerate(ages):
            for key in ("AAPL", "MSFT", "IBM"):
                signal = Signal(
                    automation="spikes" if i % 2 == 0 else "other",
                    key=key,
                    time=self.now - timedelta(minutes=minutes),
                    kind="volume_spike",
                    score=5.0 + i,
                    payload={
                        "volume": 123456.0 + i,
                        "baseline": 1000.0,
                        "ratio": 7.5,
                        "z": 9.25,
                        "mad": 10.0,
                        "price_change": 0.0125,
                        "history": 30.0,
                    },
                )
                self.signals += db.write_sync(append_signals, signal.automation, [signal], self.now)
        self.keys: dict[str, str] = {}
        self.ids: dict[str, int] = {}
        current = {p.id: p for p in db.read_sync(load_plans, current_only=True).values()}
        for name, plan in (("free", "free"), ("premium", "premium"), ("pro", "pro"), ("pro2", "pro")):

            def write(conn: Connection, name: str = name, plan: str = plan) -> int:
                person = ensure_subscriber(conn, f"{name}@example.com", self.now)
                confirm_subscriber(conn, person.id, self.now)
                start_subscription(conn, person.id, current[plan], self.now, origin="test", state="active")
                if plan == "free":
                    set_watchlist(conn, person.id, ["AAPL", "MSFT"], self.now)
                return person.id

            self.ids[name] = db.write_sync(write)
            self.keys[name] = asyncio.run(self.ctx.accounts.create_key("k", subscriber_id=self.ids[name]))[1]
        self.keys["admin"] = asyncio.run(self.ctx.accounts.create_key("admin", subscriber_id=None, admin=True))[1]
        self.client = TestClient(self.app)

    def get(self, path: str, who: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.keys[who]}"} if who else {}
        return self.client.get(path, headers=headers, **kw)

    def request(self, method: str, path: str, who: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.keys[who]}"} if who else {}
        return self.client.request(method, path, headers=headers, **kw)


@pytest.fixture
def world(db: Database) -> World:
    return World(db)


# --- the authorization matrix over every route of the OpenAPI table ---------------------------

PUBLIC_OK = {
    "/api/v1/automations",
    "/api/v1/automations/{name}/outcomes",  # the track record's outcomes, as the viewer may see them
    "/api/v1/chain",  # the public hash chain (test_chain.py): the same for everyone
    "/api/v1/plans",
    "/api/v1/signals",
    "/api/v1/signals/{signal_id}",
    "/api/v1/stream",
    "/healthz",
    "/metrics",
}


def _fill(path: str, world: World, owner: str) -> str:
    own_key = 0
    if "{key_id}" in path and owner != "admin":  # a spare key of the caller's, so revoking it is harmless
        spare, _ = asyncio.run(world.ctx.accounts.create_key("spare", subscriber_id=world.ids[owner]))
        own_key = spare.id
    return (
        path.replace("{signal_id}", str(world.signals[-1].id))
        .replace("{name}", world.signals[-1].automation)
        .replace("{subscriber_id}", str(world.ids["free"]))
        .replace("{key_id}", str(own_key))
    )


def _keys(world: World) -> list[Any]:
    from signalmint.store.tables import api_keys

    with world.db.engine.connect() as conn:
        return list(conn.execute(api_keys.select()))


def _body(path: str) -> dict[str, Any] | None:
    if path.endswith("/watchlist"):
        return {"keys": ["AAPL"]}
    if path.endswith("/me/keys"):
        return {"name": "matrix"}
    if path.endswith("/plan"):
        return {"plan": "premium"}
    if path.endswith("/comp"):
        return {}
    if path.endswith("/trial"):
        return {"days": 3}
    return None


def test_authorization_matrix_covers_every_route(world: World) -> None:
    spec = world.client.get("/openapi.json").json()
    checked = 0
    for path, operations in spec["paths"].items():
        for method in operations:
            if path == "/api/v1/stream":
                continue  # an endless response: covered by the stream tests below
            for who in (None, "free", "pro", "admin"):
                url = _fill(path, world, who or "pro")
                response = world.request(method.upper(), url, who, json=_body(path))
                status = response.status_code
                if path == "/api/v1/email/events":  # the email provider's own secret, not an API key
                    assert status == 401, (method, path, who, status)
                elif path == "/billing/stripe/webhook":  # Stripe-Signature, not an API key (test_stripe_webhook)
                    assert status == 404, (method, path, who, status)  # and Stripe is not this site's provider
                elif path == "/api/v1/ingest/{automation}":  # the automation's signing secret, not a key
                    assert status == 404, (method, path, who, status)  # (test_ingest); none is a push source here
                elif path.startswith("/api/v1/admin"):
                    expected = {None: 401, "free": 403, "pro": 403}.get(who)
                    if expected is not None:
                        assert status == expected, (method, path, who, status)
                    else:
                        assert status < 500 and status not in (401, 403), (method, path, who, status, response.text)
                elif path.startswith("/api/v1/me"):
                    if who is None:
                        assert status == 401, (method, path, who, status)
                    elif who == "admin":
                        assert status == 403, (method, path, who, status)
                    else:  # their own account: allowed (a 4xx may still say e.g. "no watchlist on this plan")
                        assert status < 500 and status not in (401, 403), (method, path, who, status, response.text)
                else:
                    assert path in PUBLIC_OK, f"classify the new route {method} {path} in this test"
                    assert status < 500 and status not in (401, 403), (method, path, who, status)
                checked += 1
    assert checked > 40


def test_a_subscriber_never_reaches_another_subscribers_keys(world: World) -> None:
    theirs = next(k for k in _keys(world) if k.subscriber_id == world.ids["pro2"])
    response = world.request("DELETE", f"/api/v1/me/keys/{theirs.id}", "pro")
    assert response.status_code == 404
    assert world.get("/api/v1/me", "pro2").status_code == 200  # still works
    mine = world.get("/api/v1/me/keys", "pro").json()["items"]
    assert {k["prefix"] for k in mine} == {world.keys["pro"].split("_")[1]}
    me = world.get("/api/v1/me", "pro").json()
    assert me["email"] == "pro@example.com"


def test_subscriber_sessions_get_403_on_admin_routes(world: World) -> None:
    session = asyncio.run(world.ctx.accounts.new_session(world.ids["pro"], admin=False))
    world.client.cookies.set("sm_session", session)
    assert world.client.get("/api/v1/admin/subscribers").status_code == 403
    admin = asyncio.run(world.ctx.accounts.new_session(None, admin=True))
    world.client.cookies.set("sm_session", admin)
    assert world.client.get("/api/v1/admin/subscribers").status_code == 200


def test_no_mass_assignment_of_plan_or_state(world: World) -> None:
    response = world.request("PUT", "/api/v1/me/watchlist", "free", json={"keys": ["AAPL"], "plan": "pro"})
    assert response.status_code == 422
    assert world.get("/api/v1/me", "free").json()["plan"] == "free"


# --- keys -----------------------------------------------------------------------------------


def test_a_revoked_key_gets_401_on_its_next_request(world: World) -> None:
    mine = world.get("/api/v1/me/keys", "pro").json()["items"][0]
    assert world.get("/api/v1/signals", "pro").status_code == 200
    assert world.request("DELETE", f"/api/v1/me/keys/{mine['id']}", "pro").status_code == 204
    response = world.get("/api/v1/signals", "pro")
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_revoking_a_key_through_the_api_tells_every_replica(world: World) -> None:
    heard: list[str] = []
    world.ctx.viewers.announce = heard.append  # what the LISTEN connection does on PostgreSQL
    mine = world.get("/api/v1/me/keys", "pro").json()["items"][0]
    assert world.request("DELETE", f"/api/v1/me/keys/{mine['id']}", "pro").status_code == 204
    assert f"key:{mine['prefix']}" in heard


@pytest.mark.parametrize("header", ["Bearer nope", "Basic abc", "Bearer sm_aaaaaaaa_" + "x" * 43, "Bearer"])
def test_bad_keys_are_refused_not_ignored(world: World, header: str) -> None:
    response = world.client.get("/api/v1/signals", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_database_dump_holds_no_plaintext_key(sqlite_db: Database) -> None:
    world = World(sqlite_db)
    created = world.request("POST", "/api/v1/me/keys", "pro", json={"name": "fresh"}).json()["key"]
    driver = world.db.engine.raw_connection().driver_connection
    assert isinstance(driver, sqlite3.Connection)
    dump = "\n".join(driver.iterdump())
    for text in [*world.keys.values(), created]:
        assert text not in dump
        assert text.split("_", 2)[2] not in dump  # not even the secret part
        assert text.split("_")[1] in dump  # the public prefix is there, to find the row
    assert SECRET not in dump


# --- rate limit and quota --------------------------------------------------------------------


def test_rate_limit_accepts_burst_plus_rate_times_t_then_429(db: Database) -> None:
    # A slow refill, so even a loaded machine asks faster than the bucket refills and gets refused.
    plans = [PlanConfig(id="pro", channels=["web", "api"], rate_per_second=5, burst=10)]
    world = World(db, plans=[*plans, PlanConfig(id="free"), PlanConfig(id="premium")])
    accepted = refused = 0
    start = time.monotonic()
    first_answered = last_refused = start
    last: Any = None
    while time.monotonic() - start < 2.0:
        asked = time.monotonic()
        answer = world.get("/api/v1/automations", "pro")
        if first_answered == start:
            first_answered = time.monotonic()
        if answer.status_code == 200:
            accepted += 1
        else:
            assert answer.status_code == 429
            refused += 1
            last, last_refused = answer, asked  # the latest refusal
    elapsed = time.monotonic() - start
    # The bucket is made full at its first decision (before the first answer) and refills at the
    # rate: it cannot have given more than burst + rate x the whole run. A refusal means it was
    # empty (under one token): by the latest refusal it had given all it had made since its first
    # decision. The bounds are a few requests apart on a quiet machine; a loaded one (slow
    # answers) widens them by what it cannot know, and no more.
    most = 10 + 5 * elapsed
    least = 10 + 5 * (last_refused - first_answered) - 1
    assert least <= accepted <= most + 1, (least, accepted, most)
    assert refused > 0
    assert int(last.headers["retry-after"]) >= 1
    assert last.headers["ratelimit-remaining"] == "0"


def test_monthly_quota_then_overage_or_refusal(db: Database) -> None:
    plans = [
        PlanConfig(id="pro", channels=["web", "api"], api_quota=3, rate_per_second=100, burst=100),
        PlanConfig(id="free", channels=["web", "api"], api_quota=2, overage_price=5, rate_per_second=100, burst=100),
        PlanConfig(id="premium"),
    ]
    world = World(db, plans=plans)
    statuses = [world.get("/api/v1/automations", "pro").status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    refused = [world.get("/api/v1/automations", "free") for _ in range(3)]
    assert [r.status_code for r in refused] == [200, 200, 429]  # overage needs credits to pay it
    assert "top up credits" in refused[2].json()["detail"]
    from signalmint.billing.credits import credit

    world.db.write_sync(credit, world.ids["free"], 100_000, "grant", None, world.now)  # two calls at 5 cents
    metered = [world.get("/api/v1/automations", "free") for _ in range(3)]
    assert [r.status_code for r in metered] == [200, 200, 429]  # then the credits are spent
    assert refused[0].headers["x-quota-remaining"] == "1"
    asyncio.run(world.ctx.meter.flush())
    from signalmint.billing.usage import month_of
    from signalmint.store.usage import get_usage

    assert world.db.read_sync(get_usage, world.ids["free"], month_of(datetime.now(UTC))) == (4, 2)


# --- delays and masks --------------------------------------------------------------------------


def _times(items: list[dict[str, Any]]) -> list[datetime]:
    return [datetime.fromisoformat(i["time"].replace("Z", "+00:00")) for i in items]


def test_public_view_is_never_fresher_than_the_longest_delay_and_masked_like_free(world: World) -> None:
    items = world.get("/api/v1/signals", params={"limit": 500}).json()["items"]
    now = datetime.now(UTC)
    assert items, "older signals are public"
    assert all(t <= now - timedelta(minutes=15) for t in _times(items))
    assert len(items) == sum(1 for s in world.signals if s.time <= now - timedelta(minutes=15))
    stored = {s.id: s for s in world.signals}
    for item in items:
        # scheme 2: the chain hash and the commitment are public; the salt that opens it is not
        assert item["score"] is None and item["salt"] is None
        assert item["hash"] == stored[item["id"]].hash and item["commitment"] == stored[item["id"]].commitment
        assert not set(item["payload"]) & set(NUMBERS)
    fresh = [s for s in world.signals if s.time > now - timedelta(minutes=14)]
    for signal in fresh:
        assert world.get(f"/api/v1/signals/{signal.id}").status_code == 404


def test_free_sees_only_its_watchlist_late_and_masked(world: World) -> None:
    items = world.get("/api/v1/signals", "free", params={"limit": 500}).json()["items"]
    assert {i["key"] for i in items} == {"AAPL", "MSFT"}
    assert all(t <= datetime.now(UTC) - timedelta(minutes=15) for t in _times(items))
    assert all(not set(i["payload"]) & set(NUMBERS) and i["score"] is None for i in items)
    ibm = [s for s in world.signals if s.key == "IBM"][-1]
    assert world.get(f"/api/v1/signals/{ibm.id}", "free").status_code == 404


def test_premium_sees_everything_at_once_unmasked(world: World) -> None:
    items = world.get("/api/v1/signals", "premium", params={"limit": 500}).json()["items"]
    assert len(items) == len(world.signals)
    assert all(i["payload"]["volume"] > 0 and i["hash"] for i in items)


def test_masked_fields_never_leak_through_pages(world: World) -> None:
    old = next(s for s in world.signals if s.time <= world.now - timedelta(minutes=16))
    html = world.client.get(f"/signals/{old.id}").text
    assert old.key in html
    for secret in ("123,45", "123456", "7.5×", "9.25", "1.25%"):
        assert secret not in html, secret
    home = world.client.get("/").text + world.client.get("/automations/spikes").text
    assert "123456" not in home and "123,45" not in home


def test_entitlements_follow_a_state_change_at_once(world: World) -> None:
    assert len(world.get("/api/v1/signals", "premium", params={"limit": 500}).json()["items"]) == len(world.signals)
    admin = {"Authorization": f"Bearer {world.keys['admin']}"}
    world.client.post(f"/api/v1/admin/subscribers/{world.ids['premium']}/plan", json={"plan": "free"}, headers=admin)
    items = world.get("/api/v1/signals", "premium", params={"limit": 500}).json()["items"]
    assert items == []  # free with an empty watchlist: nothing, immediately


def test_plan_versions_keep_what_existing_subscribers_bought(db: Database) -> None:
    first = World(db)
    assert first.get("/api/v1/me", "pro").json()["plan_version"] == 1
    changed = [
        PlanConfig(id="free", delay="15m", watchlist=2, masked_fields=NUMBERS),
        PlanConfig(id="premium", price=2900, trial_days=7, channels=["web", "email"]),
        PlanConfig(id="pro", price=12900, channels=["web", "api"], api_quota=1000),
    ]
    app = create_app(settings(db, plans=changed), db)
    plans = TestClient(app).get("/api/v1/plans").json()["items"]
    assert {p["id"]: (p["version"], p["price"]) for p in plans}["pro"] == (2, 12900)
    me = TestClient(app).get("/api/v1/me", headers={"Authorization": f"Bearer {first.keys['pro']}"}).json()
    assert (me["plan"], me["plan_version"]) == ("pro", 1)


def test_stream_releases_only_what_the_viewer_may_see(world: World, live_server: Any) -> None:
    import httpx

    from .test_api import _read_events

    with live_server(world.app) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        first = stored_id(world.signals[0]) - 1
        headers = {"Last-Event-ID": str(first), "Authorization": f"Bearer {world.keys['free']}"}
        with http.stream("GET", "/api/v1/stream", headers=headers) as response:
            events = _read_events(response, 4)
    import json

    bodies = [json.loads(e["data"]) for e in events]
    assert {b["key"] for b in bodies} <= {"AAPL", "MSFT"}
    assert all(not set(b["payload"]) & set(NUMBERS) for b in bodies)
    assert all(t <= datetime.now(UTC) - timedelta(minutes=15) for t in _times(bodies))
    assert re.fullmatch(r"\d+", events[0]["id"])
