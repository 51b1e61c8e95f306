"""The web layer's shared core: what every route module imports, and all they share.

- :mod:`.deps`: who may use a route (the signed-in subscriber, the operator, over pages or
  the API) and the API's common answers.
- :mod:`.forms`: reading forms, CSRF tokens, throttling form posts.
- :mod:`.render`: rendering pages, redirects, flash notices.
- :mod:`.sessions`: the session cookie, signing in and out.

Route modules under :mod:`signalmint.web.routes` import from here (and from the other
modules of :mod:`signalmint.web`), never from one another: ``tests/web/test_structure.py``
holds them to it.
"""

from __future__ import annotations

from .deps import (
    RESPONSES,
    AdminApi,
    AdminPage,
    ApiMe,
    SessionMe,
    api_subscriber,
    automation_or_404,
    require_admin,
    require_admin_api,
    require_subscriber,
)
from .forms import CSRF_COOKIE, anon_csrf, check_anon_csrf, check_csrf, read_form, set_csrf_cookie, throttle
from .render import Flash, anon_form, redirect, render, render_public
from .sessions import clear_session_cookie, end_session, set_session_cookie, start_session

__all__ = [
    "CSRF_COOKIE",
    "RESPONSES",
    "AdminApi",
    "AdminPage",
    "ApiMe",
    "Flash",
    "SessionMe",
    "anon_csrf",
    "anon_form",
    "api_subscriber",
    "automation_or_404",
    "check_anon_csrf",
    "check_csrf",
    "clear_session_cookie",
    "end_session",
    "read_form",
    "redirect",
    "render",
    "render_public",
    "require_admin",
    "require_admin_api",
    "require_subscriber",
    "set_csrf_cookie",
    "set_session_cookie",
    "start_session",
    "throttle",
]
