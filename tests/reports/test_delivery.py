"""Reports delivered: a stored report reaches every entitled subscriber's channels, through real receivers.

Real SQLite and PostgreSQL (SIGNALMINT_TEST_PG); email through aiosmtpd on 127.0.0.1 (the MIME
parsed, the PDF read back with pypdf); Telegram through the local fake Bot API that speaks the
real multipart wire format (``sendDocument``); webhooks and Apprise (its ``json://`` service)
into a local HTTP sink, the webhook verified with ``standardwebhooks``. The crash test runs the
sender in a process of its own with a fault-injection hook, kills it with SIGKILL at a chosen
point, restarts it, and checks that every entitled endpoint received the report at least once,
duplicates with the same idempotency id.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from io import BytesIO
from pathlib import Path
from typing import Any

import pypdf
import pytest
import standardwebhooks
from aiosmtpd.controller import Controller
from starlette.applications import Starlette
from starlette.routing import Route

from signalmint.accounts.service import server_pepper
from signalmint.config import Settings, load_settings, parse_settings
from signalmint.delivery.channels import email as email_channel
from signalmint.delivery.channels import telegram as telegram_channel
from signalmint.delivery.channels.webhook import new_secret
from signalmint.delivery.pacing import Pacer
from signalmint.delivery.report_outbox import ReportSender
from signalmint.delivery.runner import channel_context
from signalmint.records import Automation, Preferences, Report
from signalmint.registry import Registry
from signalmint.reports.publish import publish
from signalmint.reports.scheduler import ReportScheduler
from signalmint.store import Database, sync_automations
from signalmint.store.accounts import confirm_subscriber, ensure_subscriber, set_preference, start_subscription
from signalmint.store.outbox import add_endpoint, set_endpoint_status
from signalmint.store.plans import sync_plans
from signalmint.store.report_outbox import (
    enqueue_reports,
    lease_rendering,
    list_report_deliveries,
    release_rendering,
)
from signalmint.store.reports import find_report

from .. import processes
from ..conftest import LiveServer, free_port
from ..delivery.conftest import HttpSink, Recorded, SinkServer
from ..delivery.test_telegram import TOKEN, FakeBotApi
from .conftest import seed_market

NOW = datetime(2026, 11, 30, 9, tzinfo=UTC)  # catch_up 2: W47 and W48 are due
W48 = "https://sm.example/automations/stocks/reports/weekly/2026-W48"

CONFIG = """
database: {database}
base_url: https://sm.example
secret: report-delivery-secret-0123456789
email: {{host: 127.0.0.1, port: {smtp}, starttls: false, sender: "reports <reports@sm.example>"}}
telegram: {{token: "{token}", base_url: "{bot}"}}
delivery: {{allow_loopback_targets: true}}
plans:
  - {{id: free, price: 0, channels: [web, email, telegram, webhook, apprise]}}
  - {{id: premium, price: 2900, channels: [web, email, telegram, webhook, apprise]}}
  - {{id: pro, price: 9900, channels: [web, email]}}
automations:
  - name: stocks
    title: US stocks volume
    source: {{kind: synthetic, symbols: 5, interval: 60}}
    detector: {{kind: volume_spike}}
    outcomes: {{horizons: [1, 5]}}
    reports:
      - name: weekly
        schedule: "0 8 * * MON"
        period: week
        contents: {{top_signals: 3, movers: 3, per_key: 5}}
        audience: {{plans: [premium, pro], price: 300}}
        catch_up: 2
"""


class Inbox:
    """An aiosmtpd handler keeping every message with its envelope recipients."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 2.0.0 queued"

    def to(self, address: str) -> list[EmailMessage]:
        out = []
        for rcpt, raw in self.messages:
            if address in rcpt:
                parsed = message_from_bytes(raw, policy=default_policy)
                assert isinstance(parsed, EmailMessage)
                out.append(parsed)
        return out


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def _bot_server() -> Iterator[tuple[FakeBotApi, str]]:
    fake = FakeBotApi()
    app = Starlette(routes=[Route("/bot{token}/{method}", fake.endpoint, methods=["GET", "POST"])])
    with LiveServer(app) as server:
        yield fake, server.url


@pytest.fixture
def bot(_bot_server: tuple[FakeBotApi, str]) -> tuple[FakeBotApi, str]:
    _bot_server[0].reset()
    return _bot_server


