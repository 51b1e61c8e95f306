"""Idle workers wake on PostgreSQL's NOTIFY, not at their next poll: with ``delivery.poll`` at
30 s, a signal committed (with its fan-out, as ``commit_tick`` does) reaches a local webhook
receiver well under a second later; after the worker's LISTEN connection is killed
(``pg_terminate_backend``, as a PostgreSQL restart would), it reconnects and wakes again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, text

from signalmint.config import DeliveryConfig, PlanConfig, Settings
from signalmint.delivery.fanout import FanOut
from signalmint.delivery.runner import channel_context, run_worker
from signalmint.delivery.wake import OutboxListener
from signalmint.delivery.worker import Worker
from signalmint.engine.runner import commit_tick
from signalmint.records import Automation, Frame, Signal
from signalmint.store import Database, sync_automations
from signalmint.store.accounts import confirm_subscriber, ensure_subscriber, start_subscription
from signalmint.store.outbox import add_endpoint
from signalmint.store.plans import sync_plans

from ..delivery.conftest import HttpSink, SinkServer

POLL = timedelta(seconds=30)  # the fallback poll never fires within a test
WAKE_WITHIN = 1.0  # seconds from the commit to the receipt


@pytest.fixture
def pg(db: Database) -> Database:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL: LISTEN/NOTIFY")
    return db


@pytest.fixture(scope="module")
def sink() -> Iterator[HttpSink]:
    app = HttpSink()
    with SinkServer(app) as server:
        app.port = server.port
        yield app


def _settings(db: Database) -> Settings:
    return Settings(
        database=db.url,
        delivery=DeliveryConfig(allow_loopback_targets=True, poll=POLL),
        plans=[PlanConfig(id="premium", price=2900, channels=["web", "webhook"])],
    )


def _seed(db: Database, settings: Settings, sink: HttpSink) -> None:
    now = datetime.now(UTC)
    db.write_sync(sync_automations, [Automation("spikes", "Spikes", "", "synthetic", "volume_spike", {})], now)
    (plan,) = db.write_sync(sync_plans, settings.current_plans(), now)

    def person(conn: Any) -> None:
        who = ensure_subscriber(conn, "s@example.com", now)
        confirm_subscriber(conn, who.id, now)
        start_subscription(conn, who.id, plan, now, origin="test", state="active")
        add_endpoint(conn, who.id, "webhook", "webhook+" + sink.url("/hook"), now, ["whsec_" + "A" * 32])

    db.write_sync(person)


async def _commit(db: Database, key: str) -> float:
    """Commit one signal and its fan-out; the time.time() it committed."""
    found = Signal("spikes", key, datetime.now(UTC), "volume_spike", 9.0, {"r": 9.0})
    await db.write(commit_tick, "spikes", Frame.empty(), [found], None, FanOut({"webhook"}))
    return time.time()


def _listeners(conn: Connection) -> list[tuple[int, str]]:
    """(pid, last query) of this schema's worker LISTEN connections."""
    schema = conn.execute(text("SELECT current_schema()")).scalar_one()
    query = text("SELECT pid, query FROM pg_stat_activity WHERE application_name = :n ORDER BY pid")
    return [(int(r[0]), str(r[1])) for r in conn.execute(query, {"n": f"signalmint worker {schema}"})]


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.02)


async def _listening(db: Database, other_than: int | None = None) -> int:
    """Wait until a worker LISTEN connection (not ``other_than``) has run its LISTEN; its pid."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        rows = await db.read(_listeners)
        found = [pid for pid, query in rows if query.startswith("LISTEN") and pid != other_than]
        if found:
            return found[0]
        assert asyncio.get_running_loop().time() < deadline, f"a worker LISTEN connection: {rows}"
        await asyncio.sleep(0.02)


async def _received(sink: HttpSink, count: int, timeout: float) -> float:
    await _until(lambda: len(sink.requests) >= count, timeout, f"{count} webhook requests")
    return sink.requests[count - 1].at


def test_in_one_process_the_engines_commit_wakes_the_worker(db: Database, sink: HttpSink) -> None:
    """``serve`` with the engine and the worker in one process: the engine's listeners set the
    worker's wake event after each commit (no LISTEN needed, so on SQLite too)."""
    sink.reset()
    settings = _settings(db)
    _seed(db, settings, sink)

    async def run() -> float:
        stop, wake = asyncio.Event(), asyncio.Event()
        context = channel_context(settings)
        worker = Worker(settings, db, context, b"pepper")
        task = asyncio.create_task(worker.run(stop, idle=30, wake=wake))
        try:
            await asyncio.sleep(0.2)  # the first round finds nothing; the worker waits 30 s
            committed = await _commit(db, "K")
            wake.set()  # what serve's engine listener does after the commit
            return await _received(sink, 1, 5) - committed
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await context.http.close()

    assert asyncio.run(run()) < WAKE_WITHIN


@pytest.mark.pg
def test_an_idle_worker_with_a_30s_poll_delivers_a_new_signal_at_once(pg: Database, sink: HttpSink) -> None:
    sink.reset()
    settings = _settings(pg)
    _seed(pg, settings, sink)

    async def run() -> list[float]:
        stop = asyncio.Event()
        task = asyncio.create_task(run_worker(settings, pg, stop))
        lags = []
        try:
            await _listening(pg)
            await asyncio.sleep(0.2)  # the worker's first rounds (start, then the listener's wake) find nothing
            for i in range(3):
                committed = await _commit(pg, f"K{i}")
                lags.append(await _received(sink, i + 1, 5) - committed)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
        return lags

    lags = asyncio.run(run())
    assert max(lags) < WAKE_WITHIN, lags  # a poll would have taken up to 30 s


@pytest.mark.pg
def test_a_killed_listen_connection_comes_back_and_still_wakes_the_worker(pg: Database, sink: HttpSink) -> None:
    sink.reset()
    settings = _settings(pg)
    _seed(pg, settings, sink)

    async def run() -> tuple[float, float]:
        stop, wake = asyncio.Event(), asyncio.Event()
        context = channel_context(settings)
        worker = Worker(settings, pg, context, b"pepper", batch=10)
        listener = OutboxListener(pg, wake, ping_every=5)
        tasks = [asyncio.create_task(listener.run()), asyncio.create_task(worker.run(stop, idle=30, wake=wake))]
        try:
            first = await _listening(pg)
            committed = await _commit(pg, "A")
            before = await _received(sink, 1, 5) - committed

            def kill(conn: Connection) -> None:
                assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": first}).scalar_one() is True

            await pg.write(kill)
            await _listening(pg, other_than=first)
            await _until(lambda: listener.connects == 2 and listener.connected.is_set(), 10, "reconnected")
            heard = listener.heard
            committed = await _commit(pg, "B")
            after = await _received(sink, 2, 5) - committed
            assert listener.heard > heard  # the new connection heard the commit
            return before, after
        finally:
            stop.set()
            tasks[0].cancel()
            await asyncio.wait(tasks, timeout=10)
            await context.http.close()

    before, after = asyncio.run(run())
    assert before < WAKE_WITHIN and after < WAKE_WITHIN, (before, after)
