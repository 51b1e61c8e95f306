"""Pages: rendering a template for one person or for everyone, redirects, and flash notices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse

from ..auth import resolve_viewer
from ..context import get_ctx
from .forms import anon_csrf, set_csrf_cookie

__all__ = ["Flash", "anon_form", "redirect", "render", "render_public"]


@dataclass(frozen=True, slots=True)
class Flash:
    """A notice shown once at the top of a page section (the result of a test event, say)."""

    tone: str  # success | error
    title: str
    detail: str


def render(request: Request, name: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    """A page for one person: never cached, with the viewer for the header."""
    ctx = get_ctx(request)
    context.setdefault("site_title", ctx.settings.web.title)
    context.setdefault("viewer", resolve_viewer(request))
    response: HTMLResponse = request.app.state.templates.TemplateResponse(request, name, context, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def render_public(request: Request, name: str, **context: Any) -> HTMLResponse:
    """A public page (home, automations, signals): the route sets its own caching."""
    ctx = get_ctx(request)
    templates = request.app.state.templates
    context.setdefault("site_title", ctx.settings.web.title)
    context.setdefault("viewer", resolve_viewer(request))
    response: HTMLResponse = templates.TemplateResponse(request, name, context)
    return response


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def anon_form(request: Request, name: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    """A page with visitor forms: the token goes in the page and in the ``sm_csrf`` cookie."""
    token = anon_csrf(request)
    response = render(request, name, status=status, csrf=token, **context)
    set_csrf_cookie(response, get_ctx(request), token)
    return response
