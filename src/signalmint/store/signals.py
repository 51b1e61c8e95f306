"""The append-only signal log and its tamper-evident hash chain.

Each signal of an automation carries ``seq`` (1, 2, 3...) and ``prev_hash``,
the hash of the signal before it; ``hash`` covers every field a subscriber
relies on. Editing, deleting or reordering any stored signal breaks the chain
from that point on, which :func:`verify_chain` reports. New signals use hash
scheme 2 (a salted commitment to the numbers, see :mod:`signalmint.chain.hashing`);
signals stored before it keep scheme 1 and verify as they always did.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, false, func, or_, select

from ..chain.hashing import ChainReport, chain_record, commitment, hash_v1, hash_v2, new_salt, verify_records
from ..records import Automation, Signal
from .notify import notify_signals
from .sql import among
from .tables import automations, signals

__all__ = [
    "ChainReport",
    "Scope",
    "append_signals",
    "chain_signals",
    "clean_payload",
    "count_signals",
    "get_signal",
    "latest_signals",
    "list_signals",
    "release_candidates",
    "signal_hash",
    "signals_after",
    "signals_by_id",
    "signals_with_automations",
    "verify_chain",
]


def clean_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-safe payload: numpy scalars become Python numbers, NaN and inf become None.

    >>> clean_payload({"z": float("inf"), "ratio": 3.5})
    {'z': None, 'ratio': 3.5}
    """
    out: dict[str, Any] = {}
    for name, value in payload.items():
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[name] = value
    return out


def signal_hash(signal: Signal, seq: int, prev_hash: str) -> str:
    """The signal's hash in its scheme: 1 over its fields, 2 over its commitment (from its salt); ``late`` in both."""
    time, automation = signal.time.isoformat(), signal.automation
    if signal.scheme >= 2:
        committed = commitment(signal.salt, signal.score, signal.payload)
        return hash_v2(automation, seq, signal.key, time, signal.kind, committed, prev_hash, signal.late)
    return hash_v1(automation, seq, signal.key, time, signal.kind, signal.score, signal.payload, prev_hash, signal.late)


def row_to_signal(row: Row[Any]) -> Signal:
    m = row._mapping
    return Signal(
        id=m["id"],
        automation=m["automation"],
        seq=m["seq"],
        key=m["key"],
        time=m["time"],
        kind=m["kind"],
        score=m["score"],
        payload=m["payload"],
        prev_hash=m["prev_hash"],
        hash=m["hash"],
        created_at=m["created_at"],
        late=bool(m["late"]),
        scheme=m["scheme"],
        prev_scheme=m["prev_scheme"],
        salt=m["salt"] or "",
        commitment=m["commitment"] or "",
    )


