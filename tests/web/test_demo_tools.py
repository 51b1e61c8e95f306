"""The demo's own tools through the real app: the mail catcher (a real aiosmtpd server on
127.0.0.1), the webhook request inspector (the app's own webhook client posting to the app
served by uvicorn), the email endpoint that cannot send, the status page and the offline docs.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update
from standardwebhooks import Webhook

from signalmint.config import EmailConfig, PlanConfig
from signalmint.delivery.http1 import Http1Pool
from signalmint.demo.mailcatcher import MailCatcher
from signalmint.net.ssrf import ParsedTarget, UnsafeTarget, check_url
from signalmint.records import Automation, OutboxRow, Signal
from signalmint.store import Database, append_signals, sync_automations
from signalmint.store.outbox import add_endpoint, enqueue, list_endpoints
from signalmint.store.tables import deliveries
from signalmint.web import app as web_app

from ..conftest import LiveServer, free_port, stored_id
from .test_account_pages import AUTOMATION, client_for, csrf_of, settings, sign_up
from .test_dashboard import subscriber_id

PLANS = [
    PlanConfig(id="free", automations="*", delay="15m", channels=["web", "email"]),
    PlanConfig(id="alerts", automations="*", price=2900, trial_days=7, channels=["web", "email", "webhook"]),
]
SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]{20,}")


def build(db: Database, *, catcher: MailCatcher | None = None, **overrides: Any) -> FastAPI:
    values: dict[str, Any] = {"plans": PLANS, "automations": [AUTOMATION], "base_url": "http://127.0.0.1:8000"}
    config = settings(db, **{**values, **overrides})
    found = [Automation(a.name, a.title, a.description, a.source.kind, a.detector.kind) for a in config.automations]
    db.write_sync(sync_automations, found, datetime.now(UTC))
    return web_app.create_app(config, db, catcher=catcher)


@contextmanager
def serving(catcher: MailCatcher) -> Iterator[MailCatcher]:
    """The catcher served on an event loop of its own (``signalmint demo`` serves it on the app's)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(catcher.start(), loop).result(5)
    try:
        yield catcher
    finally:
        asyncio.run_coroutine_threadsafe(catcher.close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


# --- the mail catcher ------------------------------------------------------------------------------


def test_demo_email_goes_through_smtp_to_the_catcher_and_its_page(db: Database) -> None:
    with serving(MailCatcher()) as catcher:
        smtp = EmailConfig(host="127.0.0.1", port=catcher.port, starttls=False, sender="demo <alerts@demo.example>")
        app = build(db, catcher=catcher, demo=True, email=smtp)
        with client_for(app) as client:
            page = client.get("/signup", params={"plan": "free"})
            inbox = client.post(
                "/signup", data={"email": "ann@example.com", "plan": "free", "csrf": csrf_of(page.text)}
            )
            assert inbox.status_code == 200 and 'href="/demo/mail"' in inbox.text

            (caught,) = catcher.messages()  # sent over SMTP by the app's own mailer
            assert caught.rcpt_tos == ("ann@example.com",) and "Confirm your" in caught.subject
            listing = client.get("/demo/mail")
            assert listing.status_code == 200 and f'href="/demo/mail/{caught.id}"' in listing.text
            view = client.get(f"/demo/mail/{caught.id}")
            assert view.status_code == 200 and "Message-ID" in view.text and "alerts@demo.example" in view.text
            link = re.search(r'<a href="(http://127.0.0.1:8000/confirm\?token=[^"]+)"', view.text)
            assert link is not None, "the confirmation link is not a link on the message page"
            parts = urlsplit(link.group(1).replace("&amp;", "&"))
            assert client.get(f"{parts.path}?{parts.query}").headers["location"] == "/dashboard"


def _html_mail() -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@demo.example", "b@demo.example", "<script>alert(1)</script> spike"
    msg.set_content("text part")
    msg.add_alternative('<p>Hi<script>alert(2)</script><img src="cid:chart"></p>', subtype="html")
    html = msg.get_body(("html",))
    assert html is not None
    html.add_related(b"\x89PNG fake", "image", "png", cid="<chart>")
    return msg.as_bytes()


def test_html_mail_is_shown_sandboxed_with_its_inline_image(db: Database) -> None:
    catcher = MailCatcher()
    try:
        caught = catcher.add("a@demo.example", ("b@demo.example",), _html_mail())
        app = build(db, catcher=catcher, demo=True)
        with client_for(app) as client:
            view = client.get(f"/demo/mail/{caught.id}")
            assert "<script>alert(1)" not in view.text and "&lt;script&gt;alert(1)" in view.text  # escaped
            assert (
                f'sandbox="allow-popups" referrerpolicy="no-referrer" src="/demo/mail/{caught.id}/body.html"'
                in view.text
            )
            body = client.get(f"/demo/mail/{caught.id}/body.html")
            policy = body.headers["content-security-policy"]
            assert (
                policy.startswith("sandbox allow-popups;")
                and "script-src" not in policy
                and "default-src 'none'" in policy
            )
            assert f'src="/demo/mail/{caught.id}/cid/chart"' in body.text  # cid: rewritten to this site
            image = client.get(f"/demo/mail/{caught.id}/cid/chart")
            assert image.status_code == 200 and image.headers["content-type"] == "image/png"
            assert image.content == b"\x89PNG fake"
            assert client.get(f"/demo/mail/{caught.id + 1}").status_code == 404
    finally:
        asyncio.run(catcher.close())


def test_the_catcher_is_bounded_and_only_in_the_demo(db: Database) -> None:
    catcher = MailCatcher(keep=3, max_bytes=1000)
    try:
        for i in range(5):
            catcher.add("a@x.example", ("b@x.example",), f"Subject: {i}\r\n\r\nbody\r\n".encode())
        assert [m.subject for m in catcher.messages()] == ["2", "3", "4"]
        catcher.add("a@x.example", ("b@x.example",), b"Subject: big\r\n\r\n" + b"x" * 990)
        assert [m.subject for m in catcher.messages()] == ["big"]  # the byte bound drops the oldest, keeps the newest
        with client_for(build(db, catcher=catcher, demo=False)) as client:
            assert client.get("/demo/mail").status_code == 404
            assert client.get("/demo/inspect/abcdefgh12").status_code == 404
    finally:
        asyncio.run(catcher.close())


# --- the request inspector ----------------------------------------------------------------------------


def test_a_demo_webhook_reaches_the_inspector_with_a_valid_signature(db: Database) -> None:
    port = free_port()
    app = build(db, demo=True, base_url=f"http://127.0.0.1:{port}")
    with LiveServer(app, port) as live, httpx.Client(base_url=live.url, timeout=10) as client:
        sign_up(client, app, "ann@example.com", "alerts")  # type: ignore[arg-type]
        dashboard = client.get("/dashboard").text
        assert 'action="/dashboard/inspector"' in dashboard
        made = client.post("/dashboard/inspector", data={"csrf": csrf_of(dashboard)})
        assert made.status_code == 200, made.text
        (secret,) = set(SECRET.findall(made.text))
        inspect_path = re.search(r'href="(/demo/inspect/[A-Za-z0-9_-]+)"', made.text)
        assert inspect_path is not None
        (hook,) = [e for e in db.read_sync(list_endpoints, subscriber_id(db)) if e.channel == "webhook"]
        assert hook.url == f"webhook+{live.url}{inspect_path.group(1)}" and hook.secrets == (secret,)
        assert client.get(inspect_path.group(1)).text.count("demo-request") == 0

        tested = client.post(f"/dashboard/endpoints/{hook.id}/test", data={"csrf": csrf_of(dashboard)})
        assert "Test event delivered" in tested.text, tested.text
        page = client.get(inspect_path.group(1)).text
        assert page.count('data-valid="true"') == 1 and "Signature verified with the endpoint&#39;s secret." in page
        assert "webhook-signature" in page and "&#34;type&#34;: &#34;test&#34;" in page
        (request,) = app.state.ctx.inspector.requests(inspect_path.group(1).rsplit("/", 1)[1])
        Webhook(secret).verify(request.body, dict(request.headers))  # the reference implementation agrees

        forged = {"webhook-id": "x", "webhook-timestamp": str(int(datetime.now(UTC).timestamp())),
                  "webhook-signature": "v1,AAAA"}  # fmt: skip
        client.post(inspect_path.group(1), content=b"{}", headers=forged)
        page = client.get(inspect_path.group(1)).text
        assert page.count('data-valid="false"') == 1 and "Signature does not match" in page
        assert f"/dashboard/endpoints/{hook.id}/log" in client.get("/dashboard").text
        assert f'href="{inspect_path.group(1)}">Inspector</a>' in client.get("/dashboard").text


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000/admin", "http://127.0.0.1:8000/demo/inspect/../admin/x", "http://127.0.0.1:8001/demo/inspect/abcdefgh12",
     "http://localhost:8000/demo/inspect/abcdefgh12", "http://127.0.0.1:8000/demo/inspect/abcdefgh12?x=1",
     "http://127.0.0.1:8000/demo/inspect/abcdefgh12/more", "http://127.0.0.1:8000@evil.example/demo/inspect/abcdefgh12",
     "http://10.0.0.8/demo/inspect/abcdefgh12"],
)  # fmt: skip
def test_the_inspector_opens_no_other_address(url: str) -> None:
    own = "http://127.0.0.1:8000/demo/inspect/"
    assert check_url(own + "abcdefgh12", own=own).port == 8000
    with pytest.raises(UnsafeTarget):
        check_url(url, own=own)


