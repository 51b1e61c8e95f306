"""The report outbox: one ``report_deliveries`` row per (report, endpoint), and rendering leases.

Rows are written in the transaction that stores the report (or records a purchase), with
``ON CONFLICT DO NOTHING`` on the unique ``(report_id, endpoint_id)``: a report is enqueued once
per endpoint whatever restarts happen. Senders claim due rows with a lease (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, so several processes share the queue; SQLite's single writer
serializes claims), send outside any transaction and record the outcome. A lease that expires
(a sender killed mid-send) returns its rows to the queue; they go out again with the same
idempotency id.

:func:`lease_rendering` is the period's lock for the scheduler: an engine renders a period
only while it holds the lease, so two engines do not both spend a minute on the same PDF.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, func, or_, select, update

from ..records import DeliveryOutcome as Outcome
from ..records import Preferences
from .accounts import preferences_of
from .outbox import record_leased
from .sql import upsert_into
from .tables import preferences, report_deliveries, report_renderings

__all__ = [
    "ReportDelivery",
    "all_preferences",
    "claim_reports",
    "enqueue_reports",
    "lease_rendering",
    "list_report_deliveries",
    "record_reports",
    "release_rendering",
    "report_delivery_counts",
    "report_idempotency_id",
]


def report_idempotency_id(report_id: int, endpoint_id: int) -> str:
    """The same id on every attempt of one (report, endpoint): webhook-id, Message-ID, dedup key.

    >>> report_idempotency_id(1, 2) == report_idempotency_id(1, 2) != report_idempotency_id(2, 1)
    True
    >>> report_idempotency_id(1, 2).startswith("rep_")
    True
    """
    return "rep_" + hashlib.sha256(f"report:{report_id}:{endpoint_id}".encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class ReportDelivery:
    id: int
    report_id: int
    endpoint_id: int
    subscriber_id: int
    reason: str  # plan | purchase
    idempotency_id: str
    status: str  # pending | sending | sent | dead | skipped
    next_attempt_at: datetime
    attempts: int
    last_error: str | None = None
    receipt: dict[str, Any] | None = None
    sent_at: datetime | None = None


def _row(r: Any) -> ReportDelivery:
    return ReportDelivery(
        r.id, r.report_id, r.endpoint_id, r.subscriber_id, r.reason, r.idempotency_id, r.status, r.next_attempt_at,
        r.attempts, r.last_error, r.receipt, r.sent_at,
    )  # fmt: skip


def all_preferences(
    conn: Connection, subscriber_ids: Sequence[int] | None = None
) -> dict[tuple[int, str], Preferences]:
    """Every (subscriber, channel) preference (of ``subscriber_ids`` only, when given)."""
    query = select(preferences)
    if subscriber_ids is not None:
        query = query.where(preferences.c.subscriber_id.in_(list(subscriber_ids)))
    return {(r.subscriber_id, r.channel): preferences_of(r) for r in conn.execute(query)}


def enqueue_reports(conn: Connection, rows: Iterable[dict[str, Any]], now: datetime) -> int:
    """Insert report deliveries (report_id, endpoint_id, subscriber_id, reason, next_attempt_at);
    a (report, endpoint) enqueued before is left alone. The number of rows inserted."""
    values = [
        {
            **row,
            "idempotency_id": report_idempotency_id(row["report_id"], row["endpoint_id"]),
            "status": "pending",
            "attempts": 0,
            "created_at": now,
        }
        for row in rows
    ]
    inserted = 0
    for at in range(0, len(values), 2000):  # SQLite caps the bound parameters of one statement
        result = conn.execute(upsert_into(conn, report_deliveries).on_conflict_do_nothing(), values[at : at + 2000])
        inserted += max(int(result.rowcount or 0), 0)
    return inserted


def claim_reports(conn: Connection, owner: str, now: datetime, *, lease: timedelta, limit: int) -> list[ReportDelivery]:
    """Lease up to ``limit`` due rows (pending and due, or whose lease expired) to ``owner``, earliest first."""
    c = report_deliveries.c
    due = or_(and_(c.status == "pending", c.next_attempt_at <= now), and_(c.status == "sending", c.lease_until < now))
    pick = select(c.id).where(due).order_by(c.next_attempt_at, c.id).limit(limit)
    if conn.dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    ids = sorted(conn.execute(pick).scalars())
    if not ids:
        return []
    conn.execute(
        update(report_deliveries)
        .where(c.id.in_(ids))
        .values(status="sending", lease_until=now + lease, lease_owner=owner, attempts=c.attempts + 1)
    )
    return [_row(r) for r in conn.execute(select(report_deliveries).where(c.id.in_(ids)).order_by(c.id))]


def record_reports(conn: Connection, outcomes: Sequence[Outcome], now: datetime, owner: str) -> int:
    """Store the outcomes of ``owner``'s leased rows; a row whose lease moved on is left alone."""
    return record_leased(conn, report_deliveries, outcomes, now, owner)


def list_report_deliveries(
    conn: Connection, *, report_id: int | None = None, subscriber_id: int | None = None, limit: int = 10_000
) -> list[ReportDelivery]:
    query = select(report_deliveries).order_by(report_deliveries.c.id).limit(limit)
    if report_id is not None:
        query = query.where(report_deliveries.c.report_id == report_id)
    if subscriber_id is not None:
        query = query.where(report_deliveries.c.subscriber_id == subscriber_id)
    return [_row(r) for r in conn.execute(query)]


def report_delivery_counts(conn: Connection, report_id: int | None = None) -> dict[str, int]:
    """Rows by status (of one report, when given)."""
    query = select(report_deliveries.c.status, func.count()).group_by(report_deliveries.c.status)
    if report_id is not None:
        query = query.where(report_deliveries.c.report_id == report_id)
    return {str(status): int(n) for status, n in conn.execute(query)}


# --- rendering leases --------------------------------------------------------------------------


def lease_rendering(
    conn: Connection, automation: str, name: str, period_key: str, owner: str, now: datetime, lease: timedelta
) -> bool:
    """Take (or renew) the lease on rendering one period; False while another owner holds it."""
    c = report_renderings.c
    key = and_(c.automation == automation, c.name == name, c.period_key == period_key)
    conn.execute(
        upsert_into(conn, report_renderings)
        .values(automation=automation, name=name, period_key=period_key, owner=owner, lease_until=now + lease)
        .on_conflict_do_nothing()
    )
    taken = conn.execute(
        update(report_renderings)
        .where(key, or_(c.owner == owner, c.lease_until < now))
        .values(owner=owner, lease_until=now + lease)
    )
    return bool(taken.rowcount)


def release_rendering(conn: Connection, automation: str, name: str, period_key: str, owner: str) -> None:
    """Drop ``owner``'s lease on a period (once it is stored, or when rendering failed)."""
    c = report_renderings.c
    conn.execute(
        delete(report_renderings).where(
            c.automation == automation, c.name == name, c.period_key == period_key, c.owner == owner
        )
    )
