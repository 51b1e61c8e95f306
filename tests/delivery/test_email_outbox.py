"""An email alert end to end: bars -> signal -> outbox -> SMTP (aiosmtpd) -> one-click unsubscribe."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from typing import Any

import numpy as np
import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient

from signalmint.accounts.service import server_pepper
from signalmint.config import EmailConfig, PlanConfig, Settings
from signalmint.delivery.fanout import FanOut
from signalmint.delivery.runner import channel_context
from signalmint.delivery.worker import Worker
from signalmint.engine.runner import commit_tick
from signalmint.records import Automation, Frame, Signal, to_datetime64
from signalmint.store import Database, sync_automations
from signalmint.store.accounts import confirm_subscriber, ensure_subscriber, start_subscription
from signalmint.store.outbox import add_endpoint, list_endpoints
from signalmint.store.plans import sync_plans
from signalmint.web.app import create_app

from ..conftest import free_port


class Inbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        return "250 OK"


@pytest.fixture
def smtp() -> Any:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def test_an_email_alert_carries_the_chart_and_unsubscribes_in_one_click(db: Database, smtp: Any) -> None:
    inbox, port = smtp
    now = datetime.now(UTC).replace(microsecond=0)
    settings = Settings(
        database=db.url,
        secret="email-outbox-secret-0123456789",
        base_url="https://alerts.example",
        email=EmailConfig(host="127.0.0.1", port=port, starttls=False, sender="alerts <alerts@alerts.example>"),
        plans=[PlanConfig(id="premium", price=2900, channels=["web", "email"])],
    )
    db.write_sync(
        sync_automations, [Automation("spikes", "Spikes", "", "synthetic", "volume_spike", {"window": 30})], now
    )
    (plan,) = db.write_sync(sync_plans, settings.current_plans(), now)

    def person(conn: Any) -> int:
        subscriber = ensure_subscriber(conn, "ada@example.com", now)
        confirm_subscriber(conn, subscriber.id, now)
        start_subscription(conn, subscriber.id, plan, now, origin="test", state="active")
        add_endpoint(conn, subscriber.id, "email", "mailto:ada@example.com", now)
        return int(subscriber.id)

    db.write_sync(person)
    times = np.array([to_datetime64(now - timedelta(minutes=40 - i)) for i in range(40)])
    volume = np.full(40, 1000.0)
    volume[-1] = 9000.0
    frame = Frame(
        keys=np.array(["AAPL"] * 40), times=times,
        columns={"open": np.full(40, 10.0), "high": np.full(40, 11.0), "low": np.full(40, 9.0),
                 "close": np.full(40, 10.5), "volume": volume},
    )  # fmt: skip
    spike = Signal("spikes", "AAPL", now - timedelta(minutes=1), "volume_spike", 9.0,
                   {"volume": 9000.0, "baseline": 1000.0, "ratio": 9.0, "z": 50.0})  # fmt: skip
    db.write_sync(commit_tick, "spikes", frame, [spike], None, FanOut({"email"}))

    async def drain() -> None:
        context = channel_context(settings)
        try:
            await Worker(settings, db, context, server_pepper(settings, db)).run_once()
        finally:
            await context.http.close()
            from signalmint.delivery.channels import email

            await email.close(context)

    asyncio.run(drain())
    (raw,) = inbox.messages
    mail = message_from_bytes(raw, policy=default_policy)
    assert mail["Subject"] == "AAPL traded 9.0× its usual volume"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["Message-ID"].startswith("<msg_")
    kinds = [part.get_content_type() for part in mail.walk()]
    assert {"text/plain", "text/html", "image/png"} <= set(kinds)
    png = next(part for part in mail.walk() if part.get_content_type() == "image/png").get_payload(decode=True)
    assert isinstance(png, bytes) and png.startswith(b"\x89PNG")
    found = re.search(r"<(https://alerts\.example/unsubscribe/[^>]+)>", mail["List-Unsubscribe"])
    assert found is not None
    link = found.group(1)
    app = create_app(settings, db)
    response = TestClient(app).post(link.removeprefix("https://alerts.example"), content="List-Unsubscribe=One-Click")
    assert response.status_code == 200
    (endpoint,) = db.read_sync(list_endpoints)
    assert endpoint.status == "disabled" and endpoint.status_reason == "unsubscribed"