def test_the_webhook_pool_skips_the_guard_for_the_demo_origin_only() -> None:
    """Even a target that got past check_url some other way is vetted unless it is the exact own origin."""

    async def dial(port: int) -> None:
        async with Http1Pool(own_origin=("http", "127.0.0.1", 8000)) as pool:
            target = ParsedTarget(f"http://127.0.0.1:{port}/x", "http", "127.0.0.1", port, "127.0.0.1")
            await pool.request(target, b"POST /x HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\n\r\n", timeout=2)

    with pytest.raises(UnsafeTarget, match="loopback"):
        asyncio.run(dial(8001))


def test_outside_the_demo_the_inspector_address_is_refused(db: Database) -> None:
    app = build(db, demo=False)
    with client_for(app) as client:
        sign_up(client, app, "ann@example.com", "alerts")
        csrf = csrf_of(client.get("/dashboard").text)
        assert 'action="/dashboard/inspector"' not in client.get("/dashboard").text
        refused = client.post(
            "/dashboard/endpoints",
            data={"channel": "webhook", "url": "http://127.0.0.1:8000/demo/inspect/abcdefgh12", "csrf": csrf},
        )
        assert refused.status_code == 400 and "We cannot send there" in refused.text
        assert client.post("/dashboard/inspector", data={"csrf": csrf}).status_code == 404


