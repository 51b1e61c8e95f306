"""The public track record of an automation: every signal the viewer may see, with its outcome.

An outcome shows the price move after a signal, so it is hidden (left out of the list, the hit
rates and the chart alike) wherever the viewer's view of the signal masks ``price_change`` (or
everything, ``*``); it appears once the mask is lifted (``reveal_after``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from ...access import Grant
from ...chain import chain_record
from ...outcomes import summarize, summarize_by_key
from ...records import Outcome, Signal
from ...store import Connection, list_signals
from ...store.outcomes import outcomes_by_signal
from .. import charts
from ..auth import Viewer
from ..context import AppContext, get_ctx, get_viewer
from ..visibility import scopes_for
from .pages import _automation, _render, outcomes_shown

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
Ctx = Annotated[AppContext, Depends(get_ctx)]
Who = Annotated[Viewer, Depends(get_viewer)]

PER_PAGE = 50
MOST = 5000  # signals read for the hit rates and the chart


@dataclass(frozen=True, slots=True)
class Row:
    signal: Signal  # as the viewer sees it (masked)
    shown: bool  # its outcome may be shown
    outcomes: dict[int, Outcome]  # by horizon (empty when not shown or not measured yet)


def _rows(conn: Connection, name: str, viewer: Viewer, grant: Grant, now: datetime) -> tuple[list[Row], Signal | None]:
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


def _head(signal: Signal | None, grant: Grant, now: datetime) -> dict[str, Any] | None:
    if signal is None:
        return None
    hidden = grant.hidden_at(signal, now)
    record = chain_record(signal, revealed=not hidden)
    return {"seq": signal.seq, "hash": record["hash"], "time": signal.time}


def _page(conn: Connection, name: str, viewer: Viewer, page: int) -> dict[str, Any]:
    automation = _automation(conn, name)
    now = datetime.now(UTC)
    grant = viewer.grant(name)
    rows, newest = _rows(conn, name, viewer, grant, now) if grant is not None else ([], None)
    visible = [o for r in rows for o in r.outcomes.values()]
    summaries = summarize(visible)
    horizons = [s.horizon for s in summaries]
    primary = horizons[len(horizons) // 2] if horizons else None
    chart = ""
    if primary is not None:
        points = sorted((o for o in visible if o.horizon == primary), key=lambda o: o.time)[-200:]
        times = np.array([np.datetime64(o.time.replace(tzinfo=None), "ns") for o in points], dtype="datetime64[ns]")
        title = f"Return {primary} bar{'s' if primary != 1 else ''} after each signal (%)"
        chart = charts.metric_chart(
            times, [100 * o.ret for o in points], title=title, unit=lambda v: f"{v:+.1f}%", bars=True
        )
    by_key = {
        key: next((s for s in sums if s.horizon == primary), None)
        for key, sums in list(summarize_by_key([o for o in visible if o.horizon == primary]).items())[:12]
    }
    pages = max(1, -(-len(rows) // PER_PAGE))
    page = min(page, pages)
    return {
        "automation": automation,
        "rows": rows[(page - 1) * PER_PAGE : page * PER_PAGE],
        "total": len(rows),
        "measured": sum(1 for r in rows if r.outcomes),
        "withheld": sum(1 for r in rows if not r.shown),
        "page": page,
        "pages": pages,
        "horizons": horizons,
        "primary": primary,
        "summaries": summaries,
        "by_key": by_key,
        "chart": chart,
        "head": _head(newest, grant, now) if grant is not None else None,
        "truncated": len(rows) >= MOST,
    }


@router.get("/automations/{name}/track-record", response_class=HTMLResponse)
def track_record(
    name: str, request: Request, ctx: Ctx, viewer: Who, page: Annotated[int, Query(ge=1, le=100_000)] = 1
) -> HTMLResponse:
    data = ctx.db.read_sync(_page, name, viewer, page)
    origin = str(request.base_url).rstrip("/")
    return _render(request, "track_record.html", nav_active="automation", origin=origin, **data)
