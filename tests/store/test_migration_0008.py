"""Migration 0008 (hash scheme 2) on a database that already holds a scheme-1 chain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, column, insert, table

from signalmint.chain.hashing import hash_v1
from signalmint.records import Signal
from signalmint.store import Database, append_signals, verify_chain
from signalmint.store.migrate import head_revision, migrate
from signalmint.store.tables import signals

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


def test_a_chain_stored_before_0008_still_verifies_and_grows_in_scheme_2(db_url: str) -> None:
    db = Database(db_url)
    try:
        migrate(db, "0005")
        prev = ""
        rows = []
        for seq in (1, 2, 3):  # written as 0005 wrote them: no scheme, salt or commitment columns
            time, payload = T0 + timedelta(minutes=seq), {"volume": 1000.0 * seq, "ratio": 4.0}
            digest = hash_v1("a", seq, f"K{seq}", time.isoformat(), "volume_spike", 8.0, payload, prev)
            rows.append(
                {"automation": "a", "seq": seq, "key": f"K{seq}", "time": time, "kind": "volume_spike",
                 "score": 8.0, "payload": payload, "prev_hash": prev, "hash": digest, "created_at": T0}
            )  # fmt: skip
            prev = digest
        old_table = table("signals", *[column(name, signals.c[name].type) for name in rows[0]])

        def write(conn: Connection) -> None:
            conn.execute(insert(old_table), rows)

        db.write_sync(write)
        migrate(db)
        assert db.current_revision() == head_revision()
        before = db.read_sync(verify_chain, "a")
        assert before.ok and before.checked == 3
        new = db.write_sync(
            append_signals,
            "a",
            [Signal("a", "K4", T0 + timedelta(hours=1), "volume_spike", 9.0, {"volume": 5.0})],
            datetime.now(UTC),
        )
        assert new[0].scheme == 2 and new[0].prev_scheme == 1 and new[0].prev_hash == prev
        after = db.read_sync(verify_chain, "a")
        assert after.ok and after.checked == 4 and after.opened == 1
    finally:
        db.close()
