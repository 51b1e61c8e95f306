"""Operations endpoints: /healthz and /metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ..context import AppContext, get_ctx

__all__ = ["router"]

router = APIRouter()
Ctx = Annotated[AppContext, Depends(get_ctx)]


@router.get(
    "/healthz",
    tags=["operations"],
    responses={
        503: {
            "description": "the database does not answer (the same body, with `status: unavailable`)",
            "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}},
        }
    },
)
def healthz(ctx: Ctx, response: Response) -> dict[str, Any]:
    """Liveness and readiness: the database answers and each automation's engine state, with its
    freshness (stale and since when, last bar age, gaps, late signals); ``stale`` lists the
    automations whose data is delayed. A stale automation does not make this a 503: the
    process is healthy, its data is not."""
    database_ok = ctx.db.ping()
    automations = []
    if ctx.engine is not None:
        health = {h["name"]: h for h in ctx.engine.health()}
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
                    **health.get(status.name, {}),
                }
            )
    if not database_ok:
        response.status_code = 503
    return {
        "status": "ok" if database_ok else "unavailable",
        "database": database_ok,
        "stale": sorted(a["name"] for a in automations if a.get("stale")),
        "automations": automations,
    }


@router.get("/metrics", tags=["operations"], response_class=Response)
def metrics(ctx: Ctx) -> Response:
    """Prometheus metrics in the text exposition format."""
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)
