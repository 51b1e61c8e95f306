"""kill -9 the delivery worker at chosen moments: every delivery still arrives, duplicates stay bounded.

A real `signalmint run --role worker` process (tests/processes.py) drains an outbox of 20 signals x 40 subscribers x
{webhook, email} (8 batches of 200) into a local HTTP receiver and a local SMTP server. A tripwire
in the receivers (a fault-injection hook on the receiving side: nothing in the worker knows about
it) sends SIGKILL to the worker the moment the chosen message of a run arrives, before that
message is answered, so the kill lands exactly there: on the first message of a batch, in the
middle of one, or on its last message (everything sent, nothing recorded yet: the worst case).
Each test kills three runs at its point, restarts the worker, and finally lets it drain.
Every expected (signal, subscriber, channel) must be received at least once; a duplicate
carries the same idempotency id, and there are at most as many as were in flight (one
claimed batch) per kill.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from signalmint.config import EmailConfig, PlanConfig, Settings
from signalmint.delivery.fanout import FanOut
from signalmint.engine.runner import commit_tick
from signalmint.records import Automation, Frame, Signal
from signalmint.store import Database, sync_automations
from signalmint.store.accounts import confirm_subscriber, ensure_subscriber, start_subscription
from signalmint.store.migrate import migrate
from signalmint.store.outbox import add_endpoint, counts_by_status, list_deliveries
from signalmint.store.plans import sync_plans

from .. import processes
from ..conftest import free_port
from .conftest import HttpSink, SinkServer

SIGNALS, SUBSCRIBERS, BATCH = 20, 40, 200


class Tripwire:
    """Counts the messages a worker run delivers (webhooks and emails) and SIGKILLs the worker
    when the ``at``-th arrives, before it is answered: that message is in flight when it dies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pid: int | None = None
        self.at = 0
        self.seen = 0

    def arm(self, pid: int, at: int) -> None:
        with self._lock:
            self.pid, self.at, self.seen = pid, at, 0

    def hit(self) -> None:
        with self._lock:
            self.seen += 1
            if self.pid is not None and self.seen == self.at:
                os.kill(self.pid, signal.SIGKILL)
                self.pid = None


class TrippingSink(HttpSink):
    """The HTTP receiver, with the tripwire between recording a request and answering it."""

    def __init__(self, wire: Tripwire) -> None:
        super().__init__()
        self.wire = wire

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def answer(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.wire.hit()
            await send(message)

        await super().__call__(scope, receive, answer if scope["type"] == "http" else send)


class Inbox:
    def __init__(self, wire: Tripwire) -> None:
        self.wire = wire
        self.message_ids: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        for line in envelope.content.decode("utf-8", "replace").splitlines():
            if line.lower().startswith("message-id:"):
                self.message_ids.append(line.split(":", 1)[1].strip().strip("<>").split("@")[0])
                break
        self.wire.hit()
        return "250 OK"


@pytest.fixture(scope="module")
def wire() -> Tripwire:
    return Tripwire()


@pytest.fixture(scope="module")
def _tripping_sink(wire: Tripwire) -> Iterator[TrippingSink]:
    sink = TrippingSink(wire)
    with SinkServer(sink) as server:
        sink.port = server.port
        yield sink


@pytest.fixture
def http_sink(_tripping_sink: TrippingSink) -> Iterator[TrippingSink]:
    _tripping_sink.reset()
    yield _tripping_sink
    _tripping_sink.reset()


def _config(path: Path, db: Path, smtp_port: int) -> None:
    path.write_text(
        f"database: sqlite:///{db}\n"
        "secret: crash-test-secret-0123456789\n"
        "email: {host: 127.0.0.1, port: %d, starttls: false, sender: 'alerts <alerts@signalmint.test>'}\n"
        "delivery: {allow_loopback_targets: true, lease: 1s, batch: %d, concurrency: 64}\n"
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


# The message of a run (webhooks and emails counted together) at which the worker is killed. A
# run's first batch is recorded before its second is claimed, so each run leaves one batch
# recorded and one leased but unrecorded: its rows come back when the 1 s lease expires.
KILL_POINTS = {
    "on the first message of a batch": BATCH + 1,
    "in the middle of a batch": BATCH + BATCH // 2,
    "on the last message of a batch, before its outcomes are recorded": 2 * BATCH,
}


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", KILL_POINTS.values(), ids=KILL_POINTS.keys())
def test_kill_9_at_chosen_moments_loses_no_delivery(
    kill_at: int, tmp_path: Path, http_sink: TrippingSink, wire: Tripwire
) -> None:
    processes.warm_up()  # the zygote imports while the outbox is seeded
    inbox = Inbox(wire)
    smtp_port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    try:
        db_path = tmp_path / "outbox.db"
        db = Database(f"sqlite:///{db_path}")
        migrate(db)
        _seed(db, http_sink, smtp_port)
        expected = {d.idempotency_id for d in db.read_sync(list_deliveries, limit=10**6)}
        assert len(expected) == SIGNALS * SUBSCRIBERS * 2
        config = tmp_path / "signalmint.yaml"
        _config(config, db_path, smtp_port)
        command = ["run", "-c", str(config), "--role", "worker"]
        kills = 0
        for _ in range(3):
            proc = processes.start(command)
            wire.arm(proc.pid, kill_at)
            try:
                proc.wait(timeout=120)  # the tripwire kills it at message `kill_at` of this run
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            assert proc.returncode == -signal.SIGKILL, (proc.returncode, wire.seen)
            kills += 1
        partway = db.read_sync(counts_by_status)
        assert 0 < partway.get("sent", 0) < len(expected), partway  # the kills hit it mid-stream
        proc = processes.start(command)
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                if db.read_sync(counts_by_status).get("sent", 0) == len(expected):
                    break
                time.sleep(0.2)
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
