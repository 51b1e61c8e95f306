"""Token buckets shared by every web replica: one atomic statement per check (PostgreSQL).

The ``rate_buckets`` table is UNLOGGED on PostgreSQL (no WAL: a crash empties it, which
refills every bucket, the same as a restart of a one-process limiter) and its rows are
only ever touched by :data:`TAKE`: ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``, which
locks the one row, refills it by the time elapsed on the *database's* clock (one clock for
every host), takes ``cost`` tokens if it holds them and says whether it did. A refused
check takes nothing. Rows whose bucket is full again are removed by :data:`PRUNE`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

__all__ = ["PRUNE", "TAKE", "prune_buckets", "take_params", "take_tokens"]

_NOW = "extract(epoch from clock_timestamp())"
# The bucket refilled up to now: ``b`` is the stored row, ``excluded.at`` now.
_REFILLED = "least(%(burst)s, b.tokens + greatest(0, excluded.at - b.at) * %(rate)s)"
_LEFT = f"""CASE WHEN {_REFILLED} + 1e-9 >= %(cost)s THEN greatest(0, {_REFILLED} - %(cost)s) ELSE {_REFILLED} END"""

TAKE = f"""
INSERT INTO rate_buckets AS b (key, tokens, at, allowed, full_at)
VALUES (%(key)s, %(burst)s - %(cost)s, {_NOW}, true, {_NOW} + %(cost)s / %(rate)s)
ON CONFLICT (key) DO UPDATE SET
    tokens = {_LEFT},
    allowed = {_REFILLED} + 1e-9 >= %(cost)s,
    at = greatest(b.at, excluded.at),
    full_at = greatest(b.at, excluded.at) + (%(burst)s - ({_LEFT})) / %(rate)s
RETURNING tokens, allowed
"""

PRUNE = f"DELETE FROM rate_buckets WHERE full_at < {_NOW}"


def take_params(key: str, rate: float, burst: int, cost: float) -> dict[str, Any]:
    """The parameters of :data:`TAKE` (floats, so the server does float arithmetic)."""
    return {"key": key[:200], "rate": float(rate), "burst": float(burst), "cost": float(cost)}


def take_tokens(conn: Connection, key: str, rate: float, burst: int, cost: float) -> tuple[float, bool]:
    """Take ``cost`` tokens from ``key``'s shared bucket if it holds them: (tokens left, allowed)."""
    row = conn.exec_driver_sql(TAKE, take_params(key, rate, burst, cost)).one()
    return float(row[0]), bool(row[1])


def prune_buckets(conn: Connection) -> int:
    """Remove the buckets that are full again (they read the same as no row); how many."""
    return int(conn.exec_driver_sql(PRUNE).rowcount or 0)
