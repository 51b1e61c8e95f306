"""Outcomes beside the signal log: which signals still need one, storing and reading them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import Connection, func, select

from ..records import Outcome, Signal
from .signals import row_to_signal
from .tables import bars, outcomes, signals

__all__ = ["insert_outcomes", "list_outcomes", "outcomes_by_signal", "signals_awaiting_outcomes"]


def signals_awaiting_outcomes(conn: Connection, automation: str, horizons: int, limit: int = 500) -> list[Signal]:
    """Oldest first, signals of ``automation`` with fewer than ``horizons`` outcomes whose bar is still stored.

    A signal older than the automation's oldest stored bar can never get one (retention removed
    its bars) and is not returned again.
    """
    span = conn.execute(
        select(func.min(bars.c.time), func.max(bars.c.time)).where(bars.c.automation == automation)
    ).one()
    if span[0] is None:
        return []
    done = (
        select(outcomes.c.signal_id)
        .where(outcomes.c.automation == automation)
        .group_by(outcomes.c.signal_id)
        .having(func.count() >= horizons)
    )
    query = (
        select(signals)
        .where(
            signals.c.automation == automation,
            signals.c.time >= span[0],
            signals.c.time < span[1],  # a horizon of at least one bar needs a newer bar
            signals.c.id.not_in(done),
        )
        .order_by(signals.c.id)
        .limit(limit)
    )
    return [row_to_signal(row) for row in conn.execute(query)]


def insert_outcomes(conn: Connection, rows: Iterable[Outcome], now: datetime) -> int:
    """Store outcomes; one already stored (same signal and horizon) is kept as it is."""
    values = [
        {
            "signal_id": o.signal_id, "horizon": o.horizon, "automation": o.automation, "key": o.key,
            "time": o.time, "end_time": o.end_time, "entry": o.entry, "exit": o.exit, "ret": o.ret,
            "volume": o.volume, "baseline": o.baseline, "samples": o.samples, "hit": o.hit, "computed_at": now,
        }
        for o in rows
    ]  # fmt: skip
    if not values:
        return 0
    have = {
        (r.signal_id, r.horizon)
        for r in conn.execute(
            select(outcomes.c.signal_id, outcomes.c.horizon).where(
                outcomes.c.signal_id.in_({v["signal_id"] for v in values})
            )
        )
    }
    fresh = [v for v in values if (v["signal_id"], v["horizon"]) not in have]
    if fresh:
        conn.execute(outcomes.insert(), fresh)
    return len(fresh)


def _outcome(row: object) -> Outcome:
    return Outcome(**{c.name: getattr(row, c.name) for c in outcomes.columns})


def outcomes_by_signal(conn: Connection, signal_ids: Sequence[int]) -> dict[int, list[Outcome]]:
    """The stored outcomes of each signal in ``signal_ids``, shortest horizon first."""
    out: dict[int, list[Outcome]] = {}
    ids = sorted(set(signal_ids))
    for start in range(0, len(ids), 900):  # SQLite's bound-parameter limit
        query = select(outcomes).where(outcomes.c.signal_id.in_(ids[start : start + 900]))
        for row in conn.execute(query.order_by(outcomes.c.signal_id, outcomes.c.horizon)):
            out.setdefault(row.signal_id, []).append(_outcome(row))
    return out


def list_outcomes(conn: Connection, automation: str, *, key: str | None = None) -> list[Outcome]:
    """Every stored outcome of ``automation`` (of one ``key``), oldest signal first."""
    query = select(outcomes).where(outcomes.c.automation == automation)
    if key is not None:
        query = query.where(outcomes.c.key == key)
    return [_outcome(row) for row in conn.execute(query.order_by(outcomes.c.time, outcomes.c.horizon))]
