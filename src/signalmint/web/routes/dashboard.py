"""A subscriber's dashboard: plan and standing, their live feed, watchlist, notifications, API keys.

Every route needs a subscriber's session (anyone else is sent to /login). Forms carry the
session's CSRF token; each changes only the caller's own rows, and the plan itself only
ever changes through the operator's pages. The page itself is drawn by
:func:`signalmint.web.dashboard_page.dashboard_page`, for these routes and the
"Where alerts go" ones alike.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from ...errors import LimitError
from ...records import Preferences
from ...store.accounts import set_preference, set_watchlist
from ...store.auth import list_api_keys, revoke_api_key
from ..context import AppContext, get_ctx
from ..core.deps import SessionMe as Me
from ..core.forms import check_csrf, read_form
from ..core.render import redirect, render
from ..dashboard_page import NOTIFY_CHANNELS, dashboard_page
from ..delivery_view import noise_choice
from ..params import Id, is_digits

__all__ = ["parse_keys", "router"]

router = APIRouter(include_in_schema=False)
Ctx = Annotated[AppContext, Depends(get_ctx)]

_KEY = re.compile(r"[A-Za-z0-9._-]{1,32}")
_CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


def parse_keys(text: str) -> tuple[list[str], list[str]]:
    """Symbols from a comma or space separated list, in order without repeats, and the invalid ones.

    >>> parse_keys("AAPL, msft  BRK.B,AAPL,,  $$$")
    (['AAPL', 'msft', 'BRK.B'], ['$$$'])
    """
    keys: list[str] = []
    bad: list[str] = []
    for word in re.split(r"[\s,]+", text.strip())[:1000]:
        if not word:
            continue
        if not _KEY.fullmatch(word):
            bad.append(word)
        elif word not in keys:
            keys.append(word)
    return keys, bad


def _clock(text: str) -> int | None:
    """Minutes after midnight of ``HH:MM``; None when empty; ValueError otherwise."""
    text = text.strip()
    if not text:
        return None
    match = _CLOCK.fullmatch(text)
    if match is None:
        raise ValueError(f"“{text[:10]}” is not a time: use HH:MM, e.g. 22:00")
    return int(match.group(1)) * 60 + int(match.group(2))


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard(request: Request, ctx: Ctx, me: Me) -> HTMLResponse:
    return dashboard_page(request, ctx, me)


@router.post("/dashboard/watchlist", response_class=HTMLResponse)
async def save_watchlist(request: Request, ctx: Ctx, me: Me) -> Response:
    form = await read_form(request, "keys", "csrf")
    check_csrf(me, ctx, form["csrf"])
    assert me.subscriber is not None
    plan = me.plan
    if plan is None or plan.watchlist is None:
        reason = "Your plan covers a fixed set of symbols." if plan and plan.keys else "There is no watchlist to edit."
        return dashboard_page(request, ctx, me, status=400, errors={"watchlist": reason})
    keys, bad = parse_keys(form["keys"])
    error = None
    if bad:
        error = f"Not a symbol: {', '.join(bad[:5])}. Use 1 to 32 letters, digits, dots, dashes or underscores."
    else:
        try:  # the store holds the cap, for every path that changes a watchlist
            await ctx.db.write(set_watchlist, me.subscriber.id, keys, datetime.now(UTC))
        except LimitError as exc:
            error = (
                f"Your {plan.name} plan watches up to {exc.cap} symbols; you listed {len(keys)}. "
                "Remove some, or move to a plan with a larger watchlist."
            )
    if error:
        return dashboard_page(
            request, ctx, me, status=400, errors={"watchlist": error}, values={"keys": form["keys"][:2000]}
        )
    ctx.viewers.forget_subscriber(me.subscriber.id)
    return redirect("/dashboard?saved=watchlist#watchlist")


@router.post("/dashboard/preferences", response_class=HTMLResponse)
async def save_preferences(request: Request, ctx: Ctx, me: Me) -> Response:
    names = ("channel", "enabled", "quiet_start", "quiet_end", "daily_budget", "quiet_mode", "group_seconds", "csrf")
    form = await read_form(request, *names)
    check_csrf(me, ctx, form["csrf"])
    assert me.subscriber is not None
    channel = form["channel"]
    if me.plan is None or channel not in me.plan.channels or channel not in NOTIFY_CHANNELS:
        raise HTTPException(400, "Your plan does not include that channel.")
    try:
        start, end = _clock(form["quiet_start"]), _clock(form["quiet_end"])
        if (start is None) != (end is None):
            raise ValueError("Give quiet hours both a start and an end, or neither.")
        if start is not None and start == end:
            raise ValueError("Quiet hours need an end different from their start.")
        budget = form["daily_budget"].strip()
        if budget and not (is_digits(budget) and len(budget) <= 5 and int(budget) <= 10_000):
            raise ValueError("The daily budget is a whole number of alerts from 0 to 10,000, or empty for no limit.")
        quiet_mode, group_seconds = noise_choice(form["quiet_mode"], form["group_seconds"])
    except ValueError as exc:
        return dashboard_page(request, ctx, me, status=400, errors={channel: str(exc)}, values={channel: form})
    prefs = Preferences(
        channel=channel,
        enabled=form["enabled"] in {"on", "true", "1"},
        quiet_start=start,
        quiet_end=end,
        daily_budget=int(budget) if budget else None,
        quiet_mode=quiet_mode,
        group_seconds=group_seconds,
    )
    await ctx.db.write(set_preference, me.subscriber.id, prefs)
    ctx.viewers.forget_subscriber(me.subscriber.id)
    return redirect("/dashboard?saved=notifications#notifications")


@router.post("/dashboard/keys", response_class=HTMLResponse)
async def create_key(request: Request, ctx: Ctx, me: Me) -> Response:
    form = await read_form(request, "name", "csrf")
    check_csrf(me, ctx, form["csrf"])
    assert me.subscriber is not None
    if me.plan is None:
        raise HTTPException(403, "API keys need a plan.")
    try:
        key, text = await ctx.accounts.create_key(form["name"][:100], subscriber_id=me.subscriber.id)
    except LimitError as exc:
        return dashboard_page(request, ctx, me, status=400, errors={"api": str(exc)})
    return render(request, "key_created.html", key=key, text=text, back="/dashboard#api", viewer=me)


@router.post("/dashboard/keys/{key_id}/revoke")
async def revoke_key(key_id: Id, request: Request, ctx: Ctx, me: Me) -> Response:
    form = await read_form(request, "csrf")
    check_csrf(me, ctx, form["csrf"])
    assert me.subscriber is not None
    owned = {k.id: k for k in ctx.db.read_sync(list_api_keys, me.subscriber.id)}
    done = await ctx.db.write(revoke_api_key, key_id, datetime.now(UTC), owner=me.subscriber.id)
    if not done:  # someone else's, unknown, or already revoked: the same answer
        raise HTTPException(404, "You have no active API key with that id.")
    if key_id in owned:
        ctx.viewers.forget_key(owned[key_id].prefix)
    return redirect("/dashboard?saved=revoked#api")
