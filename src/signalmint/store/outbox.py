"""Delivery endpoints and the outbox.

One ``deliveries`` row per (signal, endpoint), written in the transaction that commits the
signal. Workers claim due rows with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
several worker processes share the queue; SQLite's single writer serializes claims), send
outside any transaction, and record the outcome. A lease that expires (a worker killed
mid-send) returns its rows to the queue; they are sent again with the same idempotency id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, or_, select, update

from .tables import deliveries, endpoints

__all__ = [
    "Delivery",
    "Endpoint",
    "Outcome",
    "add_endpoint",
    "claim",
    "counts_by_status",
    "enqueue",
    "idempotency_id",
    "list_deliveries",
    "list_endpoints",
    "record",
    "replay",
    "set_endpoint_status",
]


def idempotency_id(signal_id: int, endpoint_id: int) -> str:
    """The same id on every attempt of one (signal, endpoint): webhook-id, Message-ID, dedup key.

    >>> idempotency_id(1, 2) == idempotency_id(1, 2) != idempotency_id(2, 1)
    True
    """
    return "msg_" + hashlib.sha256(f"{signal_id}:{endpoint_id}".encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: int
    subscriber_id: int
    channel: str  # email | telegram | webhook | apprise
    url: str
    secrets: tuple[str, ...]
    status: str  # active | paused | disabled
    status_reason: str = ""


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    signal_id: int
    endpoint_id: int
    subscriber_id: int
    idempotency_id: str
    status: str
    not_before: datetime
    next_attempt_at: datetime
    attempts: int
    last_error: str | None = None
    receipt: dict[str, Any] | None = None
    created_at: datetime | None = None
    sent_at: datetime | None = None


def _endpoint(r: Any) -> Endpoint:
    return Endpoint(r.id, r.subscriber_id, r.channel, r.url, tuple(r.secrets or ()), r.status, r.status_reason)


def _delivery(r: Any) -> Delivery:
    return Delivery(
        r.id, r.signal_id, r.endpoint_id, r.subscriber_id, r.idempotency_id, r.status, r.not_before,
        r.next_attempt_at, r.attempts, r.last_error, r.receipt, r.created_at, r.sent_at,
    )  # fmt: skip


def add_endpoint(
    conn: Connection, subscriber_id: int, channel: str, url: str, now: datetime, secrets: Sequence[str] = ()
) -> Endpoint:
    new_id = conn.execute(
        endpoints.insert()
        .values(
            subscriber_id=subscriber_id,
            channel=channel,
            url=url,
            secrets=list(secrets),
            status="active",
            status_reason="",
            created_at=now,
            updated_at=now,
        )
        .returning(endpoints.c.id)
    ).scalar_one()
    return _endpoint(conn.execute(select(endpoints).where(endpoints.c.id == new_id)).one())


def list_endpoints(
    conn: Connection, subscriber_id: int | None = None, *, active_only: bool = False, ids: Sequence[int] | None = None
) -> list[Endpoint]:
    query = select(endpoints).order_by(endpoints.c.id)
    if ids is not None:
        query = query.where(endpoints.c.id.in_(list(ids)))
    if subscriber_id is not None:
        query = query.where(endpoints.c.subscriber_id == subscriber_id)
    if active_only:
        query = query.where(endpoints.c.status == "active")
    return [_endpoint(r) for r in conn.execute(query)]


def set_endpoint_status(
    conn: Connection, endpoint_id: int, status: str, reason: str, now: datetime, *, owner: int | None = None
) -> bool:
    """Pause, disable or re-activate an endpoint (only the owner's, when ``owner`` is given)."""
    query = update(endpoints).where(endpoints.c.id == endpoint_id)
    if owner is not None:
        query = query.where(endpoints.c.subscriber_id == owner)
    return bool(conn.execute(query.values(status=status, status_reason=reason, updated_at=now)).rowcount)


def enqueue(conn: Connection, rows: Iterable[dict[str, Any]], now: datetime) -> int:
    """Insert delivery rows (signal_id, endpoint_id, subscriber_id, not_before); duplicates are skipped."""
    values = [
        {
            **row,
            "idempotency_id": idempotency_id(row["signal_id"], row["endpoint_id"]),
            "status": "pending",
            "next_attempt_at": row["not_before"],
            "attempts": 0,
            "created_at": now,
        }
        for row in rows
    ]
    if not values:
        return 0
    dialect = conn.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    conn.execute(insert(deliveries).on_conflict_do_nothing(), values)
    return len(values)


def claim(conn: Connection, owner: str, now: datetime, *, lease: timedelta, limit: int) -> list[Delivery]:
    """Lease up to ``limit`` due deliveries (pending and due, or whose lease expired) to ``owner``."""
    due = or_(
        and_(deliveries.c.status == "pending", deliveries.c.next_attempt_at <= now),
        and_(deliveries.c.status == "sending", deliveries.c.lease_until < now),
    )
    pick = select(deliveries.c.id).where(due).order_by(deliveries.c.next_attempt_at, deliveries.c.id).limit(limit)
    if conn.dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    ids = list(conn.execute(pick).scalars())
    if not ids:
        return []
    conn.execute(
        update(deliveries)
        .where(deliveries.c.id.in_(ids))
        .values(status="sending", lease_until=now + lease, lease_owner=owner, attempts=deliveries.c.attempts + 1)
    )
    rows = conn.execute(select(deliveries).where(deliveries.c.id.in_(ids)).order_by(deliveries.c.id))
    return [_delivery(r) for r in rows]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one claimed delivery."""

    delivery_id: int
    status: str  # sent | pending (retry) | dead | skipped
    error: str | None = None
    receipt: dict[str, Any] | None = None
    next_attempt_at: datetime | None = None


def record(conn: Connection, outcomes: Sequence[Outcome], now: datetime, owner: str) -> int:
    """Store outcomes of a worker's leased rows, in one statement per kind of outcome.

    A row whose lease moved to another worker (this one was too slow) is left alone.
    """
    mine = and_(
        deliveries.c.id == bindparam("_id"), deliveries.c.lease_owner == owner, deliveries.c.status == "sending"
    )
    done = 0
    sent = [{"_id": o.delivery_id, "_receipt": o.receipt} for o in outcomes if o.status == "sent"]
    if sent:
        statement = update(deliveries).where(mine).values(
            status="sent", sent_at=now, receipt=bindparam("_receipt"), last_error=None, lease_until=None,
            lease_owner=None,
        )  # fmt: skip
        done += int(conn.execute(statement, sent).rowcount or 0)
    others = [
        {"_id": o.delivery_id, "_status": o.status, "_error": o.error, "_next": o.next_attempt_at or now}
        for o in outcomes
        if o.status != "sent"
    ]
    if others:
        statement = update(deliveries).where(mine).values(
            status=bindparam("_status"), last_error=bindparam("_error"), next_attempt_at=bindparam("_next"),
            lease_until=None, lease_owner=None,
        )  # fmt: skip
        done += int(conn.execute(statement, others).rowcount or 0)
    return done


def replay(conn: Connection, delivery_id: int, now: datetime) -> bool:
    """Put a dead letter back in the queue (attempts start again)."""
    result = conn.execute(
        update(deliveries)
        .where(deliveries.c.id == delivery_id, deliveries.c.status.in_(("dead", "skipped")))
        .values(status="pending", next_attempt_at=now, attempts=0, last_error=None)
    )
    return bool(result.rowcount)


def list_deliveries(
    conn: Connection,
    *,
    status: str | None = None,
    endpoint_id: int | None = None,
    subscriber_id: int | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[Delivery]:
    query = select(deliveries)
    if status is not None:
        query = query.where(deliveries.c.status == status)
    if endpoint_id is not None:
        query = query.where(deliveries.c.endpoint_id == endpoint_id)
    if subscriber_id is not None:
        query = query.where(deliveries.c.subscriber_id == subscriber_id)
    if before_id is not None:
        query = query.where(deliveries.c.id < before_id)
    return [_delivery(r) for r in conn.execute(query.order_by(deliveries.c.id.desc()).limit(limit))]


def counts_by_status(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(deliveries.c.status, func.count()).group_by(deliveries.c.status))
    return {status: int(count) for status, count in rows}


def sent_since(conn: Connection, subscriber_id: int, since: datetime) -> int:
    """Deliveries sent to a subscriber since ``since`` (the daily alert budget)."""
    query = select(func.count()).where(
        deliveries.c.subscriber_id == subscriber_id, deliveries.c.status == "sent", deliveries.c.sent_at >= since
    )
    return int(conn.execute(query).scalar_one())


def sent_since_many(conn: Connection, subscriber_ids: Sequence[int], since: datetime) -> dict[int, int]:
    query = (
        select(deliveries.c.subscriber_id, func.count())
        .where(
            deliveries.c.subscriber_id.in_(list(subscriber_ids)),
            deliveries.c.status == "sent",
            deliveries.c.sent_at >= since,
        )
        .group_by(deliveries.c.subscriber_id)
    )
    return {sid: int(n) for sid, n in conn.execute(query)}
