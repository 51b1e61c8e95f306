"""The dashboard's "Where alerts go": endpoints, test events, delivery logs, Telegram and the feed.

Through the real app on real databases, signed in by the real magic link; test events go to a
local HTTP receiver (``tests/delivery/conftest.py``) and are checked with standardwebhooks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update
from standardwebhooks import Webhook

from signalmint.config import DeliveryConfig, PlanConfig, TelegramConfig
from signalmint.delivery.fanout import FanOut
from signalmint.records import Endpoint, OutboxRow, Signal
from signalmint.store import Database, append_signals
from signalmint.store.outbox import add_endpoint, enqueue, list_endpoints, set_endpoint_status
from signalmint.store.tables import deliveries
from signalmint.web import app as web_app
from signalmint.web.routes import dashboard_delivery
from tests.conftest import stored_id
from tests.delivery.conftest import HttpSink, Reply, SinkServer

from .test_account_pages import AUTOMATION, client_for, make_app
from .test_dashboard import signed_in, subscriber_id

EVERYTHING = ["web", "email", "telegram", "webhook", "apprise", "rss"]
PLANS = [
    PlanConfig(id="basic", automations=["us-stocks"], channels=["web"]),
    PlanConfig(id="alerts", automations=["us-stocks"], channels=EVERYTHING),
]
SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]{20,}")


def build(db: Database, *, loopback: bool = False, **overrides: Any) -> FastAPI:
    app = make_app(
        db,
        plans=PLANS,
        automations=[AUTOMATION],
        delivery=DeliveryConfig(allow_loopback_targets=loopback),
        base_url="http://testserver",
        **overrides,
    )
    if dashboard_delivery not in web_app.ROUTES:  # until app.py lists the router
        app.include_router(dashboard_delivery.router)
    return app


@pytest.fixture
def app(db: Database) -> FastAPI:
    return build(db, loopback=True)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with client_for(app) as c:
        yield c


@pytest.fixture(scope="module")
def sink() -> Iterator[HttpSink]:
    receiver = HttpSink()
    with SinkServer(receiver) as server:
        receiver.port = server.port
        yield receiver


@pytest.fixture
def http_sink(sink: HttpSink) -> Iterator[HttpSink]:
    sink.reset()
    yield sink
    sink.reset()


def section(html: str) -> str:
    """The "Where alerts go" card of a dashboard page."""
    found = re.search(r'<section class="card anchor" id="delivery".*?</section>', html, re.S)
    assert found is not None, "the dashboard has no delivery section"
    return found.group(0)


def endpoints_of(db: Database, email: str = "ann@example.com") -> list[Endpoint]:
    return db.read_sync(list_endpoints, subscriber_id(db, email))


def add_webhook(client: TestClient, csrf: str, url: str) -> Any:
    return client.post("/dashboard/endpoints", data={"channel": "webhook", "url": url, "csrf": csrf})


# --- the fan-out learns of a change at once ---------------------------------------------------------


def test_a_changed_endpoint_reaches_the_fan_out_at_once(client: TestClient, app: FastAPI, db: Database) -> None:
    """The fan-out here keeps its audience for an hour; what the dashboard changes reaches it anyway,
    through the store's audience version (the web never touches the engine or its fan-out)."""
    fanout = FanOut({"webhook"}, refresh_seconds=3600, version=lambda: db.audience_version)
    now = datetime.now(UTC)

    def sent_to(key: str) -> set[int]:
        """The webhook endpoints the fan-out gives a new signal to."""
        signal = Signal("us-stocks", key, now, "volume_spike", 5.0, {"ratio": 5.0})
        stored = db.write_sync(append_signals, "us-stocks", [signal], now)
        return {row.endpoint_id for row in db.read_sync(fanout.deliveries_for, stored, now)}

    csrf = signed_in(client, app, "alerts")
    assert sent_to("A") == set()  # no webhook yet; the audience is now built
    assert add_webhook(client, csrf, "http://127.0.0.1:8080/hooks/a").status_code == 200
    (hook,) = [e for e in endpoints_of(db) if e.channel == "webhook"]
    assert sent_to("B") == {hook.id}
    assert client.post(f"/dashboard/endpoints/{hook.id}/pause", data={"csrf": csrf}).status_code == 303
    assert sent_to("C") == set()
    assert client.post(f"/dashboard/endpoints/{hook.id}/resume", data={"csrf": csrf}).status_code == 303
    assert sent_to("D") == {hook.id}


