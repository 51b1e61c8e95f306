"""The rows of the operator's weekly business report (:mod:`signalmint.billing.business_report`
computes it), and the mark that a week's report went out.

The mark lives in ``settings_kv`` under ``business_report:YYYY-Www``: inserting it is the claim
(the primary key lets one process win), so no migration is needed for "sent at most once".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, delete, func, literal, select, update

from ..records import Signal
from .health import StalePeriod, _period
from .signals import row_to_signal
from .sql import upsert_into
from .tables import deliveries, endpoints, settings_kv, signals, stale_periods, subscribers

__all__ = [
    "DeliveryCounts",
    "claim_mark",
    "count_signals_between",
    "delivery_counts",
    "drop_mark",
    "read_mark",
    "signups_between",
    "stale_periods_between",
    "top_signals",
    "write_mark",
]

MARK = "business_report:"


@dataclass(frozen=True, slots=True)
class DeliveryCounts:
    """Deliveries created in a period by their status now, by channel, and per day.

    ``daily`` has one (sent, failed) pair per ``edges`` interval: sent by ``sent_at``, failed
    (``dead``) by ``created_at``.
    """

    by_status: dict[str, int]
    by_channel: dict[str, tuple[int, int]]  # channel -> (sent, failed)
    daily: tuple[tuple[int, int], ...]
    retried: int  # sent only after more than one attempt


def _bucket(column: Any, edges: Sequence[datetime]) -> Any:
    """The index of the ``edges`` interval ``column`` falls in (``len(edges) - 1`` past the last)."""
    whens = [(column < edge, literal(i - 1)) for i, edge in enumerate(edges[1:], start=1)]
    return case(*whens, else_=literal(len(edges) - 1))


def delivery_counts(conn: Connection, edges: Sequence[datetime]) -> DeliveryCounts:
    """The outbox's week: ``edges`` are the day boundaries, from the period's start to its end."""
    start, end = edges[0], edges[-1]
    created = (deliveries.c.created_at >= start) & (deliveries.c.created_at < end)
    by_status = {
        str(status): int(n)
        for status, n in conn.execute(
            select(deliveries.c.status, func.count()).where(created).group_by(deliveries.c.status)
        )
    }
    by_channel: dict[str, tuple[int, int]] = {}
    rows = conn.execute(
        select(
            endpoints.c.channel,
            func.sum(case((deliveries.c.status == "sent", 1), else_=0)),
            func.sum(case((deliveries.c.status == "dead", 1), else_=0)),
        )
        .join(endpoints, endpoints.c.id == deliveries.c.endpoint_id)
        .where(created)
        .group_by(endpoints.c.channel)
    )
    for channel, sent, dead in rows:
        by_channel[str(channel)] = (int(sent or 0), int(dead or 0))
    days = len(edges) - 1
    sent_day, dead_day = [0] * days, [0] * days
    sent_bucket = _bucket(deliveries.c.sent_at, edges).label("b")
    for index, n in conn.execute(
        select(sent_bucket, func.count())
        .where(deliveries.c.status == "sent", deliveries.c.sent_at >= start, deliveries.c.sent_at < end)
        .group_by(sent_bucket)
    ):
        sent_day[int(index)] += int(n)
    dead_bucket = _bucket(deliveries.c.created_at, edges).label("b")
    for index, n in conn.execute(
        select(dead_bucket, func.count()).where(created, deliveries.c.status == "dead").group_by(dead_bucket)
    ):
        dead_day[int(index)] += int(n)
    retried = conn.execute(
        select(func.count()).where(created, deliveries.c.status == "sent", deliveries.c.attempts > 1)
    ).scalar_one()
    return DeliveryCounts(by_status, by_channel, tuple(zip(sent_day, dead_day, strict=True)), int(retried))


def stale_periods_between(conn: Connection, start: datetime, end: datetime) -> list[StalePeriod]:
    """Stale periods that overlap ``[start, end)`` (open ones included), oldest first."""
    query = (
        select(stale_periods)
        .where(
            stale_periods.c.since < end,
            (stale_periods.c.ended_at.is_(None)) | (stale_periods.c.ended_at > start),
        )
        .order_by(stale_periods.c.since, stale_periods.c.id)
    )
    return [_period(row) for row in conn.execute(query)]


def top_signals(conn: Connection, automation: str, start: datetime, end: datetime, limit: int) -> list[Signal]:
    """The automation's highest-scoring signals whose bar time falls in ``[start, end)`` (late ones
    are recorded but were never alerted, so they are left out)."""
    query = (
        select(signals)
        .where(
            signals.c.automation == automation,
            signals.c.time >= start,
            signals.c.time < end,
            signals.c.late.is_(False),
        )
        .order_by(signals.c.score.desc(), signals.c.time, signals.c.id)
        .limit(limit)
    )
    return [row_to_signal(row) for row in conn.execute(query)]


def count_signals_between(conn: Connection, automation: str, start: datetime, end: datetime) -> int:
    """Signals of ``automation`` whose bar time falls in ``[start, end)``, late ones included."""
    query = select(func.count()).where(
        signals.c.automation == automation, signals.c.time >= start, signals.c.time < end
    )
    return int(conn.execute(query).scalar_one())


def signups_between(conn: Connection, start: datetime, end: datetime) -> int:
    """Accounts created in ``[start, end)``, paying or not."""
    query = select(func.count()).where(subscribers.c.created_at >= start, subscribers.c.created_at < end)
    return int(conn.execute(query).scalar_one())


# --- the "sent" mark --------------------------------------------------------------------------------


def claim_mark(conn: Connection, week: str, value: dict[str, Any]) -> bool:
    """Mark ``week``'s report as being sent; False when another process (or run) marked it first."""
    insert = upsert_into(conn, settings_kv)
    done = conn.execute(
        insert.values(name=MARK + week, value=json.dumps(value, sort_keys=True))
        .on_conflict_do_nothing()
        .returning(settings_kv.c.name)
    )
    return done.first() is not None


def write_mark(conn: Connection, week: str, value: dict[str, Any]) -> None:
    """Set ``week``'s mark (after sending: when, the Message-ID, the counters of that moment)."""
    text = json.dumps(value, sort_keys=True)
    if not conn.execute(update(settings_kv).where(settings_kv.c.name == MARK + week).values(value=text)).rowcount:
        conn.execute(settings_kv.insert().values(name=MARK + week, value=text))


def read_mark(conn: Connection, week: str) -> dict[str, Any] | None:
    row = conn.execute(select(settings_kv.c.value).where(settings_kv.c.name == MARK + week)).first()
    if row is None:
        return None
    found = json.loads(row.value)
    return found if isinstance(found, dict) else None


def drop_mark(conn: Connection, week: str) -> None:
    """Forget a claim whose email the server refused (nothing went out, so it may be tried again)."""
    conn.execute(delete(settings_kv).where(settings_kv.c.name == MARK + week))
