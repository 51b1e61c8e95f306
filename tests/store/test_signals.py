from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from signalmint.chain.hashing import commitment
from signalmint.records import Signal
from signalmint.store import Database, append_signals, get_signal, list_signals, signals_after, verify_chain
from signalmint.store.signals import count_signals, signal_hash

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


def make(key: str, minutes: int, ratio: float = 5.0, automation: str = "a") -> Signal:
    return Signal(
        automation=automation,
        key=key,
        time=T0 + timedelta(minutes=minutes),
        kind="volume_spike",
        score=ratio * 2,
        payload={"volume": 1000.0 * ratio, "baseline": 1000.0, "ratio": ratio, "z": float("inf")},
    )


def append(db: Database, signals: list[Signal], automation: str = "a") -> list[Signal]:
    return db.write_sync(append_signals, automation, signals, datetime.now(UTC))


def test_chain_links_each_signal_to_the_previous(db: Database) -> None:
    stored = append(db, [make("AAPL", 1), make("MSFT", 2)]) + append(db, [make("IBM", 3)])
    assert [s.seq for s in stored] == [1, 2, 3]
    assert stored[0].prev_hash == ""
    assert stored[1].prev_hash == stored[0].hash
    assert stored[2].prev_hash == stored[1].hash
    assert len({s.hash for s in stored}) == 3
    assert db.read_sync(verify_chain, "a").ok
    assert db.read_sync(verify_chain, "a").checked == 3


def test_stored_signal_reads_back_identically(db: Database) -> None:
    (stored,) = append(db, [make("AAPL", 1, ratio=7.123456789012345)])
    loaded = db.read_sync(get_signal, stored.id)
    assert loaded is not None
    assert loaded.time == stored.time and loaded.time.tzinfo is not None
    assert loaded.payload == {
        "volume": 7123.456789012345,
        "baseline": 1000.0,
        "ratio": 7.123456789012345,
        "z": None,
    }
    assert signal_hash(loaded, loaded.seq, loaded.prev_hash) == loaded.hash


def test_appending_the_same_bar_twice_is_idempotent(db: Database) -> None:
    first = append(db, [make("AAPL", 1), make("AAPL", 1)])
    again = append(db, [make("AAPL", 1), make("MSFT", 1)])
    assert len(first) == 1
    assert [s.key for s in again] == ["MSFT"]
    assert db.read_sync(count_signals, "a") == 2
    assert db.read_sync(verify_chain, "a").ok


def test_chains_are_per_automation(db: Database) -> None:
    append(db, [make("AAPL", 1)], "a")
    (b,) = append(db, [make("AAPL", 1, automation="b")], "b")
    assert b.seq == 1 and b.prev_hash == ""


def test_signals_are_append_only_in_the_database(db: Database) -> None:
    (stored,) = append(db, [make("AAPL", 1)])
    with pytest.raises(DBAPIError, match="append-only"):
        db.write_sync(lambda c: c.execute(text("UPDATE signals SET score = 0 WHERE id = :i"), {"i": stored.id}))
    with pytest.raises(DBAPIError, match="append-only"):
        db.write_sync(lambda c: c.execute(text("DELETE FROM signals")))
    assert db.read_sync(count_signals) == 1


def _tamper(db: Database, sql: str) -> None:
    """Edit the log the way an attacker with database access would: around the guard."""

    def run(conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE signals DISABLE TRIGGER signals_append_only"))
            conn.execute(text(sql))
            conn.execute(text("ALTER TABLE signals ENABLE TRIGGER signals_append_only"))
        else:
            conn.execute(text("DROP TRIGGER signals_no_update"))
            conn.execute(text("DROP TRIGGER signals_no_delete"))
            conn.execute(text(sql))

    db.write_sync(run)


def test_verify_catches_an_edited_payload(db: Database) -> None:
    stored = append(db, [make("AAPL", 1), make("MSFT", 2), make("IBM", 3)])
    _tamper(db, f"UPDATE signals SET score = 99 WHERE id = {stored[1].id}")
    report = db.read_sync(verify_chain, "a")
    assert not report.ok
    assert report.bad_seq == 2
    assert report.checked == 1
    assert "edited" in report.reason


def test_verify_catches_a_deleted_signal(db: Database) -> None:
    stored = append(db, [make("AAPL", 1), make("MSFT", 2), make("IBM", 3)])
    _tamper(db, f"DELETE FROM signals WHERE id = {stored[1].id}")
    report = db.read_sync(verify_chain, "a")
    assert not report.ok and report.bad_seq == 2 and "missing" in report.reason


@pytest.mark.parametrize("scheme", [1, 2])
def test_verify_catches_a_rewritten_tail(db: Database, scheme: int) -> None:
    """Recomputing one hash (and its commitment) is not enough: the next signal's prev_hash gives it away."""
    stored = db.write_sync(append_signals, "a", [make("AAPL", 1), make("MSFT", 2)], datetime.now(UTC), scheme=scheme)
    forged = replace(stored[0], score=1.0)
    new_hash = signal_hash(forged, 1, "")
    again = commitment(forged.salt, 1.0, forged.payload) if scheme == 2 else None
    _tamper(
        db,
        f"UPDATE signals SET score = 1.0, hash = '{new_hash}'"
        + (f", commitment = '{again}'" if again else "")
        + f" WHERE id = {stored[0].id}",
    )
    report = db.read_sync(verify_chain, "a")
    assert not report.ok and report.bad_seq == 2 and "prev_hash" in report.reason


def test_chains_stored_before_scheme_2_still_verify_and_continue_in_scheme_2(db: Database) -> None:
    old = db.write_sync(append_signals, "a", [make("AAPL", 1), make("MSFT", 2)], datetime.now(UTC), scheme=1)
    new = append(db, [make("IBM", 3), make("AAPL", 4)])
    assert [s.scheme for s in old + new] == [1, 1, 2, 2] and [s.prev_scheme for s in new] == [1, 2]
    assert new[0].prev_hash == old[1].hash and not old[0].salt and len(new[0].salt) == 32
    report = db.read_sync(verify_chain, "a")
    assert report.ok and report.checked == 4 and report.opened == 2
    _tamper(db, f"UPDATE signals SET payload = '{{\"ratio\": 50.0}}' WHERE id = {new[1].id}")
    broken = db.read_sync(verify_chain, "a")
    assert not broken.ok and broken.bad_seq == 4 and "commitment" in broken.reason


def test_list_filters_and_keyset_pages(db: Database) -> None:
    append(db, [make(k, i) for i, k in enumerate(["AAPL", "MSFT", "AAPL", "IBM", "AAPL"])])
    newest_first = db.read_sync(list_signals, automation="a", limit=10)
    assert [s.seq for s in newest_first] == [5, 4, 3, 2, 1]
    aapl = db.read_sync(list_signals, automation="a", key="AAPL", limit=10)
    assert [s.seq for s in aapl] == [5, 3, 1]
    page = db.read_sync(list_signals, automation="a", before_id=newest_first[1].id, limit=2)
    assert [s.seq for s in page] == [3, 2]
    since = db.read_sync(list_signals, automation="a", since=T0 + timedelta(minutes=3), limit=10)
    assert [s.seq for s in since] == [5, 4]
    after = db.read_sync(signals_after, newest_first[2].id)
    assert [s.seq for s in after] == [4, 5]
