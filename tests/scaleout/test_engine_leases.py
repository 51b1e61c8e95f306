"""Engines in one process sharing four automations through leases, on a clock the test moves:
the fair split, a hand-over, a take-over from an engine that stopped beating, and the fence
that stops an engine whose lease was taken from committing anything more."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from signalmint.engine import leases as leases_module
from signalmint.engine.runner import Engine
from signalmint.records import Fence
from signalmint.registry import Registry
from signalmint.store import Database
from signalmint.store.leases import claim, ensure_leases, list_leases
from signalmint.store.signals import count_signals, verify_chain

from ..conftest import backend_state
from .conftest import NAMES, settings_for, stuck_mid_pipeline, write_data

LEASE = 1.5


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def engine(db: Database, registry: Registry, data: dict[str, Path], clock: Clock, pace: float = 0.05) -> Engine:
    settings = settings_for(db.url, data, pace=pace, lease=LEASE)
    return Engine(settings, db, registry, watch_every=None, lease_clock=clock, lease_rounds=False)


def holders(db: Database) -> dict[str, str | None]:
    return {lease.automation: lease.holder for lease in db.read_sync(list_leases)}


def test_two_engines_split_then_one_takes_over_from_a_silent_one(
    db: Database, registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = write_data(tmp_path)
    clock = Clock()
    caplog.set_level(logging.INFO, logger="signalmint.leases")

    async def scenario() -> None:
        a, b = engine(db, registry, data, clock), engine(db, registry, data, clock)
        await a.start()
        assert sorted(a.leases.held) == NAMES  # alone, it takes all four before any source starts
        assert all(r.status.held for r in a.runners.values())
        await b.start()
        assert b.leases.held == {} and b.leases.target == 2  # two live engines: at most 2 each
        await a.leases.tick()  # a hands two over (stopped, checkpointed, released)
        assert len(a.leases.held) == 2
        await b.leases.tick()  # b claims them
        assert len(b.leases.held) == 2 and set(a.leases.held) | set(b.leases.held) == set(NAMES)
        assert set(holders(db).values()) == {a.leases.holder, b.leases.holder}
        handed = set(b.leases.held)
        assert all(b.runners[n].status.held and not a.runners[n].status.held for n in handed)

        clock.advance(LEASE)  # a stops beating (paused, cut off); b renews and sees it gone
        await b.leases.tick()
        assert b.leases.live == 1 and sorted(b.leases.held) == NAMES
        taken = set(NAMES) - handed
        assert {b.runners[n].status.epoch for n in NAMES} == {2}  # each was claimed twice: epoch 2
        text = b.metrics.render().decode()
        for name in NAMES:
            took = f'signalmint_engine_lease_takeovers_total{{automation="{name}"}} 1.0' in text
            assert took == (name in taken)  # a hand-over is a claim, not a take-over
        assert "signalmint_engine_leases_held 4.0" in text

        await a.leases.tick()  # a wakes up: its leases are gone, its automations stop at once
        assert a.leases.held == {} and not any(r.status.held for r in a.runners.values())
        assert 'signalmint_engine_leases_lost_total{automation="' in a.metrics.render().decode()
        await b.leases.tick()  # two live engines again: b hands two back
        await a.leases.tick()
        assert len(a.leases.held) == len(b.leases.held) == 2
        await a.stop()  # a clean stop releases at once: b claims without waiting a lease out
        await b.leases.tick()
        assert sorted(b.leases.held) == NAMES and set(holders(db).values()) == {b.leases.holder}
        await b.stop()
        assert set(holders(db).values()) == {None}

    asyncio.run(scenario())
    assert sum("TAKE-OVER" in r.getMessage() for r in caplog.records) == 2
    for name in NAMES:
        assert db.read_sync(verify_chain, name).ok


def test_an_engine_whose_lease_was_taken_commits_nothing_more(db: Database, registry: Registry, tmp_path: Path) -> None:
    data = write_data(tmp_path, bars=300, quiet=40)
    clock = Clock()

    async def scenario() -> None:
        a = engine(db, registry, data, clock, pace=0.02)  # 300 bars: 6 s, still running long after the theft
        await a.start()
        deadline = time.monotonic() + 20
        while db.read_sync(count_signals, "alpha") == 0:  # alpha is committing signals
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        later = clock.now + timedelta(seconds=2 * LEASE)  # a was paused; an intruder's clock is past its lease
        stolen = await db.write(claim, "alpha", "intruder", later, later + timedelta(seconds=60))
        assert stolen is not None and stolen.previous_holder == a.leases.holder
        committed = db.read_sync(count_signals, "alpha")
        task = a._tasks["alpha"]
        await asyncio.wait_for(asyncio.shield(task), timeout=10)  # its next commit is refused: it stops
        runner = a.runners["alpha"]
        assert not runner.status.finished and "taken over" in (runner.status.last_error or "")
        await asyncio.sleep(0.3)
        assert db.read_sync(count_signals, "alpha") == committed  # nothing after the take-over
        assert db.read_sync(count_signals, "bravo") > 0  # the others carry on
        await a.stop()
        assert holders(db)["alpha"] == "intruder"  # a clean stop never releases what is not its own

    asyncio.run(scenario())
    assert db.read_sync(verify_chain, "alpha").ok


def test_an_engine_takes_over_from_a_holder_frozen_mid_commit(
    db: Database, registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A holder frozen mid-pipeline keeps its lease row locked past the idle timeout: a lease
    period after the lease ran out the engine ends that session, and its next round claims it."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite writers hold no row locks")
    data = write_data(tmp_path)
    clock = Clock()
    caplog.set_level(logging.INFO, logger="signalmint.leases")
    now = datetime.now(UTC)  # the frozen session's wait is measured on the server's clock
    clock.now = now

    async def scenario() -> None:
        b = engine(db, registry, data, clock)
        await db.write(ensure_leases, NAMES, now)
        frozen = await db.write(claim, "alpha", "frozen", now, now + timedelta(seconds=LEASE))
        assert frozen is not None
        with stuck_mid_pipeline(db, "alpha", Fence("frozen", frozen.epoch), idle_timeout=LEASE) as pid:
            await b.start()
            assert sorted(b.leases.held) == NAMES[1:]
            clock.advance(LEASE)  # the lease ran out, but the row is locked: nothing to claim yet
            await b.leases.tick()
            assert "alpha" not in b.leases.held and backend_state(db, pid) is not None
            await asyncio.sleep(LEASE)  # the session has waited for its client a lease period
            clock.advance(LEASE)
            await b.leases.tick()  # a lease period after it ran out: the frozen session is ended
            deadline = time.monotonic() + 10
            while backend_state(db, pid) is not None:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            await b.leases.tick()
            assert sorted(b.leases.held) == NAMES and b.leases.held["alpha"] == 2
        await b.stop()

    asyncio.run(scenario())
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("alpha: ended the database session") and "frozen" in m for m in messages), messages
    assert any(m.startswith("alpha: TAKE-OVER from frozen") for m in messages), messages


def test_a_stuck_session_it_may_not_end_is_reported_once(
    db: Database, registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database refuses to end the frozen holder's session (another role's): said once, not
    every round, and the engine carries on with the rest."""
    data = write_data(tmp_path)
    clock = Clock()
    caplog.set_level(logging.INFO, logger="signalmint.leases")

    def refused(*_args: object) -> None:
        raise PermissionError("must be a member of the role whose process is being terminated")

    async def scenario() -> None:
        b = engine(db, registry, data, clock)
        await db.write(ensure_leases, NAMES, clock.now)
        assert await db.write(claim, "alpha", "frozen", clock.now, clock.now + timedelta(seconds=LEASE)) is not None
        await b.start()
        clock.advance(3 * LEASE)  # long past: a claim that finds the row locked tries to end its session
        monkeypatch.setattr(leases_module, "claim", lambda *_args: None)  # the row stays locked
        monkeypatch.setattr(leases_module, "end_stuck_holder", refused)
        for _ in range(3):
            await b.leases.tick()
        assert sorted(b.leases.held) == NAMES[1:]
        await b.stop()

    asyncio.run(scenario())
    said = [r.getMessage() for r in caplog.records if "cannot end the stuck session" in r.getMessage()]
    assert said == ["alpha: cannot end the stuck session of frozen: must be a member of the role whose process is "
                    "being terminated"]  # fmt: skip
