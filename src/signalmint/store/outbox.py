"""Delivery endpoints and the outbox.

One ``deliveries`` row per (signal, endpoint), written in the transaction that commits the
signal. Workers claim due rows with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
several worker processes share the queue; SQLite's single writer serializes claims), send
outside any transaction, and record the outcome. A lease that expires (a worker killed
mid-send) returns its rows to the queue; they are sent again with the same idempotency id.

Rows that share a ``group_key`` (grouping, quiet-hours digests: see
:mod:`signalmint.delivery.fanout`) go out as one message. They are first tried a short
:data:`SETTLE` after their window ends (``not_before``), so rows of the same window committed
a moment late are in, and a group is claimed whole: one worker leases every row of it, and a lease that expires
returns them all. On PostgreSQL a transaction-scoped advisory lock per group key keeps two
workers from taking parts of one group at the same time: only the holder locks its rows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, and_, func, literal_column, or_, select, text, union_all, update

from ..errors import LimitError
from ..records import Delivery, DeliveryOutcome, Endpoint, OutboxRow
from .accounts import lock_subscriber
from .leases import guard_idle
from .notify import notify_outbox
from .sql import among, autocommitting, raw_columns, reader, writer
from .tables import deliveries, endpoints

__all__ = [
    "MAX_ENDPOINTS",
    "MAX_GROUPS",
    "SETTLE",
    "Delivery",
    "DeliveryOutcome",
    "Endpoint",
    "OutboxRow",
    "add_endpoint",
    "claim",
    "counts_by_status",
    "delivery_health",
    "due_pending",
    "earliest_due",
    "endpoints_at",
    "enqueue",
    "group_message_id",
    "idempotency_id",
    "lease_expired",
    "list_deliveries",
    "list_endpoints",
    "queue_fronts",
    "record",
    "record_leased",
    "replay",
    "set_endpoint_status",
]


def idempotency_id(signal_id: int, endpoint_id: int) -> str:
    """The same id on every attempt of one (signal, endpoint): webhook-id, Message-ID, dedup key.

    >>> idempotency_id(1, 2) == idempotency_id(1, 2) != idempotency_id(2, 1)
    True
    """
    return "msg_" + hashlib.sha256(f"{signal_id}:{endpoint_id}".encode()).hexdigest()[:24]


def group_message_id(group_key: str, signal_ids: Iterable[int]) -> str:
    """The idempotency id of one grouped message: the same on every attempt of the same group.

    It names the signals too: a row of the window committed after its group went out is sent
    on its own later, and must not carry an id the receiver already saw (and would drop).

    >>> group_message_id("g:7:1704197160", [3, 1]) == group_message_id("g:7:1704197160", [1, 3])
    True
    >>> group_message_id("g:7:1704197160", [1, 3]) != group_message_id("g:7:1704197160", [1, 3, 4])
    True
    """
    members = ",".join(str(i) for i in sorted(set(signal_ids)))
    return "grp_" + hashlib.sha256(f"{group_key}|{members}".encode()).hexdigest()[:24]


#: How long after its window ends a group is claimed: rows of the window committed a moment late join it.
SETTLE = timedelta(seconds=2)
#: Groups one claim takes at most (each holds a PostgreSQL advisory lock while it is claimed).
MAX_GROUPS = 200
#: Endpoints (of any channel, paused ones included, removed ones not) one subscriber may have.
MAX_ENDPOINTS = 20
#: A JSON string, as json.dumps writes one (ASCII only).
_quote = json.encoder.encode_basestring_ascii
#: First key of the PostgreSQL advisory locks that guard groups while they are claimed ("SM").
_GROUP_LOCKS = "21325"


def _endpoint(r: Any) -> Endpoint:
    return Endpoint(r.id, r.subscriber_id, r.channel, r.url, tuple(r.secrets or ()), r.status, r.status_reason)


def _delivery(r: Any) -> Delivery:
    return Delivery(
        r.id, r.signal_id, r.endpoint_id, r.subscriber_id, r.idempotency_id, r.status, r.not_before,
        r.next_attempt_at, r.attempts, r.last_error, r.receipt, r.created_at, r.sent_at, r.group_key,
    )  # fmt: skip


#: A :class:`Delivery`'s fields, in order, as the outbox's columns.
_DELIVERY_FIELDS = (
    "id", "signal_id", "endpoint_id", "subscriber_id", "idempotency_id", "status", "not_before", "next_attempt_at",
    "attempts", "last_error", "receipt", "created_at", "sent_at", "group_key",
)  # fmt: skip
#: The same columns untyped: the claim reads them raw and converts each distinct time once.
_RAW_DELIVERY = raw_columns(deliveries, _DELIVERY_FIELDS)


def _deliveries_raw(conn: Connection, rows: Iterable[Any]) -> list[Delivery]:
    """Deliveries from raw rows of :data:`_RAW_DELIVERY`, sorted by id."""
    c = deliveries.c
    at, receipt = reader(conn, c.not_before), reader(conn, c.receipt, memo=False)
    out = [
        Delivery(r[0], r[1], r[2], r[3], r[4], r[5], at(r[6]), at(r[7]), r[8], r[9], receipt(r[10]), at(r[11]),
                 at(r[12]), r[13])
        for r in rows
    ]  # fmt: skip
    out.sort(key=_by_id)
    return out


def add_endpoint(
    conn: Connection, subscriber_id: int, channel: str, url: str, now: datetime, secrets: Sequence[str] = ()
) -> Endpoint:
    """A new active endpoint; a subscriber has at most :data:`MAX_ENDPOINTS` that are not removed."""
    lock_subscriber(conn, subscriber_id)
    live = conn.execute(
        select(func.count())
        .select_from(endpoints)
        .where(endpoints.c.subscriber_id == subscriber_id, endpoints.c.status != "disabled")
    ).scalar_one()
    if live >= MAX_ENDPOINTS:
        raise LimitError(f"at most {MAX_ENDPOINTS} endpoints; remove one first", cap=MAX_ENDPOINTS)
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


#: An :class:`Endpoint`'s fields, in order, as the endpoints' columns.
_ENDPOINT_FIELDS = ("id", "subscriber_id", "channel", "url", "secrets", "status", "status_reason")


def list_endpoints(
    conn: Connection, subscriber_id: int | None = None, *, active_only: bool = False, ids: Sequence[int] | None = None
) -> list[Endpoint]:
    """Endpoints by id (a fan-out's audience, a delivery round's endpoints: thousands at a time,
    read raw, each distinct list of secrets decoded once)."""
    query = select(*raw_columns(endpoints, _ENDPOINT_FIELDS, qualified=True)).select_from(endpoints)
    query = query.order_by(endpoints.c.id)
    if ids is not None:
        query = query.where(among(conn, endpoints.c.id, ids))
    if subscriber_id is not None:
        query = query.where(endpoints.c.subscriber_id == subscriber_id)
    if active_only:
        query = query.where(endpoints.c.status == "active")
    secrets = reader(conn, endpoints.c.secrets)
    return [Endpoint(r[0], r[1], r[2], r[3], tuple(secrets(r[4]) or ()), r[5], r[6]) for r in conn.execute(query).all()]


def endpoints_at(conn: Connection, channel: str, url: str) -> list[Endpoint]:
    """Every endpoint of ``channel`` sending to exactly ``url`` (the demo's inspector looks up secrets)."""
    query = select(endpoints).where(endpoints.c.channel == channel, endpoints.c.url == url).order_by(endpoints.c.id)
    return [_endpoint(r) for r in conn.execute(query)]


def set_endpoint_status(
    conn: Connection, endpoint_id: int, status: str, reason: str, now: datetime, *, owner: int | None = None
) -> bool:
    """Pause, disable or re-activate an endpoint (only the owner's, when ``owner`` is given)."""
    query = update(endpoints).where(endpoints.c.id == endpoint_id)
    if owner is not None:
        query = query.where(endpoints.c.subscriber_id == owner)
    return bool(conn.execute(query.values(status=status, status_reason=reason, updated_at=now)).rowcount)


def enqueue(conn: Connection, rows: Iterable[OutboxRow], now: datetime) -> int:
    """Insert the fan-out's outbox rows; duplicates (same signal and endpoint) are skipped. On
    PostgreSQL, when some are due now, idle workers hear of it on commit (:func:`notify_outbox`).

    One fixed statement whatever the count: on PostgreSQL one ``INSERT ... SELECT FROM
    unnest(arrays)``, on SQLite the driver's executemany; times converted as the columns' types
    would, each distinct one once (a signal's rows share theirs)."""
    rows = list(rows)
    if not rows:
        return 0
    values = [  # a group is first tried a moment after its window ends, so rows committed late are in
        (row.signal_id, row.endpoint_id, row.subscriber_id, row.not_before, row.group_key,
         idempotency_id(row.signal_id, row.endpoint_id), row.not_before + SETTLE if row.group_key else row.not_before)
        for row in rows
    ]  # fmt: skip
    columns = "signal_id, endpoint_id, subscriber_id, not_before, group_key, idempotency_id, next_attempt_at"
    at = writer(conn, deliveries.c.not_before)  # UTCDateTime's conversion (an aware time, or an error)
    if conn.dialect.name == "postgresql":
        signals, endpoint_ids, subscribers, not_befores, groups, ids, nexts = zip(*values, strict=True)
        conn.execute(
            text(
                f"INSERT INTO deliveries ({columns}, status, attempts, created_at) "
                "SELECT v.*, 'pending', 0, :now FROM unnest(CAST(:signals AS BIGINT[]), CAST(:endpoints AS BIGINT[]), "
                "CAST(:subscribers AS BIGINT[]), CAST(:not_befores AS TIMESTAMP[]), CAST(:groups AS TEXT[]), "
                "CAST(:ids AS TEXT[]), CAST(:nexts AS TIMESTAMP[])) AS v ON CONFLICT DO NOTHING"
            ),
            {
                "now": at(now),
                "signals": list(signals),
                "endpoints": list(endpoint_ids),
                "subscribers": list(subscribers),
                "not_befores": [at(t) for t in not_befores],
                "groups": list(groups),
                "ids": list(ids),
                "nexts": [at(t) for t in nexts],
            },
        )
    else:
        created = at(now)
        conn.exec_driver_sql(
            f"INSERT INTO deliveries ({columns}, status, attempts, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?) ON CONFLICT DO NOTHING",
            [(s, e, sub, at(nb), g, i, at(nx), created) for s, e, sub, nb, g, i, nx in values],
        )
    due = sum(1 for row in rows if row.not_before <= now and row.group_key is None)
    notify_outbox(conn, due)
    return len(rows)


#: The statuses as literals, not parameters: a partial index (tables.py) serves a query whose
#: conditions contain its predicate as written, and a parameter would hide that from SQLite and
#: from a prepared statement's generic plan on PostgreSQL.
_PENDING: Any = literal_column("'pending'")
_SENDING: Any = literal_column("'sending'")


def due_pending(now: Any) -> Any:
    """Rows waiting for their first or next attempt, due by ``now`` (ix_deliveries_pending)."""
    c = deliveries.c
    return and_(c.status == _PENDING, c.next_attempt_at <= now)


def lease_expired(now: Any) -> Any:
    """Rows leased to a worker that did not record them in time, e.g. it died (ix_deliveries_sending)."""
    c = deliveries.c
    return and_(c.status == _SENDING, c.lease_until < now)


def queue_fronts() -> list[Any]:
    """The oldest waiting row's time and the oldest lease's end (PostgreSQL: read with a claim).

    Each is read by an index scan from the front of its partial index, which PostgreSQL answers
    for ``min()`` however few rows it expects. A plain index scan marks the entries it passes
    whose rows are dead to everyone (rows a claim moved on from pending, or from sending), and
    later scans skip marked entries, bitmap scans too; bitmap scans never mark them. Claims take
    the oldest rows first, so those entries sit at the front: reading the fronts with every claim
    keeps what :func:`earliest_due` reads near the rows waiting, between two vacuums.
    """
    c = deliveries.c
    return [
        select(func.min(c.next_attempt_at)).where(c.status == _PENDING).scalar_subquery(),
        select(func.min(c.lease_until)).where(c.status == _SENDING).scalar_subquery(),
    ]


def earliest_due(now: Any, limit: Any, *, lock: bool, singles: bool = True, unless: Any = None) -> Any:
    """The earliest ``limit`` due rows: ``id``, ``next_attempt_at``, ``group_key``; with
    ``singles``, rows outside any group only; none when ``unless`` (a condition) holds.

    The two kinds of due rows are read apart, each in the order of its partial index with a
    plain index scan that stops after ``limit`` rows, then merged. One condition with ``OR``
    read both whole into a bitmap, and with them every index entry that rows moving from
    pending to sending to sent left behind until the next vacuum: the claim's cost grew with
    the rows delivered. ``lock``: ``FOR UPDATE SKIP LOCKED`` (PostgreSQL), so that workers
    claiming together never wait on one another.
    """
    c = deliveries.c
    parts = []
    kinds = (("due_pending", due_pending(now), c.next_attempt_at), ("expired", lease_expired(now), c.lease_until))
    for name, due, order in kinds:
        part = select(c.id, c.next_attempt_at, c.group_key).where(due)
        if singles:
            part = part.where(c.group_key.is_(None))
        if unless is not None:
            part = part.where(~unless)
        part = part.order_by(order, c.id).limit(limit)
        if lock:
            part = part.with_for_update(skip_locked=True)
        parts.append(part.cte(name).prefix_with("MATERIALIZED"))
    both = union_all(*(select(p.c.id, p.c.next_attempt_at, p.c.group_key) for p in parts)).subquery("due")
    return select(*both.c).order_by(both.c.next_attempt_at, both.c.id).limit(limit)


def claim(conn: Connection, owner: str, now: datetime, *, lease: timedelta, limit: int) -> list[Delivery]:
    """Lease due deliveries (pending and due, or whose lease expired) to ``owner``.

    About ``limit`` rows, earliest first: single rows, and whole groups (a group is never
    split, so one may carry the batch past ``limit``). One statement picks, leases and returns
    them on SQLite (one writer at a time), and on PostgreSQL when no group is due (the usual
    case). The rows come back raw and each distinct time is converted once (_deliveries_raw).
    """
    c = deliveries.c
    postgres = conn.dialect.name == "postgresql"
    expired = lease_expired(now)
    due = or_(due_pending(now), expired)
    leased = {"status": "sending", "lease_until": now + lease, "lease_owner": owner, "attempts": c.attempts + 1}
    ids: set[int] = set()
    wanted: list[str] = []
    if not postgres:  # one writer at a time: the earliest due rows, and every row of the groups among them
        picked = earliest_due(now, limit, lock=False, singles=False).cte("picked").prefix_with("MATERIALIZED")
        groups = select(picked.c.group_key).where(picked.c.group_key.is_not(None))
        rest = and_(c.group_key.in_(groups), or_(c.status == "pending", expired))
        statement = update(deliveries).where(or_(c.id.in_(select(picked.c.id)), rest)).values(**leased)
        return _deliveries_raw(conn, conn.execute(statement.returning(*_RAW_DELIVERY)).all())
    if not autocommitting(conn):
        # the locks below last until the transaction ends: should this worker freeze before
        # then (SIGSTOP, a frozen VM), the server ends its session after a lease, and the rows
        # and groups it locked go to the other workers
        guard_idle(conn, lease.total_seconds())
    # single rows other workers hold are skipped; groups are taken whole, earliest first
    first = func.min(c.next_attempt_at)
    candidates = select(c.group_key, first, func.count()).where(due, c.group_key.is_not(None))
    candidates = candidates.group_by(c.group_key).order_by(first).limit(min(limit, MAX_GROUPS))
    groups_due = [(at, count, key) for key, at, count in conn.execute(candidates)]
    pick = earliest_due(now, limit, lock=True)
    if not groups_due:  # singles only: lock, lease and read them in one round trip
        locked = pick.cte("picked").prefix_with("MATERIALIZED")  # locked once, exactly these rows
        statement = update(deliveries).where(c.id.in_(select(locked.c.id))).values(**leased)
        return _deliveries_raw(conn, conn.execute(statement.returning(*_RAW_DELIVERY)).all())
    singles = [(r.next_attempt_at, 1, r.id) for r in conn.execute(pick)]
    taken = 0
    for _at, count, item in sorted([*singles, *groups_due], key=lambda x: (x[0], str(x[2]))):
        if taken >= limit:
            break
        taken += count
        if isinstance(item, str):
            wanted.append(item)
        else:
            ids.add(item)
    if wanted:  # a group another worker is claiming right now is left to it
        lock = func.pg_try_advisory_xact_lock(literal_column(_GROUP_LOCKS), func.hashtext(c.group_key))
        wanted = list(conn.execute(select(c.group_key).distinct().where(c.group_key.in_(wanted), lock)).scalars())
    if wanted:  # every row of each group (only one transaction at a time locks a group's rows)
        members = select(c.id).where(c.group_key.in_(wanted), or_(c.status == "pending", expired))
        ids.update(conn.execute(members.with_for_update()).scalars())
    if not ids:
        return []
    statement = update(deliveries).where(among(conn, c.id, sorted(ids))).values(**leased)
    return _deliveries_raw(conn, conn.execute(statement.returning(*_RAW_DELIVERY)).all())


def _by_id(delivery: Delivery) -> int:
    return delivery.id


def record(conn: Connection, outcomes: Sequence[DeliveryOutcome], now: datetime, owner: str) -> int:
    """Store outcomes of a worker's leased rows, in one statement per kind of outcome.

    A row whose lease moved to another worker (this one was too slow) is left alone.
    """
    return record_leased(conn, deliveries, outcomes, now, owner)


def record_leased(
    conn: Connection, table: Table, outcomes: Sequence[DeliveryOutcome], now: datetime, owner: str
) -> int:
    """:func:`record` for any outbox table with the same lease and outcome columns (the report
    outbox, store/report_outbox.py, too)."""
    if conn.dialect.name == "postgresql":
        return _record_arrays(conn, table, outcomes, now, owner)
    return _record_many(conn, table, outcomes, now, owner)


def _record_many(conn: Connection, table: Table, outcomes: Sequence[DeliveryOutcome], now: datetime, owner: str) -> int:
    """:func:`record_leased` on SQLite: the driver's executemany of one fixed statement per kind
    of outcome, with values converted as the columns' types would (each distinct time once),
    not SQLAlchemy's per-row parameter processing."""
    c = table.c
    at, encode = writer(conn, c.sent_at), writer(conn, c.receipt, memo=False)

    def receipt(value: Any) -> Any:  # a receipt is a few strings: json.dumps's text, with no encoder made per row
        if type(value) is dict:
            try:
                return "{" + ", ".join([_quote(k) + ": " + _quote(v) for k, v in value.items()]) + "}"
            except TypeError:  # not only strings
                pass
        return encode(value)

    mine = "id = ? AND lease_owner = ? AND status = 'sending'"
    done = 0
    sent_at = at(now)
    sent = [(sent_at, receipt(o.receipt), o.delivery_id, owner) for o in outcomes if o.status == "sent"]
    if sent:
        statement = (
            f"UPDATE {table.name} SET status = 'sent', sent_at = ?, receipt = ?, last_error = NULL, "
            f"lease_until = NULL, lease_owner = NULL WHERE {mine}"
        )
        done += int(conn.exec_driver_sql(statement, sent).rowcount or 0)
    others = [
        (o.status, o.error, at(o.next_attempt_at or now), o.delivery_id, owner) for o in outcomes if o.status != "sent"
    ]
    if others:
        statement = (
            f"UPDATE {table.name} SET status = ?, last_error = ?, next_attempt_at = ?, lease_until = NULL, "
            f"lease_owner = NULL WHERE {mine}"
        )
        done += int(conn.exec_driver_sql(statement, others).rowcount or 0)
    return done


def _naive_utc(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(tzinfo=None)  # as the UTCDateTime columns store it


def _record_arrays(
    conn: Connection, table: Table, outcomes: Sequence[DeliveryOutcome], now: datetime, owner: str
) -> int:
    """:func:`record_leased` on PostgreSQL: one ``UPDATE ... FROM unnest(arrays)`` per kind of
    outcome, whatever the number of rows (not one statement per row), with the same text every
    time (psycopg converts it once, the server prepares it)."""
    mine = "t.id = v.id AND t.lease_owner = :owner AND t.status = 'sending'"
    done = 0
    sent = [o for o in outcomes if o.status == "sent"]
    if sent:
        statement = text(
            f"UPDATE {table.name} AS t SET status = 'sent', sent_at = :now, receipt = CAST(v.receipt AS JSON), "
            "last_error = NULL, lease_until = NULL, lease_owner = NULL "
            "FROM unnest(CAST(:ids AS BIGINT[]), CAST(:receipts AS TEXT[])) AS v(id, receipt) WHERE " + mine
        )
        receipts = [json.dumps(o.receipt) for o in sent]
        values = {"now": _naive_utc(now), "owner": owner, "ids": [o.delivery_id for o in sent], "receipts": receipts}
        done += int(conn.execute(statement, values).rowcount or 0)
    others = [o for o in outcomes if o.status != "sent"]
    if others:
        statement = text(
            f"UPDATE {table.name} AS t SET status = v.status, last_error = v.error, next_attempt_at = v.next, "
            "lease_until = NULL, lease_owner = NULL FROM unnest(CAST(:ids AS BIGINT[]), CAST(:statuses AS TEXT[]), "
            "CAST(:errors AS TEXT[]), CAST(:nexts AS TIMESTAMP[])) AS v(id, status, error, next) WHERE " + mine
        )
        values = {
            "owner": owner,
            "ids": [o.delivery_id for o in others],
            "statuses": [o.status for o in others],
            "errors": [o.error for o in others],
            "nexts": [_naive_utc(o.next_attempt_at or now) for o in others],
        }
        done += int(conn.execute(statement, values).rowcount or 0)
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


def delivery_health(conn: Connection, now: datetime, since: datetime) -> dict[str, Any]:
    """The outbox at a glance (the status page): rows by status, how many are being retried, how
    many attempts failed since ``since``, and how late the oldest due row is (seconds)."""
    counts = counts_by_status(conn)
    retrying = conn.execute(
        select(func.count()).where(deliveries.c.status == "pending", deliveries.c.attempts > 0)
    ).scalar_one()
    failed_recently = conn.execute(
        select(func.count()).where(
            deliveries.c.last_error.is_not(None),
            deliveries.c.status.in_(("pending", "dead")),
            deliveries.c.created_at >= since,
        )
    ).scalar_one()
    oldest = conn.execute(
        select(func.min(deliveries.c.next_attempt_at)).where(
            deliveries.c.status == "pending", deliveries.c.next_attempt_at <= now
        )
    ).scalar_one()
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return {
        "queued": counts.get("pending", 0) + counts.get("sending", 0),
        "retrying": int(retrying),
        "failed_recently": int(failed_recently),
        "dead": counts.get("dead", 0),
        "sent": counts.get("sent", 0),
        "lag_seconds": max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0,
    }


#: Messages among sent rows: a group's rows count once, every other row once.
_MESSAGES = func.count(func.distinct(deliveries.c.group_key)) + func.count() - func.count(deliveries.c.group_key)


def sent_since(conn: Connection, subscriber_id: int, since: datetime) -> int:
    """Messages sent to a subscriber since ``since`` (the daily alert budget); a group is one."""
    query = select(_MESSAGES).where(
        deliveries.c.subscriber_id == subscriber_id, deliveries.c.status == "sent", deliveries.c.sent_at >= since
    )
    return int(conn.execute(query).scalar_one())


def sent_since_many(conn: Connection, subscriber_ids: Sequence[int], since: datetime) -> dict[int, int]:
    query = (
        select(deliveries.c.subscriber_id, _MESSAGES)
        .where(
            among(conn, deliveries.c.subscriber_id, subscriber_ids),
            deliveries.c.status == "sent",
            deliveries.c.sent_at >= since,
        )
        .group_by(deliveries.c.subscriber_id)
    )
    return {sid: int(n) for sid, n in conn.execute(query)}


def sent_since_by_channel(
    conn: Connection, subscriber_ids: Sequence[int], since: datetime
) -> dict[tuple[int, str], int]:
    """Messages sent per (subscriber, channel) since ``since`` (a subscriber's own daily budget)."""
    query = (
        select(deliveries.c.subscriber_id, endpoints.c.channel, _MESSAGES)
        .join(endpoints, endpoints.c.id == deliveries.c.endpoint_id)
        .where(
            among(conn, deliveries.c.subscriber_id, subscriber_ids),
            deliveries.c.status == "sent",
            deliveries.c.sent_at >= since,
        )
        .group_by(deliveries.c.subscriber_id, endpoints.c.channel)
    )
    return {(sid, channel): int(n) for sid, channel, n in conn.execute(query)}