def append_signals(
    conn: Connection, automation: str, new: Iterable[Signal], now: datetime, *, scheme: int = 2
) -> list[Signal]:
    """Append signals to an automation's chain, skipping any already stored.

    The idempotency key is (automation, key, time, kind): feeding the same bars
    twice (a restart from the last checkpoint) adds nothing. Must run inside
    the writer's transaction; returns the stored signals with ids and hashes.
    ``scheme=1`` writes the old scheme (tests of chains stored before scheme 2).
    """
    candidates: dict[tuple[str, datetime, str], Signal] = {}
    for signal in sorted(new, key=lambda s: (s.time, s.key)):
        candidates.setdefault((signal.key, signal.time, signal.kind), signal)
    if not candidates:
        return []
    times = sorted({t for _, t, _ in candidates})
    existing = conn.execute(
        select(signals.c.key, signals.c.time, signals.c.kind).where(
            signals.c.automation == automation,
            signals.c.time >= times[0],
            signals.c.time <= times[-1],
        )
    )
    for key, time, kind in existing:
        candidates.pop((key, time, kind), None)
    if not candidates:
        return []
    last = conn.execute(
        select(signals.c.seq, signals.c.hash, signals.c.scheme)
        .where(signals.c.automation == automation)
        .order_by(signals.c.seq.desc())
        .limit(1)
    ).first()
    seq, prev, prev_scheme = (last.seq, last.hash, last.scheme) if last else (0, "", 0)
    rows: list[dict[str, Any]] = []
    stored: list[Signal] = []
    for signal in candidates.values():
        seq += 1
        payload = clean_payload(signal.payload)
        salt = new_salt() if scheme >= 2 else ""
        signal = replace(
            signal,
            automation=automation,
            payload=payload,
            seq=seq,
            prev_hash=prev,
            created_at=now,
            scheme=scheme,
            prev_scheme=prev_scheme,
            salt=salt,
            commitment=commitment(salt, signal.score, payload) if scheme >= 2 else "",
        )
        digest = signal_hash(signal, seq, prev)
        signal = replace(signal, hash=digest)
        rows.append(
            {
                "automation": automation,
                "seq": seq,
                "key": signal.key,
                "time": signal.time,
                "kind": signal.kind,
                "score": float(signal.score),
                "payload": payload,
                "prev_hash": prev,
                "hash": digest,
                "created_at": now,
                "late": signal.late,
                "scheme": scheme,
                "prev_scheme": prev_scheme,
                "salt": salt or None,
                "commitment": signal.commitment or None,
            }
        )
        stored.append(signal)
        prev, prev_scheme = digest, scheme
    ids = list(conn.execute(signals.insert().returning(signals.c.id, sort_by_parameter_order=True), rows).scalars())
    notify_signals(conn, automation, max(ids))  # PostgreSQL: web replicas hear of it on commit
    return [replace(s, id=i) for s, i in zip(stored, ids, strict=True)]


def get_signal(conn: Connection, signal_id: int) -> Signal | None:
    row = conn.execute(select(signals).where(signals.c.id == signal_id)).first()
    return row_to_signal(row) if row else None


def signals_by_id(conn: Connection, ids: Iterable[int]) -> dict[int, Signal]:
    """The stored signals among ``ids``, by id (ids not stored are left out)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    return {r.id: row_to_signal(r) for r in conn.execute(select(signals).where(signals.c.id.in_(wanted)))}


#: The automation's columns beside a signal's (:func:`signals_with_automations`), prefixed.
_AUTOMATION = [c.label(f"automation_{c.name}") for c in automations.c]


def signals_with_automations(conn: Connection, ids: Iterable[int]) -> tuple[dict[int, Signal], dict[str, Automation]]:
    """:func:`signals_by_id`, and the automation of each signal (one query): by name, those stored."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}, {}
    query = (
        select(signals, *_AUTOMATION)
        .select_from(signals.outerjoin(automations, automations.c.name == signals.c.automation))
        .where(among(conn, signals.c.id, wanted))
    )
    found: dict[int, Signal] = {}
    owners: dict[str, Automation] = {}
    for r in conn.execute(query):
        found[r.id] = row_to_signal(r)
        m = r._mapping
        if m["automation_name"] is not None and m["automation_name"] not in owners:
            owners[m["automation_name"]] = Automation(
                m["automation_name"], m["automation_title"], m["automation_description"],
                m["automation_source_kind"], m["automation_detector_kind"], m["automation_detector_options"] or {},
            )  # fmt: skip
    return found, owners


def release_candidates(
    conn: Connection,
    automation: str,
    *,
    created_by: datetime,
    time_by: datetime,
    since: tuple[datetime, datetime],
    keys: Iterable[str] | None,
    limit: int,
    exclude: Iterable[int] = (),
) -> list[Signal]:
    """Signals of ``automation`` a live stream may release next, by id: created by ``created_by``,
    stamped by ``time_by``, and created or stamped after ``since`` = (created, stamped) (either
    will do); only ``keys`` when given, never the ids in ``exclude`` (already sent). The caller
    works out each one's release time."""
    created_after, time_after = since
    query = select(signals).where(
        signals.c.automation == automation,
        signals.c.created_at <= created_by,
        signals.c.time <= time_by,
        or_(signals.c.created_at >= created_after, signals.c.time >= time_after),
    )
    skip = sorted(set(exclude))
    if skip:
        query = query.where(signals.c.id.not_in(skip))
    if keys is not None:
        query = query.where(signals.c.key.in_(sorted(keys)))
    return [row_to_signal(r) for r in conn.execute(query.order_by(signals.c.id).limit(limit))]


