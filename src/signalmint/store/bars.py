"""Raw bars, kept for charts for as long as an automation's retention says."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Connection, delete, func, select

from ..records import BAR_COLUMNS, Frame, to_datetime
from .sql import upsert_into
from .tables import bars

__all__ = ["bar_window", "bars_until", "insert_bars", "prune_bars"]

#: ``insert_bars`` on SQLite: a bar already stored (same automation, key, time) is kept as is.
SQLITE_INSERT = (
    f"INSERT OR IGNORE INTO {bars.name} (automation, key, time, {', '.join(BAR_COLUMNS)}) "
    f"VALUES (?, ?, ?, {', '.join('?' for _ in BAR_COLUMNS)})"
)


def insert_bars(conn: Connection, automation: str, frame: Frame) -> int:
    """Store a frame's bars; a bar already stored (same automation, key, time) is kept as is.

    A frame without the OHLCV columns (shop items, feed entries, metrics) stores nothing."""
    if len(frame) == 0 or not all(name in frame.columns for name in BAR_COLUMNS):
        return 0
    if conn.dialect.name == "sqlite":  # the driver's executemany: a tick of 1,000 bars in ~2 ms, not ~20
        stamps = np.datetime_as_string(frame.times.astype("datetime64[us]"), unit="us")
        rows_sqlite = zip(
            itertools.repeat(automation),
            frame.keys.tolist(),
            np.char.replace(stamps, "T", " ").tolist(),  # SQLAlchemy's SQLite DATETIME text, exactly
            *(frame.columns[name].tolist() for name in BAR_COLUMNS),
            strict=False,
        )
        conn.exec_driver_sql(SQLITE_INSERT, list(rows_sqlite))
        return len(frame)
    columns = {name: frame.columns[name].tolist() for name in BAR_COLUMNS}
    times = frame.times.astype("datetime64[us]").astype(np.int64).tolist()
    rows: list[dict[str, Any]] = [
        {
            "automation": automation,
            "key": str(key),
            "time": to_datetime(t * 1000),
            **{name: columns[name][i] for name in BAR_COLUMNS},
        }
        for i, (key, t) in enumerate(zip(frame.keys.tolist(), times, strict=True))
    ]
    conn.execute(upsert_into(conn, bars).on_conflict_do_nothing(), rows)
    return len(rows)


def prune_bars(conn: Connection, automation: str, retention: timedelta) -> int:
    """Delete bars older than the automation's newest bar minus ``retention``."""
    newest = conn.execute(select(func.max(bars.c.time)).where(bars.c.automation == automation)).scalar()
    if newest is None:
        return 0
    result = conn.execute(delete(bars).where(bars.c.automation == automation, bars.c.time < newest - retention))
    return int(result.rowcount or 0)


def bar_window(
    conn: Connection, automation: str, key: str, at: datetime, *, before: int = 90, after: int = 15
) -> dict[str, np.ndarray]:
    """Up to ``before`` bars up to and including ``at`` and ``after`` bars past it, in time order."""
    cols = [bars.c.time, *(bars.c[name] for name in BAR_COLUMNS)]
    base = select(*cols).where(bars.c.automation == automation, bars.c.key == key)
    head = conn.execute(base.where(bars.c.time <= at).order_by(bars.c.time.desc()).limit(before + 1)).all()
    tail = conn.execute(base.where(bars.c.time > at).order_by(bars.c.time).limit(after)).all()
    rows = [*reversed(head), *tail]
    out: dict[str, np.ndarray] = {
        "time": np.array([np.datetime64(r.time.replace(tzinfo=None), "ns") for r in rows], dtype="datetime64[ns]")
    }
    for name in BAR_COLUMNS:
        out[name] = np.array([getattr(r, name) for r in rows], dtype=np.float64)
    return out


def count_bars(conn: Connection, automation: str) -> int:
    return int(conn.execute(select(func.count()).select_from(bars).where(bars.c.automation == automation)).scalar_one())


def bars_until(conn: Connection, automation: str, until: datetime) -> Frame:
    """Every stored bar of ``automation`` before ``until``, as one frame in time order (then key).

    For backtests: it only reads."""
    cols = [bars.c.key, bars.c.time, *(bars.c[name] for name in BAR_COLUMNS)]
    query = select(*cols).where(bars.c.automation == automation, bars.c.time < until).order_by(bars.c.time, bars.c.key)
    rows = conn.execute(query).all()
    if not rows:
        return Frame.empty()
    times = [np.datetime64(r.time.replace(tzinfo=None), "ns") for r in rows]
    return Frame(
        keys=np.array([r.key for r in rows], dtype=str),
        times=np.array(times, dtype="datetime64[ns]"),
        columns={name: np.array([getattr(r, name) for r in rows], dtype=np.float64) for name in BAR_COLUMNS},
    )
