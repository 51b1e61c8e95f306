"""Grouping and quiet-hours digests: several signals to one endpoint become one message.

Real outbox rows on SQLite and PostgreSQL, a real worker, a local webhook receiver (and a
local SMTP server for email). Commits go through the fan-out with a chosen ``now`` so that
windows are known; one test goes through the engine's own ``commit_tick`` at the real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event
from standardwebhooks import Webhook

from signalmint.config import EmailConfig, PlanConfig
from signalmint.delivery.channels.email import close as close_email
from signalmint.delivery.claim import Plans, claim_batch, load_batch
from signalmint.delivery.fanout import FanOut, window_end
from signalmint.delivery.runner import channel_context
from signalmint.delivery.worker import Worker
from signalmint.records import Preferences, Signal
from signalmint.store import Database, append_signals
from signalmint.store.accounts import get_preferences, set_preference, set_watchlist
from signalmint.store.outbox import (
    SETTLE,
    add_endpoint,
    claim,
    counts_by_status,
    enqueue,
    group_message_id,
    list_deliveries,
)
from signalmint.store.plans import sync_plans

from ..conftest import backend_state, free_port, stored_id
from .conftest import HttpSink, Reply
from .test_outbox import NUMBERS, PEPPER, Outbox

pg_only = pytest.mark.parametrize("db_url", [pytest.param("postgresql", marks=pytest.mark.pg)], indirect=True)


class Grouping(Outbox):
    """The outbox of ``test_outbox`` with noise preferences and commits at a chosen moment."""

    def prefer(self, name: str, **choices: Any) -> None:
        self.db.write_sync(set_preference, self.ids[name], Preferences("webhook", **choices))
        self.fanout.invalidate()

    def commit_at(self, now: datetime, *keys: str) -> list[Signal]:
        """Store one signal per key, dated ``now``, and fan it out as if committed at ``now``."""
        signals = [Signal("spikes", key, now, "volume_spike", 8.5, {"volume": 77777.0, "ratio": 8.6}) for key in keys]

        def write(conn: Any) -> list[Signal]:
            stored = append_signals(conn, "spikes", signals, now)
            enqueue(conn, self.fanout.deliveries_for(conn, stored, now), now)
            return stored

        stored: list[Signal] = self.db.write_sync(write)
        return stored

    def run(self, at: datetime, rounds: int = 3) -> int:
        """Worker rounds with the clock at ``at``; the number of deliveries handled."""

        async def run() -> int:
            context = channel_context(self.settings)
            worker = Worker(self.settings, self.db, context, PEPPER, clock=lambda: at)
            try:
                return sum([await worker.run_once() for _ in range(rounds)])
            finally:
                await close_email(context)
                await context.http.close()

        return asyncio.run(run())

    def use_plans(self, *plans: PlanConfig, **settings: Any) -> None:
        """Replace the installation's plans (and other settings) before subscribers are added."""
        self.settings = self.settings.model_copy(update={"plans": list(plans), **settings})
        self.plans = {p.id: p for p in self.db.write_sync(sync_plans, self.settings.current_plans(), self.now)}


@pytest.fixture
def outbox(db: Database, http_sink: HttpSink) -> Grouping:
    return Grouping(db, http_sink)


def next_window(seconds: int, *, after: float = 5.0) -> datetime:
    """A moment ``after`` seconds into the next ``seconds``-long window (in the future, so entitled)."""
    start = window_end(datetime.now(UTC), seconds)
    return start + timedelta(seconds=after)


def verified(outbox: Grouping, name: str, request: Any) -> dict[str, Any]:
    Webhook(outbox.secrets[name]).verify(request.body, request.headers)  # raises on a bad signature
    body: dict[str, Any] = request.json()
    return body


# -- grouping ------------------------------------------------------------------------------------


