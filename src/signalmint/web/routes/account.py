"""Sign-up with double opt-in, magic-link sign-in and sign-out; the form plumbing every page shares.

Forms are ``application/x-www-form-urlencoded`` and read with :func:`read_form`, which
returns only the fields a route names, so no form can set anything else (no mass
assignment). Forms for visitors carry a double-submit CSRF token: the ``sm_csrf``
cookie, set by the page that renders the form, must equal the hidden ``csrf`` field.
Forms for signed-in people carry ``viewer.csrf(pepper)``, bound to their session.

The sign-in page answers the same whether or not an address has an account, and in
production sends the email after the response, so its timing says nothing either.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.background import BackgroundTask

from ...accounts.service import ADMIN_SESSION_TTL, SESSION_TTL, Accounts
from ...errors import AccessError, DeliveryError
from ...records import Plan
from ...store.accounts import current_subscription, normalize_email
from ..auth import SESSION_COOKIE, Viewer, resolve_viewer
from ..context import AppContext, get_ctx, get_viewer
from ..security import client_address

__all__ = [
    "CSRF_COOKIE",
    "anon_csrf",
    "anon_form",
    "check_anon_csrf",
    "check_csrf",
    "clear_session_cookie",
    "end_session",
    "read_form",
    "redirect",
    "render",
    "router",
    "set_csrf_cookie",
    "set_session_cookie",
    "signable",
    "start_session",
    "throttle",
]

log = logging.getLogger("signalmint.web")
router = APIRouter(include_in_schema=False)
Ctx = Annotated[AppContext, Depends(get_ctx)]
Who = Annotated[Viewer, Depends(get_viewer)]

CSRF_COOKIE = "sm_csrf"
_CSRF_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
_MAX_FIELDS = 20
CSRF_REFUSED = "This form has expired or did not come from this site. Reload the page and send it again."


# -- shared plumbing: rendering, forms, cookies, CSRF, throttling ---------------------------


def render(request: Request, name: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    """A page for one person: never cached, with the viewer for the header."""
    ctx = get_ctx(request)
    context.setdefault("site_title", ctx.settings.web.title)
    context.setdefault("viewer", resolve_viewer(request))
    response: HTMLResponse = request.app.state.templates.TemplateResponse(request, name, context, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


async def read_form(request: Request, *names: str) -> dict[str, str]:
    """The named fields of a url-encoded form ("" when absent); every other field is ignored.

    A body of another type reads as an empty form, which then fails its CSRF check (403).
    """
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return dict.fromkeys(names, "")
    try:
        pairs = parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True, max_num_fields=_MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "That form could not be read.") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in names and key not in form:
            form[key] = value
    return {name: form.get(name, "") for name in names}


def _secure(ctx: AppContext) -> bool:
    return ctx.settings.base_url.startswith("https")


def anon_csrf(request: Request) -> str:
    """The visitor's double-submit token: the one in their cookie, or a new one."""
    current = request.cookies.get(CSRF_COOKIE, "")
    return current if _CSRF_SHAPE.fullmatch(current) else secrets.token_urlsafe(32)


def set_csrf_cookie(response: Response, ctx: AppContext, token: str) -> None:
    response.set_cookie(CSRF_COOKIE, token, path="/", httponly=True, samesite="lax", secure=_secure(ctx))


def check_anon_csrf(request: Request, submitted: str) -> None:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not submitted or not hmac.compare_digest(cookie.encode(), submitted.encode()):
        raise HTTPException(403, CSRF_REFUSED)


def check_csrf(viewer: Viewer, ctx: AppContext, submitted: str) -> None:
    """The token of a signed-in form must belong to this session."""
    if not viewer.check_csrf(submitted, ctx.pepper):
        raise HTTPException(403, CSRF_REFUSED)


def anon_form(request: Request, name: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    """A page with visitor forms: the token goes in the page and in the ``sm_csrf`` cookie."""
    token = anon_csrf(request)
    response = render(request, name, status=status, csrf=token, **context)
    set_csrf_cookie(response, get_ctx(request), token)
    return response


def set_session_cookie(response: Response, ctx: AppContext, token: str, *, admin: bool) -> None:
    ttl = ADMIN_SESSION_TTL if admin else SESSION_TTL
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(ttl.total_seconds()),
        path="/",
        httponly=True,
        samesite="lax",
        secure=_secure(ctx),
    )


def clear_session_cookie(response: Response, ctx: AppContext) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=_secure(ctx))


def throttle(request: Request, ctx: AppContext, action: str) -> None:
    """At most 10 tries in a row per address and action, then one every 30 seconds."""
    decision = ctx.limiter.check(f"form:{action}:{client_address(request)}", 1 / 30, 10)
    if not decision.allowed:
        raise HTTPException(429, "Too many tries from your address. Wait a minute and try again.")


async def start_session(request: Request, ctx: AppContext, session: str, *, admin: bool, to: str) -> Response:
    """Sign in with a new session: the previous one of this browser ends, the cookie is replaced."""
    previous = request.cookies.get(SESSION_COOKIE)
    if previous:
        await ctx.accounts.end_session(previous)
    response = redirect(to)
    set_session_cookie(response, ctx, session, admin=admin)
    return response


async def end_session(request: Request, ctx: AppContext, viewer: Viewer, to: str) -> Response:
    """Sign out: the session is revoked in the store, not only forgotten by the browser."""
    form = await read_form(request, "csrf")
    if viewer.session is not None:
        check_csrf(viewer, ctx, form["csrf"])
        await ctx.accounts.end_session(viewer.session)
    response = redirect(to)
    clear_session_cookie(response, ctx)
    return response


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
