"""The public JSON API under /api/v1: automations, plans, signals and the live stream.

Every route takes ``Authorization: Bearer <key>`` and answers what that key's
owner is entitled to (delay, keys, masked fields), exactly as on the web;
without a key it answers the public view. Keys are rate limited per subscriber
(the plan's token bucket). Plans whose channels include ``api`` sell the API
itself: their calls are metered against ``api_quota`` a month, then billed as
overage at ``overage_price`` (or refused when it is 0).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from sse_starlette import EventSourceResponse

from ...access import is_entitled, quota_decision
from ...store import get_signal, list_automations, list_signals
from ...usage import month_of
from ..auth import Viewer, resolve_viewer, subscriber_viewer
from ..context import AppContext, get_ctx
from ..serialize import (
    AutomationPage,
    PlanPage,
    SignalOut,
    SignalPage,
    automation_json,
    decode_cursor,
    encode_cursor,
    plan_json,
)
from ..visibility import SETTLE, position_of, present, released_after, scopes_for

__all__ = ["api_viewer", "router"]

router = APIRouter()
Ctx = Annotated[AppContext, Depends(get_ctx)]
MAX_LIMIT = 500
PUBLIC_RATE, PUBLIC_BURST = 5.0, 20
RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "malformed, unknown or revoked API key"},
    403: {"description": "the key's subscription is not active, or the route is not yours"},
    429: {"description": "rate limit or monthly quota exceeded; see Retry-After"},
}


def api_viewer(request: Request, response: Response) -> Viewer:
    """The caller, after the plan's rate limit and monthly quota (keys) or a per-address limit (public)."""
    ctx = get_ctx(request)
    viewer = resolve_viewer(request)
    if viewer.api_key is not None and viewer.kind == "subscriber":
        assert viewer.subscriber is not None
        plan, subscription = viewer.plan, viewer.subscription
        now = datetime.now(UTC)
        if plan is None or subscription is None or not is_entitled(subscription, plan, viewer.subscriber, now):
            raise HTTPException(403, "this key's subscription is not active")
        decision = ctx.limiter.check(f"sub:{viewer.subscriber.id}", plan.rate_per_second, plan.burst)
        if not decision.allowed:
            raise HTTPException(429, "rate limit exceeded; slow down", headers=decision.headers())
        response.headers.update(decision.headers())
        if plan.api:  # the API as a product: metered against the monthly quota, then overage
            month = month_of(now)
            assert ctx.meter is not None
            quota = quota_decision(ctx.meter.used(viewer.subscriber.id, month), plan)
            if not quota.allowed:
                raise HTTPException(
                    429,
                    f"the monthly quota of {plan.api_quota} calls is used up",
                    headers={"Retry-After": str(_seconds_to_next_month(now))},
                )
            ctx.meter.record(viewer.subscriber.id, month, overage=quota.overage)
            if quota.remaining is not None:
                response.headers["X-Quota-Remaining"] = str(quota.remaining)
    elif viewer.kind == "public":
        client = request.client.host if request.client else "unknown"
        decision = ctx.limiter.check(f"ip:{client}", PUBLIC_RATE, PUBLIC_BURST)
        if not decision.allowed:
            raise HTTPException(429, "rate limit exceeded; use an API key for more", headers=decision.headers())
        response.headers.update(decision.headers())
    return viewer


def _seconds_to_next_month(now: datetime) -> int:
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return max(1, int((datetime(year, month, 1, tzinfo=UTC) - now).total_seconds()))


Who = Annotated[Viewer, Depends(api_viewer)]


def _known_automation(ctx: AppContext, name: str | None) -> None:
    if name is not None and name not in ctx.automation_names():
        raise HTTPException(404, f"no automation named {name!r}; GET /api/v1/automations lists them")


@router.get("/api/v1/automations", response_model=AutomationPage, tags=["automations"], responses=RESPONSES)
def automations(ctx: Ctx, viewer: Who) -> dict[str, Any]:
    """Every running automation (one pipeline and product each)."""
    items = [automation_json(a) for a in ctx.db.read_sync(list_automations)]
    return {"items": items, "next_cursor": None}


@router.get("/api/v1/plans", response_model=PlanPage, tags=["plans"], responses=RESPONSES)
def plans(ctx: Ctx, viewer: Who) -> dict[str, Any]:
    """The plans on sale: price, delay, caps, channels, masked fields and API quota."""
    return {"items": [plan_json(p) for p in ctx.access.current() if p.public], "next_cursor": None}


