"""``GET /api/v1/automations/{name}/outcomes``: the track record as JSON.

The same signals and outcomes as the track-record page (:mod:`.track_record`), for the same
viewer: the signals your plan lets you see (delay, keys), each with what the price did after it,
except where your view of the signal masks the move (``price_change`` or everything): there
``outcomes`` is ``null`` and ``withheld`` true until the mask lifts (``reveal_after``), and the
signal counts in no hit rate. It is a data route like ``/api/v1/signals``: the plan's API term,
rate and quota hold (:func:`signalmint.web.api_access.read_viewer`), the public is limited per
address.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, Field

from ...engine.outcome_rules import HEADLINES, rule_for
from ...engine.outcomes import summarize
from ...records import Outcome, OutcomeSummary
from ..api_access import read_viewer
from ..auth import Viewer
from ..context import AppContext, ctx_dependency
from ..core.deps import MAX_LIMIT, RESPONSES, automation_or_404
from ..openapi import errors
from ..serialize import decode_cursor, encode_cursor
from ..track_rows import MOST, Row, viewer_rows

__all__ = ["OutcomePage", "router"]

router = APIRouter()
Ctx = Annotated[AppContext, Depends(ctx_dependency)]
Who = Annotated[Viewer, Depends(read_viewer)]


class OutcomeOut(BaseModel):
    measure: str = Field(
        description="what it measures: return (market), stays_down, stays_in_stock, continues or holds_rank; "
        "for all but return, entry/exit are the watched value (a rank for holds_rank), volume the share of "
        "the horizon on which it held and baseline the base rate of random earlier starts"
    )
    horizon: int = Field(description="bars (observations of the key, or rankings) after the signal")
    end_time: datetime = Field(description="time of the bar ``horizon`` bars later (UTC)")
    entry: float | None = Field(description="close at the signal's bar")
    exit: float | None = Field(description="close ``horizon`` bars later")
    ret: float | None = Field(description="exit / entry - 1 (0.05 = +5%)")
    volume: float | None = Field(description="the volume of those ``horizon`` bars")
    baseline: float | None = Field(
        description="median absolute ``horizon``-bar return of random earlier bars of the same key"
    )
    samples: int = Field(description="how many random bars the baseline is drawn from")
    hit: bool = Field(description="the signal's absolute return beat the baseline")


class SignalOutcomes(BaseModel):
    signal_id: int
    key: str
    time: datetime = Field(description="time of the bar that triggered the signal (UTC)")
    kind: str
    withheld: bool = Field(description="your plan masks this signal's move for now: its outcomes are not shown")
    outcomes: list[OutcomeOut] | None = Field(
        description="by horizon, shortest first; [] until measured, null while withheld"
    )


class SummaryOut(BaseModel):
    horizon: int
    count: int = Field(description="signals measured at this horizon (that you may see)")
    hits: int
    hit_rate: float | None
    hit_rate_low: float | None = Field(description="Wilson 95% interval of the hit rate")
    hit_rate_high: float | None
    mean_return: float | None
    median_return: float | None
    mean_abs_return: float | None
    baseline: float | None = Field(description="median of the signals' baselines")


class OutcomePage(BaseModel):
    automation: str
    measure: str = Field(description="what this automation's outcomes measure (none: no outcome for its kind)")
    hit_means: str = Field(description="what a hit means, in words")
    no_outcome: str | None = Field(description="why this kind of signal has no outcome (measure none)")
    horizons: list[int] = Field(description="the horizons measured among the signals you may see")
    summary: list[SummaryOut] = Field(description="hit rates and returns per horizon, over every signal shown")
    signals: int = Field(description="signals you may see (of the key, when given)")
    measured: int = Field(description="of them, with at least one outcome shown")
    withheld: int = Field(description="of them, whose outcomes your plan masks for now")
    truncated: bool = Field(description=f"only the newest {MOST} signals were read")
    items: list[SignalOutcomes] = Field(description="signals newest first, each with its outcomes")
    next_cursor: str | None = Field(description="pass as ?cursor= to get the next (older) page")


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _outcome_json(o: Outcome) -> dict[str, Any]:
    return {
        "measure": o.measure, "horizon": o.horizon, "end_time": o.end_time, "entry": _number(o.entry),
        "exit": _number(o.exit), "ret": _number(o.ret), "volume": _number(o.volume), "baseline": _number(o.baseline),
        "samples": o.samples, "hit": o.hit,
    }  # fmt: skip


def _summary_json(s: OutcomeSummary) -> dict[str, Any]:
    return {
        "horizon": s.horizon, "count": s.count, "hits": s.hits, "hit_rate": _number(s.hit_rate),
        "hit_rate_low": _number(s.hit_low), "hit_rate_high": _number(s.hit_high), "mean_return": _number(s.mean),
        "median_return": _number(s.median), "mean_abs_return": _number(s.mean_abs), "baseline": _number(s.baseline),
    }  # fmt: skip


def _item(row: Row, horizon: int | None) -> dict[str, Any]:
    signal = row.signal
    shown = [o for h, o in sorted(row.outcomes.items()) if horizon is None or h == horizon]
    return {
        "signal_id": signal.id,
        "key": signal.key,
        "time": signal.time,
        "kind": signal.kind,
        "withheld": not row.shown,
        "outcomes": [_outcome_json(o) for o in shown] if row.shown else None,
    }


@router.get(
    "/api/v1/automations/{name}/outcomes",
    response_model=OutcomePage,
    tags=["automations"],
    responses={**RESPONSES, **errors(400, 404, 422)},
)
def automation_outcomes(
    ctx: Ctx,
    viewer: Who,
    name: Annotated[str, Path(max_length=64, description="the automation, as GET /api/v1/automations names it")],
    key: Annotated[str | None, Query(max_length=128, description="only this key, e.g. AAPL")] = None,
    horizon: Annotated[int | None, Query(ge=1, le=10_000, description="only this horizon (bars)")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=64, pattern="^[A-Za-z0-9_-]+$", description="next_cursor of the previous page")
    ] = None,
) -> dict[str, Any]:
    """What happened after each signal you may see: its return, volume and hit at each horizon,
    and the hit rates, as on the automation's track-record page. Outcomes of a signal whose move
    your plan masks are withheld (``outcomes: null``) until it is revealed."""
    if name not in ctx.automation_names():
        raise HTTPException(404, f"no automation named {name!r}; GET /api/v1/automations lists them")
    before_id = None
    if cursor is not None:
        try:
            before_id = decode_cursor(cursor)
        except ValueError as exc:
            raise HTTPException(400, f"cursor: {exc}") from None
    grant = viewer.grant(name)
    now = datetime.now(UTC)
    rows: list[Row] = ctx.db.read_sync(viewer_rows, name, viewer, grant, now)[0] if grant is not None else []
    truncated = len(rows) >= MOST
    if key is not None:
        rows = [r for r in rows if r.signal.key == key]
    visible = [o for r in rows for o in r.outcomes.values() if horizon is None or o.horizon == horizon]
    summaries = summarize(visible)
    after = [r for r in rows if before_id is None or (r.signal.id or 0) < before_id]
    page = after[:limit]
    last = page[-1].signal.id if page else None
    automation = ctx.db.read_sync(automation_or_404, name)
    rule = rule_for(automation.detector_kind, automation.detector_options)
    return {
        "automation": name,
        "measure": rule.measure,
        "hit_means": HEADLINES.get(rule.measure, ""),
        "no_outcome": rule.reason or None,
        "horizons": sorted({o.horizon for r in rows for o in r.outcomes.values()}),
        "summary": [_summary_json(s) for s in summaries],
        "signals": len(rows),
        "measured": sum(1 for r in rows if r.outcomes),
        "withheld": sum(1 for r in rows if not r.shown),
        "truncated": truncated,
        "items": [_item(r, horizon) for r in page],
        "next_cursor": encode_cursor(last) if len(after) > limit and last is not None else None,
    }