@pytest.fixture(scope="module")
def _sink_server() -> Iterator[HttpSink]:
    sink = HttpSink()
    with SinkServer(sink) as server:
        sink.port = server.port
        yield sink


@pytest.fixture
def sink(_sink_server: HttpSink) -> Iterator[HttpSink]:
    _sink_server.reset()
    yield _sink_server
    _sink_server.reset()


def config_text(db: Database, smtp_port: int, bot_url: str) -> str:
    return CONFIG.format(database=db.url, smtp=smtp_port, token=TOKEN, bot=bot_url)


def make_settings(db: Database, smtp_port: int, bot_url: str) -> Settings:
    return parse_settings(config_text(db, smtp_port, bot_url), registry=Registry.from_entry_points())


def person(
    db: Database,
    settings: Settings,
    email: str,
    plan_id: str,
    endpoints: list[tuple[str, str]],
    *,
    state: str = "active",
) -> dict[str, int]:
    """A confirmed subscriber on ``plan_id`` with these (channel, url) endpoints: {channel: endpoint id}."""
    now = datetime.now(UTC)
    plans = {p.id: p for p in db.write_sync(sync_plans, settings.current_plans(), now)}

    def write(conn: Any) -> dict[str, int]:
        subscriber = ensure_subscriber(conn, email, now)
        confirm_subscriber(conn, subscriber.id, now)
        start_subscription(conn, subscriber.id, plans[plan_id], now, origin="test", state=state)
        made = {}
        for channel, url in endpoints:
            secrets = [new_secret()] if channel == "webhook" else []
            made[channel] = add_endpoint(conn, subscriber.id, channel, url, now, secrets).id
        made["subscriber"] = subscriber.id
        return made

    return db.write_sync(write)


def prepare(db: Database, settings: Settings) -> None:
    seed_market(db)
    db.write_sync(sync_automations, [Automation("stocks", "US stocks volume", "", "synthetic", "volume_spike")], NOW)


def drain(settings: Settings, db: Database, *, clock: Any = None, **options: Any) -> ReportSender:
    """Run the report sender until nothing is due (a fresh channel context, as a worker has)."""

    async def run() -> ReportSender:
        context = channel_context(settings)
        context.extra["telegram.pacer"] = Pacer(per_key_interval=0.0, global_rate=math.inf)
        if clock is not None:
            options["clock"] = clock
        sender = ReportSender(settings, db, context, server_pepper(settings, db), **options)
        try:
            while await sender.run_once():
                pass
        finally:
            await email_channel.close(context)
            await telegram_channel.close(context)
            await context.http.close()
        return sender

    return asyncio.run(run())


def webhook_events(sink: HttpSink, path: str = "/hook") -> list[Recorded]:
    return [r for r in sink.requests if r.path == path]


def pdf_text(data: bytes) -> str:
    return " ".join(page.extract_text() for page in pypdf.PdfReader(BytesIO(data)).pages)


