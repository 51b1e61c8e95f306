"""The outbox end to end: commit -> fan-out rows -> a worker -> a real local webhook receiver."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from signalmint.config import DeliveryConfig, PlanConfig, Settings
from signalmint.delivery.fanout import FanOut
from signalmint.delivery.runner import channel_context
from signalmint.delivery.worker import RETRY_SCHEDULE, Worker
from signalmint.engine.runner import commit_tick
from signalmint.records import Automation, Frame, Signal
from signalmint.store import Database, sync_automations
from signalmint.store.accounts import confirm_subscriber, ensure_subscriber, set_watchlist, start_subscription
from signalmint.store.outbox import add_endpoint, counts_by_status, list_deliveries, list_endpoints
from signalmint.store.plans import sync_plans
from signalmint.store.tables import deliveries

from .conftest import HttpSink, Reply

NUMBERS = ["volume", "baseline", "ratio", "z", "mad", "price_change", "score"]
PEPPER = b"outbox-test-pepper-0123456789"


def settings(db: Database) -> Settings:
    return Settings(
        database=db.url,
        delivery=DeliveryConfig(allow_loopback_targets=True),
        plans=[
            PlanConfig(id="free", delay="15m", watchlist=2, masked_fields=NUMBERS, channels=["web", "webhook"]),
            PlanConfig(id="premium", price=2900, channels=["web", "webhook"]),
            PlanConfig(id="basic", price=900, channels=["web"]),
        ],
    )


class Outbox:
    def __init__(self, db: Database, sink: HttpSink) -> None:
        self.db, self.sink = db, sink
        self.settings = settings(db)
        self.now = datetime.now(UTC)
        db.write_sync(sync_automations, [Automation("spikes", "Spikes", "", "synthetic", "volume_spike", {})], self.now)
        self.plans = {p.id: p for p in db.write_sync(sync_plans, self.settings.current_plans(), self.now)}
        self.secrets: dict[str, str] = {}
        self.ids: dict[str, int] = {}
        self.fanout = FanOut({"webhook"})

    def subscriber(self, name: str, plan: str, watch: tuple[str, ...] = ()) -> int:
        secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"[:32]

        def write(conn: Any) -> int:
            person = ensure_subscriber(conn, f"{name}@example.com", self.now)
            confirm_subscriber(conn, person.id, self.now)
            start_subscription(conn, person.id, self.plans[plan], self.now, origin="test", state="active")
            set_watchlist(conn, person.id, list(watch), self.now)
            add_endpoint(conn, person.id, "webhook", "webhook+" + self.sink.url(f"/hook/{name}"), self.now, [secret])
            return int(person.id)

        self.ids[name] = self.db.write_sync(write)
        self.secrets[name] = secret
        self.fanout.invalidate()
        return self.ids[name]

    def commit(self, *signals: Signal) -> list[Signal]:
        stored: list[Signal] = self.db.write_sync(
            commit_tick, "spikes", Frame.empty(), list(signals), None, self.fanout
        )
        return stored

    def worker(self, clock: Any = None) -> Worker:
        async def make() -> Worker:
            context = channel_context(self.settings)
            return Worker(self.settings, self.db, context, PEPPER, clock=clock or (lambda: datetime.now(UTC)))

        return asyncio.run(make())

    def drain(self, clock: Any = None, rounds: int = 5) -> int:
        async def run() -> int:
            context = channel_context(self.settings)
            worker = Worker(self.settings, self.db, context, PEPPER, clock=clock or (lambda: datetime.now(UTC)))
            handled = 0
            try:
                for _ in range(rounds):
                    handled += await worker.run_once()
            finally:
                await context.http.close()
            return handled

        return asyncio.run(run())


def spike(key: str, minutes_ago: float, now: datetime) -> Signal:
    return Signal(
        automation="spikes", key=key, time=now - timedelta(minutes=minutes_ago), kind="volume_spike", score=8.5,
        payload={"volume": 77777.0, "baseline": 9000.0, "ratio": 8.6, "z": 8.5, "mad": 700.0, "price_change": 0.01},
    )  # fmt: skip


@pytest.fixture
def outbox(db: Database, http_sink: HttpSink) -> Outbox:
    return Outbox(db, http_sink)


def test_a_committed_signal_reaches_every_entitled_webhook_signed_once(outbox: Outbox) -> None:
    outbox.subscriber("ann", "premium")
    outbox.subscriber("bob", "premium")
    outbox.subscriber("cy", "basic")  # plan without webhooks: no row
    (signal,) = outbox.commit(spike("AAPL", 1, outbox.now))
    rows = outbox.db.read_sync(list_deliveries)
    assert {d.subscriber_id for d in rows} == {outbox.ids["ann"], outbox.ids["bob"]}
    assert outbox.drain() == 2
    received = outbox.sink.wait_for(2)
    for request in received:
        name = request.path.rsplit("/", 1)[1]
        Webhook(outbox.secrets[name]).verify(request.body, request.headers)  # raises if the signature is wrong
        body = request.json()
        assert body["type"] == "signal.created" and body["data"]["id"] == signal.id
        assert body["data"]["payload"]["volume"] == 77777.0
    ids = {r.headers["webhook-id"] for r in received}
    assert ids == {d.idempotency_id for d in rows}
    assert outbox.db.read_sync(counts_by_status) == {"sent": 2}
    assert outbox.drain() == 0  # nothing twice


def test_a_free_subscriber_is_never_attempted_before_its_delay(outbox: Outbox) -> None:
    outbox.subscriber("fay", "free", watch=("AAPL",))
    outbox.commit(spike("AAPL", 1, outbox.now), spike("MSFT", 1, outbox.now))  # MSFT: not on her watchlist
    (row,) = outbox.db.read_sync(list_deliveries)
    assert row.not_before >= outbox.now - timedelta(minutes=1) + timedelta(minutes=15) - timedelta(seconds=1)
    assert outbox.drain() == 0 and outbox.sink.requests == []
    later = outbox.now + timedelta(minutes=15)
    assert outbox.drain(clock=lambda: later) == 1
    (request,) = outbox.sink.wait_for(1)
    data = request.json()["data"]
    assert data["key"] == "AAPL"
    assert not set(data["payload"]) & set(NUMBERS) and data["score"] is None
    # scheme 2: the hash and commitment are public, the salt that opens the commitment is not
    assert data["scheme"] == 2 and data["hash"] and data["commitment"] and data["salt"] is None


def test_retry_honours_retry_after_then_succeeds_with_the_same_id(outbox: Outbox) -> None:
    outbox.subscriber("ann", "premium")
    outbox.commit(spike("AAPL", 1, outbox.now))
    outbox.sink.script(Reply(status=503, headers={"Retry-After": "120"}))
    assert outbox.drain(rounds=1) == 1
    (row,) = outbox.db.read_sync(list_deliveries)
    assert row.status == "pending" and row.attempts == 1 and "503" in (row.last_error or "")
    assert row.next_attempt_at >= datetime.now(UTC) + timedelta(seconds=110)
    later = datetime.now(UTC) + timedelta(seconds=130)
    assert outbox.drain(clock=lambda: later, rounds=1) == 1
    first, second = outbox.sink.wait_for(2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert outbox.db.read_sync(list_deliveries)[0].status == "sent"


def test_410_disables_the_endpoint_and_the_delivery_is_a_dead_letter(outbox: Outbox) -> None:
    outbox.subscriber("ann", "premium")
    outbox.commit(spike("AAPL", 1, outbox.now))
    outbox.sink.script(Reply(status=410))
    outbox.drain(rounds=1)
    (row,) = outbox.db.read_sync(list_deliveries)
    assert row.status == "dead" and "410" in (row.last_error or "")
    (endpoint,) = outbox.db.read_sync(list_endpoints)
    assert endpoint.status == "disabled"
    outbox.fanout.invalidate()
    outbox.commit(spike("MSFT", 1, outbox.now))
    assert len(outbox.db.read_sync(list_deliveries)) == 1  # a disabled endpoint gets no new rows


def test_after_the_last_attempt_a_delivery_is_dead(outbox: Outbox) -> None:
    outbox.subscriber("ann", "premium")
    outbox.commit(spike("AAPL", 1, outbox.now))
    outbox.sink.default = Reply(status=500)
    moment = [datetime.now(UTC)]
    for _ in range(len(RETRY_SCHEDULE) + 1):
        outbox.drain(clock=lambda: moment[0], rounds=1)
        moment[0] += timedelta(hours=12)
    (row,) = outbox.db.read_sync(list_deliveries)
    assert row.status == "dead" and row.attempts == len(RETRY_SCHEDULE) + 1
    assert "gave up" in (row.last_error or "")


def test_an_expired_lease_returns_the_row_to_the_queue(outbox: Outbox) -> None:
    outbox.subscriber("ann", "premium")
    outbox.commit(spike("AAPL", 1, outbox.now))
    from signalmint.store.outbox import claim

    claimed = outbox.db.write_sync(claim, "dead-worker", datetime.now(UTC), lease=timedelta(seconds=30), limit=10)
    assert len(claimed) == 1
    assert outbox.drain(rounds=1) == 0  # leased by someone else
    later = datetime.now(UTC) + timedelta(seconds=31)
    assert outbox.drain(clock=lambda: later, rounds=1) == 1
    with outbox.db.engine.connect() as conn:
        row = conn.execute(select(deliveries)).one()
    assert row.status == "sent" and row.attempts == 2


def test_a_subscription_that_ended_after_fan_out_receives_nothing(outbox: Outbox) -> None:
    sid = outbox.subscriber("ann", "premium")
    outbox.commit(spike("AAPL", 1, outbox.now))
    from signalmint.store.accounts import current_subscription, set_subscription_state

    sub = outbox.db.read_sync(current_subscription, sid)
    assert sub is not None
    outbox.db.write_sync(set_subscription_state, sub.id, datetime.now(UTC), state="expired")
    outbox.drain(rounds=1)
    (row,) = outbox.db.read_sync(list_deliveries)
    assert row.status == "skipped" and outbox.sink.requests == []
    assert json.dumps(row.last_error).find("entitled") >= 0


def test_quiet_hours_hold_a_delivery_until_the_window_ends(outbox: Outbox) -> None:
    from signalmint.records import Preferences
    from signalmint.store.accounts import set_preference

    sid = outbox.subscriber("ann", "premium")
    minute = outbox.now.hour * 60 + outbox.now.minute
    quiet = Preferences("webhook", True, quiet_start=(minute - 30) % 1440, quiet_end=(minute + 30) % 1440)
    outbox.db.write_sync(set_preference, sid, quiet)
    outbox.fanout.invalidate()
    outbox.commit(spike("AAPL", 0, outbox.now))
    (row,) = outbox.db.read_sync(list_deliveries)
    assert outbox.now + timedelta(minutes=28) < row.not_before <= outbox.now + timedelta(minutes=31)
    assert outbox.drain() == 0 and outbox.sink.requests == []
    later = row.not_before + timedelta(seconds=1)
    assert outbox.drain(clock=lambda: later) == 1
    assert len(outbox.sink.wait_for(1)) == 1


def test_a_channel_switched_off_gets_no_rows(outbox: Outbox) -> None:
    from signalmint.records import Preferences
    from signalmint.store.accounts import set_preference

    sid = outbox.subscriber("ann", "premium")
    outbox.db.write_sync(set_preference, sid, Preferences("webhook", enabled=False))
    outbox.fanout.invalidate()
    outbox.commit(spike("AAPL", 1, outbox.now))
    assert outbox.db.read_sync(list_deliveries) == []


def test_run_stores_a_round_with_the_next_claim_and_the_last_before_it_returns(outbox: Outbox) -> None:
    """Full batches follow each other at once: each round's outcomes are stored with the next claim
    (one call on the writer), and the last round's before ``run`` returns; every row once, none lost."""
    for name in ("ann", "bob", "cy", "dee", "eve"):
        outbox.subscriber(name, "premium")
    outbox.commit(spike("AAPL", 1, outbox.now))
    rows = outbox.db.read_sync(list_deliveries)
    assert len(rows) == 5

    async def run() -> list[str]:
        context = channel_context(outbox.settings)
        worker = Worker(outbox.settings, outbox.db, context, PEPPER, batch=2)
        transactions: list[str] = []
        write = outbox.db.write

        async def spy(fn: Any, *args: Any, **kwargs: Any) -> Any:
            transactions.append(fn.__name__)
            return await write(fn, *args, **kwargs)

        stop = asyncio.Event()
        outbox.db.write = spy  # type: ignore[method-assign]
        try:
            task = asyncio.create_task(worker.run(stop, idle=30))
            while sum(1 for t in transactions if t in ("write", "_store_and_claim")) < 3:
                await asyncio.sleep(0.01)  # rounds of 2, 2 and 1: the last one found less than a batch
            stop.set()
            await asyncio.wait_for(task, 10)
        finally:
            outbox.db.write = write  # type: ignore[method-assign]
            await context.http.close()
        return transactions

    transactions = asyncio.run(run())
    # claim; claim with round 1's outcomes; claim with round 2's; round 3's alone (a partial batch)
    assert transactions == ["claim_batch", "_store_and_claim", "_store_and_claim", "write"]
    received = outbox.sink.wait_for(5)
    assert sorted(r.headers["webhook-id"] for r in received) == sorted(d.idempotency_id for d in rows)
    assert outbox.db.read_sync(counts_by_status) == {"sent": 5}


