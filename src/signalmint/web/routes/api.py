"""The JSON API under /api/v1, the live stream, /healthz and /metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sse_starlette import EventSourceResponse

from ...store import get_signal, list_automations, list_signals, signals_after
from ...store.signals import max_signal_id
from ..context import AppContext, Viewer, get_ctx, get_viewer
from ..serialize import (
    AutomationPage,
    SignalOut,
    SignalPage,
    automation_json,
    decode_cursor,
    encode_cursor,
    signal_json,
)

__all__ = ["router"]

router = APIRouter()
Ctx = Annotated[AppContext, Depends(get_ctx)]
Who = Annotated[Viewer, Depends(get_viewer)]
MAX_LIMIT = 500


def _known_automation(ctx: AppContext, name: str | None) -> None:
    if name is None:
        return
    names = {a.name for a in ctx.db.read_sync(list_automations, enabled_only=False)}
    if name not in names:
        raise HTTPException(404, f"no automation named {name!r}; GET /api/v1/automations lists them")


@router.get("/api/v1/automations", response_model=AutomationPage, tags=["automations"])
def automations(ctx: Ctx, viewer: Who) -> dict[str, Any]:
    """Every running automation (one pipeline and product each)."""
    items = [automation_json(a) for a in ctx.db.read_sync(list_automations)]
    return {"items": items, "next_cursor": None}


@router.get("/api/v1/signals", response_model=SignalPage, tags=["signals"])
def signals(
    ctx: Ctx,
    viewer: Who,
    automation: Annotated[str | None, Query(max_length=64, description="only this automation")] = None,
    key: Annotated[str | None, Query(max_length=128, description="only this key, e.g. AAPL")] = None,
    since: Annotated[
        datetime | None, Query(description="only bars at or after this time (ISO 8601 with zone)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=64, description="next_cursor of the previous page")
    ] = None,
) -> dict[str, Any]:
    """Signals, newest first, in pages of ``limit``; follow ``next_cursor`` for older ones."""
    if since is not None and since.tzinfo is None:
        raise HTTPException(400, "since needs a timezone, e.g. 2024-01-02T15:30:00Z")
    before_id = None
    if cursor is not None:
        try:
            before_id = decode_cursor(cursor)
        except ValueError as exc:
            raise HTTPException(400, f"cursor: {exc}") from None
    _known_automation(ctx, automation)
    rows = ctx.db.read_sync(
        list_signals, automation=automation, key=key, since=since, before_id=before_id, limit=limit + 1
    )
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1].id) if more and rows and rows[-1].id is not None else None
    return {"items": [signal_json(s) for s in rows], "next_cursor": next_cursor}


@router.get("/api/v1/signals/{signal_id}", response_model=SignalOut, tags=["signals"])
def signal(signal_id: int, ctx: Ctx, viewer: Who) -> dict[str, Any]:
    """One signal, with the numbers behind it and its place in the hash chain."""
    found = ctx.db.read_sync(get_signal, signal_id)
    if found is None:
        raise HTTPException(404, f"no signal with id {signal_id}")
    return signal_json(found)


@router.get(
    "/api/v1/stream",
    tags=["signals"],
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}},
)
async def stream(
    request: Request,
    ctx: Ctx,
    viewer: Who,
    automation: Annotated[str | None, Query(max_length=64)] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)] = None,
) -> EventSourceResponse:
    """New signals as server-sent events (``event: signal``, ``id:`` the signal id).

    Reconnect with ``Last-Event-ID`` (browsers do it by themselves) to replay
    every signal after that id from the store; without it the stream starts now.
    """
    await asyncio.to_thread(_known_automation, ctx, automation)
    if last_event_id is not None:
        if not last_event_id.strip().isdigit():
            raise HTTPException(400, "Last-Event-ID must be a signal id")
        after = int(last_event_id)
    else:
        after = await ctx.db.read(max_signal_id)

    async def events() -> AsyncIterator[dict[str, Any]]:
        nonlocal after
        ctx.metrics.sse_clients.inc()
        try:
            while True:
                batch = await ctx.db.read(signals_after, after, automation=automation, limit=200)
                for item in batch:
                    after = item.id or after
                    yield {"event": "signal", "id": str(item.id), "data": json.dumps(signal_json(item))}
                if len(batch) < 200:
                    if ctx.hub.closed or await request.is_disconnected():
                        return
                    await ctx.hub.wait(after, timeout=2.0)
        finally:
            ctx.metrics.sse_clients.dec()

    return EventSourceResponse(events(), ping=15, headers={"Cache-Control": "no-store"})


@router.get("/healthz", tags=["operations"])
def healthz(ctx: Ctx, response: Response) -> dict[str, Any]:
    """Liveness and readiness: the database answers and each automation's engine state."""
    database_ok = ctx.db.ping()
    automations = []
    if ctx.engine is not None:
        for status in ctx.engine.statuses():
            automations.append(
                {
                    "name": status.name,
                    "running": status.running,
                    "finished": status.finished,
                    "cursor": status.cursor.isoformat() if status.cursor else None,
                    "bars": status.bars,
                    "signals": status.signals,
                    "rejected": dict(status.rejected),
                    "restarts": status.restarts,
                    "last_error": status.last_error,
                }
            )
    healthy = database_ok
    if not healthy:
        response.status_code = 503
    return {"status": "ok" if healthy else "unavailable", "database": database_ok, "automations": automations}


@router.get("/metrics", tags=["operations"], response_class=Response)
def metrics(ctx: Ctx) -> Response:
    """Prometheus metrics in the text exposition format."""
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)
