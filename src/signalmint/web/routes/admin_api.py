"""The operator's API under /api/v1/admin: subscribers, plans, comps, trials, exports.

Only admin keys and admin sessions pass; a subscriber's key or session gets 403
(OWASP API5), the public 401.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from ...accounts.admin import summary_json
from ...delivery.shapes import delivery_json
from ...errors import AccessError
from ...records import Subscription
from ...store.accounts import get_subscriber, list_subscribers
from ...store.outbox import counts_by_status, list_deliveries, replay
from ..auth import Viewer
from ..context import AppContext, ctx_dependency
from ..core.deps import RESPONSES, require_admin_api
from ..openapi import errors
from ..params import After, Before, Id
from ..serialize import plan_json

__all__ = ["router"]

router = APIRouter(tags=["admin"], responses=RESPONSES)
Ctx = Annotated[AppContext, Depends(ctx_dependency)]


Admin = Annotated[Viewer, Depends(require_admin_api)]


class PlanChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plan: str = Field(max_length=64)


class Comp(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plan: str | None = Field(default=None, max_length=64, description="default: their current plan")
    until: datetime | None = Field(default=None, description="default: forever")


class Trial(BaseModel):
    model_config = ConfigDict(extra="forbid")
    days: int = Field(ge=1, le=365)


def _subscription_json(sub: Any) -> dict[str, Any]:
    return {
        "id": sub.id,
        "plan": sub.plan_id,
        "plan_version": sub.plan_version,
        "state": sub.state,
        "trial_end": sub.trial_end.isoformat() if sub.trial_end else None,
        "period_end": sub.period_end.isoformat() if sub.period_end else None,
    }


@router.get("/api/v1/admin/subscribers", responses=errors(422))
def subscribers(
    ctx: Ctx,
    admin: Admin,
    q: Annotated[str | None, Query(max_length=100, description="search in emails")] = None,
    after: After = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Every subscriber with plan, state, channels and watchlist."""
    rows = ctx.db.read_sync(list_subscribers, after_id=after, limit=limit + 1, search=q)
    more = len(rows) > limit
    rows = rows[:limit]
    items = [summary_json(r, ctx.access.plans) for r in rows]
    return {"items": items, "next_cursor": str(rows[-1].subscriber.id) if more and rows else None}


@router.get("/api/v1/admin/subscribers.csv", response_class=Response)
def export(ctx: Ctx, admin: Admin) -> Response:
    """Every subscriber as CSV."""
    return Response(
        ctx.operator.export_csv(),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="subscribers.csv"'},
    )


@router.get("/api/v1/admin/subscribers/{subscriber_id}", responses=errors(404, 422))
def subscriber(subscriber_id: Id, ctx: Ctx, admin: Admin) -> dict[str, Any]:
    rows = ctx.db.read_sync(list_subscribers, after_id=subscriber_id - 1, limit=1)
    if not rows or rows[0].subscriber.id != subscriber_id:
        raise HTTPException(404, f"no subscriber with id {subscriber_id}")
    return summary_json(rows[0], ctx.access.plans)


def _change(ctx: AppContext, subscriber_id: int, plan: str | None) -> None:
    """404 for a subscriber or plan that does not exist (whatever else the operator refuses is a 409)."""
    if ctx.db.read_sync(get_subscriber, subscriber_id) is None:
        raise HTTPException(404, f"no subscriber with id {subscriber_id}")
    if plan is not None and plan not in {p.id for p in ctx.access.current()}:
        raise HTTPException(404, f"no plan {plan!r}; GET /api/v1/admin/plans lists them")


async def _conflict(change: Awaitable[Subscription]) -> dict[str, Any]:
    try:
        return _subscription_json(await change)
    except AccessError as exc:  # the subscriber's state does not allow it (no plan to extend...)
        raise HTTPException(409, str(exc)) from None


@router.post("/api/v1/admin/subscribers/{subscriber_id}/plan", responses=errors(404, 409, 422))
async def change_plan(subscriber_id: Id, body: PlanChange, ctx: Ctx, admin: Admin) -> dict[str, Any]:
    """Move the subscriber to the current version of a plan."""
    _change(ctx, subscriber_id, body.plan)
    return await _conflict(ctx.operator.change_plan(subscriber_id, body.plan))


@router.post("/api/v1/admin/subscribers/{subscriber_id}/comp", responses=errors(404, 409, 422))
async def comp(subscriber_id: Id, body: Comp, ctx: Ctx, admin: Admin) -> dict[str, Any]:
    """Complimentary access to a plan, until a date or forever."""
    _change(ctx, subscriber_id, body.plan)
    return await _conflict(ctx.operator.comp(subscriber_id, body.plan, body.until))


@router.post("/api/v1/admin/subscribers/{subscriber_id}/trial", responses=errors(404, 409, 422))
async def extend_trial(subscriber_id: Id, body: Trial, ctx: Ctx, admin: Admin) -> dict[str, Any]:
    """Extend (or start) a trial by some days."""
    _change(ctx, subscriber_id, None)
    return await _conflict(ctx.operator.extend_trial(subscriber_id, body.days))


@router.get("/api/v1/admin/plans")
def plans(ctx: Ctx, admin: Admin) -> dict[str, Any]:
    """Every plan version, current or retired."""
    current = ctx.access.current_ids
    items = [
        {**plan_json(p), "current": (p.id, p.version) in current}
        for p in sorted(ctx.access.plans.values(), key=lambda p: (p.id, p.version))
    ]
    return {"items": items, "next_cursor": None}


@router.get("/api/v1/admin/deliveries", responses=errors(422))
def deliveries(
    ctx: Ctx,
    admin: Admin,
    status: Annotated[str | None, Query(pattern="^(pending|sending|sent|dead|skipped)$")] = "dead",
    before: Before = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Deliveries by status, newest first: by default the dead letters, with their reasons."""
    rows = ctx.db.read_sync(list_deliveries, status=status, before_id=before, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    items = [delivery_json(d) for d in rows]
    return {
        "items": items,
        "next_cursor": str(rows[-1].id) if more and rows else None,
        "counts": ctx.db.read_sync(counts_by_status),
    }


@router.post("/api/v1/admin/deliveries/{delivery_id}/replay", responses=errors(404, 422))
async def replay_delivery(delivery_id: Id, ctx: Ctx, admin: Admin) -> dict[str, Any]:
    """Send a dead letter again (its attempts start over, with the same idempotency id)."""
    from datetime import UTC
    from datetime import datetime as dt

    if not await ctx.db.write(replay, delivery_id, dt.now(UTC)):
        raise HTTPException(404, f"no dead or skipped delivery with id {delivery_id}")
    return {"id": delivery_id, "status": "pending"}