def _plans(db: Database, statements: list[tuple[str, Any]]) -> list[list[str]]:
    """Each statement's plan as lines naming what it scans (PostgreSQL: with sequential scans
    priced out, so that only an index the statement cannot use shows as a scan of the table)."""
    plans = []
    with db.engine.connect() as conn:
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        for statement, parameters in statements:
            if postgres:
                (plan,) = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters).one()
                nodes, lines = [plan[0]["Plan"]], []
                while nodes:
                    node = nodes.pop()
                    nodes.extend(node.get("Plans", []))
                    index = node.get("Index Name", "")
                    if index.endswith("_deliveries") or index.startswith("ix_deliveries"):
                        lines.append(f"{node['Node Type']} {index}")
                    elif node.get("Relation Name") == "deliveries" and node["Node Type"] == "Seq Scan":
                        lines.append("Seq Scan deliveries")
                plans.append(lines)
            else:
                rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
                plans.append([r[-1] for r in rows if " deliveries" in r[-1]])
        conn.rollback()
    return plans


def test_a_claim_reads_the_rows_waiting_or_in_flight_through_their_own_indexes(outbox: Outbox) -> None:
    """Rows ever delivered are most of the outbox: a claim must not read their index entries.

    On PostgreSQL it also reads the front of each partial index with a plain index scan (for
    ``min()``), the scan that marks entries left behind by rows claimed and sent as dead.
    """
    from sqlalchemy import event

    from signalmint.store.outbox import claim
    from signalmint.store.outbox_claim import claim_loaded

    outbox.subscriber("ann", "premium")
    outbox.commit(*[spike(f"K{i}", 1, outbox.now) for i in range(20)])
    statements: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if "deliveries" in statement:
            statements.append((statement, parameters))

    event.listen(outbox.db.engine, "before_cursor_execute", grab)
    try:
        when, lease = datetime.now(UTC), timedelta(seconds=30)
        if outbox.db.engine.dialect.name == "postgresql":
            loaded = outbox.db.write_sync(claim_loaded, "w1", when, lease=lease, limit=5, autocommit=True)
            assert loaded is not None and len(loaded.claimed) == 5
        assert len(outbox.db.write_sync(claim, "w2", when, lease=lease, limit=5)) == 5
    finally:
        event.remove(outbox.db.engine, "before_cursor_execute", grab)
    assert statements
    scans = [line for plan in _plans(outbox.db, statements) for line in plan]
    # the primary key (the rows picked), the partial indexes of waiting and leased rows, and of group keys
    allowed = ["pk_deliveries", "PRIMARY KEY", "ix_deliveries_pending", "ix_deliveries_sending"]
    allowed.append("ix_deliveries_group_key")
    assert [line for line in scans if not any(name in line for name in allowed)] == []
    assert any("ix_deliveries_pending" in line for line in scans), scans
    assert any("ix_deliveries_sending" in line for line in scans), scans
    if outbox.db.engine.dialect.name == "postgresql":
        fronts = [line for line in scans if line.startswith(("Index Scan", "Index Only Scan"))]
        assert any(line.endswith(" ix_deliveries_pending") for line in fronts), scans
        assert any(line.endswith(" ix_deliveries_sending") for line in fronts), scans