def test_a_private_address_is_named_on_the_first_try(db: Database) -> None:
    """http://10.0.0.8 used to be refused for its scheme first, and for its address only once fixed."""
    app = build(db, demo=True)
    with client_for(app) as client:
        sign_up(client, app, "ann@example.com", "alerts")
        csrf = csrf_of(client.get("/dashboard").text)
        refused = client.post(
            "/dashboard/endpoints", data={"channel": "webhook", "url": "http://10.0.0.8/x", "csrf": csrf}
        )
        assert refused.status_code == 400
        assert "We cannot send there: 10.0.0.8 is a private address (and only https URLs are allowed)." in refused.text


# --- an email endpoint that cannot send ---------------------------------------------------------------


@pytest.mark.parametrize(("smtp", "shown"), [(False, "Not working"), (True, "Active")])
def test_an_email_endpoint_without_a_mail_server_says_it_is_not_working(db: Database, smtp: bool, shown: str) -> None:
    with serving(MailCatcher()) as catcher:
        app = build(
            db, email=EmailConfig(host="127.0.0.1", port=catcher.port, starttls=False) if smtp else EmailConfig()
        )
        with client_for(app) as client:
            if smtp:
                page = client.get("/signup", params={"plan": "free"})
                client.post("/signup", data={"email": "ann@example.com", "plan": "free", "csrf": csrf_of(page.text)})
                link = re.search(r"http://127.0.0.1:8000(/confirm\S+)", catcher.messages()[-1].text or "")
                assert link is not None
                client.get(link.group(1))
            else:
                sign_up(client, app, "ann@example.com", "free")
            html = client.get("/dashboard").text
    row = re.search(r'<tr data-endpoint="\d+".*?</tr>', html, re.S)
    assert row is not None
    assert f">{shown}</span>" in row.group(0)
    if not smtp:
        assert "this site cannot send email yet" in row.group(0) and "Send test" not in row.group(0)
        assert ">Active</span>" not in row.group(0)


