"""Three real worker processes (`signalmint run --role worker`, forked from a warm parent:
:mod:`tests.processes`) drain one PostgreSQL outbox into
a local webhook receiver: each delivery is claimed and sent exactly once (``FOR UPDATE SKIP
LOCKED``) across processes; and when one worker is killed with -9 mid-batch (a tripwire in the
receiver fires on a chosen request, before answering it), nothing is lost and the only
duplicates are the killed worker's in-flight requests, sent again with the same id."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from signalmint.config import PlanConfig, Settings
from signalmint.delivery.fanout import FanOut
from signalmint.engine.runner import commit_tick
from signalmint.records import Automation, Frame, Signal
from signalmint.store import Database, sync_automations
from signalmint.store.accounts import confirm_subscriber, ensure_subscriber, start_subscription
from signalmint.store.outbox import add_endpoint, counts_by_status, list_deliveries
from signalmint.store.plans import sync_plans

from .. import processes
from ..delivery.conftest import HttpSink, SinkServer

SIGNALS, SUBSCRIBERS, BATCH, WORKERS = 20, 20, 25, 3
pytestmark = [pytest.mark.slow, pytest.mark.pg]


class TrippingSink(HttpSink):
    """The webhook receiver, which SIGKILLs ``pid`` when request number ``at`` has arrived and
    before it is answered (that request and its batch are in flight when the worker dies)."""

    def __init__(self) -> None:
        super().__init__()
        self.pid: int | None = None
        self.at = self.seen = 0

    def arm(self, pid: int, at: int) -> None:
        with self._lock:
            self.pid, self.at, self.seen = pid, at, 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def answer(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                with self._lock:
                    self.seen += 1
                    if self.pid is not None and self.seen == self.at:
                        os.kill(self.pid, signal.SIGKILL)
                        self.pid = None
            await send(message)

        await super().__call__(scope, receive, answer if scope["type"] == "http" else send)


@pytest.fixture
def pg(db: Database) -> Database:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL: SQLite has one writer, so its workers never race for a row")
    return db


@pytest.fixture(scope="module")
def sink() -> Iterator[TrippingSink]:
    app = TrippingSink()
    with SinkServer(app) as server:
        app.port = server.port
        yield app


def _seed(db: Database, sink: HttpSink) -> set[str]:
    now = datetime.now(UTC)
    settings = Settings(database=db.url, plans=[PlanConfig(id="premium", price=2900, channels=["web", "webhook"])])
    db.write_sync(sync_automations, [Automation("spikes", "Spikes", "", "synthetic", "volume_spike", {})], now)
    (plan,) = db.write_sync(sync_plans, settings.current_plans(), now)

    def people(conn: Any) -> None:
        for i in range(SUBSCRIBERS):
            person = ensure_subscriber(conn, f"s{i}@example.com", now)
            confirm_subscriber(conn, person.id, now)
            start_subscription(conn, person.id, plan, now, origin="test", state="active")
            add_endpoint(conn, person.id, "webhook", "webhook+" + sink.url(f"/hook/{i}"), now, ["whsec_" + "A" * 32])

    db.write_sync(people)
    fanout = FanOut({"webhook"})
    for i in range(SIGNALS):
        found = Signal("spikes", f"K{i % 7}", now - timedelta(minutes=SIGNALS - i), "volume_spike", 9.0, {"r": 9.0})
        db.write_sync(commit_tick, "spikes", Frame.empty(), [found], None, fanout)
    expected = {d.idempotency_id for d in db.read_sync(list_deliveries, limit=10**6)}
    assert len(expected) == SIGNALS * SUBSCRIBERS
    return expected


def _workers(db: Database, folder: Path) -> list[processes.Started]:
    config = folder / "workers.yaml"
    config.write_text(
        f"database: {db.url}\nsecret: scaleout-test-secret-0123456789\n"
        f"delivery: {{allow_loopback_targets: true, lease: 2s, batch: {BATCH}, concurrency: 16}}\n"
        "plans:\n  - {id: premium, price: 2900, channels: [web, webhook]}\n"
    )
    args = ["run", "-c", str(config), "--role", "worker"]
    return [processes.start(args, output=folder / f"worker{i}.log") for i in range(WORKERS)]


def _drain(db: Database, procs: list[processes.Started], total: int, folder: Path) -> None:
    try:
        deadline = time.monotonic() + 90
        while db.read_sync(counts_by_status).get("sent", 0) < total:
            logs = "\n".join(p.read_text()[-2000:] for p in folder.glob("worker*.log"))
            assert time.monotonic() < deadline, (db.read_sync(counts_by_status), logs)
            time.sleep(0.1)
    finally:
        # a worker still importing when the others drained everything has no SIGTERM handler
        # yet: wait until each says it started, so the stop below tests the clean stop
        started = time.monotonic() + 30
        while time.monotonic() < started and any(
            proc.poll() is None and b"started" not in (folder / f"worker{i}.log").read_bytes()
            for i, proc in enumerate(procs)
        ):
            time.sleep(0.05)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_three_worker_processes_send_each_delivery_exactly_once(
    pg: Database, sink: TrippingSink, tmp_path: Path
) -> None:
    sink.reset()
    expected = _seed(pg, sink)
    procs = _workers(pg, tmp_path)
    _drain(pg, procs, len(expected), tmp_path)
    assert [p.returncode for p in procs] == [0] * WORKERS
    assert pg.read_sync(counts_by_status) == {"sent": len(expected)}
    received = Counter(r.headers["webhook-id"] for r in sink.requests)
    assert set(received) == expected and set(received.values()) == {1}  # every one, once


def test_a_worker_killed_mid_batch_loses_nothing_and_repeats_only_what_was_in_flight(
    pg: Database, sink: TrippingSink, tmp_path: Path
) -> None:
    sink.reset()
    expected = _seed(pg, sink)
    procs = _workers(pg, tmp_path)
    victim = procs[0]
    sink.arm(victim.pid, BATCH * 4 + BATCH // 2)  # a request mid-way through the run
    try:
        assert victim.wait(timeout=60) == -signal.SIGKILL
    finally:
        sink.pid = None
    _drain(pg, procs[1:], len(expected), tmp_path)
    assert pg.read_sync(counts_by_status) == {"sent": len(expected)}
    received = Counter(r.headers["webhook-id"] for r in sink.requests)
    assert set(received) == expected  # nothing lost, and only expected ids (a duplicate has the same id)
    duplicates = sum(n - 1 for n in received.values())
    assert duplicates <= BATCH, duplicates  # at most the killed worker's claimed batch
