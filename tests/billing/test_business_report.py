"""The operator's weekly business report: figures from a seeded store, the email through a real
local SMTP server (the demo's aiosmtpd mail catcher), the schedule in a time zone, and "at most
once a week" across restarts.

The story is week 2026-W48 in Europe/Paris (Mon Nov 23 to Sun Nov 29 2026, UTC+1), reported on
Monday Nov 30 at 08:00 Paris (07:00 UTC); every expected figure is worked out in the comments.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection
from typer.testing import CliRunner

from signalmint.billing.business_email import render_html, render_text
from signalmint.billing.business_report import compute, parse_week, week_of
from signalmint.billing.business_schedule import (
    due_week,
    next_moment,
    run_business_reports,
    send_due,
    send_moment,
    send_week,
)
from signalmint.cli import app as cli_app
from signalmint.config import AdminConfig, BusinessReportConfig, EmailConfig, Settings, load_settings
from signalmint.demo.mailcatcher import MailCatcher
from signalmint.errors import ConfigError
from signalmint.records import Automation, Outcome, Plan, Signal
from signalmint.registry import Registry
from signalmint.store import Database
from signalmint.store.accounts import ensure_subscriber, set_subscription_state, start_subscription
from signalmint.store.business import read_mark, write_mark
from signalmint.store.health import close_stale_period, open_stale_period
from signalmint.store.outbox import add_endpoint
from signalmint.store.outcomes import insert_outcomes
from signalmint.store.plans import sync_plans
from signalmint.store.signals import append_signals
from signalmint.store.state import Checkpoint, save_checkpoint, sync_automations
from signalmint.store.tables import deliveries, payments

from .. import processes

TZ = "Europe/Paris"
WEEK = "2026-W48"
DUE = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)  # Monday 08:00 in Paris
NOW = DUE + timedelta(minutes=30)
PLANS = [Plan("basic", 0, "Basic", ("alpha",), price=1000), Plan("pro", 0, "Pro", ("*",), price=3000)]


def at(day: int, hour: int = 12, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def settings_for(db: Database, port: int = 2525, **report: Any) -> Settings:
    return Settings(
        database=db.url,
        secret="business-report-secret-0123456789",
        base_url="https://ops.example",
        admin=AdminConfig(email="owner@ops.example", business_report=BusinessReportConfig(tz=TZ, **report)),
        email=EmailConfig(host="127.0.0.1", port=port, starttls=False, sender="signalmint <reports@ops.example>"),
    )


def story(conn: Connection) -> None:
    sync_automations(
        conn,
        [
            Automation("alpha", "Alpha spikes", "", "synthetic", "volume_spike"),
            Automation("beta", "Beta moves", "", "synthetic", "volume_spike"),
        ],
        at(1),
    )
    plans = {p.id: p for p in sync_plans(conn, PLANS, at(1))}

    def person(name: str, when: datetime) -> int:
        return ensure_subscriber(conn, f"{name}@example.com", when).id

    # a: basic from Nov 1 and b: pro from Nov 10 pay at the start (MRR 1000 + 3000 = 4000).
    a = person("a", at(1))
    start_subscription(conn, a, plans["basic"], at(1), origin="test", state="active")
    b = start_subscription(conn, person("b", at(10)), plans["pro"], at(10), origin="test", state="active")
    set_subscription_state(conn, b.id, at(25), state="expired", ended_at=at(25))  # b churns on Wed
    # c: basic from Tue, d: pro from Thu: new. e only signs up. MRR at the end: 1000 + 1000 + 3000 = 5000.
    c = person("c", at(24))
    start_subscription(conn, c, plans["basic"], at(24), origin="test", state="active")
    d = person("d", at(26))
    start_subscription(conn, d, plans["pro"], at(26), origin="test", state="active")
    person("e", at(27))

    def paid(when: datetime, amount: int, fee: int, plan_id: str, subscriber_id: int) -> None:
        conn.execute(
            payments.insert().values(
                provider="local", kind="subscription", amount=amount, currency="usd", fee=fee, refunded=0,
                status="paid", note="", created_at=when, plan_id=plan_id, subscriber_id=subscriber_id,
            )
        )  # fmt: skip

    paid(at(24), 1000, 59, "basic", c)
    paid(at(26), 3000, 117, "pro", d)  # gross 4000, fees 176, net 3824
    paid(at(20), 3000, 117, "pro", b.subscriber_id)  # the week before: not counted

    email = add_endpoint(conn, a, "email", "mailto:a@example.com", at(1))
    hook = add_endpoint(conn, d, "webhook", "https://d.example/hook", at(26))

    def delivery(n: int, endpoint: Any, created: datetime, status: str, attempts: int = 1) -> None:
        sent_at = created + timedelta(seconds=5) if status == "sent" else None
        conn.execute(
            deliveries.insert().values(
                signal_id=n, endpoint_id=endpoint.id, subscriber_id=endpoint.subscriber_id,
                idempotency_id=f"d-{n}", status=status, not_before=created, next_attempt_at=created,
                attempts=attempts, created_at=created, sent_at=sent_at,
            )
        )  # fmt: skip

    for n in range(5):  # 5 sent on Tuesday (one after a retry)
        delivery(n, email, at(24, 10 + n), "sent", attempts=2 if n == 0 else 1)
    delivery(10, hook, at(25), "dead", attempts=5)  # 2 failed on Wednesday
    delivery(11, hook, at(25, 13), "dead", attempts=5)
    delivery(12, email, at(29, 20), "pending")  # still queued
    delivery(13, email, at(20), "sent")  # the week before

    # alpha stale Thu 10:00-12:30 (2 h 30); beta stale since Sun 22:00 UTC, still open: 1 h of the week
    open_stale_period(conn, "alpha", at(26, 10), at(26, 10, 15), None)
    close_stale_period(conn, "alpha", at(26, 12, 30))
    open_stale_period(conn, "beta", at(29, 22), at(29, 22, 10), None)
    save_checkpoint(conn, Checkpoint("alpha", rejected={"bad_price": 7, "duplicate": 3}), NOW)
    write_mark(conn, "2026-W47", {"state": "sent", "rejected": {"alpha": {"bad_price": 4, "duplicate": 1}}})

    def signal(key: str, when: datetime, score: float) -> Signal:
        return Signal("alpha", key, when, "volume_spike", score, {"ratio": score})

    stored = append_signals(
        conn,
        "alpha",
        [
            signal("AAPL", at(23, 15), 5.0),
            signal("MSFT", at(24, 15), 9.0),
            signal("NVDA", at(25, 15), 7.0),
            signal("TSLA", at(27, 15), 3.0),
            signal("GME", at(20, 15), 100.0),  # the week before
        ],
        at(28),
    )
    msft = next(s for s in stored if s.key == "MSFT")
    assert msft.id is not None
    end = msft.time + timedelta(minutes=1)
    up = Outcome(msft.id, "alpha", "MSFT", msft.time, 1, end, 100.0, 105.0, 0.05, 1e6, 0.01, 200, True)
    insert_outcomes(conn, [up], at(28))


@pytest.fixture
def seeded(db: Database) -> Database:
    db.write_sync(story)
    return db


@pytest.fixture
def catcher() -> Iterator[MailCatcher]:
    mail = MailCatcher()  # binds 127.0.0.1 on a free port now; served inside each test's event loop
    yield mail
    asyncio.run(mail.close())


# --- the figures ---------------------------------------------------------------------------------


def test_the_weeks_figures_from_a_seeded_store(seeded: Database) -> None:
    settings = settings_for(seeded)
    week = parse_week(WEEK, TZ)
    assert (week.start, week.end) == (datetime(2026, 11, 22, 23, tzinfo=UTC), datetime(2026, 11, 29, 23, tzinfo=UTC))
    bw = seeded.read_sync(compute, settings, week, NOW)
    main = bw.main
    assert (main.currency, main.mrr_start, main.mrr) == ("usd", 4000, 5000)
    assert (main.paying_start, main.paying, main.new, main.churned) == (2, 3, 2, 1)
    assert (main.gross, main.fees, main.net) == (4000, 176, 3824)
    assert bw.signups == 3  # c, d, e
    assert bw.mrr_daily[0] == (4000, 5000, 2000, 5000, 5000, 5000, 5000)  # Mon..Sun ends: +c, -b, +d
    assert (bw.sent, bw.failed, bw.queued, bw.deliveries.retried) == (5, 2, 1, 1)
    assert bw.deliveries.by_channel == {"email": (5, 0), "webhook": (0, 2)}
    assert bw.deliveries.daily == ((0, 0), (5, 0), (0, 2), (0, 0), (0, 0), (0, 0), (0, 0))
    alpha, beta = bw.automations
    assert (alpha.name, alpha.signals, beta.signals) == ("alpha", 4, 0)
    assert [(s.key, o.ret if o else None) for s, o in alpha.top] == [("MSFT", 0.05), ("NVDA", None), ("AAPL", None)]
    assert (len(alpha.stale), alpha.stale_seconds, len(beta.stale), beta.stale_seconds) == (1, 9000.0, 1, 3600.0)
    assert (alpha.rejected, alpha.rejected_new, beta.rejected_new) == ({"bad_price": 7, "duplicate": 3}, 5, 0)
    assert bw.complete


def test_a_week_under_way_is_cut_at_now_and_a_future_week_is_refused(seeded: Database) -> None:
    settings = settings_for(seeded)
    bw = seeded.read_sync(compute, settings, parse_week(WEEK, TZ), at(25, 0))  # Wednesday 00:00 UTC
    assert not bw.complete and (bw.main.mrr, bw.sent, bw.failed) == (5000, 5, 0)  # b churns at noon
    assert "The week is not over: figures up to 2026-11-25 00:00 UTC." in render_text(bw, "sm", "https://ops.example")
    with pytest.raises(ConfigError, match="has not started"):
        seeded.read_sync(compute, settings, parse_week("2026-W50", TZ), NOW)
    with pytest.raises(ConfigError, match="ISO week such as 2026-W48"):
        parse_week("48", TZ)
    with pytest.raises(ConfigError, match="has no week 54"):
        parse_week("2026-W54", TZ)


# --- the schedule ----------------------------------------------------------------------------------


def test_due_once_the_weekday_and_hour_come_in_the_time_zone() -> None:
    cfg = BusinessReportConfig(weekday="mon", hour=8, tz=TZ)
    assert due_week(DUE - timedelta(seconds=1), cfg) is None
    due = due_week(DUE, cfg)
    assert due is not None and due.label == WEEK
    assert next_moment(DUE - timedelta(hours=1), cfg) == DUE
    assert next_moment(DUE, cfg) == DUE + timedelta(days=7)
    # summer time: Paris is UTC+2 until Oct 25 2026, so the Monday before is due at 06:00 UTC, the one after at 07:00
    assert send_moment(parse_week("2026-W42", TZ), cfg) == datetime(2026, 10, 19, 6, tzinfo=UTC)
    assert send_moment(parse_week("2026-W43", TZ), cfg) == datetime(2026, 10, 26, 7, tzinfo=UTC)
    # the weeks themselves follow the zone: W43 ends at Paris midnight after the change (23:00 UTC)
    assert parse_week("2026-W43", TZ).end == datetime(2026, 10, 25, 23, tzinfo=UTC)
    # another zone and weekday: Wednesday 18:00 in New York for the week before
    ny = BusinessReportConfig(weekday="wed", hour=18, tz="America/New_York")
    assert send_moment(parse_week(WEEK, ny.tz), ny) == datetime(2026, 12, 2, 23, tzinfo=UTC)
    assert week_of(datetime(2026, 11, 30, 4, 59, tzinfo=UTC), ny.tz).label == WEEK  # still Sunday in New York


def test_the_config_turns_it_on_with_an_admin_email_and_checks_the_zone() -> None:
    assert AdminConfig(email="a@b.example").business_report_on
    assert not AdminConfig().business_report_on
    assert not AdminConfig(email="a@b.example", business_report=BusinessReportConfig(enabled=False)).business_report_on
    with pytest.raises(ValueError, match="Europe/Paris"):
        BusinessReportConfig(tz="Mars/Olympus")
    with pytest.raises(ValueError, match=r"admin\.email is not set"):
        AdminConfig(business_report=BusinessReportConfig(enabled=True))


# --- the email, through a real SMTP server ------------------------------------------------------------


def test_the_email_arrives_with_the_right_figures(seeded: Database, catcher: MailCatcher) -> None:
    settings = settings_for(seeded, catcher.port)

    async def go() -> Any:
        await catcher.start()
        return await send_due(settings, seeded, NOW)

    sent = asyncio.run(go())
    assert sent is not None and sent.status == "sent"
    (mail,) = catcher.messages()
    assert mail.rcpt_tos == ("owner@ops.example",)
    assert mail.subject == "signalmint weekly report 2026-W48: MRR $50 (+$10 (+25.00%))"
    assert mail.parsed["Message-ID"] == sent.message_id
    text, html = mail.text or "", mail.html or ""
    assert "MRR $50 (+$10 (+25.00%) on the week before, $40)" in text
    assert "paying subscribers 3 (was 2): 2 new, 1 churned" in text
    assert "Deliveries: 5 sent, 2 failed, 1 still queued, 0 skipped; 1 sent after a retry" in text
    assert (
        "Alpha spikes (alpha): stale 1 time for 2 h 30 min; 5 rows rejected since the last report (10 in all)" in text
    )
    assert "Beta moves (beta): stale 1 time for 1 h 00 min; 0 rows rejected since the last report (0 in all)" in text
    assert re.search(r"MSFT traded 9\.0× its usual volume, score 9, .*\+5\.00% after 1 bar", text)
    assert text.index("MSFT") < text.index("NVDA") < text.index("AAPL") and "TSLA" not in text and "GME" not in text
    # the HTML: inline styles and tables only, no scripts, no external images; the chart is a table of bars
    assert "<script" not in html and "<img" not in html and "<style" not in html and 'class="' not in html
    assert "Business report, 2026-W48" in html and "Mon Nov 23 to Sun Nov 29, 2026 (Europe/Paris)" in html
    assert 'title="5 sent, 0 failed"' in html and 'title="0 sent, 2 failed"' in html
    assert 'href="https://ops.example/signals/' in html and "+5.00% after 1 bar" in html
    assert "No signals this week." in html  # beta
    assert mail.parsed["Auto-Submitted"] == "auto-generated"


def test_at_most_once_a_week_across_restarts(seeded: Database, catcher: MailCatcher, tmp_path: Path) -> None:
    """Two "processes" (each its own Database on the same store) run the schedule one after the
    other, and a third concurrently with a fourth: one email for the week, whatever happens."""
    settings = settings_for(seeded, catcher.port)

    async def process(now: datetime) -> None:
        db = Database(seeded.url)  # a fresh engine: nothing kept in memory from the last run
        stop = asyncio.Event()
        task = asyncio.create_task(run_business_reports(settings, db, stop, clock=lambda: now, poll=0.05))
        await asyncio.sleep(0.3)  # several checks
        stop.set()
        await task
        db.close()

    async def go() -> None:
        await catcher.start()
        await process(DUE - timedelta(minutes=1))  # not yet due: nothing
        assert catcher.messages() == []
        await process(DUE)  # due: sent
        await process(DUE + timedelta(hours=3))  # restarted: already sent
        await asyncio.gather(process(DUE + timedelta(days=2)), process(DUE + timedelta(days=2)))

    asyncio.run(go())
    assert [m.subject.split(":")[0] for m in catcher.messages()] == ["signalmint weekly report 2026-W48"]
    mark = seeded.read_sync(read_mark, WEEK)
    assert mark is not None and mark["state"] == "sent"
    assert mark["rejected"] == {"alpha": {"bad_price": 7, "duplicate": 3}}  # the next report counts from here


def test_a_refused_send_is_tried_again_and_nothing_is_sent_twice(seeded: Database, tmp_path: Path) -> None:
    from signalmint.store.business import claim_mark

    closed = MailCatcher()
    port = closed.port
    asyncio.run(closed.close())  # nothing listens on the port: the connection is refused
    settings = settings_for(seeded, port)
    first = asyncio.run(send_week(settings, seeded, parse_week(WEEK, TZ), NOW))
    assert first.status == "failed" and seeded.read_sync(read_mark, WEEK) is None  # free to try again
    catcher = MailCatcher()
    try:
        settings = settings_for(seeded, catcher.port)

        async def go() -> list[str]:
            await catcher.start()
            return [
                (await send_week(settings, seeded, parse_week(WEEK, TZ), NOW)).status,
                (await send_week(settings, seeded, parse_week(WEEK, TZ), NOW)).status,
            ]

        assert asyncio.run(go()) == ["sent", "already"]
        assert len(catcher.messages()) == 1
        # a claim left by a process killed while sending is never sent again by the schedule
        assert seeded.write_sync(claim_mark, "2026-W49", {"state": "sending"})
        later = asyncio.run(send_due(settings, seeded, DUE + timedelta(days=7)))
        assert later is not None and later.status == "already" and len(catcher.messages()) == 1
    finally:
        asyncio.run(catcher.close())


def test_rendering_escapes_names() -> None:
    from signalmint.billing.analytics import Figures
    from signalmint.billing.business_report import AutomationWeek, BusinessWeek
    from signalmint.store.business import DeliveryCounts

    week = parse_week(WEEK, "UTC")
    bw = BusinessWeek(
        week, NOW, "usd", (Figures("usd"),), ((0,) * 7,), 0, DeliveryCounts({}, {}, ((0, 0),) * 7, 0),
        (AutomationWeek("x", "<b>bold</b>", 0, (), 0.0, {}, None, ()),),
    )  # fmt: skip
    html = render_html(bw, "site & co", "https://ops.example")
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "site &amp; co" in html and "<b>bold" not in html


# --- the CLI ------------------------------------------------------------------------------------------


def test_cli_previews_writes_and_sends(sqlite_db: Database, catcher: MailCatcher, tmp_path: Path) -> None:
    seeded = sqlite_db
    seeded.write_sync(story)
    config = tmp_path / "signalmint.yaml"
    config.write_text(
        f"database: {seeded.url}\nbase_url: https://ops.example\nadmin:\n  email: owner@ops.example\n"
        f"  business_report: {{weekday: mon, hour: 8, tz: {TZ}}}\n"
        f"email: {{host: 127.0.0.1, port: {catcher.port}, starttls: false}}\n"
    )
    runner = CliRunner()
    shown = runner.invoke(cli_app, ["business-report", "-c", str(config), "--week", WEEK])
    assert shown.exit_code == 0, shown.output
    assert "MRR $50 (+$10 (+25.00%)" in shown.output and "MSFT traded 9.0×" in shown.output
    out = tmp_path / "report.html"
    written = runner.invoke(cli_app, ["business-report", "-c", str(config), "--week", WEEK, "--out", str(out)])
    assert written.exit_code == 0 and "Business report, 2026-W48" in out.read_text()
    bad = runner.invoke(cli_app, ["business-report", "-c", str(config), "--week", "2026-48"])
    assert bad.exit_code == 1 and "ISO week such as 2026-W48" in bad.output
    assert seeded.read_sync(read_mark, WEEK) is None  # a preview marks nothing

    import threading

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(catcher.start(), loop).result(5)
    try:
        sent = runner.invoke(cli_app, ["business-report", "-c", str(config), "--week", WEEK, "--send"])
        assert sent.exit_code == 0, sent.output
        assert "2026-W48 sent to owner@ops.example" in sent.output
        mark = seeded.read_sync(read_mark, WEEK)
        assert len(catcher.messages()) == 1 and mark is not None and mark["state"] == "sent"
    finally:
        asyncio.run_coroutine_threadsafe(catcher.close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


# --- kill -9 while sending ----------------------------------------------------------------------------


def send_due_in_a_process(config: str, now: str) -> None:
    """The child process (tests/processes.py): one ``send_due`` for the config's business, its
    result printed."""
    settings = load_settings(config, registry=Registry.from_entry_points())
    sent = asyncio.run(send_due(settings, Database(settings.database), datetime.fromisoformat(now)))
    print("RESULT", sent.status if sent else None, flush=True)


class KillOnData:
    """An SMTP handler that SIGKILLs the sending process as its message arrives, before answering:
    the server has the message, the sender never hears so (the worst moment to die)."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.received: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(bytes(envelope.content))
        if self.pid is not None:
            os.kill(self.pid, signal.SIGKILL)
            self.pid = None
        return "250 2.0.0 queued"


