"""The site's pages about itself: ``/status`` (people) and ``/docs`` (the API reference, served offline).

``/status`` says, per automation, whether it is live, how fresh its data is (the last bar's
time and when it was committed), its last signal, the rows its source rejected and why, and
how delivery is doing (queue depth, retries, recent failures, dead letters). The same facts
for machines stay at ``/healthz`` (JSON).

``/docs`` is Swagger UI from files in the package (``static/swagger-ui/``, Apache-2.0), so it
works with no network; the page's own settings live in ``static/swagger-init.js``, not in an
inline script.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from ...store import Connection, list_automations
from ...store.health import open_stale_periods
from ...store.outbox import delivery_health
from ...store.signals import count_signals, latest_signals
from ...store.state import load_checkpoint
from ..context import AppContext, get_ctx
from .account import render

__all__ = ["AutomationHealth", "router"]

router = APIRouter(include_in_schema=False)
Ctx = Annotated[AppContext, Depends(get_ctx)]
STALE = timedelta(minutes=2)  # a running automation with nothing committed for longer is "stalled"
RECENT = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class AutomationHealth:
    name: str
    title: str
    state: str  # Live | Stalled | Finished | Failing | Not running here
    tone: str  # good | warn | bad | ""
    explain: str
    last_bar: datetime | None  # the data's own time
    committed_at: datetime | None  # when the engine last saved its progress
    last_signal: datetime | None
    bars: int
    signals: int
    rejected: dict[str, int] = field(default_factory=dict)
    restarts: int = 0


def _state(
    running: bool, finished: bool, error: str | None, committed: datetime | None, now: datetime
) -> tuple[str, str, str]:
    if finished:
        return "Finished", "", "Its source has ended (a replay or backfill ran to its end)."
    if running and committed is not None and now - committed > STALE:
        return "Stalled", "warn", "Running, but no new data was committed for a while."
    if running:
        return "Live", "good", "Running: new data is coming in."
    if error:
        return "Failing", "bad", f"Stopped by an error: {error}"
    return "Not running here", "", "This process does not run its engine (another process may)."


def _automations(conn: Connection, ctx: AppContext, now: datetime) -> list[AutomationHealth]:
    live = {s.name: s for s in ctx.engine.statuses()} if ctx.engine is not None else {}
    delayed = open_stale_periods(conn)  # recorded by whichever engine process watches the feed
    out = []
    for automation in list_automations(conn):
        checkpoint = load_checkpoint(conn, automation.name)
        latest = latest_signals(conn, automation.name, 1)
        status = live.get(automation.name)
        running = bool(status and status.running)
        state, tone, explain = _state(
            running, bool(status and status.finished), status.last_error if status else None,
            checkpoint.updated_at, now,
        )  # fmt: skip
        period = delayed.get(automation.name)
        if period is not None:
            since = period.since.strftime("%Y-%m-%d %H:%M UTC")
            state, tone, explain = "Data delayed", "warn", f"No fresh data since {since}; the operator has been told."
        rejected = dict(checkpoint.rejected)
        if status is not None:
            rejected = {k: max(v, rejected.get(k, 0)) for k, v in {**rejected, **status.rejected}.items()}
        out.append(
            AutomationHealth(
                name=automation.name,
                title=automation.title or automation.name,
                state=state,
                tone=tone,
                explain=explain,
                last_bar=(status.cursor if status and status.cursor else checkpoint.cursor),
                committed_at=checkpoint.updated_at,
                last_signal=latest[0].time if latest else None,
                bars=max(status.bars if status else 0, checkpoint.bars_total),
                signals=count_signals(conn, automation.name),
                rejected=rejected,
                restarts=status.restarts if status else 0,
            )
        )
    return out


def status_context(ctx: AppContext, now: datetime) -> dict[str, Any]:
    def read(conn: Connection) -> dict[str, Any]:
        return {
            "automations": _automations(conn, ctx, now),
            "delivery": delivery_health(conn, now, now - RECENT),
        }

    found = ctx.db.read_sync(read)
    found["database_ok"] = True
    return found


@router.get("/status", response_class=HTMLResponse)
def status_page(request: Request, ctx: Ctx) -> HTMLResponse:
    now = datetime.now(UTC)
    database_ok = ctx.db.ping()
    found = status_context(ctx, now) if database_ok else {"automations": [], "delivery": None}
    return render(
        request,
        "status.html",
        status=200 if database_ok else 503,
        nav_active="status",
        now=now,
        database_ok=database_ok,
        automations=found["automations"],
        delivery=found["delivery"],
    )


@router.get("/docs", response_class=HTMLResponse)
def docs(request: Request) -> HTMLResponse:
    """Swagger UI from the package's own files: no CDN, no inline script."""
    title = html.escape(request.app.title)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · docs</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/swagger-ui/swagger-ui.css"></head>
<body><div id="swagger-ui" data-openapi-url="{request.app.openapi_url}"></div>
<script src="/static/swagger-ui/swagger-ui-bundle.js"></script>
<script src="/static/swagger-init.js"></script>
</body></html>"""
    return HTMLResponse(page)
