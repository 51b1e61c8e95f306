"""What a viewer sees of the signal log: which signals (scopes), how much of each (masks), and in
what order a live stream releases them.

A signal is released to a viewer at ``available_at = max(created_at, time + delay)`` (the
shortest delay of a tier that covers its key). Streams emit signals in (available_at, id)
order, and only those available at least :data:`SETTLE` seconds ago, by which time every
commit stamped earlier is visible. That order is a function of the stored signal and the
viewer's grant, so ``Last-Event-ID`` (a signal id) locates exactly where a stream stopped,
whatever the mix of delays and automations.

A commit that takes longer than ``SETTLE`` (a signal fanned out to thousands of endpoints on a
busy host) becomes visible after the stream has passed its position. :func:`late_released`
finds those, up to :data:`LATE` behind the stream's position, and the stream sends them then:
out of order, never lost (a reconnect from such a signal's id may repeat a few signals after it;
every event carries its signal id).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from ..access import Grant, masked_json
from ..records import Signal
from ..store import Connection
from ..store.signals import Scope, automations_with_signals, get_signal, release_candidates
from .auth import Viewer
from .serialize import signal_json

__all__ = ["LATE", "SETTLE", "available_at", "late_released", "position_of", "present", "released_after", "scopes_for"]

SETTLE = timedelta(seconds=1)
#: How far behind its position a stream looks for signals whose commit became visible late.
LATE = timedelta(seconds=30)


def scopes_for(viewer: Viewer, now: datetime, names: Sequence[str]) -> list[Scope] | None:
    """SQL scopes of what ``viewer`` may see at ``now`` of the automations ``names`` (None: all, admins)."""
    if viewer.is_admin:
        return None
    scopes = []
    for name in names:
        grant = viewer.grant(name)
        if grant is None:
            continue
        for tier in grant.tiers:
            scopes.append(Scope(name, now - tier.delay, tier.keys))
    return scopes


def present(signal: Signal, viewer: Viewer, now: datetime) -> dict[str, Any] | None:
    """The signal as JSON, masked for ``viewer``; None if they may not see it (yet)."""
    grant = viewer.grant(signal.automation)
    if grant is None:
        return None
    hidden = grant.hidden_at(signal, now)
    if hidden is None:
        return None
    body = signal_json(signal)
    return masked_json(body, hidden) if hidden else {**body, "masked": []}


def available_at(signal: Signal, grant: Grant) -> datetime | None:
    release = grant.release_at(signal)
    if release is None:
        return None
    created = signal.created_at or signal.time
    return max(created, release)


def released_after(
    conn: Connection,
    viewer: Viewer,
    cursor: tuple[datetime, int],
    now: datetime,
    *,
    automation: str | None = None,
    limit: int = 200,
) -> list[tuple[tuple[datetime, int], Signal]]:
    """Signals released to ``viewer`` after ``cursor`` and by ``now - SETTLE``, in release order."""
    horizon = now - SETTLE
    after_at, after_id = cursor
    out: list[tuple[tuple[datetime, int], Signal]] = []
    names = [automation] if automation is not None else automations_with_signals(conn)
    for name in names:
        grant = viewer.grant(name)
        if grant is None:
            continue
        delays = [t.delay for t in grant.tiers]
        low, high = min(delays), max(delays)
        candidates = release_candidates(
            conn,
            name,
            created_by=horizon,
            time_by=horizon - low,
            since=(after_at, after_at - high),
            keys=grant.keys,
            limit=limit * 4,
        )
        for signal in candidates:
            at = available_at(signal, grant)
            if at is None or at > horizon:
                continue
            position = (at, signal.id or 0)
            if position > (after_at, after_id):
                out.append((position, signal))
    out.sort(key=lambda item: item[0])
    return out[:limit]


def late_released(
    conn: Connection,
    viewer: Viewer,
    cursor: tuple[datetime, int],
    floor: tuple[datetime, int],
    sent: set[int],
    now: datetime,
    *,
    automation: str | None = None,
    limit: int = 200,
) -> list[tuple[tuple[datetime, int], Signal]]:
    """Signals released to ``viewer`` at positions in ``(floor, cursor]``, at most :data:`LATE`
    behind ``cursor``, that are not in ``sent``: commits that became visible after the stream
    had passed their position. Oldest position first."""
    horizon = now - SETTLE
    start = max(floor[0], cursor[0] - LATE)
    out: list[tuple[tuple[datetime, int], Signal]] = []
    names = [automation] if automation is not None else automations_with_signals(conn)
    for name in names:
        grant = viewer.grant(name)
        if grant is None:
            continue
        delays = [t.delay for t in grant.tiers]
        candidates = release_candidates(
            conn,
            name,
            created_by=horizon,
            time_by=horizon - min(delays),
            since=(start, start - max(delays)),
            keys=grant.keys,
            limit=limit,
            exclude=sent,
        )
        for signal in candidates:
            at = available_at(signal, grant)
            if at is None or at > horizon or (signal.id or 0) in sent:
                continue
            position = (at, signal.id or 0)
            if floor < position <= cursor and at >= start:
                out.append((position, signal))
    out.sort(key=lambda item: item[0])
    return out[:limit]


def position_of(conn: Connection, viewer: Viewer, signal_id: int) -> tuple[datetime, int] | None:
    """The stream position of a signal for this viewer (to resume after ``Last-Event-ID``)."""
    signal = get_signal(conn, signal_id)
    if signal is None:
        return None
    grant = viewer.grant(signal.automation)
    at = available_at(signal, grant) if grant is not None else None
    return (at, signal_id) if at is not None else None
