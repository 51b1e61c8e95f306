"""``POST /api/v1/ingest/{automation}``: data points pushed by external systems (``kind: push``).

Authenticated by the automation's own secret (a Standard Webhooks signature, see
:mod:`signalmint.sources.push`), never by a cookie, so it is exempt from the CSRF guard. The
checks run cheapest first and nothing is remembered before the points are queued:

=====  ==============================================================================
404    no enabled automation of that name takes pushes
413    the body is over the source's ``max_body``
401    the signature is missing or wrong, or its timestamp is outside ``tolerance``
503    the engine does not run in this process (``signalmint run --role web``), or the
       automation is restarting (``Retry-After``)
422    the body does not validate (nothing is queued)
429    the source's queue is full: the engine lags (``Retry-After``)
202    queued; ``{"accepted": N, "duplicate": false}``. A replayed ``webhook-id``
       answers 202 ``{"accepted": 0, "duplicate": true}`` and adds nothing
=====  ==============================================================================
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ...sources.push import PushOptions, PushSource, Refused, secret_key, verify_signature
from ...store.ingest import first_ingest, forget_ingest, forget_ingests
from ..context import get_ctx
from ..openapi import errors

__all__ = ["router"]

router = APIRouter()

#: Seconds a sender is told to wait when the queue is full or the automation restarts.
RETRY_AFTER = 1
#: Seconds between two prunings of an automation's remembered ids.
PRUNE_EVERY = 600.0

_POINT = {
    "type": "object",
    "required": ["key"],
    "additionalProperties": False,
    "properties": {
        "key": {"type": "string", "minLength": 1, "maxLength": 200},
        "time": {"type": "string", "format": "date-time", "description": "ISO 8601 with a zone; default: now"},
        "metrics": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
        "texts": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
    },
}
_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["points"],
                "additionalProperties": False,
                "properties": {"points": {"type": "array", "minItems": 1, "items": _POINT}},
            }
        }
    },
}


class IngestOut(BaseModel):
    accepted: int = Field(description="points queued by this request (0 for a replay)")
    duplicate: bool = Field(description="true when this webhook-id was already received: nothing was added")


def _source_options(request: Request, name: str) -> PushOptions:
    ctx = get_ctx(request)
    for automation in ctx.settings.automations:
        if automation.name == name and automation.enabled and automation.source.kind == "push":
            extra = dict(automation.source.model_extra or {})
            return PushOptions.model_validate(extra)
    raise HTTPException(404, f"no automation {name!r} takes pushed data here")


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/api/v1/ingest/{automation}",
    tags=["ingest"],
    summary="Push data points to a `kind: push` automation (signed with its secret, Standard Webhooks)",
    status_code=202,
    response_model=IngestOut,
    responses=errors(401, 404, 413, 422, 429, 503),
    openapi_extra={"requestBody": _BODY},
)
async def ingest(automation: str, request: Request) -> JSONResponse:
    ctx = get_ctx(request)
    options = _source_options(request, automation)
    body = await _body(request, options.max_body)
    now = time.time()
    try:
        event_id = verify_signature(secret_key(options.secret), request.headers, body, now, options.tolerance)
    except Refused as refused:
        raise HTTPException(refused.status, refused.message) from None
    if ctx.engine is None:
        raise HTTPException(
            503,
            "the engine does not run in this process (roles split): send pushes to the process "
            "started with the engine role",
        )
    source = ctx.engine.source(automation)
    if not isinstance(source, PushSource):
        raise HTTPException(
            503, f"automation {automation!r} is not running right now; send again", {"Retry-After": str(RETRY_AFTER)}
        )
    received = datetime.fromtimestamp(now, UTC)
    try:
        frame = source.parse(body, received)
    except Refused as refused:
        raise HTTPException(refused.status, refused.message) from None
    if source.full:
        raise HTTPException(
            429,
            f"automation {automation!r} is behind: its queue of {source.queue} requests is full; send again",
            {"Retry-After": str(RETRY_AFTER)},
        )
    if not await ctx.db.write(first_ingest, automation, event_id, received):
        return JSONResponse({"accepted": 0, "duplicate": True}, status_code=202)
    if not source.offer(frame):  # filled up while the id was written: not queued, so not remembered
        await ctx.db.write(forget_ingest, automation, event_id)
        raise HTTPException(429, f"automation {automation!r} is behind; send again", {"Retry-After": str(RETRY_AFTER)})
    if now - source.pruned_at > PRUNE_EVERY:
        source.pruned_at = now
        await ctx.db.write(
            forget_ingests, automation, datetime.fromtimestamp(now - options.retention.total_seconds(), UTC)
        )
    return JSONResponse({"accepted": len(frame), "duplicate": False}, status_code=202)
