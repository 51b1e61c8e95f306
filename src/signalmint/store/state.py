"""Automations as configured, and each automation's engine checkpoint."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, update

from ..records import Automation
from .sql import upsert_into
from .tables import automation_state, automations

__all__ = [
    "Checkpoint",
    "list_automations",
    "load_checkpoint",
    "save_checkpoint",
    "sync_automations",
]

#: The PostgreSQL advisory lock key ``sync_automations`` holds while it writes ("sgnlauto").
SYNC_LOCK = int.from_bytes(b"sgnlauto", "big") & 0x7FFF_FFFF_FFFF_FFFF


def sync_automations(conn: Connection, configured: Iterable[Automation], now: datetime) -> None:
    """Insert or update the automations named in config; others stay (their history too) but disabled.

    One upsert per automation, so engines starting at once on one database both succeed. On
    PostgreSQL concurrent syncs take turns (a transaction-scoped advisory lock): engines with
    other automations would otherwise lock the same rows in opposite orders and deadlock."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(SYNC_LOCK)))
    names = set()
    for a in configured:
        names.add(a.name)
        values = {
            "title": a.title,
            "description": a.description,
            "source_kind": a.source_kind,
            "detector_kind": a.detector_kind,
            "detector_options": dict(a.detector_options),
            "enabled": True,
            "updated_at": now,
        }
        stmt = upsert_into(conn, automations).values(name=a.name, created_at=now, **values)
        conn.execute(stmt.on_conflict_do_update(index_elements=[automations.c.name], set_=values))
    conn.execute(update(automations).where(automations.c.name.not_in(names)).values(enabled=False))


def list_automations(conn: Connection, *, enabled_only: bool = True) -> list[Automation]:
    query = select(automations).order_by(automations.c.created_at, automations.c.name)
    if enabled_only:
        query = query.where(automations.c.enabled.is_(True))
    return [
        Automation(
            name=r.name,
            title=r.title,
            description=r.description,
            source_kind=r.source_kind,
            detector_kind=r.detector_kind,
            detector_options=r.detector_options,
        )
        for r in conn.execute(query)
    ]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where an automation's engine stopped: the last committed bar time and the detector's state."""

    automation: str
    cursor: datetime | None = None
    detector_state: bytes | None = None
    bars_total: int = 0
    keys: int = 0
    rejected: Mapping[str, int] = field(default_factory=dict)
    updated_at: datetime | None = None


def load_checkpoint(conn: Connection, automation: str) -> Checkpoint:
    row = conn.execute(select(automation_state).where(automation_state.c.automation == automation)).first()
    if row is None:
        return Checkpoint(automation)
    return Checkpoint(
        automation=automation,
        cursor=row.cursor,
        detector_state=row.detector_state,
        bars_total=row.bars_total,
        keys=row.keys,
        rejected=row.rejected or {},
        updated_at=row.updated_at,
    )


def save_checkpoint(conn: Connection, checkpoint: Checkpoint, now: datetime) -> None:
    values: dict[str, Any] = {
        "cursor": checkpoint.cursor,
        "detector_state": checkpoint.detector_state,
        "bars_total": checkpoint.bars_total,
        "keys": checkpoint.keys,
        "rejected": dict(checkpoint.rejected),
        "updated_at": now,
    }
    result = conn.execute(
        update(automation_state).where(automation_state.c.automation == checkpoint.automation).values(**values)
    )
    if not result.rowcount:
        conn.execute(automation_state.insert().values(automation=checkpoint.automation, **values))


def all_checkpoints(conn: Connection) -> dict[str, Checkpoint]:
    return {name: load_checkpoint(conn, name) for name in conn.execute(select(automation_state.c.automation)).scalars()}
