"""Plans in the store: synced from config, versioned by their terms.

Changing anything a subscriber pays for (price, delay, caps, channels, masks,
quotas...) creates a new version; subscriptions keep pointing at the version
they were sold, so existing subscribers keep what they signed up for.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select, update

from ..records import Plan
from .sql import upsert_into
from .tables import plans

__all__ = ["load_plans", "plan_from_terms", "plan_terms", "sync_plans"]


# Terms added after plans were first stored: left out while at their default, so upgrading
# signalmint does not turn every stored plan into a new version.
_LATER_TERMS: dict[str, Any] = {"alert_price": 0, "reveal_after": None}


def plan_terms(plan: Plan) -> dict[str, Any]:
    """A plan as plain JSON (everything but id and version)."""
    terms: dict[str, Any] = {}
    for field in dataclasses.fields(plan):
        if field.name in {"id", "version"}:
            continue
        value = getattr(plan, field.name)
        if field.name in _LATER_TERMS and value == _LATER_TERMS[field.name]:
            continue
        if isinstance(value, timedelta):
            value = value.total_seconds()
        elif isinstance(value, frozenset | tuple):
            value = sorted(value) if isinstance(value, frozenset) else list(value)
        terms[field.name] = value
    return terms


def plan_from_terms(plan_id: str, version: int, terms: dict[str, Any]) -> Plan:
    known = {f.name for f in dataclasses.fields(Plan)}
    values = {k: v for k, v in terms.items() if k in known}
    values["delay"] = timedelta(seconds=float(values.get("delay", 0)))
    if values.get("reveal_after") is not None:
        values["reveal_after"] = timedelta(seconds=float(values["reveal_after"]))
    values["automations"] = tuple(values.get("automations", ()))
    if values.get("keys") is not None:
        values["keys"] = tuple(values["keys"])
    values["channels"] = frozenset(values.get("channels", ("web",)))
    values["masked_fields"] = frozenset(values.get("masked_fields", ()))
    return Plan(id=plan_id, version=version, **values)


def _fingerprint(terms: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(terms, sort_keys=True).encode()).hexdigest()


def sync_plans(conn: Connection, configured: Iterable[Plan], now: datetime) -> list[Plan]:
    """Make the configured plans current, creating a version for any whose terms changed.

    A version that another process stored first (web replicas starting at once on one database)
    is read again, not inserted twice: the same terms use it, other terms take the next version."""
    current: list[Plan] = []
    ids = set()
    for plan in configured:
        ids.add(plan.id)
        terms = plan_terms(plan)
        fingerprint = _fingerprint(terms)
        while True:
            latest = conn.execute(
                select(plans.c.version, plans.c.fingerprint)
                .where(plans.c.id == plan.id)
                .order_by(plans.c.version.desc())
                .limit(1)
            ).first()
            if latest is not None and latest.fingerprint == fingerprint:
                version = latest.version
                break
            version = (latest.version + 1) if latest is not None else 1
            values = {"terms": terms, "fingerprint": fingerprint, "current": True, "created_at": now}
            stmt = upsert_into(conn, plans).values(id=plan.id, version=version, **values)
            unless_stored = stmt.on_conflict_do_nothing(index_elements=[plans.c.id, plans.c.version])
            if conn.execute(unless_stored.returning(plans.c.version)).first() is not None:
                break
        conn.execute(update(plans).where(plans.c.id == plan.id, plans.c.version != version).values(current=False))
        conn.execute(update(plans).where(plans.c.id == plan.id, plans.c.version == version).values(current=True))
        current.append(dataclasses.replace(plan, version=version))
    if ids:
        conn.execute(update(plans).where(plans.c.id.not_in(ids)).values(current=False))
    else:
        conn.execute(update(plans).values(current=False))
    return current


def load_plans(conn: Connection, *, current_only: bool = False) -> dict[tuple[str, int], Plan]:
    """Every stored plan version (or only the current ones), by (id, version)."""
    query = select(plans)
    if current_only:
        query = query.where(plans.c.current.is_(True))
    return {(r.id, r.version): plan_from_terms(r.id, r.version, r.terms) for r in conn.execute(query)}
