"""Outcomes beside the signal log: which signals still need one, storing and reading them; and
the observed values that non-market outcomes are measured on."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, delete, func, select

from ..records import Frame, Outcome, Signal, to_datetime
from .signals import row_to_signal
from .sql import upsert_into
from .tables import bars, observations, outcomes, signals

__all__ = [
    "insert_observations",
    "insert_outcomes",
    "list_outcomes",
    "newest_observation",
    "observation_window",
    "outcomes_by_signal",
    "prune_observations",
    "signals_awaiting_outcomes",
]


def signals_awaiting_outcomes(
    conn: Connection, automation: str, horizons: int, limit: int = 500, *, observed: bool = False
) -> list[Signal]:
    """Oldest first, signals of ``automation`` with fewer than ``horizons`` outcomes whose bar
    (``observed``: observation) is still stored.

    A signal older than the automation's oldest stored bar can never get one (retention removed
    its bars) and is not returned again.
    """
    table = observations if observed else bars
    span = conn.execute(
        select(func.min(table.c.time), func.max(table.c.time)).where(table.c.automation == automation)
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
            "volume": o.volume, "baseline": o.baseline if math.isfinite(o.baseline) else None,
            "samples": o.samples, "hit": o.hit, "computed_at": now, "measure": o.measure,
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
    values = {c.name: getattr(row, c.name) for c in outcomes.columns}
    if values["baseline"] is None:
        values["baseline"] = math.nan
    return Outcome(**values)


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


# --- observations: what non-market outcomes are measured on -------------------------------------


def insert_observations(conn: Connection, automation: str, frame: Frame, column: str) -> int:
    """Store the frame's finite values of ``column`` by key and time; one already stored is kept."""
    if len(frame) == 0 or column not in frame.columns:
        return 0
    values = np.asarray(frame.columns[column], dtype=np.float64)
    keep = np.isfinite(values)
    if not keep.any():
        return 0
    times = frame.times[keep].astype("datetime64[us]").astype(np.int64).tolist()
    rows: list[dict[str, Any]] = [
        {"automation": automation, "key": str(key), "time": to_datetime(t * 1000), "value": value}
        for key, t, value in zip(frame.keys[keep].tolist(), times, values[keep].tolist(), strict=True)
    ]
    conn.execute(upsert_into(conn, observations).on_conflict_do_nothing(), rows)
    return len(rows)


def prune_observations(conn: Connection, automation: str, retention: timedelta) -> int:
    """Delete observations older than the automation's newest one minus ``retention``."""
    newest = conn.execute(select(func.max(observations.c.time)).where(observations.c.automation == automation)).scalar()
    if newest is None:
        return 0
    result = conn.execute(
        delete(observations).where(observations.c.automation == automation, observations.c.time < newest - retention)
    )
    return int(result.rowcount or 0)


def newest_observation(conn: Connection, automation: str) -> datetime | None:
    """The time of ``automation``'s newest observation (any key), None without any."""
    found = conn.execute(select(func.max(observations.c.time)).where(observations.c.automation == automation))
    return found.scalar()


def observation_window(
    conn: Connection, automation: str, key: str, at: datetime, *, before: int, after: int, until: datetime | None = None
) -> tuple[npt.NDArray[np.datetime64], npt.NDArray[np.float64]]:
    """Up to ``before`` observations of ``key`` before ``at``, the one at ``at`` and up to ``after``
    past it (``until``: every one up to that time instead), in time order: times and values."""
    base = select(observations.c.time, observations.c.value).where(
        observations.c.automation == automation, observations.c.key == key
    )
    head = conn.execute(base.where(observations.c.time <= at).order_by(observations.c.time.desc()).limit(before + 1))
    later = base.where(observations.c.time > at).order_by(observations.c.time)
    tail = conn.execute(later.limit(after) if until is None else later.where(observations.c.time <= until))
    rows = [*reversed(head.all()), *tail.all()]
    times = np.array([np.datetime64(r.time.replace(tzinfo=None), "ns") for r in rows], dtype="datetime64[ns]")
    return times, np.array([r.value for r in rows], dtype=np.float64)
