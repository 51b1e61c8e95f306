"""The dashboard's "Where alerts go": a subscriber's endpoints, their delivery logs, the feed address.

HTML forms over the JSON API's own code in :mod:`signalmint.web.endpoint_ops`: a webhook is
vetted against private addresses and gets its signing secret (shown once) exactly as over the
API, and the test event, the Telegram link and the feed's new address come from the same
functions. Every form carries the session's CSRF token, and an endpoint id is looked up among
the caller's own endpoints only: someone else's is a 404, like an id that does not exist.

How the section shows endpoints is :mod:`signalmint.web.delivery_view`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from ...delivery.inspect import inspector_prefix
from ...errors import LimitError
from ...store import Connection
from ...store.outbox import Endpoint, list_deliveries, list_endpoints, set_endpoint_status
from .. import endpoint_ops as ops
from ..auth import Viewer
from ..context import AppContext, get_ctx
from ..core.deps import SessionMe as Me
from ..core.forms import check_csrf, read_form, throttle
from ..core.render import Flash, redirect, render
from ..dashboard_page import dashboard_page
from ..delivery_view import PAUSED_BY_YOU, REMOVED, channel_title, endpoint_row, redact, resumable
from ..feed_links import feed_urls
from ..params import Id

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
Ctx = Annotated[AppContext, Depends(get_ctx)]

LOG_ROWS = 100
HERE = "/dashboard?saved={}#delivery"


def _own(ctx: AppContext, viewer: Viewer, endpoint_id: int) -> Endpoint:
    assert viewer.subscriber is not None
    found = ctx.db.read_sync(list_endpoints, viewer.subscriber.id, ids=[endpoint_id])
    if not found:
        raise HTTPException(404, "You have no endpoint with that id.")
    return found[0]


# -- adding a webhook or an Apprise URL --------------------------------------------------------


@router.post("/dashboard/endpoints", response_class=HTMLResponse)
async def add_endpoint(request: Request, ctx: Ctx, me: Me) -> Response:
    form = await read_form(request, "channel", "url", "csrf")
    check_csrf(me, ctx, form["csrf"])
    channel, url = form["channel"], form["url"].strip()
    if channel not in ops.subscriber_channels() or me.plan is None or channel not in me.plan.channels:
        raise HTTPException(403, "Your plan does not include that kind of endpoint.")
    field = f"add_{channel}"
    try:
        body = ops.EndpointIn.model_validate({"channel": channel, "url": url})
        made = await ops.add(body, ctx, me)  # the API's own checks: plan, count, private addresses
    except LimitError:
        problem = f"You have {ops.MAX_ENDPOINTS} endpoints, the most there can be: remove one first."
        return dashboard_page(request, ctx, me, status=400, errors={field: problem}, values={field: url[:2000]})
    except ValidationError:
        problem = "Enter the whole address, from https:// on (at most 2,000 characters)."
        if channel == "apprise":
            problem = "Enter a whole Apprise URL, e.g. json://hooks.example/alerts (at most 2,000 characters)."
        return dashboard_page(request, ctx, me, status=400, errors={field: problem}, values={field: url[:2000]})
    except HTTPException as exc:
        if exc.status_code != 422:
            raise
        return dashboard_page(
            request, ctx, me, status=400, errors={field: _refusal(exc, url)}, values={field: url[:2000]}
        )
    if channel != "webhook":
        return redirect(HERE.format("added"))
    endpoint = _own(ctx, me, int(made["id"]))
    return render(
        request,
        "endpoint_created.html",
        nav_active="dashboard",
        viewer=me,
        csrf=me.csrf(ctx.pepper),
        endpoint=endpoint_row(endpoint, frozenset({channel})),
        secret=made["secret"],
    )


def _refusal(exc: HTTPException, url: str) -> str:
    """The API's 422 in a sentence: "url: <url>: 10.0.0.8 is a private address" and the like."""
    detail = str(exc.detail)
    why = detail.removeprefix("url: ")
    for prefix in ("webhook+", "apprise+", ""):
        why = why.removeprefix(f"{url.removeprefix(prefix)}: ")
    return f"We cannot send there: {why.rstrip('.')}."


# -- pause, resume, remove, test ------------------------------------------------------------------


async def _set_status(
    ctx: AppContext, me: Viewer, endpoint_id: int, allowed: Callable[[Endpoint], bool], status: str, reason: str
) -> None:
    """Change one of the caller's endpoints, if ``allowed`` says its current state permits it."""
    assert me.subscriber is not None
    owner, now = me.subscriber.id, datetime.now(UTC)

    def change(conn: Connection) -> bool | None:
        found = list_endpoints(conn, owner, ids=[endpoint_id])
        if not found:
            return None
        if not allowed(found[0]):
            return False
        return set_endpoint_status(conn, endpoint_id, status, reason, now, owner=owner)

    done = await ctx.db.write(change)
    if done is None:
        raise HTTPException(404, "You have no endpoint with that id.")
    if not done:
        raise HTTPException(400, "This endpoint cannot be changed that way: remove it, or add it again.")
    ctx.db.audience_changed()