def test_signals_within_the_window_arrive_as_one_request(outbox: Grouping) -> None:
    outbox.subscriber("ann", "premium")
    outbox.prefer("ann", group_seconds=60)
    t0 = next_window(60)
    first = outbox.commit_at(t0, "AAPL", "MSFT")
    second = outbox.commit_at(t0 + timedelta(seconds=20), "TSLA")
    ids = [stored_id(s) for s in [*first, *second]]
    rows = outbox.db.read_sync(list_deliveries)
    end = t0 - timedelta(seconds=5) + timedelta(seconds=60)
    assert {r.group_key for r in rows} == {f"g:{rows[0].endpoint_id}:{int(end.timestamp())}"}
    assert {r.not_before for r in rows} == {end}

    assert outbox.run(t0 + timedelta(seconds=30)) == 0  # the window is still open
    assert outbox.run(end + SETTLE - timedelta(milliseconds=1)) == 0  # late commits of the window may come
    assert outbox.sink.requests == []
    assert outbox.run(end + SETTLE) == 3
    (request,) = outbox.sink.wait_for(1)
    body = verified(outbox, "ann", request)
    assert body["type"] == "signal.group" and body["version"] == 1
    assert body["data"]["reason"] == "group" and body["data"]["count"] == 3
    assert [s["id"] for s in body["data"]["signals"]] == ids
    assert [s["key"] for s in body["data"]["signals"]] == ["AAPL", "MSFT", "TSLA"]
    webhook_id = request.headers["webhook-id"]
    assert webhook_id == group_message_id(rows[0].group_key or "", ids)
    after = outbox.db.read_sync(list_deliveries)
    assert {r.status for r in after} == {"sent"}
    assert {(r.receipt or {}).get("message") for r in after} == {webhook_id}
    assert outbox.run(end + timedelta(minutes=5)) == 0 and len(outbox.sink.requests) == 1


def test_a_signal_in_the_next_window_is_its_own_message(outbox: Grouping) -> None:
    outbox.subscriber("ann", "premium")
    outbox.prefer("ann", group_seconds=30)
    t0 = next_window(30, after=25)
    outbox.commit_at(t0, "AAPL", "MSFT")
    (late,) = outbox.commit_at(t0 + timedelta(seconds=10), "TSLA")  # past :30, in the next window
    keys = {r.signal_id: r.group_key for r in outbox.db.read_sync(list_deliveries)}
    assert len(set(keys.values())) == 2
    assert outbox.run(t0 + timedelta(seconds=40)) == 3  # both windows have ended
    first, second = outbox.sink.wait_for(2)
    assert [s["key"] for s in verified(outbox, "ann", first)["data"]["signals"]] == ["AAPL", "MSFT"]
    alone = verified(outbox, "ann", second)
    assert alone["type"] == "signal.created" and alone["data"]["id"] == late.id  # a group of one is a plain alert
    (row,) = [r for r in outbox.db.read_sync(list_deliveries) if r.signal_id == late.id]
    assert second.headers["webhook-id"] == row.idempotency_id
    assert first.headers["webhook-id"] != second.headers["webhook-id"]


def test_each_subscriber_gets_their_own_group_and_others_are_not_grouped(outbox: Grouping) -> None:
    outbox.subscriber("ann", "premium")
    outbox.subscriber("bob", "premium")
    outbox.prefer("ann", group_seconds=60)
    t0 = next_window(60)
    outbox.commit_at(t0, "AAPL", "MSFT")
    by_path: dict[str, list[Any]] = {}
    assert outbox.run(t0) == 2  # bob, right away, one by one
    for request in outbox.sink.wait_for(2):
        by_path.setdefault(request.path, []).append(request)
    assert set(by_path) == {"/hook/bob"} and all(r.json()["type"] == "signal.created" for r in by_path["/hook/bob"])
    assert outbox.run(t0 + timedelta(seconds=60)) == 2
    (ann,) = [r for r in outbox.sink.wait_for(3) if r.path == "/hook/ann"]
    assert verified(outbox, "ann", ann)["data"]["count"] == 2


def test_the_engine_commit_groups_at_the_real_time(outbox: Grouping) -> None:
    from .test_outbox import spike

    outbox.subscriber("ann", "premium")
    outbox.prefer("ann", group_seconds=900)
    while datetime.now(UTC).timestamp() % 900 > 890:  # not at the very end of a window
        time.sleep(0.5)
    before = datetime.now(UTC)
    outbox.commit(spike("AAPL", 1, outbox.now))
    outbox.commit(spike("MSFT", 1, outbox.now), spike("NVDA", 1, outbox.now))
    (end,) = {r.not_before for r in outbox.db.read_sync(list_deliveries)}
    assert end == window_end(before, 900)
    assert outbox.drain() == 0
    assert outbox.run(end + SETTLE) == 3
    (request,) = outbox.sink.wait_for(1)
    assert verified(outbox, "ann", request)["data"]["count"] == 3