def test_a_stored_report_reaches_every_entitled_channel(
    db: Database, smtp: tuple[Inbox, int], bot: tuple[FakeBotApi, str], sink: HttpSink
) -> None:
    inbox, port = smtp
    fake, bot_url = bot
    settings = make_settings(db, port, bot_url)
    prepare(db, settings)
    apprise = "apprise+" + sink.url("/notify").replace("http://", "json://")
    ann = person(db, settings, "ann@example.com", "premium", [
        ("email", "mailto:ann@example.com"), ("telegram", "telegram://4242"),
        ("webhook", "webhook+" + sink.url("/hook")), ("apprise", apprise),
    ])  # fmt: skip
    bob = person(db, settings, "bob@example.com", "pro", [("email", "mailto:bob@example.com"),
                                                         ("telegram", "telegram://4343")])  # fmt: skip
    person(db, settings, "cy@example.com", "free", [("email", "mailto:cy@example.com")])
    person(db, settings, "dee@example.com", "premium", [("email", "mailto:dee@example.com")], state="expired")
    eve = person(db, settings, "eve@example.com", "premium", [("email", "mailto:eve@example.com"),
                                                             ("telegram", "telegram://4444")])  # fmt: skip
    db.write_sync(set_endpoint_status, eve["telegram"], "paused", "/pause", NOW)  # paused: nothing there
    db.write_sync(set_preference, eve["subscriber"], Preferences("email", enabled=False))  # email switched off

    stored = asyncio.run(ReportScheduler(settings, db, clock=lambda: NOW).step())
    assert [r.period_key for r in stored] == ["2026-W47", "2026-W48"]
    w48 = stored[1]
    rows = db.read_sync(list_report_deliveries, report_id=w48.id)
    # ann on her four channels; bob by email only (his plan has no Telegram); cy (free), dee
    # (expired) and eve (channel off, endpoint paused) get nothing
    assert sorted((r.subscriber_id, r.endpoint_id) for r in rows) == sorted(
        [(ann["subscriber"], ann[c]) for c in ("email", "telegram", "webhook", "apprise")]
        + [(bob["subscriber"], bob["email"])]
    )
    assert {r.reason for r in rows} == {"plan"} and {r.status for r in rows} == {"pending"}

    sender = drain(settings, db)
    assert sender.sent == 10 and sender.failed == 0  # 5 endpoints x 2 reports
    assert {r.status for r in db.read_sync(list_report_deliveries)} == {"sent"}

    # email: HTML with the chart inline (cid:), the PDF attached, its text holding the top signals
    assert inbox.to("cy@example.com") == [] and inbox.to("dee@example.com") == [] and inbox.to("eve@example.com") == []
    (mail,) = [m for m in inbox.to("ann@example.com") if "2026-W48" in m["Subject"]]
    assert mail["Subject"] == "US stocks volume: weekly report (2026-W48)"
    ann_email_id = next(r.idempotency_id for r in rows if r.endpoint_id == ann["email"])
    assert mail["Message-ID"] == f"<{ann_email_id}@sm.example>"
    assert mail["List-Unsubscribe"].startswith("<https://sm.example/unsubscribe/")
    html = mail.get_body(preferencelist=("html",))
    assert html is not None and W48 in html.get_content() and "data:image" not in html.get_content()
    inline = [p for p in mail.walk() if p.get_content_type() == "image/png"]
    assert inline and all(f"cid:{p['Content-ID'].strip('<>')}" in html.get_content() for p in inline)
    (pdf,) = [p for p in mail.walk() if p.get_content_type() == "application/pdf"]
    assert pdf.get_filename() == "stocks-weekly-2026-W48.pdf" and pdf.get_content_disposition() == "attachment"
    text = pdf_text(pdf.get_content())
    for key, score in (("NVDA", "31.50"), ("TSLA", "27.25"), ("AAPL", "19.75")):
        assert key in text and score in text
    assert len(inbox.to("bob@example.com")) == 2

    # Telegram: the PDF as a document with a caption and the link; never to bob's chat (not in his plan)
    documents = [c for c in fake.to("4242") if c.method == "sendDocument"]
    assert len(documents) == 2 and not fake.to("4343") and not fake.to("4444")
    (doc,) = [c for c in documents if c.photo_filename == "stocks-weekly-2026-W48.pdf"]
    assert doc.photo_type == "application/pdf" and "NVDA" in pdf_text(doc.photo or b"")
    assert "2026-W48" in doc.text and W48 in doc.text and "NVDA" in doc.text

    # webhook: report.published, signed with the endpoint's secret (Standard Webhooks)
    secret = db.read_sync(lambda conn: next(iter(_endpoint_secrets(conn, ann["webhook"]))))
    events = [standardwebhooks.Webhook(secret).verify(r.body, r.headers) for r in webhook_events(sink)]
    (event,) = [e for e in events if e["data"]["period"]["key"] == "2026-W48"]
    assert event["type"] == "report.published" and event["data"]["url"] == W48
    assert event["data"]["pdf_url"] == W48 + ".pdf" and event["data"]["signal_count"] == 10
    assert [t["key"] for t in event["data"]["top"]] == ["NVDA", "TSLA", "AAPL"]
    hook = next(r for r in webhook_events(sink) if json.loads(r.body)["data"]["period"]["key"] == "2026-W48")
    assert hook.headers["webhook-id"] == next(r.idempotency_id for r in rows if r.endpoint_id == ann["webhook"])

    # Apprise: the title, the top signals and the link
    notes = [r.json() for r in sink.requests if r.path == "/notify"]
    assert any(W48 in n["message"] and "NVDA" in n["message"] for n in notes) and len(notes) == 2


def _endpoint_secrets(conn: Any, endpoint_id: int) -> tuple[str, ...]:
    from signalmint.store.outbox import list_endpoints

    (endpoint,) = list_endpoints(conn, ids=[endpoint_id])
    return endpoint.secrets


