"""The public hash chain of each automation, for anyone to download and check.

``GET /api/v1/chain?automation=NAME`` serves the chain as JSON lines (one
:func:`~signalmint.chain.hashing.chain_record` per signal, in seq order), as the public sees it: the
numbers and salt of the signals whose masks have expired, only the hash and commitment of the
others, and only the place (``{"seq", "pending": true}``) of a signal still in its delay. A
scheme-2 hash says nothing without its commitment, so the next signal's ``prev_hash`` stays;
after a pending scheme-1 signal it is hidden too (that hash would confirm a guessed key). Pages of ``limit`` signals
continue with ``after=`` the last seq (the ``X-Next-After`` header says so, and is absent on the
last page). ``signalmint verify --url`` walks it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response

from ...chain.hashing import chain_record
from ...store.signals import chain_signals
from ..context import AppContext, ctx_dependency
from ..openapi import errors
from ..params import MAX_ID

__all__ = ["router"]

router = APIRouter()
Ctx = Annotated[AppContext, Depends(ctx_dependency)]
MAX_PAGE = 5000


def _page(ctx: AppContext, automation: str, after: int, limit: int) -> tuple[list[str], int | None]:
    if automation not in ctx.automation_names():
        raise HTTPException(404, f"no automation named {automation!r}; GET /api/v1/automations lists them")
    grant = ctx.access.public_for(automation)
    now = datetime.now(UTC)
    lines: list[str] = []
    rows = ctx.db.read_sync(chain_signals, automation, after, limit)
    pending_v1 = False
    for signal in rows:
        hidden = grant.hidden_at(signal, now)
        if hidden is None:  # not released to the public yet: its place only
            lines.append(json.dumps({"seq": signal.seq, "scheme": signal.scheme, "pending": True}))
            pending_v1 = signal.scheme < 2
            continue
        record = chain_record(signal, revealed=not hidden)
        if pending_v1:  # a scheme-1 hash over a key, a minute and small numbers is easy to guess
            record["prev_hash"] = None
        pending_v1 = False
        lines.append(json.dumps(record, allow_nan=False))
    return lines, (rows[-1].seq if len(rows) == limit else None)


@router.get(
    "/api/v1/chain",
    tags=["signals"],
    responses={
        200: {"content": {"application/x-ndjson": {}}, "description": "one chain record per line"},
        **errors(404, 422),
    },
)
def chain(
    ctx: Ctx,
    automation: Annotated[str, Query(min_length=1, max_length=64, description="the automation's name")],
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="continue after this seq (the X-Next-After header)")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1000,
) -> Response:
    """An automation's public hash chain as JSON lines, oldest first: check it with ``signalmint verify --url``.

    Each line: ``seq``, ``scheme``, ``key``, ``time``, ``kind``, ``prev_hash``, ``hash``,
    ``commitment`` (scheme 2), ``revealed``, and once revealed ``score``, ``payload`` and
    ``salt``. A signal the public does not see yet is ``{"seq", "scheme", "pending": true}``.
    """
    lines, next_after = _page(ctx, automation, after, limit)
    headers = {"Cache-Control": "public, max-age=5"}
    if next_after is not None:
        headers["X-Next-After"] = str(next_after)
    body = "".join(line + "\n" for line in lines)
    return Response(body, media_type="application/x-ndjson", headers=headers)


@router.get("/automations/{name}/chain.jsonl", include_in_schema=False)
def chain_file(
    name: str,
    ctx: Ctx,
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1000,
) -> Response:
    """The same chain as a file to download."""
    response = chain(ctx, name, after, limit)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}-chain.jsonl"'
    return response
