"""Forms: reading a url-encoded body, CSRF tokens, and the per-address throttle of form posts.

Forms are ``application/x-www-form-urlencoded`` and read with :func:`read_form`, which
returns only the fields a route names, so no form can set anything else (no mass
assignment). Forms for visitors carry a double-submit CSRF token: the ``sm_csrf``
cookie, set by the page that renders the form, must equal the hidden ``csrf`` field.
Forms for signed-in people carry ``viewer.csrf(pepper)``, bound to their session.
"""

from __future__ import annotations

import hmac
import re
import secrets
from urllib.parse import parse_qsl

from fastapi import HTTPException, Request
from fastapi.responses import Response

from ..auth import Viewer
from ..context import AppContext
from ..security import CSRF_COOKIE, client_address

__all__ = [
    "CSRF_COOKIE",
    "CSRF_REFUSED",
    "anon_csrf",
    "check_anon_csrf",
    "check_csrf",
    "read_form",
    "secure_cookies",
    "set_csrf_cookie",
    "throttle",
]

_CSRF_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
_MAX_FIELDS = 20
CSRF_REFUSED = "This form has expired or did not come from this site. Reload the page and send it again."


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


def secure_cookies(ctx: AppContext) -> bool:
    """Cookies carry ``Secure`` when the site is served over HTTPS."""
    return ctx.settings.base_url.startswith("https")


def anon_csrf(request: Request) -> str:
    """The visitor's double-submit token: the one in their cookie, or a new one."""
    current = request.cookies.get(CSRF_COOKIE, "")
    return current if _CSRF_SHAPE.fullmatch(current) else secrets.token_urlsafe(32)


def set_csrf_cookie(response: Response, ctx: AppContext, token: str) -> None:
    response.set_cookie(CSRF_COOKIE, token, path="/", httponly=True, samesite="lax", secure=secure_cookies(ctx))


def check_anon_csrf(request: Request, submitted: str) -> None:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not submitted or not hmac.compare_digest(cookie.encode(), submitted.encode()):
        raise HTTPException(403, CSRF_REFUSED)


def check_csrf(viewer: Viewer, ctx: AppContext, submitted: str) -> None:
    """The token of a signed-in form must belong to this session."""
    if not viewer.check_csrf(submitted, ctx.pepper):
        raise HTTPException(403, CSRF_REFUSED)


def throttle(request: Request, ctx: AppContext, action: str) -> None:
    """At most 10 tries in a row per address and action, then one every 30 seconds."""
    decision = ctx.limiter.check(f"form:{action}:{client_address(request)}", 1 / 30, 10)
    if not decision.allowed:
        raise HTTPException(429, "Too many tries from your address. Wait a minute and try again.")