@router.get("/api/v1/signals", response_model=SignalPage, tags=["signals"], responses=RESPONSES)
def signals(
    ctx: Ctx,
    viewer: Who,
    automation: Annotated[str | None, Query(max_length=64, description="only this automation")] = None,
    key: Annotated[str | None, Query(max_length=128, description="only this key, e.g. AAPL")] = None,
    since: Annotated[datetime | None, Query(description="only bars at or after this time (ISO 8601 with zone)")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size")] = 50,
    cursor: Annotated[str | None, Query(max_length=64, description="next_cursor of the previous page")] = None,
) -> dict[str, Any]:
    """Signals you are entitled to, newest first, in pages of ``limit``; follow ``next_cursor``."""
    if since is not None and since.tzinfo is None:
        raise HTTPException(400, "since needs a timezone, e.g. 2024-01-02T15:30:00Z")
    before_id = None
    if cursor is not None:
        try:
            before_id = decode_cursor(cursor)
        except ValueError as exc:
            raise HTTPException(400, f"cursor: {exc}") from None
    _known_automation(ctx, automation)
    now = datetime.now(UTC)
    scopes = _scopes(ctx, viewer, now, automation)
    rows = ctx.db.read_sync(
        list_signals,
        scopes=scopes,
        automation=automation,
        key=key,
        since=since,
        before_id=before_id,
        limit=limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    items = [body for body in (present(s, viewer, now) for s in rows) if body is not None]
    next_cursor = encode_cursor(rows[-1].id) if more and rows and rows[-1].id is not None else None
    return {"items": items, "next_cursor": next_cursor}


def _scopes(ctx: AppContext, viewer: Viewer, now: datetime, automation: str | None) -> Any:
    if viewer.is_admin:
        return None
    names = [automation] if automation is not None else ctx.automation_names()
    return scopes_for(viewer, now, names)


@router.get("/api/v1/signals/{signal_id}", response_model=SignalOut, tags=["signals"], responses=RESPONSES)
def signal(signal_id: int, ctx: Ctx, viewer: Who) -> dict[str, Any]:
    """One signal, as your plan shows it, with its place in the hash chain."""
    found = ctx.db.read_sync(get_signal, signal_id)
    body = present(found, viewer, datetime.now(UTC)) if found is not None else None
    if body is None:  # the same answer whether it does not exist or is not yours to see yet
        raise HTTPException(404, f"no signal with id {signal_id}")
    return body


def _refresh(ctx: AppContext, viewer: Viewer) -> Viewer | None:
    """The viewer again (plans, state and watchlist may have changed); None if their access ended."""
    if viewer.kind != "subscriber" or viewer.subscriber is None:
        return viewer
    if viewer.api_key is not None:
        found = ctx.viewers.keys.get(viewer.api_key.prefix)
        if found is not None and found[1].revoked_at is not None:
            return None
    try:
        return subscriber_viewer(ctx, viewer.subscriber.id, api_key=viewer.api_key, session=viewer.session)
    except HTTPException:
        return None


@router.get(
    "/api/v1/stream",
    tags=["signals"],
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}, **RESPONSES},
)
async def stream(
    request: Request,
    ctx: Ctx,
    viewer: Who,
    automation: Annotated[str | None, Query(max_length=64)] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)] = None,
) -> EventSourceResponse:
    """Signals as they are released to you, as server-sent events (``event: signal``, ``id:`` the signal id).

    Reconnect with ``Last-Event-ID`` (browsers do it by themselves) to get every
    signal released after that one; without it the stream starts now.
    """
    await asyncio.to_thread(_known_automation, ctx, automation)
    cursor: tuple[datetime, int] = (datetime.now(UTC) - SETTLE, 0)
    if last_event_id is not None:
        if not last_event_id.strip().isdigit():
            raise HTTPException(400, "Last-Event-ID must be a signal id")
        found = await ctx.db.read(position_of, viewer, int(last_event_id))
        if found is not None:
            cursor = found

    async def events() -> AsyncIterator[dict[str, Any]]:
        nonlocal cursor, viewer
        ctx.metrics.sse_clients.inc()
        refreshed = time.monotonic()
        try:
            while not ctx.hub.closed:
                if time.monotonic() - refreshed > 5:
                    again = await asyncio.to_thread(_refresh, ctx, viewer)
                    if again is None:
                        return
                    viewer, refreshed = again, time.monotonic()
                now = datetime.now(UTC)
                batch = await ctx.db.read(released_after, viewer, cursor, now, automation=automation)
                for position, item in batch:
                    body = present(item, viewer, now)
                    cursor = position
                    if body is not None:
                        yield {
                            "event": "signal",
                            "id": str(item.id),
                            "data": json.dumps(body, allow_nan=False),
                        }
                if len(batch) < 200:
                    if await request.is_disconnected():
                        return
                    await ctx.hub.wait(ctx.hub.latest_id, timeout=0.5)
        finally:
            ctx.metrics.sse_clients.dec()

    return EventSourceResponse(events(), ping=15, headers={"Cache-Control": "no-store"})