# -- quiet hours: digest or hold ----------------------------------------------------------------


def quiet_around(at: datetime) -> dict[str, int]:
    minute = at.hour * 60 + at.minute
    return {"quiet_start": (minute - 30) % 1440, "quiet_end": (minute + 30) % 1440}


def test_signals_in_quiet_hours_arrive_as_one_digest_when_they_end(outbox: Grouping) -> None:
    outbox.subscriber("ann", "premium")  # the subscriber's timezone is UTC
    t0 = next_window(60)
    outbox.prefer("ann", quiet_mode="digest", group_seconds=60, **quiet_around(t0))
    outbox.commit_at(t0, "AAPL")
    outbox.commit_at(t0 + timedelta(minutes=2), "MSFT", "TSLA")
    rows = outbox.db.read_sync(list_deliveries)
    (ends,) = {r.not_before for r in rows}
    assert t0 + timedelta(minutes=29) <= ends <= t0 + timedelta(minutes=31)
    assert {r.group_key for r in rows} == {f"d:{rows[0].endpoint_id}:{int(ends.timestamp())}"}
    assert outbox.run(t0 + timedelta(minutes=5)) == 0
    assert outbox.run(ends - timedelta(seconds=1)) == 0 and outbox.sink.requests == []
    assert outbox.run(ends + SETTLE) == 3
    (request,) = outbox.sink.wait_for(1)
    body = verified(outbox, "ann", request)
    assert body["type"] == "signal.group" and body["data"]["reason"] == "digest"
    assert [s["key"] for s in body["data"]["signals"]] == ["AAPL", "MSFT", "TSLA"]


def test_hold_mode_sends_held_signals_one_by_one(outbox: Grouping) -> None:
    outbox.subscriber("ann", "premium")
    t0 = next_window(60)
    outbox.prefer("ann", quiet_mode="hold", **quiet_around(t0))
    outbox.commit_at(t0, "AAPL", "MSFT")
    rows = outbox.db.read_sync(list_deliveries)
    (ends,) = {r.not_before for r in rows}
    assert {r.group_key for r in rows} == {None}
    assert outbox.run(ends - timedelta(seconds=1)) == 0
    assert outbox.run(ends) == 2
    received = outbox.sink.wait_for(2)
    assert all(verified(outbox, "ann", r)["type"] == "signal.created" for r in received)
    assert {r.headers["webhook-id"] for r in received} == {r.idempotency_id for r in rows}


# -- claiming a group whole, crashes --------------------------------------------------------------


def test_a_group_is_claimed_whole(outbox: Grouping) -> None:
    outbox.subscriber("ann", "premium")
    outbox.subscriber("bob", "premium")
    outbox.prefer("ann", group_seconds=60)
    outbox.db.write_sync(set_preference, outbox.ids["bob"], Preferences("webhook", group_seconds=60))
    outbox.fanout.invalidate()
    t0 = next_window(60)
    outbox.commit_at(t0, "AAPL", "MSFT", "TSLA", "NVDA")
    later, lease = t0 + timedelta(seconds=60), timedelta(seconds=30)

    def take(owner: str, at: datetime) -> list[Any]:
        return list(outbox.db.write_sync(claim, owner, at, lease=lease, limit=1))

    first, second, third = take("w1", later), take("w2", later), take("w3", later)
    assert len(first) == 4 and len({d.group_key for d in first}) == 1  # limit 1, but the whole group
    assert len(second) == 4 and {d.subscriber_id for d in second} != {d.subscriber_id for d in first}
    assert third == []
    again = take("w4", later + lease + timedelta(seconds=1))  # w1's lease expired: its whole group comes back
    assert len(again) == 4 and {d.id for d in again} in ({d.id for d in first}, {d.id for d in second})
    assert all(d.attempts == 2 for d in again)


