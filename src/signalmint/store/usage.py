"""API usage per subscriber and calendar month (the quota, and later the overage bill)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select, update

from .tables import usage

__all__ = ["add_usage", "get_usage"]


def get_usage(conn: Connection, subscriber_id: int, month: str) -> tuple[int, int]:
    row = conn.execute(
        select(usage.c.calls, usage.c.overage).where(usage.c.subscriber_id == subscriber_id, usage.c.month == month)
    ).first()
    return (int(row.calls), int(row.overage)) if row else (0, 0)


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
