"""The operator's pages under /admin: overview, subscribers (search, detail, plan, comp, trial, CSV), keys.

Every page depends on :func:`require_admin`: the public is sent to /admin/login, and a
subscriber, by session or by key, gets 403 (OWASP API5: function-level authorization).
Only the sign-in routes are open. Changes go through :class:`~signalmint.admin.Operator`,
like the admin API's, so both behave the same.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from starlette.background import BackgroundTask

from ...accounts import Accounts
from ...errors import AccessError, DeliveryError
from ...money import parse_minor
from ...records import STATES, Plan
from ...store import Connection
from ...store.accounts import (
    count_subscribers,
    current_subscription,
    get_preferences,
    get_subscriber,
    get_watchlist,
    list_subscribers,
    open_subscriptions,
)
from ...store.auth import list_api_keys, revoke_api_key
from ..auth import Viewer, resolve_viewer
from ..context import AppContext, get_ctx, get_viewer
from ..params import After, Id, parse_whole
from .account import (
    anon_form,
    check_anon_csrf,
    check_csrf,
    end_session,
    read_form,
    redirect,
    render,
    start_session,
    throttle,
)
from .dashboard import standing

__all__ = ["require_admin", "router"]

log = logging.getLogger("signalmint.web")
router = APIRouter(include_in_schema=False)
Ctx = Annotated[AppContext, Depends(get_ctx)]
Who = Annotated[Viewer, Depends(get_viewer)]
PAGE = 50


def require_admin(request: Request) -> Viewer:
    """The operator; the public is sent to sign in, anyone else is refused."""
    viewer = resolve_viewer(request)
    if viewer.is_admin:
        return viewer
    if viewer.kind == "public":
        raise HTTPException(303, "Please sign in as the operator.", headers={"Location": "/admin/login"})
    raise HTTPException(403, "These pages are for the operator only.")


Admin = Annotated[Viewer, Depends(require_admin)]


def _page(request: Request, ctx: AppContext, admin: Viewer, name: str, **context: Any) -> HTMLResponse:
    return render(request, name, nav_active="admin", viewer=admin, csrf=admin.csrf(ctx.pepper), **context)


# -- sign-in -----------------------------------------------------------------------------------


def _login_page(request: Request, ctx: AppContext, *, status: int = 200, error: str | None = None) -> HTMLResponse:
    return anon_form(
        request,
        "admin_login.html",
        status=status,
        nav_active="admin",
        password_enabled=ctx.accounts.admin_password_enabled,
        link_enabled=bool(ctx.settings.admin.email),
        error=error,
    )


@router.get("/admin/login", response_class=HTMLResponse)
def login_page(request: Request, ctx: Ctx, viewer: Who) -> Response:
    return redirect("/admin") if viewer.is_admin else _login_page(request, ctx)


@router.post("/admin/login", response_class=HTMLResponse)
async def login(request: Request, ctx: Ctx) -> Response:
    form = await read_form(request, "password", "csrf")
    check_anon_csrf(request, form["csrf"])
    throttle(request, ctx, "admin-login")
    if not ctx.accounts.admin_password_enabled:
        return _login_page(request, ctx, status=400, error="Password sign-in is off: use the emailed link.")
    session = await ctx.accounts.admin_password_login(form["password"][:1024])
    if session is None:
        return _login_page(request, ctx, status=401, error="That password is not right.")
    return await start_session(request, ctx, session, admin=True, to="/admin")


async def _send_link(accounts: Accounts, email: str) -> None:
    try:
        await accounts.request_admin_link(email)
    except DeliveryError:
        log.exception("admin sign-in: the link could not be sent")


@router.post("/admin/link", response_class=HTMLResponse)
async def email_link(request: Request, ctx: Ctx) -> Response:
    form = await read_form(request, "email", "csrf")
    check_anon_csrf(request, form["csrf"])
    throttle(request, ctx, "admin-link")
    email = form["email"].strip()[:254]
    if ctx.settings.demo:
        link = await ctx.accounts.request_admin_link(email)
        return render(request, "check_inbox.html", purpose="admin", email=email, link=link, demo=True)
    response = render(request, "check_inbox.html", purpose="admin", email=email, link=None, demo=False)
    response.background = BackgroundTask(_send_link, ctx.accounts, email)
    return response


@router.get("/admin/auth", response_class=HTMLResponse)
async def auth(request: Request, ctx: Ctx, token: str = "") -> Response:
    session = await ctx.accounts.redeem(token, "admin")
    if session is None:
        return render(request, "link_invalid.html", status=400, purpose="admin", nav_active="admin")
    return await start_session(request, ctx, session, admin=True, to="/admin")


@router.post("/admin/logout")
async def logout(request: Request, ctx: Ctx, admin: Admin) -> Response:
    return await end_session(request, ctx, admin, "/admin/login")


# -- overview ------------------------------------------------------------------------------------


def _overview(conn: Connection, plans: dict[tuple[str, int], Plan]) -> dict[str, Any]:
    by_plan: dict[str, Counter[str]] = {}
    mrr: Counter[str] = Counter()
    unconfirmed = 0
    for sub, subscriber in open_subscriptions(conn):
        by_plan.setdefault(sub.plan_id, Counter())[sub.state] += 1
        unconfirmed += subscriber.confirmed_at is None
        plan = plans.get((sub.plan_id, sub.plan_version))
        if plan is not None and sub.state in {"active", "past_due"} and plan.price:
            mrr[plan.currency] += plan.price if plan.interval == "month" else plan.price // 12
    states = Counter[str]()
    for counts in by_plan.values():
        states.update(counts)
    return {
        "total": count_subscribers(conn),
        "unconfirmed": unconfirmed,
        "by_plan": sorted(by_plan.items()),
        "states": states,
        "mrr": sorted(mrr.items()),
    }


@router.get("/admin", response_class=HTMLResponse)
def overview(request: Request, ctx: Ctx, admin: Admin) -> HTMLResponse:
    data = ctx.db.read_sync(_overview, ctx.access.plans)
    return _page(
        request, ctx, admin, "admin.html", tab="overview", plans=ctx.access.current(), all_states=STATES, **data
    )


# -- subscribers ---------------------------------------------------------------------------------


@router.get("/admin/subscribers", response_class=HTMLResponse)
def subscribers(
    request: Request,
    ctx: Ctx,
    admin: Admin,
    q: Annotated[str, Query(max_length=100)] = "",
    after: After = 0,
) -> HTMLResponse:
    rows = ctx.db.read_sync(list_subscribers, after_id=after, limit=PAGE + 1, search=q.strip() or None)
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    return _page(
        request,
        ctx,
        admin,
        "admin_subscribers.html",
        tab="subscribers",
        rows=rows,
        plans=ctx.access.plans,
        q=q.strip(),
        after=after,
        next_after=rows[-1].subscriber.id if more and rows else None,
    )


@router.get("/admin/subscribers.csv")
def export(ctx: Ctx, admin: Admin) -> Response:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    return Response(
        ctx.operator.export_csv(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="subscribers-{stamp}.csv"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/admin/ledger.csv")
def ledger_export(ctx: Ctx, admin: Admin) -> Response:
    """Every credit ledger entry (top-ups, debits), oldest first."""
    from ...billing.credits import ledger_csv

    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    return Response(
        ctx.db.read_sync(ledger_csv, None, currency=ctx.settings.billing.currency),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="ledger-{stamp}.csv"', "Cache-Control": "no-store"},
    )


def _detail(request: Request, ctx: AppContext, admin: Admin, subscriber_id: int, **extra: Any) -> HTMLResponse:
    def read(conn: Connection) -> dict[str, Any] | None:
        subscriber = get_subscriber(conn, subscriber_id)
        if subscriber is None:
            return None
        return {
            "subscriber": subscriber,
            "subscription": current_subscription(conn, subscriber_id),
            "watchlist": sorted(get_watchlist(conn, subscriber_id)),
            "preferences": get_preferences(conn, subscriber_id),
            "api_keys": list_api_keys(conn, subscriber_id),
        }

    data = ctx.db.read_sync(read)
    if data is None:
        raise HTTPException(404, f"There is no subscriber #{subscriber_id}.")
    sub = data["subscription"]
    plan = ctx.access.plans.get((sub.plan_id, sub.plan_version)) if sub else None
    return _page(
        request,
        ctx,
        admin,
        "admin_subscriber.html",
        tab="subscribers",
        plan=plan,
        standing=standing(sub, plan, data["subscriber"], datetime.now(UTC)),
        plans_on_sale=ctx.access.current(),
        done=request.query_params.get("done", ""),
        **{"error": None, **data, **extra},
    )


@router.get("/admin/subscribers/{subscriber_id}", response_class=HTMLResponse)
def subscriber(subscriber_id: Id, request: Request, ctx: Ctx, admin: Admin) -> HTMLResponse:
    return _detail(request, ctx, admin, subscriber_id)


async def _act(request: Request, ctx: AppContext, admin: Viewer, *names: str) -> dict[str, str]:
    form = await read_form(request, *names, "csrf")
    check_csrf(admin, ctx, form["csrf"])
    return form


def _failed(request: Request, ctx: AppContext, admin: Viewer, subscriber_id: int, message: str) -> HTMLResponse:
    response = _detail(request, ctx, admin, subscriber_id, error=message)
    response.status_code = 400
    return response


def _done(subscriber_id: int, what: str) -> Response:
    return redirect(f"/admin/subscribers/{subscriber_id}?done={what}")


@router.post("/admin/subscribers/{subscriber_id}/plan", response_class=HTMLResponse)
async def change_plan(subscriber_id: Id, request: Request, ctx: Ctx, admin: Admin) -> Response:
    form = await _act(request, ctx, admin, "plan")
    try:
        await ctx.operator.change_plan(subscriber_id, form["plan"])
    except AccessError as exc:
        return _failed(request, ctx, admin, subscriber_id, str(exc))
    return _done(subscriber_id, "plan")


def _end_of(day: str) -> datetime | None:
    """The end of a ``YYYY-MM-DD`` day in UTC (access runs through that day); None when empty."""
    if not day.strip():
        return None
    try:
        chosen = date.fromisoformat(day.strip())
    except ValueError:
        raise AccessError(f"“{day[:20]}” is not a date: use YYYY-MM-DD") from None
    end = datetime.combine(chosen + timedelta(days=1), time(0), tzinfo=UTC)
    if end <= datetime.now(UTC):
        raise AccessError("that date is in the past")
    return end


@router.post("/admin/subscribers/{subscriber_id}/comp", response_class=HTMLResponse)
async def comp(subscriber_id: Id, request: Request, ctx: Ctx, admin: Admin) -> Response:
    form = await _act(request, ctx, admin, "plan", "until")
    try:
        await ctx.operator.comp(subscriber_id, form["plan"] or None, _end_of(form["until"]))
    except AccessError as exc:
        return _failed(request, ctx, admin, subscriber_id, str(exc))
    return _done(subscriber_id, "comp")


@router.post("/admin/subscribers/{subscriber_id}/payment", response_class=HTMLResponse)
async def record_payment(subscriber_id: Id, request: Request, ctx: Ctx, admin: Admin) -> Response:
    """A payment received outside any provider (bank transfer, crypto): money and months of a plan."""
    from ...billing.manual import record_manual_payment

    form = await _act(request, ctx, admin, "plan", "amount", "months", "reference", "note")
    try:
        ctx.operator._require(subscriber_id)
        plan = ctx.operator._plan(form["plan"])
        try:
            amount = parse_minor(form["amount"])
            months = parse_whole(form["months"], low=0, high=9999, what="the months")  # 1 to 36: checked when recorded
        except ValueError as exc:
            raise AccessError(str(exc)) from None
        reference = form["reference"].strip()[:80] or form["csrf"][-16:]
        await ctx.db.write(
            record_manual_payment,
            ctx.settings,
            subscriber_id,
            plan,
            amount=amount,
            months=months,
            reference=reference,
            note=form["note"].strip()[:500],
            now=datetime.now(UTC),
        )
    except AccessError as exc:
        return _failed(request, ctx, admin, subscriber_id, str(exc))
    ctx.viewers.forget_subscriber(subscriber_id)
    return _done(subscriber_id, "payment")


@router.post("/admin/subscribers/{subscriber_id}/trial", response_class=HTMLResponse)
async def extend_trial(subscriber_id: Id, request: Request, ctx: Ctx, admin: Admin) -> Response:
    form = await _act(request, ctx, admin, "days")
    try:
        try:
            days = parse_whole(form["days"], low=0, high=9999, what="the number of days")  # the operator says 1 to 365
        except ValueError as exc:
            raise AccessError(str(exc)) from None
        await ctx.operator.extend_trial(subscriber_id, days)
    except AccessError as exc:
        return _failed(request, ctx, admin, subscriber_id, str(exc))
    return _done(subscriber_id, "trial")


# -- admin API keys ------------------------------------------------------------------------------


@router.get("/admin/keys", response_class=HTMLResponse)
def keys(request: Request, ctx: Ctx, admin: Admin) -> HTMLResponse:
    found = ctx.db.read_sync(list_api_keys, None, admin=True)
    return _page(
        request, ctx, admin, "admin_keys.html", tab="keys", api_keys=found, done=request.query_params.get("done", "")
    )


@router.post("/admin/keys", response_class=HTMLResponse)
async def create_key(request: Request, ctx: Ctx, admin: Admin) -> Response:
    form = await read_form(request, "name", "csrf")
    check_csrf(admin, ctx, form["csrf"])
    key, text = await ctx.accounts.create_key(form["name"][:100], subscriber_id=None, admin=True)
    return render(request, "key_created.html", nav_active="admin", key=key, text=text, back="/admin/keys", viewer=admin)


@router.post("/admin/keys/{key_id}/revoke")
async def revoke_key(key_id: Id, request: Request, ctx: Ctx, admin: Admin) -> Response:
    form = await read_form(request, "csrf")
    check_csrf(admin, ctx, form["csrf"])
    prefixes = {k.id: k.prefix for k in ctx.db.read_sync(list_api_keys, None, admin=True)}
    if not await ctx.db.write(revoke_api_key, key_id, datetime.now(UTC), owner=None, admin=True):
        raise HTTPException(404, "There is no active admin key with that id.")
    if key_id in prefixes:
        ctx.viewers.forget_key(prefixes[key_id])
    return redirect("/admin/keys?done=revoked")
