"""Engine leases: which engine process runs which automation, and the fence on its commits.

Each automation has one row in ``engine_leases``. An engine *claims* a row with one
conditional ``UPDATE ... WHERE holder IS NULL OR expires_at <= now`` (atomic on SQLite and
PostgreSQL alike: the database serialises the two claimants and the loser's ``WHERE`` no longer
matches), which also moves ``epoch`` on by one. It *renews* its rows while it lives and
*releases* them when it stops or hands them over. Every commit of a tick first runs
:func:`check_fence`, an ``UPDATE`` that matches only while the row still names this holder at
this epoch: it takes the row's write lock for the rest of the transaction, so a claim by another
engine either happens before (and the commit fails with :class:`~signalmint.errors.LeaseLost`,
rolled back) or waits until the commit is done. A paused or zombie engine cannot write.

``engine_nodes`` holds each engine's heartbeat: the engines whose heartbeat has not run out
are the live ones the automations are shared between (``signalmint/engine/leases.py``).

Times are the engines' own clocks (passed in, so tests control them): engines sharing a
database should keep their clocks in sync (NTP) to well within a lease period.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, or_, select, text, update

from ..errors import LeaseLost
from ..records import Fence, Lease
from .sql import upsert_into
from .tables import engine_leases, engine_nodes

__all__ = [
    "Node",
    "beat",
    "check_fence",
    "claim",
    "end_stuck_holder",
    "ensure_leases",
    "expire_holder",
    "forget_node",
    "guard_idle",
    "list_leases",
    "list_nodes",
    "live_engines",
    "prune_nodes",
    "release",
    "renew",
]

Node = tuple[str, str, int, datetime]  # holder, host, pid, expires_at


def guard_idle(conn: Connection, seconds: float) -> None:
    """PostgreSQL: end this session should the transaction sit idle ``seconds`` (its process was
    paused or frozen mid-transaction), so the lease rows it locked are not locked for good."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SET LOCAL idle_in_transaction_session_timeout = {max(int(seconds * 1000), 1)}")


def ensure_leases(conn: Connection, automations: Iterable[str], now: datetime) -> None:
    """A free lease row for every automation that has none yet. The rows there are read first and
    left alone: an insert that met one locked by a frozen holder's commit would wait for it."""
    there = set(conn.execute(select(engine_leases.c.automation)).scalars())
    rows = [{"automation": n, "holder": None, "epoch": 0, "expires_at": now} for n in automations if n not in there]
    if rows:
        conn.execute(upsert_into(conn, engine_leases).on_conflict_do_nothing(), rows)


def _lease(r: Any) -> Lease:
    return Lease(
        automation=r.automation,
        holder=r.holder,
        epoch=r.epoch,
        expires_at=r.expires_at,
        acquired_at=r.acquired_at,
        renewed_at=r.renewed_at,
        committed_at=r.committed_at,
        previous_holder=r.previous_holder,
    )


def list_leases(conn: Connection) -> list[Lease]:
    return [_lease(r) for r in conn.execute(select(engine_leases).order_by(engine_leases.c.automation))]


