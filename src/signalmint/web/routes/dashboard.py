"""A subscriber's dashboard: plan and standing, their live feed, watchlist, notifications, API keys.

Every route needs a subscriber's session (anyone else is sent to /login). Forms carry the
session's CSRF token; each changes only the caller's own rows, and the plan itself only
ever changes through the operator's pages.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from ...access import is_entitled
from ...errors import LimitError
from ...records import Plan, Preferences, Signal, Subscriber, Subscription
from ...registry import channel_kinds, in_display_order
from ...store import Connection, list_automations, list_signals
from ...store.accounts import get_preferences, set_preference, set_watchlist
from ...store.auth import list_api_keys, revoke_api_key
from ...store.health import open_stale_periods
from ...usage import month_of
from ..auth import Viewer, resolve_viewer
from ..context import AppContext, get_ctx
from ..params import Id, is_digits
from ..teaser import Veil, veil_for
from ..visibility import scopes_for
from .account import check_csrf, read_form, redirect, render

__all__ = ["Standing", "parse_keys", "router", "standing"]

router = APIRouter(include_in_schema=False)
Ctx = Annotated[AppContext, Depends(get_ctx)]

#: Channels that notify (the web feed and the API are pulled, not pushed): the installed
#: ``signalmint.channels`` plugins, read once, in display order.
NOTIFY_CHANNELS = in_display_order(channel_kinds())
FEED_ROWS = 20
_KEY = re.compile(r"[A-Za-z0-9._-]{1,32}")
_CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


def require_subscriber(request: Request) -> Viewer:
    """The signed-in subscriber; the public goes to /login, the operator to /admin."""
    viewer = resolve_viewer(request)
    if viewer.kind == "subscriber" and viewer.session and viewer.subscriber is not None:
        return viewer
    if viewer.is_admin:
        raise HTTPException(303, "The operator's pages are under /admin.", headers={"Location": "/admin"})
    if viewer.api_key is not None:
        raise HTTPException(403, "The dashboard needs a browser session; API keys work on /api/v1.")
    raise HTTPException(303, "Please sign in.", headers={"Location": "/login"})


Me = Annotated[Viewer, Depends(require_subscriber)]


@dataclass(frozen=True, slots=True)
class Standing:
    """Where a subscription stands, in words: a label, a tone for its badge, and what it means."""

    label: str
    tone: str  # good | brand | warn | bad
    detail: str
    entitled: bool


def _day(at: datetime | None) -> str:
    return f"{at:%b} {at.day}, {at.year}" if at else ""


def standing(sub: Subscription | None, plan: Plan | None, subscriber: Subscriber, now: datetime) -> Standing:
    """The subscription's state as a reader wants it (trial end, renewal, grace...)."""
    if sub is None or plan is None:
        return Standing("No plan", "bad", "You have no plan: choose one to receive signals.", False)
    ok = is_entitled(sub, plan, subscriber, now)
    if sub.state == "trialing":
        if ok and sub.trial_end is not None:
            days = max(1, math.ceil((sub.trial_end - now) / timedelta(days=1)))
            left = f"{days} day{'s' if days != 1 else ''} left"
            return Standing("Trial", "brand", f"Free trial until {_day(sub.trial_end)} ({left}).", ok)
        return Standing("Trial ended", "bad", f"Your trial ended on {_day(sub.trial_end)}.", ok)
    if sub.state == "active":
        detail = f"Renews on {_day(sub.period_end)}." if sub.period_end else "No end date."
        return Standing("Active", "good", detail, ok)
    if sub.state == "past_due":
        if ok and sub.past_due_since is not None:
            until = sub.past_due_since + timedelta(days=plan.grace_days)
            return Standing("Past due", "warn", f"A payment failed. Access continues until {_day(until)}.", ok)
        return Standing("Past due", "bad", "A payment failed and the grace period is over.", ok)
    if sub.state == "canceled":
        if ok:
            return Standing("Canceled", "warn", f"Canceled: access until {_day(sub.period_end)}.", ok)
        return Standing("Ended", "bad", f"Your plan ended on {_day(sub.period_end)}.", ok)
    if sub.state == "comped":
        if ok:
            end = f"until {_day(sub.period_end)}" if sub.period_end else "with no end date"
            return Standing("Complimentary", "brand", f"Complimentary access {end}.", ok)
        return Standing("Ended", "bad", f"Complimentary access ended on {_day(sub.period_end)}.", ok)
    return Standing("Expired", "bad", "This plan has expired.", ok)


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