# --- adding a webhook ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [("https://10.0.0.8/x", "10.0.0.8 is a private address"), ("https://127.0.0.1/hook", "loopback address"),
     ("https://169.254.169.254/latest", "169.254.169.254"), ("http://hooks.example/x", "only https URLs"),
     ("https://[::ffff:127.0.0.1]/<b>", "")],
)  # fmt: skip
def test_a_private_webhook_address_is_refused_with_a_reason(db: Database, url: str, why: str) -> None:
    app = build(db, loopback=False)
    with client_for(app) as client:
        csrf = signed_in(client, app, "alerts")
        refused = add_webhook(client, csrf, url)
        assert refused.status_code == 400
        card = section(refused.text)
        assert "We cannot send there:" in card and why in card
        assert 'aria-invalid="true"' in card and "<b>" not in card  # what they typed stays, escaped
    assert [e.channel for e in endpoints_of(db)] == ["email"]


def test_a_webhook_shows_its_secret_once_and_then_never(client: TestClient, app: FastAPI, db: Database) -> None:
    csrf = signed_in(client, app, "alerts")
    made = add_webhook(client, csrf, "http://127.0.0.1:8080/hooks/signals?token=s3cr3t")
    assert made.status_code == 200 and made.headers["cache-control"] == "no-store"
    (secret,) = set(SECRET.findall(made.text))
    assert "Standard Webhooks" in made.text and f'secret = <span class="s">"{secret}"</span>' in made.text
    assert "from standardwebhooks import Webhook" in made.text and "Webhook(secret).verify(body, headers)" in made.text
    (hook,) = [e for e in endpoints_of(db) if e.channel == "webhook"]
    assert hook.secrets == (secret,) and hook.url == "webhook+http://127.0.0.1:8080/hooks/signals?token=s3cr3t"

    card = section(client.get("/dashboard").text)
    assert "http://127.0.0.1:8080/hooks/signals" in card
    assert "whsec_" not in card and secret not in client.get("/dashboard").text
    assert "s3cr3t" not in card  # the query string may hold a credential
    assert secret not in client.get(f"/dashboard/endpoints/{hook.id}/log").text


def test_apprise_urls_are_vetted_too_and_have_no_secret(db: Database) -> None:
    app = build(db, loopback=False)
    with client_for(app) as client:
        csrf = signed_in(client, app, "alerts")
        form = {"channel": "apprise", "csrf": csrf}
        refused = client.post("/dashboard/endpoints", data={**form, "url": "json://10.1.2.3/alerts"})
        assert refused.status_code == 400 and "We cannot send there" in section(refused.text)
        added = client.post("/dashboard/endpoints", data={**form, "url": "ntfy://ntfy.sh/my-topic"})
        assert added.status_code == 303 and added.headers["location"] == "/dashboard?saved=added#delivery"
        card = section(client.get(added.headers["location"]).text)
        assert "The endpoint is added" in card and "ntfy://…" in card and "my-topic" not in card


def test_only_plans_with_webhooks_get_the_form(client: TestClient, app: FastAPI, db: Database) -> None:
    csrf = signed_in(client, app, "basic")
    assert 'id="delivery"' not in client.get("/dashboard").text  # nothing to deliver on this plan
    refused = add_webhook(client, csrf, "https://hooks.example/a")
    assert refused.status_code == 403
    forged = client.post("/dashboard/endpoints", data={"channel": "email", "url": "mailto:x@y.z", "csrf": csrf})
    assert forged.status_code == 403
    assert [e.channel for e in endpoints_of(db)] == ["email"]


# --- pause, resume, remove; whose endpoint; CSRF --------------------------------------------------


def test_pause_resume_and_remove_an_own_endpoint(client: TestClient, app: FastAPI, db: Database) -> None:
    csrf = signed_in(client, app, "alerts")
    (email,) = endpoints_of(db)
    paused = client.post(f"/dashboard/endpoints/{email.id}/pause", data={"csrf": csrf})
    assert paused.status_code == 303 and paused.headers["location"] == "/dashboard?saved=paused#delivery"
    assert endpoints_of(db)[0].status == "paused"
    card = section(client.get("/dashboard").text)
    assert "Paused by you." in card and f'action="/dashboard/endpoints/{email.id}/resume"' in card

    assert client.post(f"/dashboard/endpoints/{email.id}/resume", data={"csrf": csrf}).status_code == 303
    assert (endpoints_of(db)[0].status, endpoints_of(db)[0].status_reason) == ("active", "")
    assert f'action="/dashboard/endpoints/{email.id}/pause"' in section(client.get("/dashboard").text)

    removed = client.post(f"/dashboard/endpoints/{email.id}/remove", data={"csrf": csrf})
    assert removed.status_code == 303
    assert endpoints_of(db)[0].status == "disabled"
    card = section(client.get(removed.headers["location"]).text)
    assert "Removed: nothing more is sent there." in card and f'data-endpoint="{email.id}"' not in card
    # a removed endpoint cannot be resumed from a stale page either
    assert client.post(f"/dashboard/endpoints/{email.id}/resume", data={"csrf": csrf}).status_code == 400


