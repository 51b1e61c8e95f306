"""The signals a viewer may see with the outcomes they may see: the rows behind the track-record
page and the outcomes API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..access import Grant
from ..records import Outcome, Signal
from ..store import Connection, list_signals
from ..store.outcomes import outcomes_by_signal
from .auth import Viewer
from .teaser import outcomes_shown
from .visibility import scopes_for

__all__ = ["MOST", "Row", "viewer_rows"]

MOST = 5000  # signals read for the hit rates and the chart


@dataclass(frozen=True, slots=True)
class Row:
    signal: Signal  # as the viewer sees it (masked)
    shown: bool  # its outcome may be shown
    outcomes: dict[int, Outcome]  # by horizon (empty when not shown or not measured yet)


def viewer_rows(
    conn: Connection, name: str, viewer: Viewer, grant: Grant, now: datetime
) -> tuple[list[Row], Signal | None]:
    """Newest first, the signals ``viewer`` may see with the outcomes they may see; the newest stored."""
    stored = list_signals(conn, scopes=scopes_for(viewer, now, [name]), automation=name, limit=MOST)
    found = outcomes_by_signal(conn, [s.id for s in stored if s.id is not None])
    rows: list[Row] = []
    newest: Signal | None = None
    for signal in stored:
        hidden = grant.hidden_at(signal, now)
        view = grant.view(signal, now)
        if hidden is None or view is None:
            continue
        shown = outcomes_shown(hidden)
        mine = {o.horizon: o for o in found.get(signal.id or 0, [])} if shown else {}
        rows.append(Row(view, shown, mine))
        newest = newest or signal
    return rows, newest
