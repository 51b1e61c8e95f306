"""Bounces and complaints from the email provider: the address gets nothing more."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...store.outbox import list_endpoints, set_endpoint_status
from ..context import AppContext, ctx_dependency
from ..openapi import errors

__all__ = ["router"]

router = APIRouter(tags=["me"])
Ctx = Annotated[AppContext, Depends(ctx_dependency)]


class EmailEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["bounce", "complaint", "delivered"]
    email: str = Field(max_length=320)
    permanent: bool = Field(default=True, description="a hard bounce (soft bounces are retried, not suppressed)")


@router.post(
    "/api/v1/email/events",
    tags=["operations"],
    responses=errors(401, 422),
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": EmailEvent.model_json_schema()}}}},
)
async def email_event(request: Request, ctx: Ctx) -> dict[str, Any]:
    """Your email provider reports hard bounces and complaints here; the address gets nothing more.

    Authenticate with ``Authorization: Bearer <email.inbound_secret>`` (checked before the body
    is even read).
    """
    secret = ctx.settings.email.inbound_secret
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not secret or not hmac.compare_digest(secret.encode(), given.encode()):
        raise HTTPException(401, "wrong or missing inbound secret", headers={"WWW-Authenticate": "Bearer"})
    try:
        event = EmailEvent.model_validate_json(await request.body())
    except ValidationError as exc:
        raise HTTPException(422, f"not an email event: {exc.errors()[0]['msg']}") from None
    if event.type == "delivered" or (event.type == "bounce" and not event.permanent):
        return {"suppressed": 0}
    address = f"mailto:{event.email.strip().lower()}"
    now = datetime.now(UTC)

    def suppress(conn: Any) -> int:
        hits = [e for e in list_endpoints(conn) if e.channel == "email" and e.url.lower() == address]
        for endpoint in hits:
            set_endpoint_status(conn, endpoint.id, "disabled", f"suppressed: {event.type}", now)
        return len(hits)

    count = await ctx.db.write(suppress)
    ctx.db.audience_changed()
    return {"suppressed": count}