# --- the status page and the docs ----------------------------------------------------------------------


def test_the_status_page_shows_automations_and_delivery_health(db: Database) -> None:
    app = build(db)
    now = datetime.now(UTC)
    signal = Signal("us-stocks", "AAPL", now - timedelta(minutes=3), "volume_spike", 9.0, {"ratio": 4.0})
    (stored,) = db.write_sync(append_signals, "us-stocks", [signal], now)
    with client_for(app) as client:
        sign_up(client, app, "ann@example.com", "free")
        sid = subscriber_id(db)
        endpoint = db.write_sync(add_endpoint, sid, "webhook", "webhook+https://hooks.example/x", now, ["whsec_x"])
        rows = [OutboxRow(stored_id(stored), endpoint.id, sid, now)]
        db.write_sync(enqueue, rows, now)
        db.write_sync(lambda conn: conn.execute(update(deliveries).values(status="dead", last_error="410 Gone")))
        page = client.get("/status")
        assert page.status_code == 200 and 'aria-current="page">Status' in page.text
        assert 'data-automation="us-stocks"' in page.text and "Not running here" in page.text
        assert stored.time.strftime("%Y-%m-%d") in page.text
        assert re.search(r"Gave up \(dead letters\)</div><div class=\"stat-value\">1<", page.text)
        assert "Some alerts failed" in page.text
        assert client.get("/healthz").json()["status"] == "ok"  # the JSON stays for machines


def test_the_status_page_says_when_an_automations_data_is_delayed(db: Database) -> None:
    """A stale period the engine recorded (in any process) shows on the status page, and goes when it ends."""
    from signalmint.store.health import close_stale_period, open_stale_period

    app = build(db)
    since = datetime(2026, 11, 30, 10, 42, tzinfo=UTC)
    with client_for(app) as client:
        assert "Data delayed" not in client.get("/status").text
        db.write_sync(open_stale_period, "us-stocks", since, since + timedelta(minutes=3), since)
        page = client.get("/status").text
        assert "Data delayed" in page and "No fresh data since 2026-11-30 10:42 UTC" in page
        db.write_sync(close_stale_period, "us-stocks", since + timedelta(minutes=9))
        assert "Data delayed" not in client.get("/status").text


def test_api_docs_are_served_from_the_package(client_docs: TestClient) -> None:
    page = client_docs.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
    assert scripts and all('src="/static/' in attrs and not body.strip() for attrs, body in scripts)  # none inline
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        assert client_docs.get(asset).status_code == 200, asset
    assert "SwaggerUIBundle" in client_docs.get("/static/swagger-ui/swagger-ui-bundle.js").text
    assert "Apache License" in client_docs.get("/static/swagger-ui/LICENSE").text
    assert client_docs.get("/openapi.json").json()["openapi"].startswith("3.")


@pytest.fixture
def client_docs(db: Database) -> Iterator[TestClient]:
    with client_for(build(db)) as client:
        yield client
