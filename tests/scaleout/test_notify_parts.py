"""The parts of live web replicas, in one process on real PostgreSQL: the LISTEN connection,
cache messages between replicas, and the shared token bucket (atomic under concurrency)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, text

from signalmint.access.ratelimit import TokenBucketLimiter
from signalmint.config import Settings
from signalmint.engine.hub import SignalHub
from signalmint.records import Signal
from signalmint.store import Database, append_signals
from signalmint.store.notify import notify_cache, notify_signals
from signalmint.web.listener import Listener
from signalmint.web.shared_limits import PostgresLimiter, make_limiter

PG = pytest.mark.skipif(os.environ.get("SIGNALMINT_TEST_PG") is None, reason="SIGNALMINT_TEST_PG is not set")


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.02)


def pg_only(db: Database) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only")


def test_on_sqlite_nothing_is_announced_and_limits_stay_in_memory(tmp_path: object, db: Database) -> None:
    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite only")
    db.write_sync(notify_signals, "a", 1)  # no-ops, no errors
    db.write_sync(notify_cache, "all")
    assert isinstance(make_limiter(Settings(database=db.url), db), TokenBucketLimiter)


@PG
def test_a_commit_wakes_the_hub_once_settled_and_a_killed_connection_comes_back(db: Database) -> None:
    pg_only(db)
    hub = SignalHub(poll=30)
    heard: list[str] = []

    async def run() -> None:
        listener = Listener(db, hub, heard.append, ping_every=5)
        task = asyncio.create_task(listener.run())
        try:
            await until(lambda: hub.live, 10, "listening")
            assert hub.poll_timeout == 30  # live: streams may wait long
            before, started = hub.generation, asyncio.get_running_loop().time()
            signal = Signal(automation="a", key="K", time=datetime.now(UTC), kind="spike", score=5.0, payload={})
            (stored,) = await db.write(append_signals, "a", [signal], datetime.now(UTC))
            await until(lambda: hub.latest_id == stored.id, 5, "the commit is heard")
            assert hub.generation == before  # not yet: a stream would find nothing settled to show
            await until(lambda: hub.generation > before, 5, "streams are woken once it settled")
            assert asyncio.get_running_loop().time() - started >= 1.0

            def kill(conn: Connection) -> None:  # as a PostgreSQL restart or a lost network would
                schema = conn.execute(text("SELECT current_schema()")).scalar_one()
                name = f"signalmint listener {schema}"
                query = text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :n")
                assert conn.execute(query, {"n": name}).scalars().all() == [True]

            woken = hub.generation
            await db.write(kill)
            await until(lambda: not hub.live, 5, "the loss is noticed")
            assert hub.generation > woken  # waiting streams start polling at once
            assert hub.poll_timeout == 0.5
            await until(lambda: hub.live and listener.connects == 2, 10, "reconnected")
            assert "all" in heard  # cache messages sent meanwhile were missed: every cache is dropped
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(run())


@PG
def test_a_cache_message_reaches_every_replica(db: Database) -> None:
    pg_only(db)

    async def run() -> None:
        heard: dict[str, list[str]] = {"a": [], "b": []}
        replicas = {name: Listener(db, SignalHub(), heard[name].append) for name in heard}
        tasks = [asyncio.create_task(r.run()) for r in replicas.values()]
        try:
            await until(lambda: all(r.connected.is_set() for r in replicas.values()), 10, "listening")
            replicas["a"].announce("key:ab12")
            await until(lambda: all("key:ab12" in h for h in heard.values()), 5, "both replicas drop it")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())


@PG
def test_the_shared_bucket_answers_as_the_memory_one_and_is_atomic(db: Database) -> None:
    pg_only(db)
    limiter = PostgresLimiter(db)
    memory = TokenBucketLimiter()

    async def run() -> list[bool]:
        await limiter.astart()
        try:
            for backend in (limiter, memory):  # a slow refill: nothing comes back during the test
                decisions = [await backend.acheck("k", 0.001, 3) for _ in range(4)]
                assert [d.allowed for d in decisions] == [True, True, True, False]
                assert [d.remaining for d in decisions] == [2, 1, 0, 0]
                assert decisions[-1].retry_after is not None and 999 < decisions[-1].retry_after <= 1000
            assert limiter.check("k", 0.001, 3).allowed is False  # the blocking path sees the same bucket
            results = await asyncio.gather(*(limiter.acheck("race", 0.001, 20) for _ in range(60)))
            return [r.allowed for r in results]
        finally:
            await limiter.aclose()

    allowed = asyncio.run(run())
    assert sum(allowed) == 20  # 60 concurrent checks over 4 connections: exactly the burst passes
    with pytest.raises(ValueError, match="burst"):
        limiter.check("k", 1.0, 0)
