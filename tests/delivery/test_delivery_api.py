"""Subscribers' endpoints, the Atom feed, one-click unsubscribe, bounces and dead letters, over HTTP."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from signalmint.config import DeliveryConfig, EmailConfig, PlanConfig, Settings
from signalmint.delivery.worker import unsubscribe_token
from signalmint.records import Automation, OutboxRow, Signal
from signalmint.store import Database, append_signals, sync_automations
from signalmint.store.accounts import confirm_subscriber, ensure_subscriber, start_subscription
from signalmint.store.outbox import add_endpoint, enqueue, list_deliveries, list_endpoints
from signalmint.store.plans import load_plans
from signalmint.web.app import create_app

from ..conftest import stored_id
from .conftest import HttpSink

NUMBERS = ["volume", "baseline", "ratio", "z", "mad", "price_change", "score"]
INBOUND = "inbound-secret-0123456789"


class Site:
    def __init__(self, db: Database, *, loopback: bool = True) -> None:
        self.db = db
        now = datetime.now(UTC)
        db.write_sync(sync_automations, [Automation("spikes", "Spikes", "", "synthetic", "volume_spike", {})], now)
        settings = Settings(
            database=db.url,
            secret="delivery-api-secret-0123456789",
            delivery=DeliveryConfig(allow_loopback_targets=loopback),
            email=EmailConfig(inbound_secret=INBOUND),
            plans=[
                PlanConfig(id="free", delay="15m", masked_fields=NUMBERS, channels=["web", "rss", "email"]),
                PlanConfig(id="premium", price=2900, channels=["web", "webhook", "apprise", "rss", "email"]),
            ],
        )
        self.app = create_app(settings, db)
        self.ctx = self.app.state.ctx
        self.client = TestClient(self.app)
        plans = {p.id: p for p in db.read_sync(load_plans, current_only=True).values()}
        self.keys: dict[str, str] = {}
        self.ids: dict[str, int] = {}
        for name in ("free", "premium", "other"):
            plan = plans["free" if name == "free" else "premium"]

            def write(conn: Any, name: str = name, plan: Any = plan) -> int:
                person = ensure_subscriber(conn, f"{name}@example.com", now)
                confirm_subscriber(conn, person.id, now)
                start_subscription(conn, person.id, plan, now, origin="test", state="active")
                add_endpoint(conn, person.id, "email", f"mailto:{name}@example.com", now)
                return int(person.id)

            self.ids[name] = db.write_sync(write)
            self.keys[name] = asyncio.run(self.ctx.accounts.create_key("k", subscriber_id=self.ids[name]))[1]
        self.keys["admin"] = asyncio.run(self.ctx.accounts.create_key("a", subscriber_id=None, admin=True))[1]

    def call(self, method: str, path: str, who: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.keys[who]}"} if who else {}
        return self.client.request(method, path, headers={**headers, **kw.pop("headers", {})}, **kw)


@pytest.fixture
def site(db: Database) -> Site:
    return Site(db)


@pytest.mark.parametrize(
    "url",
    ["https://127.0.0.1/hook", "https://10.0.0.8/x", "https://169.254.169.254/latest", "https://0x7f000001/",
     "https://[::ffff:127.0.0.1]/", "https://localhost/hook", "https://2130706433/", "https://100.64.0.1/"],
)  # fmt: skip
def test_private_webhook_targets_are_refused_at_registration(db: Database, url: str) -> None:
    site = Site(db, loopback=False)
    response = site.call("POST", "/api/v1/me/endpoints", "premium", json={"channel": "webhook", "url": url})
    assert response.status_code == 422, response.text
    assert site.db.read_sync(list_endpoints, site.ids["premium"])[-1].channel == "email"


def test_registering_a_webhook_shows_its_secret_once(site: Site) -> None:
    made = site.call(
        "POST", "/api/v1/me/endpoints", "premium", json={"channel": "webhook", "url": "https://hooks.example/a?t=1"}
    )
    assert made.status_code == 201 and made.json()["secret"].startswith("whsec_")
    listed = site.call("GET", "/api/v1/me/endpoints", "premium").json()["items"]
    assert {e["channel"] for e in listed} == {"email", "webhook"}
    assert "secret" not in str(listed) and "t=1" not in str(listed) and "premium@" not in str(listed)


def test_plans_decide_which_channels_can_be_added(site: Site) -> None:
    response = site.call(
        "POST", "/api/v1/me/endpoints", "free", json={"channel": "webhook", "url": "https://hooks.example/a"}
    )
    assert response.status_code == 403


def test_endpoints_of_others_are_not_found(site: Site) -> None:
    theirs = site.db.read_sync(list_endpoints, site.ids["other"])[0]
    assert site.call("DELETE", f"/api/v1/me/endpoints/{theirs.id}", "premium").status_code == 404
    assert site.call("GET", f"/api/v1/me/endpoints/{theirs.id}/deliveries", "premium").status_code == 404
    assert site.call("POST", f"/api/v1/me/endpoints/{theirs.id}/test", "premium").status_code == 404
    assert site.db.read_sync(list_endpoints, site.ids["other"])[0].status == "active"


def test_send_test_event_reaches_the_receiver_signed(site: Site, http_sink: HttpSink) -> None:
    made = site.call(
        "POST", "/api/v1/me/endpoints", "premium", json={"channel": "webhook", "url": http_sink.url("/t")}
    ).json()
    result = site.call("POST", f"/api/v1/me/endpoints/{made['id']}/test", "premium").json()
    assert result["ok"] is True, result
    (request,) = http_sink.wait_for(1)
    Webhook(made["secret"]).verify(request.body, request.headers)
    assert request.json()["type"] == "test"


def test_one_click_unsubscribe_works_without_cookies(site: Site) -> None:
    endpoint = site.db.read_sync(list_endpoints, site.ids["free"])[0]
    token = unsubscribe_token(endpoint.id, site.ctx.pepper)
    assert site.client.post(f"/unsubscribe/{endpoint.id}/{'0' * 32}").status_code == 404
    response = TestClient(site.app).post(
        f"/unsubscribe/{endpoint.id}/{token}", content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert response.status_code == 200
    assert site.db.read_sync(list_endpoints, site.ids["free"])[0].status == "disabled"


def test_hard_bounces_and_complaints_suppress_the_address(site: Site) -> None:
    event = {"type": "bounce", "email": "Free@Example.com", "permanent": True}
    assert site.call("POST", "/api/v1/email/events", json=event).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert site.client.post("/api/v1/email/events", json=event, headers=wrong).status_code == 401
    soft = site.client.post(
        "/api/v1/email/events", json={**event, "permanent": False}, headers={"Authorization": f"Bearer {INBOUND}"}
    )
    assert soft.json() == {"suppressed": 0}
    hard = site.client.post("/api/v1/email/events", json=event, headers={"Authorization": f"Bearer {INBOUND}"})
    assert hard.json() == {"suppressed": 1}
    (endpoint,) = site.db.read_sync(list_endpoints, site.ids["free"])
    assert endpoint.status == "disabled" and "bounce" in endpoint.status_reason


def test_the_private_feed_shows_what_the_plan_shows_and_rotates(site: Site) -> None:
    now = datetime.now(UTC)
    for minutes in (1, 30):
        signal = Signal(
            "spikes", "AAPL", now - timedelta(minutes=minutes), "volume_spike", 9.0, {"volume": 31337.0, "ratio": 9.0}
        )
        site.db.write_sync(append_signals, "spikes", [signal], now)
    url = site.call("GET", "/api/v1/me/feed", "free").json()["url"]
    path = url.split("8000", 1)[1]
    feed = site.client.get(path)
    assert feed.status_code == 200 and feed.headers["content-type"].startswith("application/atom+xml")
    assert feed.text.count("<entry>") == 1  # the 1-minute-old one is still embargoed for free
    assert "31337" not in feed.text  # and numbers are masked
    premium_path = site.call("GET", "/api/v1/me/feed", "premium").json()["url"].split("8000", 1)[1]
    assert site.client.get(premium_path).text.count("<entry>") == 2
    rotated = site.call("POST", "/api/v1/me/feed/rotate", "free").json()["url"].split("8000", 1)[1]
    assert site.client.get(path).status_code == 404 and site.client.get(rotated).status_code == 200


def test_admin_lists_dead_letters_and_replays_them(site: Site) -> None:
    now = datetime.now(UTC)
    (signal,) = site.db.write_sync(
        append_signals, "spikes", [Signal("spikes", "AAPL", now, "volume_spike", 9.0, {})], now
    )
    endpoint = site.db.read_sync(list_endpoints, site.ids["premium"])[0]
    row = OutboxRow(stored_id(signal), endpoint.id, site.ids["premium"], now)
    site.db.write_sync(enqueue, [row], now)
    from sqlalchemy import update

    from signalmint.store.tables import deliveries

    site.db.write_sync(lambda c: c.execute(update(deliveries).values(status="dead", last_error="permanent: 550")))
    assert site.call("GET", "/api/v1/admin/deliveries", "premium").status_code == 403
    dead = site.call("GET", "/api/v1/admin/deliveries", "admin").json()
    assert [d["last_error"] for d in dead["items"]] == ["permanent: 550"] and dead["counts"] == {"dead": 1}
    replayed = site.call("POST", f"/api/v1/admin/deliveries/{dead['items'][0]['id']}/replay", "admin")
    assert replayed.status_code == 200
    (again,) = site.db.read_sync(list_deliveries)
    assert again.status == "pending" and again.attempts == 0
