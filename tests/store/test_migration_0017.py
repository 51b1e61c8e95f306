"""Migration 0017 (no index on the outbox's idempotency id) on an outbox that holds rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, inspect

from signalmint.records import OutboxRow
from signalmint.store import Database
from signalmint.store.accounts import ensure_subscriber
from signalmint.store.migrate import head_revision, migrate
from signalmint.store.outbox import add_endpoint, claim, counts_by_status, enqueue, idempotency_id, list_deliveries

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_outbox_keeps_its_rows_and_partial_indexes_without_the_idempotency_index(db_url: str) -> None:
    db = Database(db_url)
    try:
        migrate(db, "0016")

        def fill(conn: Connection) -> None:
            person = ensure_subscriber(conn, "a@example.com", T0)
            endpoint = add_endpoint(conn, person.id, "webhook", "webhook+https://example.com/h", T0)
            group = "g:1:60"
            enqueue(conn, [OutboxRow(s, endpoint.id, person.id, T0, group if s % 3 == 0 else None)
                           for s in range(1, 31)], T0)  # fmt: skip

        db.write_sync(fill)
        before = db.read_sync(list_deliveries, limit=100)
        migrate(db)
        assert db.current_revision() == head_revision()
        assert db.read_sync(list_deliveries, limit=100) == before  # every row, every column
        assert all(d.idempotency_id == idempotency_id(d.signal_id, d.endpoint_id) for d in before)
        indexes = {ix["name"]: ix for ix in inspect(db.engine).get_indexes("deliveries")}
        assert not any(ix["column_names"] == ["idempotency_id"] for ix in indexes.values())
        constraints = inspect(db.engine).get_unique_constraints("deliveries")
        assert [c["column_names"] for c in constraints] == [["signal_id", "endpoint_id"]]
        partial = {"ix_deliveries_pending", "ix_deliveries_sending", "ix_deliveries_pending_groups",
                   "ix_deliveries_group_key"}  # fmt: skip
        assert partial <= set(indexes)
        with db.engine.connect() as conn:  # made again with their WHERE
            if conn.dialect.name == "sqlite":
                query = "SELECT name, sql FROM sqlite_master WHERE tbl_name = 'deliveries'"
            else:
                query = (
                    "SELECT indexname, indexdef FROM pg_indexes"
                    " WHERE tablename = 'deliveries' AND schemaname = current_schema()"
                )
            sql: dict[str, str] = {name: text or "" for name, text in conn.exec_driver_sql(query).all()}
        assert all("WHERE" in sql[name] for name in partial), sql
        taken = db.write_sync(claim, "w", T0 + timedelta(minutes=5), lease=timedelta(seconds=60), limit=100)
        assert len(taken) == 30  # the claim reads them through the partial indexes as before
        assert db.read_sync(counts_by_status) == {"sending": 30}
    finally:
        db.close()
