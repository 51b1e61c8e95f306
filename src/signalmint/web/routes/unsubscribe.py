"""One-click unsubscribe (RFC 8058) from an alert email: no cookies, no login, a signed link."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from ...delivery.worker import unsubscribe_token
from ...store.outbox import set_endpoint_status
from ..context import AppContext, ctx_dependency
from ..params import Id

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
Ctx = Annotated[AppContext, Depends(ctx_dependency)]


def _unsubscribe_target(ctx: AppContext, endpoint_id: int, token: str) -> None:
    expected = unsubscribe_token(endpoint_id, ctx.pepper)
    if len(token) > 64 or not hmac.compare_digest(expected, token):
        raise HTTPException(404, "this unsubscribe link is not valid")


@router.get("/unsubscribe/{endpoint_id}/{token}", response_class=HTMLResponse, include_in_schema=False)
def unsubscribe_page(endpoint_id: Id, token: str, request: Request, ctx: Ctx) -> HTMLResponse:
    _unsubscribe_target(ctx, endpoint_id, token)
    html = (
        "<!doctype html><title>Unsubscribe</title><main style='font-family:system-ui;max-width:32rem;margin:4rem auto'>"
        "<h1>Stop these emails?</h1><form method='post'><button type='submit'>Unsubscribe</button></form></main>"
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


@router.post("/unsubscribe/{endpoint_id}/{token}", include_in_schema=False)
async def unsubscribe(endpoint_id: Id, token: str, ctx: Ctx) -> Response:
    """RFC 8058 one-click: mail clients POST ``List-Unsubscribe=One-Click`` without cookies."""
    _unsubscribe_target(ctx, endpoint_id, token)
    await ctx.db.write(set_endpoint_status, endpoint_id, "disabled", "unsubscribed", datetime.now(UTC))
    ctx.db.audience_changed()
    return HTMLResponse("<!doctype html><title>Unsubscribed</title><p>You will not get these emails any more.</p>")