def test_a_report_is_enqueued_once_per_endpoint_across_restarts_and_engines(
    db: Database, smtp: tuple[Inbox, int], bot: tuple[FakeBotApi, str]
) -> None:
    settings = make_settings(db, smtp[1], bot[1])
    prepare(db, settings)
    ann = person(db, settings, "ann@example.com", "premium", [("email", "mailto:ann@example.com")])
    # another engine holds W48's lease: this one renders W47 only and leaves W48 alone
    assert db.write_sync(lease_rendering, "stocks", "weekly", "2026-W48", "other-engine", NOW, timedelta(minutes=3))
    first = ReportScheduler(settings, db, clock=lambda: NOW)
    assert [r.period_key for r in asyncio.run(first.step())] == ["2026-W47"] and first.rendered == 1
    db.write_sync(release_rendering, "stocks", "weekly", "2026-W48", "other-engine")
    assert [r.period_key for r in asyncio.run(first.step())] == ["2026-W48"]
    w48 = db.read_sync(find_report, "stocks", "weekly", "2026-W48")
    assert w48 is not None
    # a restart, and a second rendering of the same period arriving late: nothing more is queued
    again = ReportScheduler(settings, db, clock=lambda: NOW + timedelta(hours=1))
    assert asyncio.run(again.step()) == [] and again.rendered == 0
    late = Report(0, "stocks", "weekly", "T", "2026-W48", w48.period_start, w48.period_end, NOW, pdf=b"%PDF-late")
    kept, ours, queued = db.write_sync(publish, settings, late, NOW)
    assert (kept.id, ours, queued) == (w48.id, False, 0)
    rows = db.read_sync(list_report_deliveries, report_id=w48.id)
    assert [(r.endpoint_id, r.reason) for r in rows] == [(ann["email"], "plan")]
    # enqueuing the same rows again (a step that crashed after committing, replayed) inserts nothing
    replay = [{"report_id": w48.id, "endpoint_id": ann["email"], "subscriber_id": ann["subscriber"],
               "reason": "plan", "next_attempt_at": NOW}]  # fmt: skip
    assert db.write_sync(enqueue_reports, replay, NOW) == 0
    assert len(db.read_sync(list_report_deliveries)) == 2  # W47 and W48, one row each


def test_quiet_hours_hold_a_report_until_they_end(
    db: Database, smtp: tuple[Inbox, int], bot: tuple[FakeBotApi, str]
) -> None:
    settings = make_settings(db, smtp[1], bot[1])
    prepare(db, settings)
    ann = person(db, settings, "ann@example.com", "premium", [("email", "mailto:ann@example.com")])
    # quiet from 08:00 to 10:00 UTC: the 09:00 publication waits until 10:00
    db.write_sync(set_preference, ann["subscriber"], Preferences("email", quiet_start=8 * 60, quiet_end=10 * 60))
    asyncio.run(ReportScheduler(settings, db, clock=lambda: NOW).step())
    rows = db.read_sync(list_report_deliveries)
    assert {r.next_attempt_at for r in rows} == {NOW.replace(hour=10)}
    assert drain(settings, db, clock=lambda: NOW + timedelta(minutes=30)).sent == 0
    assert drain(settings, db, clock=lambda: NOW + timedelta(hours=1)).sent == 2
    assert len(smtp[0].to("ann@example.com")) == 2


def test_a_plan_that_ended_before_sending_receives_nothing(
    db: Database, smtp: tuple[Inbox, int], bot: tuple[FakeBotApi, str]
) -> None:
    from signalmint.store.tables import subscriptions

    settings = make_settings(db, smtp[1], bot[1])
    prepare(db, settings)
    person(db, settings, "ann@example.com", "premium", [("email", "mailto:ann@example.com")])
    asyncio.run(ReportScheduler(settings, db, clock=lambda: NOW).step())
    db.write_sync(lambda conn: conn.execute(subscriptions.update().values(state="expired")))
    assert drain(settings, db).sent == 0
    rows = db.read_sync(list_report_deliveries)
    assert {r.status for r in rows} == {"skipped"} and "not entitled" in (rows[0].last_error or "")
    assert smtp[0].messages == []