def claim(conn: Connection, automation: str, holder: str, now: datetime, until: datetime) -> Lease | None:
    """Take ``automation`` if it is free or its lease ran out at ``now``; the lease (with its new
    epoch and the holder it was taken from) or None when someone else holds it."""
    c = engine_leases.c
    # SKIP LOCKED (PostgreSQL; SQLite serialises writers anyway): a row locked by a commit under way,
    # or by a paused engine mid-commit, is not claimable now rather than a wait that stalls this engine
    free = (
        select(c.automation)
        .where(c.automation == automation, or_(c.holder.is_(None), c.expires_at <= now))
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    row = conn.execute(
        update(engine_leases)
        .where(c.automation == free)
        .values(
            holder=holder,
            epoch=c.epoch + 1,
            expires_at=until,
            acquired_at=now,
            renewed_at=now,
            # the old values (a SET's right-hand side reads the row as it was): who held it last
            previous_holder=func.coalesce(c.holder, c.previous_holder),
        )
        .returning(*engine_leases.c)
    ).first()
    return _lease(row) if row is not None else None


def renew(conn: Connection, held: Mapping[str, int], holder: str, now: datetime, until: datetime) -> set[str]:
    """Extend every lease in ``held`` (automation -> epoch) still ours; the automations lost."""
    c = engine_leases.c
    lost = set()
    for automation, epoch in held.items():
        done = conn.execute(
            update(engine_leases)
            .where(c.automation == automation, c.holder == holder, c.epoch == epoch)
            .values(expires_at=until, renewed_at=now)
        )
        if not done.rowcount:
            lost.add(automation)
    return lost


def release(conn: Connection, automation: str, fence: Fence, now: datetime) -> bool:
    """Give ``automation`` up at once (a clean stop or a hand-over); False if it was not ours."""
    c = engine_leases.c
    done = conn.execute(
        update(engine_leases)
        .where(c.automation == automation, c.holder == fence.holder, c.epoch == fence.epoch)
        .values(holder=None, expires_at=now, previous_holder=fence.holder)
    )
    return bool(done.rowcount)


def check_fence(
    conn: Connection, automation: str, fence: Fence, now: datetime, *, idle_timeout: float | None = None
) -> None:
    """First statement of a fenced commit: raises :class:`LeaseLost` (the caller's transaction
    rolls back) unless ``fence`` still holds the lease; otherwise the row stays locked to the end.

    ``idle_timeout`` (seconds, PostgreSQL): should this process stop mid-transaction (paused, a
    zombie), the server ends its session after that long, so the row lock it holds cannot keep
    another engine from taking the automation over."""
    c = engine_leases.c
    if idle_timeout is not None:
        guard_idle(conn, idle_timeout)
    done = conn.execute(
        update(engine_leases)
        .where(c.automation == automation, c.holder == fence.holder, c.epoch == fence.epoch)
        .values(committed_at=now)
    )
    if not done.rowcount:
        raise LeaseLost(
            f"{automation}: the lease of {fence.holder} at epoch {fence.epoch} was taken over; nothing committed",
            automation=automation,
        )


# the backend whose open transaction holds the lease row (its id is the row's xmax) and has sat
# waiting for its client at least :grace seconds: a paused or frozen engine mid-commit
_STUCK = text(
    """
    SELECT a.pid, pg_terminate_backend(a.pid) AS ended
    FROM engine_leases AS e
    JOIN pg_locks AS l ON l.locktype = 'transactionid' AND l.transactionid = e.xmax
                      AND l.mode = 'ExclusiveLock' AND l.granted
    JOIN pg_stat_activity AS a ON a.pid = l.pid
    WHERE e.automation = :automation AND e.expires_at <= :expired
      AND a.pid <> pg_backend_pid() AND a.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND a.wait_event = 'ClientRead' AND a.state_change <= clock_timestamp() - make_interval(secs => :grace)
    """
).bindparams(bindparam("expired", type_=engine_leases.c.expires_at.type))  # stored as the column stores times


def end_stuck_holder(conn: Connection, automation: str, expired: datetime, grace: float) -> int | None:
    """PostgreSQL: end the session of an engine paused mid-commit, so its lease can be taken over.

    A commit's fence keeps the lease row locked to the end of its transaction. Should the engine
    stop mid-transaction (SIGSTOP, a frozen VM), :func:`guard_idle`'s timeout ends its session
    only if the server was waiting for a new command; an engine stopped in the middle of a
    pipeline (psycopg's ``executemany``) leaves the server waiting for the rest of it, with no
    timeout, and the row stays locked for good. This ends that session (its transaction rolls
    back) when the lease ran out at ``expired`` or before and the session has waited for its
    client ``grace`` seconds or more; the pid ended, or None (nothing stuck, or SQLite, whose
    writers hold no row locks)."""
    if conn.dialect.name != "postgresql":
        return None
    row = conn.execute(_STUCK, {"automation": automation, "expired": expired, "grace": grace}).first()
    return int(row.pid) if row is not None and row.ended else None


def expire_holder(conn: Connection, holder: str, now: datetime) -> list[str]:
    """Free every lease of ``holder`` (an engine stopping, or known to be dead) and forget its
    heartbeat: the automations can be claimed at once."""
    c = engine_leases.c
    names = list(conn.execute(select(c.automation).where(c.holder == holder)).scalars())
    conn.execute(
        update(engine_leases).where(c.holder == holder).values(holder=None, expires_at=now, previous_holder=holder)
    )
    forget_node(conn, holder)
    return names


# -- heartbeats ------------------------------------------------------------------------------


def beat(conn: Connection, holder: str, host: str, pid: int, now: datetime, until: datetime) -> None:
    """Record that ``holder`` is alive until ``until``."""
    c = engine_nodes.c
    done = conn.execute(update(engine_nodes).where(c.holder == holder).values(heartbeat_at=now, expires_at=until))
    if not done.rowcount:
        conn.execute(
            engine_nodes.insert().values(
                holder=holder, host=host, pid=pid, started_at=now, heartbeat_at=now, expires_at=until
            )
        )


def forget_node(conn: Connection, holder: str) -> None:
    conn.execute(delete(engine_nodes).where(engine_nodes.c.holder == holder))


def live_engines(conn: Connection, now: datetime) -> int:
    """How many engines' heartbeats have not run out at ``now``."""
    query = select(func.count()).select_from(engine_nodes).where(engine_nodes.c.expires_at > now)
    return int(conn.execute(query).scalar_one())


def prune_nodes(conn: Connection, before: datetime) -> int:
    """Forget heartbeats that ran out before ``before`` (engines long gone)."""
    return int(conn.execute(delete(engine_nodes).where(engine_nodes.c.expires_at < before)).rowcount or 0)


def list_nodes(conn: Connection) -> list[Node]:
    c = engine_nodes.c
    return [(r.holder, r.host, r.pid, r.expires_at) for r in conn.execute(select(engine_nodes).order_by(c.holder))]
