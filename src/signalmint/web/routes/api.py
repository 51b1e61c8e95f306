"""The public JSON API under /api/v1: automations, plans, signals and the live stream.

Every route takes ``Authorization: Bearer <key>`` (or a signed-in browser's session) and
answers what that subscriber is entitled to (delay, keys, masked fields), exactly as on the
web; without either it answers the public view. Who may call, how fast and how often is
:mod:`signalmint.web.api_access`: the plan's API term (rate, monthly quota, overage) holds
for keys and sessions alike, a plan without it gets 403, and the public is limited per
address.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sse_starlette import EventSourceResponse

from ...store import get_signal, list_automations, list_signals
from ..api_access import read_viewer, stream_viewer
from ..auth import Viewer, subscriber_viewer
from ..context import AppContext, ctx_dependency, get_ctx
from ..core.deps import MAX_LIMIT, RESPONSES
from ..openapi import errors
from ..params import Id, parse_id
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
from ..teaser import teasers_after, veil_json
from ..visibility import LATE, SETTLE, late_released, position_of, present, released_after, scopes_for

__all__ = ["router", "signals"]

log = logging.getLogger("signalmint.web")
router = APIRouter()
Ctx = Annotated[AppContext, Depends(ctx_dependency)]


Who = Annotated[Viewer, Depends(read_viewer)]
Streamer = Annotated[Viewer, Depends(stream_viewer)]


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


class SignalQuery(BaseModel):
    """The filters of ``GET /api/v1/signals`` (unknown parameters are ignored, as elsewhere)."""

    model_config = ConfigDict(extra="ignore", frozen=True)  # frozen: one parsed query serves many requests
    automation: str | None = Field(default=None, max_length=64, description="only this automation")
    key: str | None = Field(default=None, max_length=128, description="only this key, e.g. AAPL")
    since: datetime | None = Field(default=None, description="only bars at or after this time (ISO 8601 with zone)")
    limit: int = Field(default=50, ge=1, le=MAX_LIMIT, description="page size")
    cursor: str | None = Field(
        default=None, max_length=64, pattern="^[A-Za-z0-9_-]+$", description="next_cursor of the previous page"
    )


_QUERIES: dict[bytes, SignalQuery] = {}  # query string -> its validated filters (clients repeat theirs)


def _signal_query(request: Request) -> SignalQuery:
    """The request's filters, validated once per distinct query string; a 422 if they are wrong."""
    raw: bytes = request.scope.get("query_string", b"")
    query = _QUERIES.get(raw)
    if query is None:
        try:
            query = SignalQuery.model_validate(dict(request.query_params))
        except ValidationError as exc:
            raise RequestValidationError([{**e, "loc": ("query", *e["loc"])} for e in exc.errors()]) from None
        if len(_QUERIES) >= 4096:
            _QUERIES.clear()
        _QUERIES[raw] = query
    return query


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI query parameters from a pydantic model (for routes that validate it themselves)."""
    schema = model.model_json_schema()
    return [
        {"name": name, "in": "query", "required": False, "schema": prop, "description": prop.get("description", "")}
        for name, prop in schema["properties"].items()
    ]


@router.get(
    "/api/v1/signals",
    response_model=SignalPage,
    tags=["signals"],
    responses={**RESPONSES, **errors(400, 404, 422)},
    openapi_extra={"parameters": _query_parameters(SignalQuery)},
)
async def signals(request: Request) -> Response:
    """Signals you are entitled to, newest first, in pages of ``limit``; follow ``next_cursor``.

    Pages are cached for the current second per access profile (viewers whose plans, keys and
    masks are the same share them): a signal can appear up to a second late, never early.
    """
    # The busiest route: it validates its query and calls api_viewer itself, which saves
    # FastAPI's per-parameter dependency solving (bench/api.py); the rules are the same.
    query = _signal_query(request)
    viewer = await read_viewer(request)
    ctx = get_ctx(request)
    automation, key, since, limit, cursor = query.automation, query.key, query.since, query.limit, query.cursor
    if since is not None and since.tzinfo is None:
        raise HTTPException(400, "since needs a timezone, e.g. 2024-01-02T15:30:00Z")
    before_id = None
    if cursor is not None:
        try:
            before_id = decode_cursor(cursor)
        except ValueError as exc:
            raise HTTPException(400, f"cursor: {exc}") from None
    if automation is not None and automation not in ctx.automation_names():
        raise HTTPException(404, f"no automation named {automation!r}; GET /api/v1/automations lists them")
    second = int(time.time())

    async def make() -> bytes:
        now = datetime.fromtimestamp(second, UTC)
        scopes = _scopes(ctx, viewer, now, automation)
        rows = await ctx.db.read(
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
        items = [item for item in (present(s, viewer, now) for s in rows) if item is not None]
        next_cursor = encode_cursor(rows[-1].id) if more and rows and rows[-1].id is not None else None
        return json.dumps({"items": items, "next_cursor": next_cursor}, allow_nan=False).encode()

    page_key = (viewer.signature, automation, key, since, before_id, limit, second, ctx.hub.latest_id)
    body = await (ctx.page(page_key, make, second=second) if viewer.signature else make())
    return Response(body, media_type="application/json")


def _scopes(ctx: AppContext, viewer: Viewer, now: datetime, automation: str | None) -> Any:
    if viewer.is_admin:
        return None
    names = [automation] if automation is not None else ctx.automation_names()
    return scopes_for(viewer, now, names)


@router.get(
    "/api/v1/signals/{signal_id}",
    response_model=SignalOut,
    tags=["signals"],
    responses={**RESPONSES, **errors(404, 422)},
)
def signal(signal_id: Id, ctx: Ctx, viewer: Who) -> dict[str, Any]:
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
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "server-sent events"},
        **RESPONSES,
        **errors(400, 404, 422),
    },
)
async def stream(
    request: Request,
    ctx: Ctx,
    viewer: Streamer,
    automation: Annotated[str | None, Query(max_length=64)] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)] = None,
) -> EventSourceResponse:
    """Signals as they are released to you, as server-sent events (``event: signal``, ``id:`` the signal id).

    Reconnect with ``Last-Event-ID`` (browsers do it by themselves) to get every
    signal released after that one; without it the stream starts now. A signal that
    fires but reaches you later (your plan's delay) is announced at once as
    ``event: teaser`` (automation, kind, when it fired, when you get it, which plan has it
    now; never its key or numbers). A masked signal carries ``veil``: when its numbers show
    on your plan and which plan shows them now.
    """
    await asyncio.to_thread(_known_automation, ctx, automation)
    cursor: tuple[datetime, int] = (datetime.now(UTC) - SETTLE, 0)
    if last_event_id is not None:
        try:
            last_id = parse_id(last_event_id, low=0)
        except ValueError as exc:
            raise HTTPException(400, f"Last-Event-ID: {exc}") from None
        found = await ctx.db.read(position_of, viewer, last_id)
        if found is not None:
            cursor = found
    floor = cursor  # nothing at or before where the stream starts is sent, late or not
    sent: dict[int, datetime] = {}  # signal id -> its release time, for the last LATE of the stream

    owner = viewer.subscriber.id if viewer.subscriber is not None else None
    titles = {a.name: a.title for a in await ctx.db.read(list_automations)}
    teased, _ = await ctx.db.read(teasers_after, viewer, None, datetime.now(UTC), [], titles)

    async def events() -> AsyncIterator[dict[str, Any]]:
        nonlocal cursor, viewer, teased, sent
        ctx.metrics.sse_clients.inc()
        if owner is not None:
            ctx.live_streams[owner] = ctx.live_streams.get(owner, 0) + 1
        refreshed = time.monotonic()
        try:
            while not ctx.hub.closed:
                if time.monotonic() - refreshed > 5:
                    again = await asyncio.to_thread(_refresh, ctx, viewer)
                    if again is None:
                        return
                    viewer, refreshed = again, time.monotonic()
                generation = ctx.hub.generation  # before reading: a wake-up during the read is kept
                now = datetime.now(UTC)
                plans = ctx.access.current()
                teased, teasers = await ctx.db.read(
                    teasers_after, viewer, teased, now, plans, titles, automation=automation
                )
                for teaser in teasers:  # no id: a teaser is not a position in the stream
                    yield {"event": "teaser", "data": json.dumps(teaser)}
                batch = await ctx.db.read(released_after, viewer, cursor, now, automation=automation)
                if sent:  # commits that became visible after the stream passed them: send them now
                    late = await ctx.db.read(
                        late_released, viewer, cursor, floor, set(sent), now, automation=automation
                    )
                    if late:
                        log.warning("stream: %d signal(s) committed late, sent out of order", len(late))
                    batch = late + batch
                for position, item in batch:
                    body = present(item, viewer, now)
                    cursor = max(cursor, position)
                    sent[item.id or 0] = position[0]
                    grant = viewer.grant(item.automation)
                    if body is not None and body["masked"] and grant is not None:
                        body["veil"] = veil_json(item, grant, plans)
                    if body is not None:
                        yield {
                            "event": "signal",
                            "id": str(item.id),
                            "data": json.dumps(body, allow_nan=False),
                        }
                if len(sent) > 2000 or (sent and min(sent.values()) < cursor[0] - LATE):
                    sent = {i: at for i, at in sent.items() if at >= cursor[0] - LATE}
                if len(batch) < 200:
                    if await request.is_disconnected():
                        return
                    await ctx.hub.wait_since(generation, timeout=ctx.hub.poll_timeout)
        finally:
            ctx.metrics.sse_clients.dec()
            if owner is not None:
                left = ctx.live_streams.get(owner, 1) - 1
                if left > 0:
                    ctx.live_streams[owner] = left
                else:
                    ctx.live_streams.pop(owner, None)

    return EventSourceResponse(events(), ping=15, headers={"Cache-Control": "no-store"})