@router.post("/dashboard/endpoints/{endpoint_id}/pause")
async def pause(endpoint_id: Id, request: Request, ctx: Ctx, me: Me) -> Response:
    form = await read_form(request, "csrf")
    check_csrf(me, ctx, form["csrf"])
    await _set_status(ctx, me, endpoint_id, lambda e: e.status in ("active", "paused"), "paused", PAUSED_BY_YOU)
    return redirect(HERE.format("paused"))


@router.post("/dashboard/endpoints/{endpoint_id}/resume")
async def resume(endpoint_id: Id, request: Request, ctx: Ctx, me: Me) -> Response:
    form = await read_form(request, "csrf")
    check_csrf(me, ctx, form["csrf"])
    await _set_status(ctx, me, endpoint_id, lambda e: e.status == "active" or resumable(e), "active", "")
    return redirect(HERE.format("resumed"))


@router.post("/dashboard/endpoints/{endpoint_id}/remove")
async def remove(endpoint_id: Id, request: Request, ctx: Ctx, me: Me) -> Response:
    form = await read_form(request, "csrf")
    check_csrf(me, ctx, form["csrf"])
    await _set_status(ctx, me, endpoint_id, lambda e: True, "disabled", REMOVED)  # what DELETE over the API writes
    return redirect(HERE.format("removed"))


@router.post("/dashboard/endpoints/{endpoint_id}/test", response_class=HTMLResponse)
async def send_test(endpoint_id: Id, request: Request, ctx: Ctx, me: Me) -> Response:
    form = await read_form(request, "csrf")
    check_csrf(me, ctx, form["csrf"])
    endpoint = _own(ctx, me, endpoint_id)
    if me.plan is None or endpoint.channel not in me.plan.channels:
        raise HTTPException(403, f"Your plan does not include {channel_title(endpoint.channel)} alerts.")
    throttle(request, ctx, "endpoint-test")
    result = await ops.test_event(endpoint_id, ctx, me)  # the same code as POST /api/v1/me/endpoints/{id}/test
    where = f"{channel_title(endpoint.channel)} {redact(endpoint)}"
    if result["ok"]:
        receipt = result["receipt"]
        said = " · ".join(str(x) for x in (receipt.get("id"), receipt.get("detail")) if x)
        flash = Flash("success", f"Test event delivered to {where}.", f"Receipt: {said}." if said else "")
    else:
        if result.get("permanent"):
            hint = "Sending it again will not help until the receiver is fixed."
        elif result.get("retry_after"):
            hint = f"The receiver asked to wait {result['retry_after']:g} s; real alerts are retried."
        else:
            hint = "Real alerts are retried on a schedule."
        flash = Flash("error", f"The test event did not reach {where}.", f"{result['error']}. {hint}")
    return dashboard_page(request, ctx, me, delivery_flash=flash)


# -- the delivery log of one endpoint ---------------------------------------------------------------


@router.get("/dashboard/endpoints/{endpoint_id}/log", response_class=HTMLResponse)
def delivery_log(endpoint_id: Id, request: Request, ctx: Ctx, me: Me) -> HTMLResponse:
    endpoint = _own(ctx, me, endpoint_id)
    rows = ctx.db.read_sync(list_deliveries, endpoint_id=endpoint.id, limit=LOG_ROWS)
    channels = me.plan.channels if me.plan is not None else frozenset()
    return render(
        request,
        "endpoint_log.html",
        nav_active="dashboard",
        viewer=me,
        endpoint=endpoint_row(
            endpoint, channels, own=inspector_prefix(ctx.settings), email_ready=bool(ctx.settings.email.host)
        ),
        deliveries=rows,
        limit=LOG_ROWS,
        now=datetime.now(UTC),
    )


# -- Telegram and the private feed ------------------------------------------------------------------


@router.post("/dashboard/telegram", response_class=HTMLResponse)
async def connect_telegram(request: Request, ctx: Ctx, me: Me) -> Response:
    form = await read_form(request, "csrf")
    check_csrf(me, ctx, form["csrf"])
    throttle(request, ctx, "telegram-link")
    link = (await ops.telegram_link(ctx, me))["link"]  # 404 without a bot, 403 outside the plan
    return dashboard_page(request, ctx, me, telegram_link=link)


@router.post("/dashboard/feed/rotate")
async def rotate_feed(request: Request, ctx: Ctx, me: Me) -> Response:
    form = await read_form(request, "csrf")
    check_csrf(me, ctx, form["csrf"])
    if me.plan is None or "rss" not in me.plan.channels:
        raise HTTPException(403, "Your plan does not include the feed.")
    feed_urls(ctx, me, rotate=True)
    return redirect(HERE.format("feed"))
