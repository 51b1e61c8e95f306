"""The public pages: home, one page per automation (live feed), one per signal (chart)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse

from ...records import Automation, Plan, Signal
from ...series import CHART_FIELDS, signal_series
from ...store import Connection, get_signal, list_automations, list_signals
from ...store.health import open_stale_periods
from ...store.outcomes import outcomes_by_signal
from ...store.signals import count_signals
from ...store.state import load_checkpoint
from .. import charts
from ..auth import Viewer, resolve_viewer
from ..context import AppContext, get_ctx, get_viewer
from ..params import Id
from ..teaser import Veil, headline, teaser_json, upgrade_plan, veil_for
from ..visibility import scopes_for
from .account import anon_csrf, set_csrf_cookie

__all__ = ["MOVE_FIELDS", "outcomes_shown", "router"]

router = APIRouter(include_in_schema=False)
Ctx = Annotated[AppContext, Depends(get_ctx)]
Who = Annotated[Viewer, Depends(get_viewer)]


#: Masking any of these on a signal hides its outcomes (an outcome's return is the price move).
MOVE_FIELDS = frozenset({"price_change", "*"})


def outcomes_shown(hidden: frozenset[str] | None) -> bool:
    """Whether a viewer for whom ``hidden`` is masked on a signal may see its outcomes."""
    return hidden is not None and not hidden & MOVE_FIELDS


def _render(request: Request, name: str, **context: Any) -> HTMLResponse:
    ctx = get_ctx(request)
    templates = request.app.state.templates
    context.setdefault("site_title", ctx.settings.web.title)
    context.setdefault("viewer", resolve_viewer(request))
    response: HTMLResponse = templates.TemplateResponse(request, name, context)
    return response


def _detector_label(automation: Automation) -> str:
    options = dict(automation.detector_options)
    if automation.detector_kind == "volume_spike":
        return (
            f"volume_spike · W={options.get('window', 30)} · ratio≥{options.get('ratio', 3.0):g}"
            f" · z≥{options.get('z', 4.0):g}"
        )
    shown = " · ".join(f"{k}={v}" for k, v in sorted(options.items()))
    return f"{automation.detector_kind} · {shown}" if shown else automation.detector_kind


def _seen(
    signals: list[Signal],
    viewer: Viewer,
    now: datetime,
    veils: dict[int, Veil] | None = None,
    plans: Sequence[Plan] = (),
) -> list[Signal]:
    """The signals as ``viewer`` sees them at ``now`` (masked), dropping any not released to them.

    Given ``veils``, adds what hides each masked one (by signal id) for the templates.
    """
    out = []
    for signal in signals:
        grant = viewer.grant(signal.automation)
        view = grant.view(signal, now) if grant is not None else None
        if view is not None:
            out.append(view)
            if veils is not None and grant is not None and signal.id is not None:
                veil = veil_for(signal, view, grant, plans)
                if veil is not None:
                    veils[signal.id] = veil
    return out


def _pending(
    conn: Connection, automation: Automation, viewer: Viewer, now: datetime, plans: Sequence[Plan]
) -> list[dict[str, Any]]:
    """Teasers of the signals that fired but are not released to ``viewer`` yet (newest first)."""
    grant = viewer.grant(automation.name)
    if grant is None or viewer.is_admin:
        return []
    longest = max(t.delay for t in grant.tiers)
    if longest.total_seconds() <= 0:
        return []
    out = []
    for signal in list_signals(conn, automation=automation.name, since=now - longest, limit=20):
        release = grant.release_at(signal)
        if release is not None and release > now:
            teaser = teaser_json(signal, grant, plans, automation.title)
            if teaser is not None:
                out.append(teaser)
    return out


def _overview(conn: Connection, viewer: Viewer, plans: Sequence[Plan]) -> list[dict[str, Any]]:
    cards = []
    now = datetime.now(UTC)
    for automation in list_automations(conn):
        scopes = scopes_for(viewer, now, [automation.name])
        veils: dict[int, Veil] = {}
        latest = _seen(
            list_signals(conn, scopes=scopes, automation=automation.name, limit=5), viewer, now, veils, plans
        )
        checkpoint = load_checkpoint(conn, automation.name)
        recent = _seen(list_signals(conn, scopes=scopes, automation=automation.name, limit=40), viewer, now)
        ratios = np.array([s.payload.get("ratio") or 0.0 for s in reversed(recent)], dtype=np.float64)
        cards.append(
            {
                "automation": automation,
                "latest": latest,
                "signal_count": count_signals(conn, automation.name, scopes),
                "last_signal_at": latest[0].time if latest else None,
                "keys": checkpoint.keys,
                "sparkline": charts.sparkline(ratios) if len(ratios) > 1 else "",
                "veils": veils,
            }
        )
    return cards


def _automation(conn: Connection, name: str) -> Automation:
    for automation in list_automations(conn, enabled_only=False):
        if automation.name == name:
            return automation
    raise HTTPException(404, f"There is no automation named “{name}”.")


@router.get("/", response_class=HTMLResponse)
def home(request: Request, ctx: Ctx, viewer: Who) -> HTMLResponse:
    return _render(
        request, "home.html", nav_active="home", automations=ctx.db.read_sync(_overview, viewer, ctx.access.current())
    )


def _automation_page(conn: Connection, name: str, viewer: Viewer, plans: Sequence[Plan]) -> dict[str, Any]:
    automation = _automation(conn, name)
    now = datetime.now(UTC)
    scopes = scopes_for(viewer, now, [name])
    veils: dict[int, Veil] = {}
    signals = _seen(list_signals(conn, scopes=scopes, automation=name, limit=50), viewer, now, veils, plans)
    checkpoint = load_checkpoint(conn, name)
    return {
        "automation": automation,
        "signals": signals,
        "veils": veils,
        "pending": _pending(conn, automation, viewer, now, plans),
        "upgrade": upgrade_plan(plans, name),
        "grant": viewer.grant(name),
        "stats": {
            "signals_total": count_signals(conn, name, scopes),
            "keys": checkpoint.keys,
            "last_signal_at": signals[0].time if signals else None,
            "detector": _detector_label(automation),
        },
        "stream_url": f"/api/v1/stream?automation={name}",
        "stale": open_stale_periods(conn, [name]),
    }


@router.get("/automations/{name}", response_class=HTMLResponse)
def automation_page(name: str, request: Request, ctx: Ctx, viewer: Who) -> HTMLResponse:
    page = ctx.db.read_sync(_automation_page, name, viewer, ctx.access.current())
    plans = [p for p in ctx.access.current() if p.public and p.covers(name)]
    tips = ctx.settings.billing.tips
    # The plan cards' buttons post at once: to checkout when signed in, else to sign-up.
    signed_in = viewer.kind == "subscriber" and viewer.session is not None
    csrf = viewer.csrf(ctx.pepper) if signed_in else anon_csrf(request)
    response = _render(
        request,
        "automation.html",
        nav_active="automation",
        plans=plans,
        viewer=viewer,
        csrf=csrf,
        signup_open=ctx.settings.signup,
        paid_open=ctx.billing is not None,
        tips_enabled=tips.enabled and ctx.billing is not None,
        tip_amounts=tips.suggested,
        tip_currency=ctx.settings.billing.currency,
        **page,
    )
    response.headers["Cache-Control"] = "no-store"  # the page holds this visitor's form token
    if not signed_in:
        set_csrf_cookie(response, ctx, csrf)
    return response


def _signal_page(conn: Connection, signal_id: int, viewer: Viewer, plans: Sequence[Plan]) -> dict[str, Any]:
    now = datetime.now(UTC)
    stored = get_signal(conn, signal_id)
    grant = viewer.grant(stored.automation) if stored is not None else None
    hidden = grant.hidden_at(stored, now) if grant is not None and stored is not None else None
    if stored is None or grant is None or hidden is None:  # unknown and not-yet-yours look the same
        raise HTTPException(404, f"There is no signal #{signal_id}, or it is not public yet.")
    signal = grant.view(stored, now)
    assert signal is not None
    automation = _automation(conn, signal.automation)
    window = int(automation.detector_options.get("window", 30))
    volume_svg = price_svg = None
    note = None
    veil = veil_for(stored, signal, grant, plans)
    if "ratio" not in stored.payload and signal_series(conn, stored, window).highlight is None:
        # a price, a feed item, a transfer, a pushed metric: no bars were stored to draw
        note = "There is no chart for this kind of data: its numbers are in the details above."
    elif hidden & CHART_FIELDS:
        note = f"The chart shows the numbers: {veil.message if veil else 'they come with a paid plan'}."
    else:
        series = signal_series(conn, stored, window)
        if series.highlight is None:
            note = "The bars behind this signal were removed by the automation's retention setting."
        else:
            ratio = automation.detector_options.get("ratio")
            volume_svg = charts.volume_chart(
                series.times, series.volume, series.baseline, series.highlight,
                ratio_line=float(ratio) if ratio else None,
            )  # fmt: skip
            if not hidden & {"price_change", "*"}:
                price_svg = charts.price_chart(series.times, series.close, series.highlight)
            if series.pruned_history:
                note = "Older bars were removed by the retention setting; the baseline line starts later."
    scopes = scopes_for(viewer, now, [signal.automation])
    same_key = list_signals(conn, scopes=scopes, automation=signal.automation, key=signal.key, limit=11)
    veils: dict[int, Veil] = {}
    recent = [s for s in _seen(same_key, viewer, now, veils, plans) if s.id != signal.id]
    shown = outcomes_shown(hidden)
    return {
        "signal": signal,
        "outcomes": stored_outcomes(conn, stored.id) if shown else [],
        "outcomes_hidden": not shown,
        "veil": veil,
        "veils": veils,
        "headline": headline(signal),
        "automation": automation,
        "volume_svg": volume_svg,
        "price_svg": price_svg,
        "series_note": note,
        "recent_for_key": recent[:10],
        "verify": {
            "hash": signal.hash,
            "prev_hash": signal.prev_hash,
            "seq": signal.seq,
            "commitment": signal.commitment,
            "salt": signal.salt,
        },
    }


def stored_outcomes(conn: Connection, signal_id: int | None) -> list[Any]:
    return outcomes_by_signal(conn, [signal_id]).get(signal_id, []) if signal_id is not None else []


@router.get("/signals/{signal_id}", response_class=HTMLResponse)
def signal_page(signal_id: Id, request: Request, ctx: Ctx, viewer: Who) -> HTMLResponse:
    return _render(
        request,
        "signal.html",
        nav_active="signal",
        **ctx.db.read_sync(_signal_page, signal_id, viewer, ctx.access.current()),
    )
