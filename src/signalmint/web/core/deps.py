"""Who may use a route: the dependencies that find the signed-in subscriber or the operator.

Two doors each, one for browser pages and one for the JSON API:

- :func:`require_subscriber` (``SessionMe``): a subscriber's browser session; the public goes
  to /login, the operator to /admin, an API key gets 403.
- :func:`api_subscriber` (``ApiMe``): a subscriber's key or session on ``/api/v1/me``.
- :func:`require_admin` (``AdminPage``): the operator's pages; the public goes to
  /admin/login, anyone else gets 403 (OWASP API5: function-level authorization).
- :func:`require_admin_api` (``AdminApi``): the operator's API; the public gets 401.

Also :data:`RESPONSES`, the answers every route behind :func:`api_viewer` may give, and
:func:`automation_or_404`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from ...records import Automation
from ...store import Connection, list_automations
from ..api_access import api_viewer
from ..auth import Viewer, resolve_viewer
from ..openapi import errors

__all__ = [
    "MAX_LIMIT",
    "RESPONSES",
    "AdminApi",
    "AdminPage",
    "ApiMe",
    "SessionMe",
    "api_subscriber",
    "api_viewer",
    "automation_or_404",
    "require_admin",
    "require_admin_api",
    "require_subscriber",
]

#: What every route behind :func:`api_viewer` may answer; routes add their own (``errors(404)``).
RESPONSES: dict[int | str, dict[str, Any]] = errors(401, 403, 429)
MAX_LIMIT = 500  # the largest page an API list returns


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


SessionMe = Annotated[Viewer, Depends(require_subscriber)]


def api_subscriber(viewer: Annotated[Viewer, Depends(api_viewer)]) -> Viewer:
    """The subscriber behind an API key or session (the id never comes from the request)."""
    if viewer.kind != "subscriber" or viewer.subscriber is None:
        raise HTTPException(401 if viewer.kind == "public" else 403, "this route needs a subscriber's API key")
    return viewer


ApiMe = Annotated[Viewer, Depends(api_subscriber)]


def require_admin(request: Request) -> Viewer:
    """The operator; the public is sent to sign in, anyone else is refused."""
    viewer = resolve_viewer(request)
    if viewer.is_admin:
        return viewer
    if viewer.kind == "public":
        raise HTTPException(303, "Please sign in as the operator.", headers={"Location": "/admin/login"})
    raise HTTPException(403, "These pages are for the operator only.")


AdminPage = Annotated[Viewer, Depends(require_admin)]


def require_admin_api(viewer: Annotated[Viewer, Depends(api_viewer)]) -> Viewer:
    if viewer.kind == "public":
        raise HTTPException(401, "admin routes need an admin API key", headers={"WWW-Authenticate": "Bearer"})
    if not viewer.is_admin:
        raise HTTPException(403, "admin routes are for the operator only")
    return viewer


AdminApi = Annotated[Viewer, Depends(require_admin_api)]


def automation_or_404(conn: Connection, name: str) -> Automation:
    """The automation named ``name``, enabled or not; a 404 when there is none."""
    for automation in list_automations(conn, enabled_only=False):
        if automation.name == name:
            return automation
    raise HTTPException(404, f"There is no automation named “{name}”.")
