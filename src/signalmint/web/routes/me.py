"""The subscriber's own account over the API: /api/v1/me, watchlist and keys.

Every route acts on the caller's own account only (the id comes from the key
or session, never from the request), so one subscriber cannot reach another's.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from ...billing.usage import month_of
from ...store.accounts import MAX_WATCHLIST, set_watchlist
from ...store.auth import list_api_keys, revoke_api_key
from ..context import AppContext, ctx_dependency
from ..core.deps import RESPONSES
from ..core.deps import ApiMe as Me
from ..openapi import errors
from ..params import Id

__all__ = ["router"]

router = APIRouter(tags=["me"], responses=RESPONSES)
Ctx = Annotated[AppContext, Depends(ctx_dependency)]
KEY = re.compile(r"^[A-Za-z0-9._-]{1,32}$")


class WatchlistIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: list[Annotated[str, Field(pattern=KEY.pattern)]] = Field(
        max_length=MAX_WATCHLIST, description="the keys (symbols) to follow: 1-32 letters, digits, . _ -"
    )


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)


def _key_json(key: Any) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "created_at": key.created_at.isoformat(),
        "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
        "revoked": key.revoked_at is not None,
    }


@router.get("/api/v1/me")
def me(ctx: Ctx, viewer: Me) -> dict[str, Any]:
    """Your subscription, plan, entitlements per automation and API usage this month."""
    assert viewer.subscriber is not None
    sub, plan = viewer.subscription, viewer.plan
    month = month_of(datetime.now(UTC))
    used = ctx.meter.used(viewer.subscriber.id, month) if ctx.meter else 0
    return {
        "email": viewer.subscriber.email,
        "confirmed": viewer.subscriber.confirmed,
        "plan": plan.id if plan else None,
        "plan_version": plan.version if plan else None,
        "state": sub.state if sub else None,
        "trial_end": sub.trial_end.isoformat() if sub and sub.trial_end else None,
        "period_end": sub.period_end.isoformat() if sub and sub.period_end else None,
        "watchlist": sorted(viewer.watchlist),
        "access": {
            name: {
                "delay_seconds": g.delay.total_seconds(),
                "keys": sorted(g.keys) if g.keys is not None else None,
                "masked": sorted(g.masked),
                "channels": sorted(g.channels),
            }
            for name, g in viewer.grants.items()
        },
        "usage": {"month": month, "calls": used, "quota": plan.api_quota if plan else None},
    }


@router.get("/api/v1/me/watchlist")
def get_watchlist(viewer: Me) -> dict[str, Any]:
    """The keys you follow, and how many your plan lets you choose."""
    return {"keys": sorted(viewer.watchlist), "max": viewer.plan.watchlist if viewer.plan else None}


@router.put("/api/v1/me/watchlist", responses=errors(400, 422))
async def put_watchlist(body: WatchlistIn, ctx: Ctx, viewer: Me) -> dict[str, Any]:
    """Replace your watchlist (at most your plan's `watchlist` keys)."""
    assert viewer.subscriber is not None
    plan = viewer.plan
    if plan is None or plan.watchlist is None:
        raise HTTPException(400, "your plan has no watchlist to choose")
    keys = sorted({k.strip() for k in body.keys})
    bad = [k for k in keys if not KEY.match(k)]
    if bad:
        raise HTTPException(422, f"not a key: {bad[0]!r} (1-32 letters, digits, . _ -)")
    await ctx.db.write(set_watchlist, viewer.subscriber.id, keys, datetime.now(UTC))
    ctx.viewers.forget_subscriber(viewer.subscriber.id)
    return {"keys": keys, "max": plan.watchlist}


@router.get("/api/v1/me/keys")
def keys(ctx: Ctx, viewer: Me) -> dict[str, Any]:
    """Your API keys (their prefixes only: the secret is shown once, at creation)."""
    assert viewer.subscriber is not None
    items = [_key_json(k) for k in ctx.db.read_sync(list_api_keys, viewer.subscriber.id)]
    return {"items": items, "next_cursor": None}


@router.post("/api/v1/me/keys", status_code=201, responses=errors(422))
async def create_key(body: KeyIn, ctx: Ctx, viewer: Me) -> dict[str, Any]:
    """A new API key; `key` is in this response only, store it now (at most 10 active keys)."""
    assert viewer.subscriber is not None
    key, text = await ctx.accounts.create_key(body.name, subscriber_id=viewer.subscriber.id)
    return {**_key_json(key), "key": text}


@router.delete("/api/v1/me/keys/{key_id}", status_code=204, responses=errors(404, 422))
async def revoke_key(key_id: Id, ctx: Ctx, viewer: Me) -> None:
    """Revoke one of your keys (it stops working at once). Someone else's key is a 404."""
    assert viewer.subscriber is not None
    owned = {k.id: k for k in await ctx.db.read(list_api_keys, viewer.subscriber.id)}
    done = await ctx.db.write(revoke_api_key, key_id, datetime.now(UTC), owner=viewer.subscriber.id)
    if not done:
        raise HTTPException(404, f"you have no active key with id {key_id}")
    if key_id in owned:  # forgotten here and, on PostgreSQL, by every other replica at once
        ctx.viewers.forget_key(owned[key_id].prefix)
