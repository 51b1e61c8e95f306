"""Sign-up with double opt-in, magic-link sign-in and sign-out.

The forms, CSRF tokens and session cookies these pages use are the web core's
(:mod:`signalmint.web.core`), shared with every other page.

The sign-in page answers the same whether or not an address has an account, and in
production sends the email after the response, so its timing says nothing either.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from starlette.background import BackgroundTask

from ...accounts.service import Accounts
from ...errors import AccessError, DeliveryError
from ...records import Plan
from ...store.accounts import current_subscription, normalize_email
from ..auth import Viewer, resolve_viewer
from ..context import AppContext, get_ctx, get_viewer
from ..core.forms import check_anon_csrf, read_form, throttle
from ..core.render import anon_form, redirect, render
from ..core.sessions import end_session, start_session

__all__ = ["router", "signable"]

log = logging.getLogger("signalmint.web")
router = APIRouter(include_in_schema=False)
Ctx = Annotated[AppContext, Depends(get_ctx)]
Who = Annotated[Viewer, Depends(get_viewer)]

# -- sign-up ---------------------------------------------------------------------------------


def signable(plan: Plan) -> bool:
    """Plans a visitor can start without paying: free, or with a trial."""
    return plan.free or plan.trial_days > 0


def _plans(ctx: AppContext) -> list[Plan]:
    return [p for p in ctx.access.current() if p.public]


def _signup_page(request: Request, ctx: AppContext, chosen: str, *, status: int = 200, **extra: Any) -> HTMLResponse:
    plans = _plans(ctx)
    paid_open = ctx.billing is not None
    if chosen not in {p.id for p in plans if signable(p) or paid_open}:
        chosen = next((p.id for p in plans if signable(p)), "")
    viewer = resolve_viewer(request)
    if viewer.kind == "subscriber" and viewer.session is not None:
        # Signed in: each paid plan's button goes straight to its checkout.
        return render(
            request,
            "signup.html",
            status=status,
            nav_active="signup",
            plans=plans,
            chosen=chosen,
            signup_open=ctx.settings.signup,
            paid_open=paid_open,
            csrf=viewer.csrf(ctx.pepper),
            **extra,
        )
    return anon_form(
        request,
        "signup.html",
        status=status,
        nav_active="signup",
        plans=plans,
        chosen=chosen,
        signup_open=ctx.settings.signup,
        paid_open=paid_open,
        **extra,
    )


@router.get("/signup", response_class=HTMLResponse)
def signup_page(
    request: Request, ctx: Ctx, plan: Annotated[str, Query(max_length=64)] = "", email: str = ""
) -> HTMLResponse:
    return _signup_page(request, ctx, plan, email=email[:254], error=None)


@router.get("/pricing", response_class=HTMLResponse)
def pricing_page(request: Request, ctx: Ctx, plan: Annotated[str, Query(max_length=64)] = "") -> HTMLResponse:
    """The plans and their prices (the sign-up page under the name people look for)."""
    return _signup_page(request, ctx, plan, email="", error=None)


@router.post("/signup", response_class=HTMLResponse)
async def signup(request: Request, ctx: Ctx) -> Response:
    form = await read_form(request, "email", "plan", "csrf")
    check_anon_csrf(request, form["csrf"])
    throttle(request, ctx, "signup")
    try:
        plan = ctx.accounts.public_plan(form["plan"][:64])
        if not signable(plan) and ctx.billing is None:
            raise AccessError(f"the {plan.name} plan cannot be bought on this site yet: payments are not set up")
        result = await ctx.accounts.signup(form["email"], plan.id)
    except AccessError as exc:
        return _signup_page(request, ctx, form["plan"], status=400, email=form["email"][:254], error=str(exc))
    except DeliveryError:
        log.exception("sign-up: the confirmation email could not be sent")
        message = "We could not send the email just now. Please try again in a minute."
        return _signup_page(request, ctx, form["plan"], status=503, email=form["email"][:254], error=message)
    demo = ctx.settings.demo
    email = result.subscriber.email
    return render(
        request,
        "check_inbox.html",
        purpose="signup",
        email=email,
        link=result.link if demo else None,
        demo=demo,
        checkout_plan=result.checkout_plan,
    )


@router.get("/confirm", response_class=HTMLResponse)
async def confirm(request: Request, ctx: Ctx, token: str = "") -> Response:
    return await _redeem(request, ctx, token, "confirm")


# -- sign-in and sign-out ----------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, viewer: Who) -> Response:
    if viewer.kind == "subscriber" and viewer.session:
        return redirect("/dashboard")
    return anon_form(request, "login.html", nav_active="login", email="", error=None)


async def _send_login(accounts: Accounts, email: str) -> None:
    try:
        await accounts.request_login(email)
    except DeliveryError:
        log.exception("sign-in: the link could not be sent")


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, ctx: Ctx) -> Response:
    form = await read_form(request, "email", "csrf")
    check_anon_csrf(request, form["csrf"])
    throttle(request, ctx, "login")
    try:
        email = normalize_email(form["email"])
    except AccessError as exc:
        return anon_form(
            request, "login.html", status=400, nav_active="login", email=form["email"][:254], error=str(exc)
        )
    if ctx.settings.demo:  # no email goes out: the page is the only way to get the link
        link = await ctx.accounts.request_login(email)
        return render(request, "check_inbox.html", purpose="login", email=email, link=link, demo=True)
    response = render(request, "check_inbox.html", purpose="login", email=email, link=None, demo=False)
    response.background = BackgroundTask(_send_login, ctx.accounts, email)
    return response


@router.get("/auth", response_class=HTMLResponse)
async def auth(request: Request, ctx: Ctx, token: str = "") -> Response:
    return await _redeem(request, ctx, token, "login")


async def _redeem(request: Request, ctx: AppContext, token: str, purpose: str) -> Response:
    used = await ctx.accounts.redeem_link(token, purpose)
    if used is None:
        return render(request, "link_invalid.html", status=400, purpose=purpose, nav_active="login")
    to = "/dashboard"
    if used.subscriber_id is not None:
        ctx.viewers.forget_subscriber(used.subscriber_id)  # just confirmed: no stale cached state
        if used.plan_id is not None:
            to = await _checkout_after_signup(ctx, used.subscriber_id, used.plan_id)
    return await start_session(request, ctx, used.session, admin=False, to=to)


async def _checkout_after_signup(ctx: AppContext, subscriber_id: int, plan_id: str) -> str:
    """The checkout of the paid plan chosen at sign-up (its price read from the plan now).

    The dashboard instead when the plan is already theirs, no longer on sale, or payments
    are not set up: the account then stays on the plan it started with.
    """

    if ctx.billing is None:
        return "/dashboard"
    sub = ctx.db.read_sync(current_subscription, subscriber_id)
    if sub is not None and sub.plan_id == plan_id and sub.state in {"active", "trialing", "comped"}:
        return "/dashboard"
    try:
        _checkout, url = await ctx.billing.subscribe(subscriber_id, plan_id)
    except AccessError:
        log.warning("sign-up: plan %r is not on sale any more; no checkout", plan_id)
        return "/dashboard"
    return url


@router.post("/logout")
async def logout(request: Request, ctx: Ctx, viewer: Who) -> Response:
    return await end_session(request, ctx, viewer, "/")