def test_a_crashed_worker_s_group_is_sent_again_with_the_same_id(outbox: Grouping) -> None:
    outbox.subscriber("ann", "premium")
    outbox.prefer("ann", group_seconds=60)
    t0 = next_window(60)
    outbox.commit_at(t0, "AAPL", "MSFT", "TSLA")
    later = t0 + timedelta(seconds=60)
    outbox.sink.script(Reply(200, delay=3.0))

    async def killed_mid_send() -> None:
        context = channel_context(outbox.settings)
        worker = Worker(outbox.settings, outbox.db, context, PEPPER, clock=lambda: later)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.run_once(), timeout=1.0)  # gone before it records anything
        finally:
            await context.http.close()

    asyncio.run(killed_mid_send())
    assert len(outbox.sink.wait_for(1)) == 1  # the receiver got it; the worker never heard back
    assert {r.status for r in outbox.db.read_sync(list_deliveries)} == {"sending"}
    assert outbox.run(later + timedelta(seconds=30)) == 0  # its lease still holds
    assert outbox.run(later + timedelta(seconds=61)) == 3
    first, second = outbox.sink.wait_for(2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert verified(outbox, "ann", second)["data"]["signals"] == verified(outbox, "ann", first)["data"]["signals"]
    rows = outbox.db.read_sync(list_deliveries)
    assert {(r.status, r.attempts) for r in rows} == {("sent", 2)}


def test_a_failed_group_is_retried_whole_with_the_same_id(outbox: Grouping) -> None:
    outbox.subscriber("ann", "premium")
    outbox.prefer("ann", group_seconds=60)
    t0 = next_window(60)
    outbox.commit_at(t0, "AAPL", "MSFT")
    outbox.sink.script(Reply(503))
    later = t0 + timedelta(seconds=60)
    assert outbox.run(later, rounds=1) == 2
    rows = outbox.db.read_sync(list_deliveries)
    assert {r.status for r in rows} == {"pending"} and all("503" in (r.last_error or "") for r in rows)
    assert outbox.run(later + timedelta(minutes=1)) == 2
    first, second = outbox.sink.wait_for(2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert {r.status for r in outbox.db.read_sync(list_deliveries)} == {"sent"}


@pg_only
def test_a_group_being_claimed_on_postgresql_is_left_to_that_worker(outbox: Grouping) -> None:
    outbox.subscriber("ann", "premium")
    outbox.prefer("ann", group_seconds=60)
    t0 = next_window(60)
    outbox.commit_at(t0, "AAPL", "MSFT", "TSLA")
    later, lease = t0 + timedelta(seconds=60), timedelta(seconds=30)
    with outbox.db.engine.connect() as first:
        transaction = first.begin()
        mine = claim(first, "w1", later, lease=lease, limit=1)  # not committed yet

        def impatient(conn: Any) -> list[Any]:  # waiting for the first worker's locks would hang this test
            conn.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
            return list(claim(conn, "w2", later, lease=lease, limit=10))

        theirs = outbox.db.write_sync(impatient)
        transaction.commit()
    assert len(mine) == 3 and theirs == []
    assert {d.status for d in outbox.db.read_sync(list_deliveries)} == {"sending"}


@pg_only
def test_a_worker_frozen_in_its_group_claim_loses_its_locks_after_a_lease(outbox: Grouping) -> None:
    """A group claim's locks last until its transaction ends. A worker frozen before then (here:
    it never commits) has its session ended by the server once it sat idle a lease; the claim
    rolls back and another worker takes the group."""
    outbox.subscriber("ann", "premium")
    outbox.prefer("ann", group_seconds=60)
    t0 = next_window(60)
    outbox.commit_at(t0, "AAPL", "MSFT", "TSLA")
    later = t0 + timedelta(seconds=60)

    frozen = outbox.db.engine.connect()
    try:
        frozen.begin()
        assert len(claim(frozen, "w1", later, lease=timedelta(seconds=0.5), limit=1)) == 3  # then it freezes
        driver = frozen.connection.driver_connection
        assert driver is not None
        pid = driver.info.backend_pid
        deadline = time.monotonic() + 10
        while (
            backend_state(outbox.db, pid) is not None
        ):  # idle in its transaction for the lease (0.5 s): the server ends the session
            assert time.monotonic() < deadline, "the frozen claim's session is still there"
            time.sleep(0.05)
    finally:
        frozen.invalidate()
        frozen.close()
    theirs = outbox.db.write_sync(claim, "w2", later, lease=timedelta(minutes=5), limit=10)
    assert len(theirs) == 3 and {d.status for d in outbox.db.read_sync(list_deliveries)} == {"sending"}


@pg_only
def test_concurrent_workers_on_postgresql_never_split_a_group(outbox: Grouping) -> None:
    from signalmint.store.tables import deliveries

    names = [f"p{i}" for i in range(6)]
    for name in names:
        outbox.subscriber(name, "premium")
        outbox.db.write_sync(set_preference, outbox.ids[name], Preferences("webhook", group_seconds=60))
    outbox.fanout.invalidate()
    t0 = next_window(60)
    for i in range(5):
        outbox.commit_at(t0 + timedelta(seconds=i), *[f"K{i}{j}" for j in range(4)])
    later = t0 + timedelta(seconds=60)
    start = threading.Barrier(4)

    def worker(owner: str) -> None:
        start.wait()
        while outbox.db.write_sync(claim, owner, later, lease=timedelta(minutes=5), limit=3):
            pass

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    rows = outbox.db.read_sync(lambda conn: conn.execute(deliveries.select()).all())
    assert len(rows) == 6 * 5 * 4 and {r.status for r in rows} == {"sending"}
    owners: dict[str, set[str]] = {}
    for row in rows:
        owners.setdefault(row.group_key, set()).add(row.lease_owner)
    assert len(owners) == 6 and all(len(o) == 1 for o in owners.values()), owners


@pg_only
def test_on_postgresql_one_statement_leases_a_round_and_reads_what_it_needs(outbox: Grouping) -> None:
    """Singles only: the lease and the round's signals, endpoints, subscribers, subscriptions and
    own budgets come back from one statement, the same as the separate queries read them."""
    outbox.subscriber("ann", "premium")
    outbox.subscriber("bob", "premium")
    outbox.prefer("ann", daily_budget=5)
    now = datetime.now(UTC)
    outbox.commit_at(now, "AAPL", "MSFT")
    at, plans = now + timedelta(seconds=1), Plans()
    outbox.db.read_sync(plans.get, {("no such plan", 0)})  # every stored plan read once, as a warm worker has
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(outbox.db.engine, "before_cursor_execute", count)
    try:
        got = outbox.db.write_sync(claim_batch, "w1", at, timedelta(seconds=30), 500, plans, autocommit=True)
    finally:
        event.remove(outbox.db.engine, "before_cursor_execute", count)
    assert got is not None
    claimed, batch = got
    # the claim's one statement, and what ann's own budget has spent today (she set one)
    assert len(statements) == 2 and "GROUP BY deliveries.subscriber_id, endpoints.channel" in statements[1], statements
    assert len(claimed) == 4 and {d.status for d in outbox.db.read_sync(list_deliveries)} == {"sending"}
    assert batch is not None
    expected = outbox.db.read_sync(load_batch, claimed, at, plans)
    assert (
        len(batch.signals) == 2
        and len(batch.endpoints) == 2
        and set(batch.own_budgets) == {(outbox.ids["ann"], "webhook")}
    )
    for name in ("signals", "endpoints", "views", "titles", "own_budgets"):
        assert getattr(batch, name) == getattr(expected, name), name


@pg_only
def test_with_a_group_due_the_autocommitted_claim_leases_nothing_and_the_worker_takes_a_transaction(
    outbox: Grouping,
) -> None:
    outbox.subscriber("ann", "premium")
    outbox.subscriber("bob", "premium")
    outbox.prefer("ann", group_seconds=60)
    t0 = next_window(60)
    outbox.commit_at(t0, "AAPL", "MSFT")  # ann's two rows one group, bob's two singles
    later = t0 + timedelta(seconds=60) + SETTLE
    lease = timedelta(seconds=30)
    assert outbox.db.write_sync(claim_batch, "w1", later, lease, 500, autocommit=True) is None
    assert outbox.db.read_sync(counts_by_status) == {"pending": 4}
    assert outbox.run(later, rounds=1) == 4  # singles and the whole group, earliest first, in one round
    assert len(outbox.sink.wait_for(3)) == 3
    assert outbox.db.read_sync(counts_by_status) == {"sent": 4}


# -- entitlement and the daily budget -----------------------------------------------------------


def test_a_group_counts_once_against_the_daily_budget(outbox: Grouping) -> None:
    outbox.use_plans(PlanConfig(id="capped", price=900, channels=["web", "webhook"], alerts_per_day=2))
    outbox.subscriber("ann", "capped")
    outbox.prefer("ann", group_seconds=30)
    t0 = next_window(30)
    outbox.commit_at(t0, "AAPL", "MSFT", "TSLA")  # one message
    outbox.commit_at(t0 + timedelta(seconds=30), "NVDA", "AMZN")  # the second
    outbox.commit_at(t0 + timedelta(seconds=60), "META")  # over the budget
    assert outbox.run(t0 + timedelta(seconds=30)) == 3
    assert outbox.run(t0 + timedelta(seconds=60)) == 2
    assert outbox.run(t0 + timedelta(seconds=90)) == 1
    assert len(outbox.sink.wait_for(2)) == 2
    time.sleep(0.2)
    assert len(outbox.sink.requests) == 2
    assert outbox.db.read_sync(counts_by_status) == {"sent": 5, "skipped": 1}
    (skipped,) = outbox.db.read_sync(list_deliveries, status="skipped")
    assert "budget" in (skipped.last_error or "")


def test_the_subscribers_own_daily_budget_caps_that_channel(outbox: Grouping) -> None:
    outbox.use_plans(PlanConfig(id="open", price=900, channels=["web", "webhook"]))
    outbox.subscriber("ann", "open")
    outbox.prefer("ann", daily_budget=2)
    t0 = next_window(30)
    outbox.commit_at(t0, "AAPL", "MSFT", "TSLA")  # three separate messages: the third is over her budget
    assert outbox.run(t0 + timedelta(seconds=1)) == 3
    assert len(outbox.sink.wait_for(2)) == 2
    time.sleep(0.2)
    assert len(outbox.sink.requests) == 2
    (skipped,) = outbox.db.read_sync(list_deliveries, status="skipped")
    assert "daily webhook budget" in (skipped.last_error or "")


def test_a_pay_per_alert_plan_charges_credits_once_per_alert(outbox: Grouping) -> None:
    from signalmint.billing.credits import balance, credit

    outbox.use_plans(PlanConfig(id="metered", channels=["web", "webhook"], alert_price=20_000))  # 2 cents an alert
    outbox.subscriber("bo", "metered")
    outbox.db.write_sync(credit, outbox.ids["bo"], 50_000, "grant", None, outbox.now)  # enough for two
    t0 = next_window(30)
    outbox.commit_at(t0, "AAPL", "MSFT", "TSLA")
    assert outbox.run(t0 + timedelta(seconds=1)) == 3
    assert len(outbox.sink.wait_for(2)) == 2
    assert outbox.db.read_sync(balance, outbox.ids["bo"]) == 10_000
    (skipped,) = outbox.db.read_sync(list_deliveries, status="skipped")
    assert "credits" in (skipped.last_error or "")
    # a group is paid per alert, all or nothing: two alerts cost 40,000 and only 10,000 is left
    outbox.prefer("bo", group_seconds=30)
    t1 = next_window(30, after=35.0)
    outbox.commit_at(t1, "NVDA", "AMZN")
    rows = [r for r in outbox.db.read_sync(list_deliveries) if r.group_key]
    (ends,) = {r.not_before for r in rows}
    assert outbox.run(ends + SETTLE) == 2
    assert outbox.db.read_sync(balance, outbox.ids["bo"]) == 10_000
    assert outbox.db.read_sync(counts_by_status) == {"sent": 2, "skipped": 3}


def test_a_signal_no_longer_entitled_is_dropped_from_its_group(outbox: Grouping) -> None:
    late = PlanConfig(id="late", delay="15m", watchlist=3, masked_fields=NUMBERS, channels=["web", "webhook"])
    outbox.use_plans(late)
    outbox.subscriber("fay", "late", watch=("AAPL", "MSFT", "TSLA"))
    outbox.prefer("fay", group_seconds=60)
    t0 = next_window(60)
    outbox.commit_at(t0, "AAPL", "MSFT", "TSLA")
    outbox.db.write_sync(set_watchlist, outbox.ids["fay"], ["AAPL", "MSFT"], outbox.now)
    rows = outbox.db.read_sync(list_deliveries)
    (ends,) = {r.not_before for r in rows}  # the free plan's 15 minutes, then the window
    assert outbox.run(ends + SETTLE) == 3
    (request,) = outbox.sink.wait_for(1)
    body = verified(outbox, "fay", request)
    assert [s["key"] for s in body["data"]["signals"]] == ["AAPL", "MSFT"]
    assert "volume" not in body["data"]["signals"][0]["payload"]  # still masked by the plan
    statuses = {r.signal_id: r.status for r in outbox.db.read_sync(list_deliveries)}
    assert sorted(statuses.values()) == ["sent", "sent", "skipped"]


# -- email: one message for the group ---------------------------------------------------------------


class Inbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def test_a_grouped_email_lists_every_signal(outbox: Grouping, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    email = EmailConfig(host="127.0.0.1", port=port, starttls=False, sender="alerts <alerts@alerts.example>")
    outbox.use_plans(PlanConfig(id="mail", price=2900, channels=["web", "email"]), email=email)
    outbox.fanout = FanOut({"email"})
    sid = outbox.subscriber("ann", "mail")
    outbox.db.write_sync(lambda conn: add_endpoint(conn, sid, "email", "mailto:ann@example.com", outbox.now))
    outbox.db.write_sync(set_preference, sid, Preferences("email", group_seconds=60))
    outbox.fanout.invalidate()
    t0 = next_window(60)
    outbox.commit_at(t0, "AAPL", "MSFT", "TSLA")
    assert outbox.run(t0 + timedelta(seconds=60)) == 3
    deadline = time.monotonic() + 5
    while not inbox.messages and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    (raw,) = inbox.messages
    mail = message_from_bytes(raw, policy=default_policy)
    assert mail["Subject"].startswith("3 alerts: AAPL") and "MSFT" in mail["Subject"]
    rows = outbox.db.read_sync(list_deliveries)
    ids = sorted(r.signal_id for r in rows)
    assert mail["Message-ID"] == f"<{group_message_id(rows[0].group_key or '', ids)}@alerts.example>"
    plain = mail.get_body(preferencelist=("plain",))
    assert plain is not None
    text = plain.get_content()
    assert all(key in text for key in ("AAPL", "MSFT", "TSLA")) and "Unsubscribe:" in text
    assert mail["List-Unsubscribe"]


# -- the dashboard form --------------------------------------------------------------------------


@pytest.fixture
def web(db: Database) -> Iterator[tuple[FastAPI, TestClient]]:
    from tests.web.test_account_pages import client_for, make_app

    app = make_app(db)
    with client_for(app) as client:
        yield app, client


def test_the_preferences_form_sets_grouping_and_the_quiet_mode(db: Database, web: Any) -> None:
    from tests.web.test_dashboard import signed_in, subscriber_id

    app, client = web
    csrf = signed_in(client, app, "premium")
    form = {"channel": "email", "enabled": "on", "quiet_start": "22:00", "quiet_end": "07:00", "csrf": csrf}
    saved = client.post("/dashboard/preferences", data={**form, "quiet_mode": "digest", "group_seconds": "300"})
    assert saved.status_code == 303
    prefs = db.read_sync(get_preferences, subscriber_id(db))["email"]
    assert (prefs.quiet_mode, prefs.group_seconds, prefs.quiet_start) == ("digest", 300, 1320)
    html = client.get("/dashboard").text
    assert '<option value="digest" selected>' in html and '<option value="300" selected>' in html

    saved = client.post("/dashboard/preferences", data={**form, "quiet_mode": "hold", "group_seconds": "0"})
    assert saved.status_code == 303
    prefs = db.read_sync(get_preferences, subscriber_id(db))["email"]
    assert (prefs.quiet_mode, prefs.group_seconds) == ("hold", None)
    assert '<option value="0" selected>Off</option>' in client.get("/dashboard").text


@pytest.mark.parametrize(
    ("choices", "message"),
    [
        ({"group_seconds": "45"}, "Group alerts over 30 s, 1 min, 5 min or 15 min"),
        ({"group_seconds": "-30"}, "Group alerts over"),
        ({"group_seconds": "soon"}, "Group alerts over"),
        ({"quiet_mode": "later"}, "held one by one or sent as one digest"),
    ],
)
def test_the_preferences_form_refuses_other_choices(
    db: Database, web: Any, choices: dict[str, str], message: str
) -> None:
    from tests.web.test_dashboard import signed_in, subscriber_id

    app, client = web
    csrf = signed_in(client, app, "premium")
    refused = client.post("/dashboard/preferences", data={"channel": "email", "enabled": "on", "csrf": csrf, **choices})
    assert refused.status_code == 400
    assert message in refused.text
    assert "email" not in db.read_sync(get_preferences, subscriber_id(db))
