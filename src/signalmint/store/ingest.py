"""Push ingestion rows: each ``webhook-id`` seen per automation, so a replay adds nothing."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete

from .sql import upsert_into
from .tables import ingest_events

__all__ = ["first_ingest", "forget_ingest", "forget_ingests"]


def first_ingest(conn: Connection, automation: str, event_id: str, now: datetime) -> bool:
    """Remember ``event_id`` for ``automation``; False when it was already seen."""
    done = conn.execute(
        upsert_into(conn, ingest_events)
        .values(automation=automation, event_id=event_id, received_at=now)
        .on_conflict_do_nothing()
        .returning(ingest_events.c.event_id)
    )
    return done.first() is not None


def forget_ingest(conn: Connection, automation: str, event_id: str) -> None:
    """Forget an id remembered for a request that was not queued after all (its retry is not a replay)."""
    conn.execute(
        delete(ingest_events).where(ingest_events.c.automation == automation, ingest_events.c.event_id == event_id)
    )


def forget_ingests(conn: Connection, automation: str, before: datetime) -> int:
    """Forget the ids of ``automation`` received before ``before`` (past its retention); how many."""
    done = conn.execute(
        delete(ingest_events).where(ingest_events.c.automation == automation, ingest_events.c.received_at < before)
    )
    return int(done.rowcount or 0)
