"""Stale periods of automations: when their data stopped and when it came back.

The engine opens a period when an automation goes stale and closes it on recovery; the
pages read the open ones (the "data delayed since" banner) and reports read them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select, update

from .tables import stale_periods

__all__ = ["StalePeriod", "close_stale_period", "list_stale_periods", "open_stale_period", "open_stale_periods"]


@dataclass(frozen=True, slots=True)
class StalePeriod:
    id: int
    automation: str
    since: datetime  # the last bar's arrival: data is delayed since then
    detected_at: datetime
    ended_at: datetime | None
    last_bar: datetime | None  # the newest bar's own time when it went stale


def _period(row: object) -> StalePeriod:
    m = row._mapping  # type: ignore[attr-defined]
    return StalePeriod(m["id"], m["automation"], m["since"], m["detected_at"], m["ended_at"], m["last_bar"])


def open_stale_period(
    conn: Connection, automation: str, since: datetime, detected_at: datetime, last_bar: datetime | None
) -> int:
    """Record that ``automation`` went stale (its data stopped at ``since``); the period's id."""
    result = conn.execute(
        stale_periods.insert().values(automation=automation, since=since, detected_at=detected_at, last_bar=last_bar)
    )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def close_stale_period(conn: Connection, automation: str, ended_at: datetime) -> int:
    """End every open period of ``automation`` (normally one); how many were closed."""
    result = conn.execute(
        update(stale_periods)
        .where(stale_periods.c.automation == automation, stale_periods.c.ended_at.is_(None))
        .values(ended_at=ended_at)
    )
    return int(result.rowcount)


def open_stale_periods(conn: Connection, automations: Sequence[str] | None = None) -> dict[str, StalePeriod]:
    """The automations stale right now, each with its oldest open period."""
    query = select(stale_periods).where(stale_periods.c.ended_at.is_(None)).order_by(stale_periods.c.since.desc())
    if automations is not None:
        query = query.where(stale_periods.c.automation.in_(list(automations)))
    return {p.automation: p for p in map(_period, conn.execute(query))}


def list_stale_periods(conn: Connection, automation: str | None = None, limit: int = 100) -> list[StalePeriod]:
    """Stale periods, newest first (for reports)."""
    query = select(stale_periods).order_by(stale_periods.c.since.desc(), stale_periods.c.id.desc()).limit(limit)
    if automation is not None:
        query = query.where(stale_periods.c.automation == automation)
    return [_period(row) for row in conn.execute(query)]
