"""The public track record of an automation: every signal the viewer may see, with its outcome.

What an outcome measures depends on the detector kind (:mod:`signalmint.engine.outcome_rules`): the
return after a market signal, whether a price drop held or a restocked item stayed in stock,
whether a metric kept moving the signal's way, whether a top mover stayed listed; a kind with
no outcome (a new item, a changed page) says so instead of showing an empty record.

An outcome shows the price move after a signal, so it is hidden (left out of the list, the hit
rates and the chart alike) wherever the viewer's view of the signal masks ``price_change`` (or
everything, ``*``); it appears once the mask is lifted (``reveal_after``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from ...access import Grant
from ...chain.hashing import chain_record
from ...engine.outcome_rules import HEADLINES, rule_for
from ...engine.outcomes import summarize, summarize_by_key
from ...records import Signal
from ...store import Connection
from .. import charts
from ..auth import Viewer
from ..context import AppContext, get_ctx, get_viewer
from ..core.deps import automation_or_404
from ..core.render import render_public
from ..track_rows import MOST, viewer_rows

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
Ctx = Annotated[AppContext, Depends(get_ctx)]
Who = Annotated[Viewer, Depends(get_viewer)]

PER_PAGE = 50

#: The horizon's unit per measure (singular).
UNITS = {"return": "bar", "holds_rank": "ranking", "none": "bar"}
#: The chart's title per measure ({h}: the primary horizon and its unit).
CHART_TITLES = {
    "return": "Return {h} after each signal (%)",
    "stays_down": "Price change {h} after each drop (%)",
    "stays_in_stock": "Stock change {h} after each restock (%)",
    "continues": "Change {h} after each signal (%)",
}


def _head(signal: Signal | None, grant: Grant, now: datetime) -> dict[str, Any] | None:
    if signal is None:
        return None
    hidden = grant.hidden_at(signal, now)
    record = chain_record(signal, revealed=not hidden)
    return {"seq": signal.seq, "hash": record["hash"], "time": signal.time}


def _time_unit(ctx: AppContext, name: str) -> str:
    """The automation's horizon unit when it counts time ("second" ...), else "" (bars, observations)."""
    try:
        spec = ctx.settings.automation(name).outcomes
    except KeyError:  # stored, no longer configured
        return ""
    return "" if spec is None or spec.unit == "bars" else spec.unit.removesuffix("s")


def _page(conn: Connection, name: str, viewer: Viewer, page: int, time_unit: str = "") -> dict[str, Any]:
    automation = automation_or_404(conn, name)
    now = datetime.now(UTC)
    grant = viewer.grant(name)
    rows, newest = viewer_rows(conn, name, viewer, grant, now) if grant is not None else ([], None)
    visible = [o for r in rows for o in r.outcomes.values()]
    summaries = summarize(visible)
    horizons = [s.horizon for s in summaries]
    primary = horizons[len(horizons) // 2] if horizons else None
    rule = rule_for(automation.detector_kind, automation.detector_options)
    unit = time_unit if time_unit and rule.observed else UNITS.get(rule.measure, "observation")
    chart = ""
    if primary is not None and rule.measure in CHART_TITLES:
        points = sorted((o for o in visible if o.horizon == primary), key=lambda o: o.time)[-200:]
        times = np.array([np.datetime64(o.time.replace(tzinfo=None), "ns") for o in points], dtype="datetime64[ns]")
        title = CHART_TITLES[rule.measure].format(h=f"{primary} {unit}{'s' if primary != 1 else ''}")
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
        "measure": rule.measure,
        "unit": unit,
        "headline": HEADLINES.get(rule.measure, ""),
        "no_outcome": rule.reason if rule.measure == "none" else "",
        "head": _head(newest, grant, now) if grant is not None else None,
        "truncated": len(rows) >= MOST,
    }


@router.get("/automations/{name}/track-record", response_class=HTMLResponse)
def track_record(
    name: str, request: Request, ctx: Ctx, viewer: Who, page: Annotated[int, Query(ge=1, le=100_000)] = 1
) -> HTMLResponse:
    data = ctx.db.read_sync(_page, name, viewer, page, _time_unit(ctx, name))
    origin = str(request.base_url).rstrip("/")
    return render_public(request, "track_record.html", nav_active="automation", origin=origin, **data)
