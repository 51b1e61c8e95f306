"""kill -9 the delivery worker at random moments: every delivery still arrives, duplicates stay bounded.

A real `signalmint run --role worker` process drains an outbox of 100 signals x 100
subscribers x {webhook, email} into a local HTTP sink and a local SMTP server. It is killed
with SIGKILL at random moments (several seeds), restarted, and finally left to drain.
Every expected (signal, subscriber, channel) must be received at least once; a duplicate
carries the same idempotency id, and there are at most as many as were in flight (one
claimed batch) per kill.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from signalmint.config import EmailConfig, PlanConfig, Settings
from signalmint.delivery.fanout import FanOut
from signalmint.engine import commit_tick
from signalmint.records import Automation, Frame, Signal
from signalmint.store import Database, sync_automations
from signalmint.store.accounts import confirm_subscriber, ensure_subscriber, start_subscription
from signalmint.store.outbox import add_endpoint, counts_by_status, list_deliveries
from signalmint.store.plans import sync_plans

from ..conftest import free_port
from .conftest import HttpSink

SIGNALS, SUBSCRIBERS, BATCH = 100, 100, 200


class Inbox:
    def __init__(self) -> None:
        self.message_ids: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        for line in envelope.content.decode("utf-8", "replace").splitlines():
            if line.lower().startswith("message-id:"):
                self.message_ids.append(line.split(":", 1)[1].strip().strip("<>").split("@")[0])
                break
        return "250 OK"


def _config(path: Path, db: Path, smtp_port: int) -> None:
    path.write_text(
        f"database: sqlite:///{db}\n"
        "secret: crash-test-secret-0123456789\n"
        "email: {host: 127.0.0.1, port: %d, starttls: false, sender: 'alerts <alerts@signalmint.test>'}\n"
        "delivery: {allow_loopback_targets: true, lease: 2s, batch: %d, concurrency: 64}\n"
        "plans:\n  - {id: premium, price: 2900, channels: [web, webhook, email]}\n" % (smtp_port, BATCH)
    )


def _seed(db: Database, sink: HttpSink, smtp_port: int) -> None:
    now = datetime.now(UTC)
    settings = Settings(
        database=db.url,
        email=EmailConfig(host="127.0.0.1", port=smtp_port, starttls=False),
        plans=[PlanConfig(id="premium", price=2900, channels=["web", "webhook", "email"])],
    )
    db.write_sync(sync_automations, [Automation("spikes", "Spikes", "", "synthetic", "volume_spike", {})], now)
    (plan,) = db.write_sync(sync_plans, settings.current_plans(), now)

    def people(conn: Any) -> None:
        for i in range(SUBSCRIBERS):
            person = ensure_subscriber(conn, f"s{i}@example.com", now)
            confirm_subscriber(conn, person.id, now)
            start_subscription(conn, person.id, plan, now, origin="test", state="active")
            add_endpoint(conn, person.id, "webhook", "webhook+" + sink.url(f"/hook/{i}"), now, ["whsec_" + "A" * 32])
            add_endpoint(conn, person.id, "email", f"mailto:s{i}@example.com", now)

    db.write_sync(people)
    fanout = FanOut({"webhook", "email"})
    for i in range(SIGNALS):
        signal_ = Signal(
            "spikes", f"K{i % 7}", now - timedelta(minutes=SIGNALS - i), "volume_spike", 9.0, {"ratio": 9.0}
        )
        db.write_sync(commit_tick, "spikes", Frame.empty(), [signal_], None, fanout)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_at_random_moments_loses_no_delivery(seed: int, tmp_path: Path, http_sink: HttpSink) -> None:
    inbox = Inbox()
    smtp_port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    try:
        db_path = tmp_path / "outbox.db"
        db = Database(f"sqlite:///{db_path}")
        db.migrate()
        _seed(db, http_sink, smtp_port)
        expected = {d.idempotency_id for d in db.read_sync(list_deliveries, limit=10**6)}
        assert len(expected) == SIGNALS * SUBSCRIBERS * 2
        config = tmp_path / "signalmint.yaml"
        _config(config, db_path, smtp_port)
        command = [sys.executable, "-m", "signalmint.cli", "run", "-c", str(config), "--role", "worker"]
        rng = random.Random(seed)
        kills = 0
        for _ in range(3):
            before = db.read_sync(counts_by_status).get("sent", 0)
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ)
            deadline = time.monotonic() + 60
            while db.read_sync(counts_by_status).get("sent", 0) == before and time.monotonic() < deadline:
                time.sleep(0.05)  # wait until this worker is sending...
            time.sleep(rng.uniform(0.0, 1.5))  # ...then kill it at a random moment mid-stream
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            kills += 1
        partway = db.read_sync(counts_by_status)
        assert 0 < partway.get("sent", 0) < len(expected), partway  # the kills hit it mid-stream
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ)
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                if db.read_sync(counts_by_status).get("sent", 0) == len(expected):
                    break
                time.sleep(0.5)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        assert db.read_sync(counts_by_status) == {"sent": len(expected)}
        received = Counter(r.headers["webhook-id"] for r in http_sink.requests) + Counter(inbox.message_ids)
        assert set(received) == expected  # every one arrived, and only expected ids
        duplicates = sum(n - 1 for n in received.values())
        assert duplicates <= BATCH * kills, duplicates  # at most what was in flight at each kill
        db.close()
    finally:
        smtp.stop()