def test_another_subscribers_endpoint_is_not_found(client: TestClient, app: FastAPI, db: Database) -> None:
    with client_for(app) as other:
        signed_in(other, app, "alerts", email="bob@example.com")
    (theirs,) = endpoints_of(db, "bob@example.com")
    csrf = signed_in(client, app, "alerts")
    for action in ("pause", "resume", "remove", "test"):
        answer = client.post(f"/dashboard/endpoints/{theirs.id}/{action}", data={"csrf": csrf})
        assert answer.status_code == 404, action
    assert client.get(f"/dashboard/endpoints/{theirs.id}/log").status_code == 404
    assert client.get("/dashboard/endpoints/999999/log").status_code == 404
    assert endpoints_of(db, "bob@example.com")[0].status == "active"


def test_every_form_needs_the_session_token(client: TestClient, app: FastAPI, db: Database) -> None:
    with client_for(app) as other:
        other_csrf = signed_in(other, app, "alerts", email="bob@example.com")
    signed_in(client, app, "alerts")
    (mine,) = endpoints_of(db)
    forms = {
        "/dashboard/endpoints": {"channel": "webhook", "url": "https://hooks.example/a"},
        f"/dashboard/endpoints/{mine.id}/pause": {},
        f"/dashboard/endpoints/{mine.id}/resume": {},
        f"/dashboard/endpoints/{mine.id}/remove": {},
        f"/dashboard/endpoints/{mine.id}/test": {},
        "/dashboard/telegram": {},
        "/dashboard/feed/rotate": {},
    }
    for path, form in forms.items():
        assert client.post(path, data=form).status_code == 403, path
        assert client.post(path, data={**form, "csrf": other_csrf}).status_code == 403, path
        assert client.post(path, json={**form, "csrf": other_csrf}).status_code == 403, path
    assert [(e.channel, e.status) for e in endpoints_of(db)] == [("email", "active")]


def test_signed_out_visitors_go_to_sign_in(client: TestClient) -> None:
    assert client.post("/dashboard/endpoints/1/pause", data={"csrf": "x"}).headers["location"] == "/login"
    assert client.get("/dashboard/endpoints/1/log").headers["location"] == "/login"


# --- why an endpoint is paused or disabled -----------------------------------------------------------


def test_paused_and_disabled_endpoints_say_why(client: TestClient, app: FastAPI, db: Database) -> None:
    signed_in(client, app, "alerts")
    sid, now = subscriber_id(db), datetime.now(UTC)

    def seed(conn: Any) -> None:
        chat = add_endpoint(conn, sid, "telegram", "telegram://584930217", now)
        blocked = "Telegram sendMessage: 403 Forbidden: bot was blocked by the user"
        set_endpoint_status(conn, chat.id, "paused", blocked, now)
        gone = add_endpoint(conn, sid, "webhook", "webhook+https://old.example/hook", now, ["whsec_x"])
        said = "POST https://old.example/hook answered 410 (endpoint gone: disable it)"
        set_endpoint_status(conn, gone.id, "disabled", said, now)
        bounced = add_endpoint(conn, sid, "email", "mailto:old@example.com", now)
        set_endpoint_status(conn, bounced.id, "disabled", "suppressed: bounce", now)

    db.write_sync(seed)
    card = section(client.get("/dashboard").text)
    assert "Paused: the bot was blocked. Unblock it in Telegram and press Resume." in card
    assert "Disabled: the receiver answered 410 Gone. Fix it, then press Resume." in card
    assert "Disabled: emails to this address bounced" in card
    assert "chat …0217" in card and "584930217" not in card
    assert card.count('/resume">') == 2  # a bounced address stays off


# --- test events -------------------------------------------------------------------------------------


def test_send_test_event_shows_what_the_receiver_said(
    client: TestClient, app: FastAPI, db: Database, http_sink: HttpSink
) -> None:
    csrf = signed_in(client, app, "alerts")
    secret = SECRET.findall(add_webhook(client, csrf, http_sink.url("/hook")).text)[0]
    (hook,) = [e for e in endpoints_of(db) if e.channel == "webhook"]

    sent = client.post(f"/dashboard/endpoints/{hook.id}/test", data={"csrf": csrf})
    assert sent.status_code == 200
    (request,) = http_sink.wait_for(1)
    Webhook(secret).verify(request.body, request.headers)
    assert request.json()["type"] == "test"
    flash = section(sent.text)
    assert 'data-tone="success"' in flash and "Test event delivered to Webhook http://127.0.0.1:" in flash
    assert "Receipt: 200." in flash

    http_sink.script(Reply(503, body=b"<b>down</b> for maintenance"))
    failed = section(client.post(f"/dashboard/endpoints/{hook.id}/test", data={"csrf": csrf}).text)
    assert 'data-tone="error"' in failed and "The test event did not reach Webhook" in failed
    assert "answered 503" in failed and "<b>down" not in failed and "&lt;b&gt;down" in failed