def send_until_killed(config: str, point: str, marker: str) -> None:
    """The child process (tests/processes.py): the report sender, which at the third row to
    reach ``point`` says so in ``marker`` and waits to be killed."""
    settings = load_settings(config, registry=Registry.from_entry_points())
    db = Database(settings.database)
    seen = []

    def hook(at: str, row: Any) -> None:
        if at == point:
            seen.append(row.id)
            if len(seen) == 3:  # the third row at this point: stop here and wait for SIGKILL
                Path(marker).write_text(at)
                time.sleep(600)

    async def main() -> None:
        context = channel_context(settings)
        context.extra["telegram.pacer"] = Pacer(per_key_interval=0.0, global_rate=math.inf)
        sender = ReportSender(settings, db, context, server_pepper(settings, db), concurrency=1, hook=hook)
        while await sender.run_once():
            pass

    asyncio.run(main())


@pytest.mark.slow
@pytest.mark.parametrize("point", ["claimed", "sending", "sent"])
def test_kill_9_while_sending_loses_nothing_and_repeats_with_the_same_id(
    db: Database, smtp: tuple[Inbox, int], bot: tuple[FakeBotApi, str], sink: HttpSink, tmp_path: Path, point: str
) -> None:
    inbox, port = smtp
    settings = make_settings(db, port, bot[1])
    prepare(db, settings)
    people = [
        person(db, settings, f"p{i}@example.com", "premium",
               [("email", f"mailto:p{i}@example.com"), ("webhook", "webhook+" + sink.url(f"/hook/{i}"))])
        for i in range(4)
    ]  # fmt: skip
    asyncio.run(ReportScheduler(settings, db, clock=lambda: NOW).step())
    rows = db.read_sync(list_report_deliveries)
    assert len(rows) == 16  # 2 reports x 4 people x 2 endpoints
    config = tmp_path / "signalmint.yaml"
    config.write_text(config_text(db, port, bot[1]))
    marker = tmp_path / "at"
    child = processes.call(send_until_killed, str(config), point, str(marker))
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, "the sender ended before reaching the point"
            assert time.monotonic() < deadline, "the sender never reached the point"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    delivered_before = len(inbox.messages) + len(webhook_events_all(sink))
    assert delivered_before == (0 if point == "claimed" else 2 if point == "sending" else 3)
    assert {r.status for r in db.read_sync(list_report_deliveries)} == {"sending"}  # leased, nothing recorded
    # a restart after the dead sender's leases expired sends every row again
    later = datetime.now(UTC) + timedelta(minutes=5)
    sender = drain(settings, db, clock=lambda: later)
    assert sender.sent == 16
    assert {r.status for r in db.read_sync(list_report_deliveries)} == {"sent"}
    ids: dict[int, set[str]] = {r.endpoint_id: set() for r in rows}
    expected: dict[int, set[str]] = {}
    for row in rows:
        expected.setdefault(row.endpoint_id, set()).add(row.idempotency_id)
    by_address = {f"p{i}@example.com": p["email"] for i, p in enumerate(people)}
    for rcpt, raw in inbox.messages:
        message_id = message_from_bytes(raw, policy=default_policy)["Message-ID"]
        ids[by_address[rcpt[0]]].add(message_id.strip("<>").split("@")[0])
    by_path = {f"/hook/{i}": p["webhook"] for i, p in enumerate(people)}
    for request in webhook_events_all(sink):
        ids[by_path[request.path]].add(request.headers["webhook-id"])
    assert ids == expected  # every endpoint got both reports; a duplicate carried the same id
    assert len(inbox.messages) + len(webhook_events_all(sink)) == 16 + delivered_before


def webhook_events_all(sink: HttpSink) -> list[Recorded]:
    return [r for r in sink.requests if r.path.startswith("/hook/")]


