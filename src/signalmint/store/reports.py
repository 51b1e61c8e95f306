"""Premium reports: stored once per (automation, report, period); purchases with credits; the reads
a report's contents need (signals of a period, price moves).

:func:`store_report` inserts with ``ON CONFLICT DO NOTHING`` on the unique
``(automation, name, period_key)``, so two renderings of one period (a restart after a crash,
two engines) leave exactly one row, and the caller learns whether its own was the one kept.
:func:`signalmint.billing.credits.buy_report` debits the credits (ledger reason ``report``, ref
``report:ID:SUBSCRIBER``) and records the purchase (:func:`record_purchase`) in the same
transaction: a double click or a retry pays once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Connection, and_, func, select

from ..records import Report, ReportSignal, Signal
from .signals import row_to_signal
from .sql import upsert_into
from .tables import bars, report_purchases, reports, signals

__all__ = [
    "Purchase",
    "find_report",
    "get_report",
    "list_reports",
    "owns_report",
    "period_keys",
    "price_moves",
    "purchased_ids",
    "record_purchase",
    "report_ref",
    "signals_between",
    "store_report",
]

Purchase = Literal["bought", "owned", "insufficient"]
_LIGHT = [c for c in reports.c if c.name not in {"html", "email_html", "pdf"}]


def _top_json(top: Iterable[ReportSignal]) -> list[dict[str, Any]]:
    return [
        {"signal_id": s.signal_id, "key": s.key, "time": s.time.isoformat(), "kind": s.kind, "score": s.score}
        for s in top
    ]


def _top(value: Any) -> tuple[ReportSignal, ...]:
    return tuple(
        ReportSignal(
            signal_id=int(v["signal_id"]),
            key=str(v["key"]),
            time=datetime.fromisoformat(v["time"]).astimezone(UTC),
            kind=str(v["kind"]),
            score=float(v["score"]),
        )
        for v in value or ()
    )


def _report(row: Any, content: bool) -> Report:
    m = row._mapping
    return Report(
        id=m["id"],
        automation=m["automation"],
        name=m["name"],
        title=m["title"],
        period_key=m["period_key"],
        period_start=m["period_start"],
        period_end=m["period_end"],
        created_at=m["created_at"],
        signal_count=m["signal_count"],
        top=_top(m["top"]),
        pdf_size=m["pdf_size"],
        html=m["html"] if content else "",
        email_html=m["email_html"] if content else "",
        pdf=bytes(m["pdf"]) if content else b"",
    )


def store_report(conn: Connection, report: Report) -> tuple[Report, bool]:
    """Store a rendered report unless its period is stored already: (the stored one, whether ours)."""
    inserted = conn.execute(
        upsert_into(conn, reports)
        .values(
            automation=report.automation,
            name=report.name,
            period_key=report.period_key,
            period_start=report.period_start,
            period_end=report.period_end,
            title=report.title,
            created_at=report.created_at,
            signal_count=report.signal_count,
            top=_top_json(report.top),
            html=report.html,
            email_html=report.email_html,
            pdf=report.pdf,
            pdf_size=len(report.pdf),
        )
        .on_conflict_do_nothing()
        .returning(reports.c.id)
    ).scalar()
    row = conn.execute(
        select(reports).where(
            reports.c.automation == report.automation,
            reports.c.name == report.name,
            reports.c.period_key == report.period_key,
        )
    ).one()
    return _report(row, True), inserted is not None


def period_keys(conn: Connection, automation: str, name: str) -> set[str]:
    """The periods of one report definition already stored."""
    query = select(reports.c.period_key).where(reports.c.automation == automation, reports.c.name == name)
    return {str(k) for k in conn.execute(query).scalars()}


def get_report(conn: Connection, report_id: int, *, content: bool = True) -> Report | None:
    row = conn.execute(select(*(reports.c if content else _LIGHT)).where(reports.c.id == report_id)).first()
    return _report(row, content) if row is not None else None


def find_report(
    conn: Connection, automation: str, name: str, period_key: str, *, content: bool = True
) -> Report | None:
    """One stored report by what names it in URLs: automation, report name, period key."""
    query = select(*(reports.c if content else _LIGHT)).where(
        reports.c.automation == automation, reports.c.name == name, reports.c.period_key == period_key
    )
    row = conn.execute(query).first()
    return _report(row, content) if row is not None else None


def list_reports(
    conn: Connection,
    automation: str | None = None,
    *,
    name: str | None = None,
    ended_after: datetime | None = None,
    ids: Sequence[int] | None = None,
    limit: int = 200,
) -> list[Report]:
    """Stored reports without their content, newest period first.

    ``ended_after`` gives those whose period ended after it (what a delivery step has not
    handled yet); ``ids`` only those reports."""
    query = select(*_LIGHT).order_by(reports.c.period_end.desc(), reports.c.id.desc()).limit(limit)
    if automation is not None:
        query = query.where(reports.c.automation == automation)
    if name is not None:
        query = query.where(reports.c.name == name)
    if ended_after is not None:
        query = query.where(reports.c.period_end > ended_after)
    if ids is not None:
        query = query.where(reports.c.id.in_(list(ids)[:900]))
    return [_report(row, False) for row in conn.execute(query)]


# --- purchases ---------------------------------------------------------------------------------


def report_ref(report_id: int, subscriber_id: int) -> str:
    """The ledger ``ref`` of one purchase: the same report bought again by the same person is a replay."""
    return f"report:{report_id}:{subscriber_id}"


def purchased_ids(conn: Connection, subscriber_id: int) -> set[int]:
    query = select(report_purchases.c.report_id).where(report_purchases.c.subscriber_id == subscriber_id)
    return {int(i) for i in conn.execute(query).scalars()}


def owns_report(conn: Connection, report_id: int, subscriber_id: int) -> bool:
    query = select(report_purchases.c.report_id).where(
        report_purchases.c.report_id == report_id, report_purchases.c.subscriber_id == subscriber_id
    )
    return conn.execute(query).first() is not None


def record_purchase(conn: Connection, report_id: int, subscriber_id: int, micros: int, now: datetime) -> bool:
    """Record a paid purchase; False when one was recorded before (a concurrent buyer's stands)."""
    done = conn.execute(
        upsert_into(conn, report_purchases)
        .values(report_id=report_id, subscriber_id=subscriber_id, price=micros, created_at=now)
        .on_conflict_do_nothing()
        .returning(report_purchases.c.report_id)
    ).scalar()
    return done is not None


# --- what a report reads -------------------------------------------------------------------------


def signals_between(conn: Connection, automation: str, start: datetime, end: datetime, limit: int) -> list[Signal]:
    """The signals of ``automation`` whose time lies in ``[start, end)``, oldest first (late ones included)."""
    query = (
        select(signals)
        .where(signals.c.automation == automation, signals.c.time >= start, signals.c.time < end)
        .order_by(signals.c.time, signals.c.id)
        .limit(limit)
    )
    return [row_to_signal(row) for row in conn.execute(query)]


def price_moves(conn: Connection, automation: str, start: datetime, end: datetime) -> dict[str, tuple[float, float]]:
    """Per key, the close of its first and of its last stored bar in ``[start, end)``."""
    inside = and_(bars.c.automation == automation, bars.c.time >= start, bars.c.time < end)
    span = (
        select(bars.c.key, func.min(bars.c.time).label("t0"), func.max(bars.c.time).label("t1"))
        .where(inside)
        .group_by(bars.c.key)
        .subquery()
    )
    first, last = bars.alias("b0"), bars.alias("b1")
    query = (
        select(span.c.key, first.c.close, last.c.close)
        .join(first, and_(first.c.automation == automation, first.c.key == span.c.key, first.c.time == span.c.t0))
        .join(last, and_(last.c.automation == automation, last.c.key == span.c.key, last.c.time == span.c.t1))
    )
    return {str(k): (float(a), float(b)) for k, a, b in conn.execute(query)}
