"""Where a subscriber's alerts go, over the API: list, add, remove, test, and each one's delivery log.

The work is :mod:`signalmint.web.endpoint_ops`'s, shared with the dashboard's forms. A
webhook's signing secret is shown once, at registration; someone else's endpoint is a 404.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException

from ...delivery.shapes import delivery_json
from ...store.outbox import list_deliveries, list_endpoints, set_endpoint_status
from .. import endpoint_ops as ops
from ..context import AppContext, ctx_dependency
from ..core.deps import RESPONSES
from ..core.deps import ApiMe as Me
from ..endpoint_ops import EndpointIn
from ..openapi import errors
from ..params import Id

__all__ = ["router"]

router = APIRouter(tags=["me"])
Ctx = Annotated[AppContext, Depends(ctx_dependency)]


@router.get("/api/v1/me/endpoints", responses=RESPONSES)
def endpoints(ctx: Ctx, viewer: Me) -> dict[str, Any]:
    """Where your alerts go (email, webhooks, Apprise, Telegram) and each one's status."""
    assert viewer.subscriber is not None
    items = [ops.endpoint_json(e) for e in ctx.db.read_sync(list_endpoints, viewer.subscriber.id)]
    return {"items": items, "next_cursor": None}


@router.post("/api/v1/me/endpoints", status_code=201, responses={**RESPONSES, **errors(422)})
async def add(body: EndpointIn, ctx: Ctx, viewer: Me) -> dict[str, Any]:
    """Register a webhook (the response holds its signing secret, once) or an Apprise URL (at most 20 endpoints)."""
    return await ops.add(body, ctx, viewer)


@router.delete("/api/v1/me/endpoints/{endpoint_id}", status_code=204, responses={**RESPONSES, **errors(404, 422)})
async def remove(endpoint_id: Id, ctx: Ctx, viewer: Me) -> None:
    """Stop sending to one of your endpoints. Someone else's endpoint is a 404."""
    assert viewer.subscriber is not None
    done = await ctx.db.write(
        set_endpoint_status, endpoint_id, "disabled", "removed by the subscriber", datetime.now(UTC),
        owner=viewer.subscriber.id,
    )  # fmt: skip
    if not done:
        raise HTTPException(404, f"you have no endpoint with id {endpoint_id}")
    ctx.db.audience_changed()


@router.get("/api/v1/me/endpoints/{endpoint_id}/deliveries", responses={**RESPONSES, **errors(404, 422)})
def delivery_log(endpoint_id: Id, ctx: Ctx, viewer: Me) -> dict[str, Any]:
    """The last deliveries to one of your endpoints: status, attempts, last error, receipt."""
    assert viewer.subscriber is not None
    owned = {e.id for e in ctx.db.read_sync(list_endpoints, viewer.subscriber.id)}
    if endpoint_id not in owned:
        raise HTTPException(404, f"you have no endpoint with id {endpoint_id}")
    rows = ctx.db.read_sync(list_deliveries, endpoint_id=endpoint_id, limit=100)
    return {"items": [delivery_json(d) for d in rows], "next_cursor": None}


@router.post("/api/v1/me/endpoints/{endpoint_id}/test", responses={**RESPONSES, **errors(404, 422)})
async def test_event(endpoint_id: Id, ctx: Ctx, viewer: Me) -> dict[str, Any]:
    """Send a test message to one of your endpoints now; the answer says what the receiver said."""
    return await ops.test_event(endpoint_id, ctx, viewer)