def test_a_free_subscriber_receives_nothing_until_buying_then_once(
    db: Database, sink: HttpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    from signalmint.billing.credits import credit
    from signalmint.config import DeliveryConfig, PlanConfig
    from signalmint.store.accounts import subscriber_by_email

    from ..web.test_account_pages import client_for, csrf_of, make_app, sign_up
    from .test_web import W48 as W48_PATH
    from .test_web import _automation

    seed_market(db)
    plans = [
        PlanConfig(id="free", delay="15m"),
        PlanConfig(id="premium", price=2900, trial_days=7, channels=["web", "email", "webhook"]),
    ]
    app = make_app(db, automations=[_automation()], plans=plans, delivery=DeliveryConfig(allow_loopback_targets=True))
    settings = app.state.ctx.settings
    with client_for(app) as fay, client_for(app) as gus:
        ids = {}
        for client, email, plan in ((fay, "fay@example.com", "free"), (gus, "gus@example.com", "premium")):
            sign_up(client, app, email, plan)
            found = db.read_sync(subscriber_by_email, email)
            assert found is not None
            ids[plan] = found.id
            db.write_sync(
                add_endpoint, found.id, "webhook", "webhook+" + sink.url(f"/hook/{plan}"), NOW, [new_secret()]
            )
        asyncio.run(ReportScheduler(settings, db, clock=lambda: NOW).step())
        free_id, premium_id = ids["free"], ids["premium"]
        assert db.read_sync(list_report_deliveries, subscriber_id=free_id) == []  # free: nothing
        assert len(db.read_sync(list_report_deliveries, subscriber_id=premium_id)) == 2  # W47 and W48, by webhook
        assert drain(settings, db).sent == 2
        assert [r.path for r in sink.requests] == ["/hook/premium"] * 2

        db.write_sync(credit, free_id, 5_000_000, "grant", "test-grant", datetime.now(UTC))
        csrf = csrf_of(fay.get(W48_PATH).text)
        assert fay.post(W48_PATH + "/buy", data={"csrf": csrf}).status_code == 303
        assert fay.post(W48_PATH + "/buy", data={"csrf": csrf}).status_code == 303  # a double click
    (row,) = db.read_sync(list_report_deliveries, subscriber_id=free_id)
    assert row.reason == "purchase" and row.status == "pending"
    assert drain(settings, db).sent == 1
    bought = [r.json() for r in sink.requests if r.path == "/hook/free"]
    assert len(bought) == 1 and bought[0]["type"] == "report.published"
    assert bought[0]["data"]["period"]["key"] == "2026-W48"
    assert drain(settings, db).sent == 0  # nothing more, however often the sender runs


def test_a_temporary_failure_retries_later_and_a_permanent_one_is_a_dead_letter(
    db: Database, smtp: tuple[Inbox, int], bot: tuple[FakeBotApi, str], sink: HttpSink
) -> None:
    from signalmint.store.outbox import list_endpoints

    from ..delivery.conftest import Reply

    settings = make_settings(db, smtp[1], bot[1])
    prepare(db, settings)
    ann = person(db, settings, "ann@example.com", "premium", [("webhook", "webhook+" + sink.url("/hook/ann"))])
    bob = person(db, settings, "bob@example.com", "premium", [("webhook", "webhook+" + sink.url("/hook/bob"))])
    asyncio.run(ReportScheduler(settings, db, clock=lambda: NOW).step())
    start = datetime.now(UTC)
    # rows are claimed in order (W47: ann, bob; W48: ann, bob) and sent concurrently: answer by path
    sink.default = Reply(503, {"retry-after": "1"})
    first = drain(settings, db, clock=lambda: start)
    assert first.sent == 0 and first.failed == 4
    rows = db.read_sync(list_report_deliveries)
    assert {(r.status, r.attempts) for r in rows} == {("pending", 1)}
    assert all(start + timedelta(seconds=4) <= r.next_attempt_at <= start + timedelta(seconds=6) for r in rows)
    assert drain(settings, db, clock=lambda: start + timedelta(seconds=2)).sent == 0  # not due yet
    # one at a time, in order (W47: ann, bob; W48: ann, bob): bob's receiver is gone for good
    sink.default = Reply(200)
    sink.script(Reply(200), Reply(410), Reply(200), Reply(410))
    second = drain(settings, db, clock=lambda: start + timedelta(seconds=7), concurrency=1)
    assert second.sent == 2
    by_endpoint = {r.endpoint_id: r for r in db.read_sync(list_report_deliveries)}
    assert {r.status for r in by_endpoint.values()} == {"sent", "dead"}
    assert all(r.status == "sent" for r in db.read_sync(list_report_deliveries) if r.endpoint_id == ann["webhook"])
    dead = [r for r in db.read_sync(list_report_deliveries) if r.endpoint_id == bob["webhook"]]
    assert {r.status for r in dead} == {"dead"} and all("permanent" in (r.last_error or "") for r in dead)
    (endpoint,) = db.read_sync(list_endpoints, bob["subscriber"])
    assert endpoint.status == "disabled"  # a 410 removes the endpoint, as for alerts