def test_kill_9_while_sending_never_sends_the_week_twice(sqlite_db: Database, tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller

    from ..conftest import free_port

    sqlite_db.write_sync(story)
    handler, port = KillOnData(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    config = tmp_path / "signalmint.yaml"
    config.write_text(
        f"database: {sqlite_db.url}\nadmin:\n  email: owner@ops.example\n  business_report: {{tz: {TZ}}}\n"
        f"email: {{host: 127.0.0.1, port: {port}, starttls: false}}\n"
    )

    def run(armed: bool) -> subprocess.CompletedProcess[str] | int:
        output_file = tmp_path / f"send-{'armed' if armed else 'again'}.log"
        proc = processes.call(send_due_in_a_process, str(config), NOW.isoformat(), output=output_file)
        if armed:
            handler.pid = proc.pid
        output, _ = proc.communicate(timeout=60)
        code = proc.wait()
        return code if armed else subprocess.CompletedProcess(proc.args, code, output)

    try:
        assert run(armed=True) == -signal.SIGKILL  # died with the message at the server, unanswered
        assert len(handler.received) == 1
        mark = sqlite_db.read_sync(read_mark, WEEK)
        assert mark is not None and mark["state"] == "sending"  # the claim outlived the process
        again = run(armed=False)  # the restart
        assert isinstance(again, subprocess.CompletedProcess)
        assert again.returncode == 0 and "RESULT already" in again.stdout, again.stdout
        assert len(handler.received) == 1  # at most once: never a second copy
    finally:
        controller.stop()