def test_no_test_events_to_channels_outside_the_plan(client: TestClient, app: FastAPI, db: Database) -> None:
    csrf = signed_in(client, app, "basic")
    (email,) = endpoints_of(db)
    assert client.post(f"/dashboard/endpoints/{email.id}/test", data={"csrf": csrf}).status_code == 403


# --- the delivery log ----------------------------------------------------------------------------------


def test_the_delivery_log_lists_the_endpoints_deliveries(client: TestClient, app: FastAPI, db: Database) -> None:
    signed_in(client, app, "alerts")
    (email,) = endpoints_of(db)
    sid, now = subscriber_id(db), datetime.now(UTC)
    signals = [
        Signal("us-stocks", f"K{i}", now - timedelta(minutes=i), "volume_spike", 5.0, {"ratio": 5.0}) for i in range(3)
    ]
    made = db.write_sync(append_signals, "us-stocks", signals, now)
    rows = [OutboxRow(stored_id(s), email.id, sid, now) for s in made]
    db.write_sync(enqueue, rows, now)

    def outcomes(conn: Any) -> None:
        conn.execute(update(deliveries).where(deliveries.c.signal_id == made[0].id).values(
            status="sent", attempts=1, sent_at=now))  # fmt: skip
        conn.execute(update(deliveries).where(deliveries.c.signal_id == made[1].id).values(
            status="dead", attempts=8, last_error="permanent: 550 <mailbox> unavailable"))  # fmt: skip

    db.write_sync(outcomes)
    assert f'href="/dashboard/endpoints/{email.id}/log"' in section(client.get("/dashboard").text)
    page = client.get(f"/dashboard/endpoints/{email.id}/log")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    body = page.text.split("<tbody>")[1].split("</tbody>")[0]
    assert body.count("data-delivery=") == 3
    for signal in made:
        assert f'href="/signals/{signal.id}"' in body
    assert ">Sent<" in body and ">Failed<" in body and ">Waiting<" in body
    assert "permanent: 550 &lt;mailbox&gt; unavailable" in body and "<mailbox>" not in body


def test_an_empty_log_says_so(client: TestClient, app: FastAPI, db: Database) -> None:
    signed_in(client, app, "alerts")
    (email,) = endpoints_of(db)
    page = client.get(f"/dashboard/endpoints/{email.id}/log")
    assert page.status_code == 200 and "Nothing was sent here yet" in page.text


# --- Telegram and the private feed -------------------------------------------------------------------


def test_connect_telegram_shows_a_one_time_link(db: Database) -> None:
    app = build(db, telegram=TelegramConfig(token="123:abc", bot="signalmint_bot"))
    with client_for(app) as client:
        csrf = signed_in(client, app, "alerts")
        assert 'action="/dashboard/telegram#delivery"' in section(client.get("/dashboard").text)
        shown = client.post("/dashboard/telegram", data={"csrf": csrf})
        assert shown.status_code == 200
        links = set(re.findall(r"https://t\.me/signalmint_bot\?start=[A-Za-z0-9_-]+", section(shown.text)))
        assert len(links) == 1
        again = set(re.findall(r"https://t\.me/signalmint_bot\?start=[A-Za-z0-9_-]+", client.post(
            "/dashboard/telegram", data={"csrf": csrf}).text))  # fmt: skip
        assert again and again != links  # a new one-time link each time


def test_no_telegram_button_without_a_bot(client: TestClient, app: FastAPI) -> None:
    csrf = signed_in(client, app, "alerts")
    assert "/dashboard/telegram" not in client.get("/dashboard").text
    assert client.post("/dashboard/telegram", data={"csrf": csrf}).status_code == 404


def test_the_feed_address_is_shown_and_rotates(client: TestClient, app: FastAPI) -> None:
    csrf = signed_in(client, app, "alerts")
    pattern = re.compile(r"http://testserver(/feeds/\d+/[0-9a-f]{40}\.atom)")
    (old,) = set(pattern.findall(section(client.get("/dashboard").text)))
    assert client.get(old).status_code == 200
    rotated = client.post("/dashboard/feed/rotate", data={"csrf": csrf})
    assert rotated.status_code == 303 and rotated.headers["location"] == "/dashboard?saved=feed#delivery"
    card = section(client.get(rotated.headers["location"]).text)
    (new,) = set(pattern.findall(card))
    assert new != old and "the old one stopped working" in card
    assert client.get(old).status_code == 404 and client.get(new).status_code == 200


def test_no_feed_without_rss_in_the_plan(client: TestClient, app: FastAPI) -> None:
    csrf = signed_in(client, app, "basic")
    assert "/feeds/" not in client.get("/dashboard").text
    assert client.post("/dashboard/feed/rotate", data={"csrf": csrf}).status_code == 403
