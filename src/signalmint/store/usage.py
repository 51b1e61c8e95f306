"""API usage per subscriber and calendar month (the quota, and later the overage bill)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select, update

from .tables import usage

__all__ = ["add_usage", "get_usage", "lock_overage"]


def get_usage(conn: Connection, subscriber_id: int, month: str) -> tuple[int, int]:
    row = conn.execute(
        select(usage.c.calls, usage.c.overage).where(usage.c.subscriber_id == subscriber_id, usage.c.month == month)
    ).first()
    return (int(row.calls), int(row.overage)) if row else (0, 0)


def lock_overage(conn: Connection, subscriber_id: int, month: str) -> int | None:
    """The overage calls counted for a subscriber and month (None: no usage row), with the row
    locked until the transaction ends (it orders writers that name events by this count)."""
    query = select(usage.c.overage).where(usage.c.subscriber_id == subscriber_id, usage.c.month == month)
    counted = conn.execute(query.with_for_update()).scalar()
    return None if counted is None else int(counted)


def add_usage(conn: Connection, counts: dict[tuple[int, str], tuple[int, int]], now: datetime) -> None:
    """Add (calls, overage) per (subscriber, month); an update that races an insert is retried by the caller."""
    for (subscriber_id, month), (calls, overage) in counts.items():
        done = conn.execute(
            update(usage)
            .where(usage.c.subscriber_id == subscriber_id, usage.c.month == month)
            .values(calls=usage.c.calls + calls, overage=usage.c.overage + overage, updated_at=now)
        )
        if not done.rowcount:
            conn.execute(
                usage.insert().values(
                    subscriber_id=subscriber_id, month=month, calls=calls, overage=overage, updated_at=now
                )
            )
