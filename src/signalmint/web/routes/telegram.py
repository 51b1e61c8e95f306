"""Connecting a Telegram chat to a subscriber's alerts, over the API (the dashboard has a button)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from .. import endpoint_ops as ops
from ..context import AppContext, ctx_dependency
from ..core.deps import RESPONSES
from ..core.deps import ApiMe as Me
from ..openapi import errors

__all__ = ["router"]

router = APIRouter(tags=["me"])
Ctx = Annotated[AppContext, Depends(ctx_dependency)]


@router.post("/api/v1/me/telegram", responses={**RESPONSES, **errors(404)})
async def telegram_link(ctx: Ctx, viewer: Me) -> dict[str, Any]:
    """A one-time link (valid for an hour) that connects a Telegram chat to your alerts."""
    return await ops.telegram_link(ctx, viewer)
