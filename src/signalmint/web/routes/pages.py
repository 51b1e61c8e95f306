"""The public pages: home, one page per automation (live feed), one per signal (chart)."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import Connection

from ...records import Automation
from ...store import get_signal, list_automations, list_signals
from ...store.bars import bar_window
from ...store.signals import count_signals
from ...store.state import load_checkpoint
from .. import charts
from ..context import AppContext, get_ctx

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
Ctx = Annotated[AppContext, Depends(get_ctx)]


def _render(request: Request, name: str, **context: Any) -> HTMLResponse:
    ctx = get_ctx(request)
    templates = request.app.state.templates
    context.setdefault("site_title", ctx.settings.web.title)
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


def _overview(conn: Connection) -> list[dict[str, Any]]:
    cards = []
    for automation in list_automations(conn):
        latest = list_signals(conn, automation=automation.name, limit=5)
        checkpoint = load_checkpoint(conn, automation.name)
        recent = list_signals(conn, automation=automation.name, limit=40)
        ratios = np.array([s.payload.get("ratio") or 0.0 for s in reversed(recent)], dtype=np.float64)
        cards.append(
            {
                "automation": automation,
                "latest": latest,
                "signal_count": count_signals(conn, automation.name),
                "last_signal_at": latest[0].time if latest else None,
                "keys": checkpoint.keys,
                "sparkline": charts.sparkline(ratios) if len(ratios) > 1 else "",
            }
        )
    return cards


def _automation(conn: Connection, name: str) -> Automation:
    for automation in list_automations(conn, enabled_only=False):
        if automation.name == name:
            return automation
    raise HTTPException(404, f"There is no automation named “{name}”.")


@router.get("/", response_class=HTMLResponse)
def home(request: Request, ctx: Ctx) -> HTMLResponse:
    return _render(request, "home.html", nav_active="home", automations=ctx.db.read_sync(_overview))


def _automation_page(conn: Connection, name: str) -> dict[str, Any]:
    automation = _automation(conn, name)
    signals = list_signals(conn, automation=name, limit=50)
    checkpoint = load_checkpoint(conn, name)
    return {
        "automation": automation,
        "signals": signals,
        "stats": {
            "signals_total": count_signals(conn, name),
            "keys": checkpoint.keys,
            "last_signal_at": signals[0].time if signals else None,
            "detector": _detector_label(automation),
        },
        "stream_url": f"/api/v1/stream?automation={name}",
    }


@router.get("/automations/{name}", response_class=HTMLResponse)
def automation_page(name: str, request: Request, ctx: Ctx) -> HTMLResponse:
    return _render(
        request, "automation.html", nav_active="automation", **ctx.db.read_sync(_automation_page, name)
    )


def rolling_baseline(volume: np.ndarray, window: int) -> np.ndarray:
    """Median of the previous ``window`` bars for each bar (NaN until there are that many).

    >>> rolling_baseline(np.array([1.0, 2.0, 3.0, 10.0]), 3)
    array([nan, nan, nan,  2.])
    """
    out = np.full(len(volume), np.nan)
    if len(volume) > window:
        windows = np.lib.stride_tricks.sliding_window_view(volume[:-1], window)
        out[window:] = np.median(windows, axis=1)
    return out


def _signal_page(conn: Connection, signal_id: int) -> dict[str, Any]:
    signal = get_signal(conn, signal_id)
    if signal is None:
        raise HTTPException(404, f"There is no signal #{signal_id}.")
    automation = _automation(conn, signal.automation)
    window = int(automation.detector_options.get("window", 30))
    shown = 90
    series = bar_window(conn, signal.automation, signal.key, signal.time, before=shown + window, after=15)
    times, volume = series["time"], series["volume"]
    baseline = rolling_baseline(volume, window)
    target = np.datetime64(signal.time.replace(tzinfo=None), "ns")
    hits = np.flatnonzero(times == target)
    volume_svg = price_svg = None
    note = None
    if len(hits):
        first = max(0, int(hits[0]) - shown)
        sl = slice(first, None)
        highlight = int(hits[0]) - first
        ratio = automation.detector_options.get("ratio")
        volume_svg = charts.volume_chart(
            times[sl], volume[sl], baseline[sl], highlight, ratio_line=float(ratio) if ratio else None
        )
        price_svg = charts.price_chart(times[sl], series["close"][sl], highlight)
        if int(hits[0]) < window:
            note = "Older bars were removed by the retention setting; the baseline line starts later."
    else:
        note = "The bars behind this signal were removed by the automation's retention setting."
    recent = [
        s
        for s in list_signals(conn, automation=signal.automation, key=signal.key, limit=11)
        if s.id != signal.id
    ]
    return {
        "signal": signal,
        "automation": automation,
        "volume_svg": volume_svg,
        "price_svg": price_svg,
        "series_note": note,
        "recent_for_key": recent[:10],
        "verify": {"hash": signal.hash, "prev_hash": signal.prev_hash, "seq": signal.seq},
    }


@router.get("/signals/{signal_id}", response_class=HTMLResponse)
def signal_page(signal_id: int, request: Request, ctx: Ctx) -> HTMLResponse:
    return _render(request, "signal.html", nav_active="signal", **ctx.db.read_sync(_signal_page, signal_id))