def _feed(
    conn: Connection, viewer: Viewer, now: datetime, veils: dict[int, Veil] | None = None, plans: Sequence[Plan] = ()
) -> list[Signal]:
    """The signals the subscriber sees now (masked); ``veils`` gets what hides each masked one."""
    names = [a.name for a in list_automations(conn, enabled_only=False)]
    out = []
    for signal in list_signals(conn, scopes=scopes_for(viewer, now, names), limit=FEED_ROWS):
        grant = viewer.grant(signal.automation)
        view = grant.view(signal, now) if grant is not None else None
        if view is not None:
            out.append(view)
            if veils is not None and grant is not None and signal.id is not None:
                veil = veil_for(signal, view, grant, plans)
                if veil is not None:
                    veils[signal.id] = veil
    return out


def _page(request: Request, ctx: AppContext, viewer: Viewer, *, status: int = 200, **extra: Any) -> HTMLResponse:
    from .dashboard_delivery import delivery_context  # that module's routes render this page

    assert viewer.subscriber is not None
    subscriber, plan, now = viewer.subscriber, viewer.plan, datetime.now(UTC)

    veils: dict[int, Veil] = {}
    plans = ctx.access.current()

    def read(conn: Connection) -> dict[str, Any]:
        stale = {n: p for n, p in open_stale_periods(conn).items() if viewer.grant(n) is not None}
        return {
            "stale": stale,
            "titles": {a.name: a.display_title for a in ctx.settings.automations},
            "signals": _feed(conn, viewer, now, veils, plans),
            "veils": veils,
            "preferences": get_preferences(conn, subscriber.id),
            "api_keys": list_api_keys(conn, subscriber.id),
        }

    data = ctx.db.read_sync(read)
    calls = ctx.meter.used(subscriber.id, month_of(now)) if ctx.meter is not None and plan and plan.api else None
    extra.setdefault("errors", {})
    extra.setdefault("values", {})
    return render(
        request,
        "dashboard.html",
        status=status,
        nav_active="dashboard",
        viewer=viewer,
        csrf=viewer.csrf(ctx.pepper),
        subscriber=subscriber,
        subscription=viewer.subscription,
        plan=plan,
        standing=standing(viewer.subscription, plan, subscriber, now),
        watchlist=sorted(viewer.watchlist),
        notify_channels=[c for c in NOTIFY_CHANNELS if plan is not None and c in plan.channels],
        api_calls=calls,
        api_offers=[p for p in ctx.access.current() if p.public and p.api],
        stream_url="/api/v1/stream",
        saved=request.query_params.get("saved", ""),
        **data,
        **delivery_context(ctx, viewer),
        **extra,
    )


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard(request: Request, ctx: Ctx, me: Me) -> HTMLResponse:
    return _page(request, ctx, me)


@router.post("/dashboard/watchlist", response_class=HTMLResponse)
async def save_watchlist(request: Request, ctx: Ctx, me: Me) -> Response:
    form = await read_form(request, "keys", "csrf")
    check_csrf(me, ctx, form["csrf"])
    assert me.subscriber is not None
    plan = me.plan
    if plan is None or plan.watchlist is None:
        reason = "Your plan covers a fixed set of symbols." if plan and plan.keys else "There is no watchlist to edit."
        return _page(request, ctx, me, status=400, errors={"watchlist": reason})
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
        return _page(request, ctx, me, status=400, errors={"watchlist": error}, values={"keys": form["keys"][:2000]})
    ctx.viewers.forget_subscriber(me.subscriber.id)
    return redirect("/dashboard?saved=watchlist#watchlist")


@router.post("/dashboard/preferences", response_class=HTMLResponse)
async def save_preferences(request: Request, ctx: Ctx, me: Me) -> Response:
    from .dashboard_delivery import noise_choice  # that module imports this one

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
        return _page(request, ctx, me, status=400, errors={channel: str(exc)}, values={channel: form})
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
        return _page(request, ctx, me, status=400, errors={"api": str(exc)})
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