@dataclass(frozen=True, slots=True)
class Scope:
    """Part of what a viewer may see: one automation's signals up to ``until``, on ``keys`` (None: all)."""

    automation: str
    until: datetime | None = None
    keys: frozenset[str] | None = None


def _scoped(query: Any, scopes: Sequence[Scope] | None) -> Any:
    if scopes is None:
        return query
    if not scopes:
        return query.where(false())
    clauses = []
    for scope in scopes:
        parts = [signals.c.automation == scope.automation]
        if scope.until is not None:
            parts.append(signals.c.time <= scope.until)
        if scope.keys is not None:
            parts.append(signals.c.key.in_(sorted(scope.keys)) if scope.keys else false())
        clauses.append(and_(*parts))
    return query.where(or_(*clauses))


def list_signals(
    conn: Connection,
    *,
    scopes: Sequence[Scope] | None = None,
    automation: str | None = None,
    key: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[Signal]:
    """Newest first; ``before_id`` continues a page (keyset pagination); ``scopes`` limit what is seen."""
    query = _scoped(select(signals), scopes)
    if automation is not None:
        query = query.where(signals.c.automation == automation)
    if key is not None:
        query = query.where(signals.c.key == key)
    if since is not None:
        query = query.where(signals.c.time >= since)
    if until is not None:
        query = query.where(signals.c.time <= until)
    if before_id is not None:
        query = query.where(signals.c.id < before_id)
    query = query.order_by(signals.c.id.desc()).limit(limit)
    return [row_to_signal(row) for row in conn.execute(query)]


def latest_signals(conn: Connection, automation: str, limit: int = 5) -> list[Signal]:
    return list_signals(conn, automation=automation, limit=limit)


def signals_after(
    conn: Connection,
    after_id: int,
    *,
    automation: str | None = None,
    limit: int = 500,
    scopes: Sequence[Scope] | None = None,
) -> list[Signal]:
    """Oldest first, every signal with an id above ``after_id`` (SSE replay)."""
    query = _scoped(select(signals), scopes).where(signals.c.id > after_id)
    if automation is not None:
        query = query.where(signals.c.automation == automation)
    return [row_to_signal(row) for row in conn.execute(query.order_by(signals.c.id).limit(limit))]


def count_signals(conn: Connection, automation: str | None = None, scopes: Sequence[Scope] | None = None) -> int:
    query = _scoped(select(func.count()).select_from(signals), scopes)
    if automation is not None:
        query = query.where(signals.c.automation == automation)
    return int(conn.execute(query).scalar_one())


def max_signal_id(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(signals.c.id), 0))).scalar_one())


def _chain(conn: Connection, automation: str, chunk: int = 5000) -> Iterator[Signal]:
    after = 0
    while True:
        rows = conn.execute(
            select(signals)
            .where(and_(signals.c.automation == automation, signals.c.seq > after))
            .order_by(signals.c.seq)
            .limit(chunk)
        ).all()
        if not rows:
            return
        for row in rows:
            yield row_to_signal(row)
        after = rows[-1].seq


def chain_signals(conn: Connection, automation: str, after_seq: int = 0, limit: int = 1000) -> list[Signal]:
    """One page of an automation's chain, in seq order after ``after_seq``."""
    query = (
        select(signals)
        .where(signals.c.automation == automation, signals.c.seq > after_seq)
        .order_by(signals.c.seq)
        .limit(limit)
    )
    return [row_to_signal(row) for row in conn.execute(query)]


def verify_chain(conn: Connection, automation: str) -> ChainReport:
    """Recompute every hash (and scheme-2 commitment) of an automation's chain, in order."""
    return verify_records(automation, (chain_record(s, revealed=True) for s in _chain(conn, automation)))


def automations_with_signals(conn: Connection) -> Sequence[str]:
    return list(conn.execute(select(signals.c.automation).distinct()).scalars())
