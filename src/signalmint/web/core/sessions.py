"""Browser sessions: the session cookie, and starting or ending a session."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from ...accounts.service import ADMIN_SESSION_TTL, SESSION_TTL
from ..auth import SESSION_COOKIE, Viewer
from ..context import AppContext
from .forms import check_csrf, read_form, secure_cookies
from .render import redirect

__all__ = ["clear_session_cookie", "end_session", "set_session_cookie", "start_session"]


def set_session_cookie(response: Response, ctx: AppContext, token: str, *, admin: bool) -> None:
    ttl = ADMIN_SESSION_TTL if admin else SESSION_TTL
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(ttl.total_seconds()),
        path="/",
        httponly=True,
        samesite="lax",
        secure=secure_cookies(ctx),
    )


def clear_session_cookie(response: Response, ctx: AppContext) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=secure_cookies(ctx))


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
