"""store/leases.py on both backends: claims are atomic, epochs fence commits, heartbeats count."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from signalmint.engine.runner import commit_tick
from signalmint.errors import LeaseLost
from signalmint.records import Fence, Frame, Signal
from signalmint.store import Database, list_signals
from signalmint.store.leases import (
    beat,
    check_fence,
    claim,
    end_stuck_holder,
    ensure_leases,
    expire_holder,
    list_leases,
    live_engines,
    release,
    renew,
)

from ..conftest import backend_state
from .conftest import stuck_mid_pipeline

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=10)


def test_a_claim_is_taken_once_and_moves_the_epoch_on(db: Database) -> None:
    db.write_sync(ensure_leases, ["a", "b"], T0)
    db.write_sync(ensure_leases, ["a", "c"], T0)  # idempotent
    assert [(x.automation, x.holder, x.epoch) for x in db.read_sync(list_leases)] == [
        ("a", None, 0),
        ("b", None, 0),
        ("c", None, 0),
    ]
    first = db.write_sync(claim, "a", "e1", T0, T0 + LEASE)
    assert first is not None and (first.holder, first.epoch, first.previous_holder) == ("e1", 1, None)
    assert db.write_sync(claim, "a", "e2", T0 + LEASE / 2, T0 + LEASE * 1.5) is None  # still held
    later = T0 + LEASE  # e1's lease runs out exactly now
    second = db.write_sync(claim, "a", "e2", later, later + LEASE)
    assert second is not None and (second.holder, second.epoch, second.previous_holder) == ("e2", 2, "e1")
    assert db.write_sync(renew, {"a": 1}, "e1", later, later + LEASE) == {"a"}  # e1 learns it lost it
    assert db.write_sync(renew, {"a": 2}, "e2", later, later + LEASE) == set()


def test_a_release_frees_the_lease_at_once(db: Database) -> None:
    db.write_sync(ensure_leases, ["a"], T0)
    got = db.write_sync(claim, "a", "e1", T0, T0 + LEASE)
    assert got is not None
    assert not db.write_sync(release, "a", Fence("e2", got.epoch), T0)  # not e2's to release
    assert db.write_sync(release, "a", Fence("e1", got.epoch), T0)
    again = db.write_sync(claim, "a", "e2", T0, T0 + LEASE)
    assert again is not None and again.epoch == 2 and again.previous_holder == "e1"


def test_the_fence_rolls_back_a_commit_of_a_holder_whose_lease_was_taken(db: Database) -> None:
    db.write_sync(ensure_leases, ["a"], T0)
    mine = db.write_sync(claim, "a", "e1", T0, T0 + LEASE)
    assert mine is not None
    fence = Fence("e1", mine.epoch)
    signal = Signal("a", "K", T0, "volume_spike", 9.0, {"ratio": 9.0})
    db.write_sync(commit_tick, "a", Frame.empty(), [signal], None, fence=fence)
    assert len(db.read_sync(list_signals, automation="a")) == 1
    # e1 is paused past its lease; e2 takes over
    assert db.write_sync(claim, "a", "e2", T0 + 2 * LEASE, T0 + 3 * LEASE) is not None
    late = Signal("a", "K", T0 + timedelta(minutes=1), "volume_spike", 9.0, {"ratio": 9.0})
    with pytest.raises(LeaseLost, match="taken over"):
        db.write_sync(commit_tick, "a", Frame.empty(), [late], None, fence=fence)
    assert len(db.read_sync(list_signals, automation="a")) == 1  # nothing of the zombie's tick
    with pytest.raises(LeaseLost):
        db.write_sync(check_fence, "a", Fence("e2", mine.epoch), T0)  # the right holder, an old epoch


def test_heartbeats_count_the_live_engines(db: Database) -> None:
    db.write_sync(beat, "e1", "host/1", 1, T0, T0 + LEASE)
    db.write_sync(beat, "e2", "host/1", 2, T0, T0 + LEASE / 2)
    assert db.read_sync(live_engines, T0) == 2
    assert db.read_sync(live_engines, T0 + LEASE / 2) == 1  # e2's heartbeat ran out
    db.write_sync(beat, "e2", "host/1", 2, T0 + LEASE / 2, T0 + LEASE * 2)
    assert db.read_sync(live_engines, T0 + LEASE) == 1  # e1's ran out, e2 renewed
    db.write_sync(ensure_leases, ["a"], T0)
    db.write_sync(claim, "a", "e2", T0, T0 + LEASE * 2)
    assert db.write_sync(expire_holder, "e2", T0) == ["a"]
    assert db.read_sync(live_engines, T0) == 1
    assert db.read_sync(list_leases)[0].holder is None


def test_concurrent_claims_have_exactly_one_winner(db: Database) -> None:
    """Eight threads, each on its own connection, claim the same free lease at once."""
    db.write_sync(ensure_leases, ["a"], T0)
    barrier = threading.Barrier(8)
    winners: list[str] = []
    errors: list[BaseException] = []

    def contend(holder: str) -> None:
        try:
            barrier.wait()
            with db.engine.begin() as conn:
                if claim(conn, "a", holder, T0, T0 + LEASE) is not None:
                    winners.append(holder)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=contend, args=(f"e{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    assert len(winners) == 1
    (lease,) = db.read_sync(list_leases)
    assert lease.holder == winners[0] and lease.epoch == 1


def test_a_holder_frozen_mid_pipeline_past_its_lease_has_its_session_ended(db: Database) -> None:
    """SIGSTOP can freeze an engine after its commit passed the fence and while it was sending a
    pipeline: the server then waits for the rest with no idle timeout, the lease row stays locked,
    and no claim can take the automation over. :func:`end_stuck_holder` ends that session."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite writers hold no row locks")
    now = datetime.now(UTC)
    db.write_sync(ensure_leases, ["a"], now)
    mine = db.write_sync(claim, "a", "e1", now, now + LEASE)
    assert mine is not None
    with stuck_mid_pipeline(db, "a", Fence("e1", mine.epoch), idle_timeout=0.1) as pid:
        deadline = time.monotonic() + 10
        while backend_state(db, pid) != ("active", "ClientRead"):  # half a pipeline sent
            assert time.monotonic() < deadline, backend_state(db, pid)
            time.sleep(0.01)
        time.sleep(0.5)  # five idle timeouts: the server has not ended the session, it is no idle transaction
        assert backend_state(db, pid) == ("active", "ClientRead")
        later = now + 2 * LEASE
        assert db.write_sync(claim, "a", "e2", later, later + LEASE) is None  # the row is locked
        # not before the lease ran out (whatever the session's time zone: times are compared as
        # stored, naive UTC), nor before the session waited ``grace`` for its client
        with db.engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL TIME ZONE 'Asia/Kolkata'")
            assert end_stuck_holder(conn, "a", now, 0.3) is None
        assert db.write_sync(end_stuck_holder, "a", later, 60) is None
        assert db.write_sync(end_stuck_holder, "a", later, 0.3) == pid
        deadline = time.monotonic() + 10
        while backend_state(db, pid) is not None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        taken = db.write_sync(claim, "a", "e2", later, later + LEASE)
    assert taken is not None and (taken.epoch, taken.previous_holder) == (2, "e1")
    assert db.read_sync(list_leases)[0].committed_at is None  # the frozen fence's write rolled back
