"""The dashboard's "Where alerts go": a subscriber's endpoints, their delivery logs, the feed address.

HTML forms over the JSON API's own code in :mod:`.endpoints`: a webhook is vetted against
private addresses and gets its signing secret (shown once) exactly as over the API, and the
test event, the Telegram link and the feed's new address come from the same functions. Every
form carries the session's CSRF token, and an endpoint id is looked up among the caller's own
endpoints only: someone else's is a 404, like an id that does not exist.

The noise choices of each channel (grouping alerts, and whether quiet hours hold alerts or
gather them in one digest) are offered here in :data:`GROUP_CHOICES` and :data:`QUIET_MODES`,
shown in the notifications form and read by :func:`noise_choice`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from ...delivery.inspect import inspector_prefix
from ...errors import ConfigError, LimitError
from ...registry import channel_class, channel_kinds
from ...store import Connection
from ...store.outbox import Endpoint, list_deliveries, list_endpoints, set_endpoint_status
from ..auth import Viewer
from ..context import AppContext, get_ctx
from ..params import Id, is_digits
from . import endpoints as api
from .account import check_csrf, read_form, redirect, render, throttle
from .dashboard import Me, _page

__all__ = [
    "GROUP_CHOICES",
    "QUIET_MODES",
    "EndpointRow",
    "delivery_context",
    "endpoint_row",
    "explain",
    "noise_choice",
    "redact",
    "router",
]

router = APIRouter(include_in_schema=False)
Ctx = Annotated[AppContext, Depends(get_ctx)]

#: Channels this section is about: the pushed ones (every installed channel plugin), and the
#: feed people pull.
DELIVERY_CHANNELS = frozenset({*channel_kinds(), "rss"})


def channel_title(kind: str) -> str:
    """A channel's name on pages (its class's ``title``; the kind itself when not installed)."""
    try:
        return str(channel_class(kind).title)
    except ConfigError:
        return kind


REMOVED = "removed by the subscriber"  # what the API's DELETE writes: such endpoints are not listed
PAUSED_BY_YOU = "paused by you"
LOG_ROWS = 100
HERE = "/dashboard?saved={}#delivery"
#: Grouping windows a subscriber can pick (seconds; 0: every alert on its own).
GROUP_CHOICES: tuple[tuple[int, str], ...] = ((0, "Off"), (30, "30 s"), (60, "1 min"), (300, "5 min"), (900, "15 min"))
#: What quiet hours do to the alerts that fall in them.
QUIET_MODES: tuple[tuple[str, str], ...] = (("hold", "Hold each alert until they end"),
                                            ("digest", "Send one digest when they end"))  # fmt: skip


def noise_choice(quiet_mode: str, group_seconds: str) -> tuple[str, int | None]:
    """The quiet mode and grouping window a preferences form asks for ("" means the default).

    >>> noise_choice("digest", "300"), noise_choice("", "")
    (('digest', 300), ('hold', None))
    >>> noise_choice("hold", "45")
    Traceback (most recent call last):
    ...
    ValueError: Group alerts over 30 s, 1 min, 5 min or 15 min, or leave grouping off.
    """
    mode = quiet_mode.strip() or "hold"
    if mode not in dict(QUIET_MODES):
        raise ValueError("During quiet hours, alerts are either held one by one or sent as one digest.")
    raw = group_seconds.strip() or "0"
    allowed = dict(GROUP_CHOICES)
    if not (is_digits(raw) and len(raw) <= 6 and int(raw) in allowed):
        windows = [label for seconds, label in GROUP_CHOICES if seconds]
        raise ValueError(f"Group alerts over {', '.join(windows[:-1])} or {windows[-1]}, or leave grouping off.")
    return mode, int(raw) or None


@dataclass(frozen=True, slots=True)
class EndpointRow:
    """One endpoint as the dashboard lists it: never its URL's secrets, never its signing secret."""

    id: int
    channel: str
    name: str
    target: str
    status: str  # active | paused | disabled
    note: str  # why it is paused or disabled ("" when active)
    in_plan: bool
    can_pause: bool
    can_resume: bool
    can_test: bool
    inspect_path: str = ""  # demo mode: the request inspector page of a webhook sent there


def redact(endpoint: Endpoint) -> str:
    """Where an endpoint sends, with what could be a credential left out.

    >>> redact(Endpoint(1, 1, "webhook", "webhook+https://u:p@h.example/hooks/T0/abcdefghijklmnopqrstu?t=1", (), "active"))
    'https://h.example/hooks/T0/abcd…'
    >>> redact(Endpoint(1, 1, "email", "mailto:ann@example.com", (), "active"))
    'a***@example.com'
    >>> redact(Endpoint(1, 1, "telegram", "telegram://123456789", (), "active")), redact(Endpoint(1, 1, "apprise", "apprise+tgram://tok/42", (), "active"))
    ('chat …6789', 'tgram://…')
    """  # noqa: E501
    url = endpoint.url
    if endpoint.channel == "email":
        local, _, domain = url.removeprefix("mailto:").partition("@")
        return f"{local[:1]}***@{domain}"
    if endpoint.channel == "webhook":
        parts = urlsplit(url.removeprefix("webhook+"))
        path = "/".join(p if len(p) < 16 else f"{p[:4]}…" for p in parts.path.split("/"))
        return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{path}"
    if endpoint.channel == "telegram":
        chat = url.partition("://")[2].rpartition("@")[2].rstrip("/")
        return f"chat …{chat[-4:]}" if len(chat) > 4 else f"chat {chat}"
    return f"{url.removeprefix('apprise+').partition('://')[0]}://…"


def explain(endpoint: Endpoint) -> str:
    """Why an endpoint is paused or disabled, and what to do about it; "" when it is active.

    >>> blocked = "Telegram sendMessage: 403 Forbidden: bot was blocked by the user"
    >>> explain(Endpoint(1, 1, "telegram", "telegram://5", (), "paused", blocked))
    'Paused: the bot was blocked. Unblock it in Telegram and press Resume.'
    >>> explain(Endpoint(1, 1, "email", "mailto:a@b.c", (), "disabled", "unsubscribed"))
    'Disabled: unsubscribed with the link in an email. Press Resume to get emails again.'
    """
    reason = endpoint.status_reason.strip()
    low = reason.lower()
    if endpoint.status == "paused":
        if endpoint.channel == "telegram" and "blocked" in low:
            return "Paused: the bot was blocked. Unblock it in Telegram and press Resume."
        if endpoint.channel == "telegram" and "kicked" in low:
            return "Paused: the bot was removed from the chat. Add it back and press Resume."
        if endpoint.channel == "telegram" and "deactivated" in low:
            return "Paused: this Telegram account no longer exists."
        if endpoint.channel == "telegram" and "403" in low:
            return "Paused: Telegram refused the bot in this chat. Check the chat, then press Resume."
        if low == "paused from telegram":
            return "Paused from Telegram with /pause. Press Resume, or send /resume to the bot."
        if low in ("", PAUSED_BY_YOU):
            return "Paused by you."
        return f"Paused: {reason}"
    if endpoint.status == "disabled":
        if low == "unsubscribed":
            return "Disabled: unsubscribed with the link in an email. Press Resume to get emails again."
        if low.startswith("suppressed: bounce"):
            return "Disabled: emails to this address bounced, so we stopped sending them."
        if low.startswith("suppressed: complaint"):
            return "Disabled: an email was reported as spam, so we stopped sending them."
        if "410" in low or "endpoint gone" in low:
            return "Disabled: the receiver answered 410 Gone. Fix it, then press Resume."
        if low == "connected to another account":
            return "Disabled: this chat was connected to another account."
        return f"Disabled: {reason}" if reason else "Disabled."
    return ""


def _resumable(endpoint: Endpoint) -> bool:
    """Paused, or disabled for a reason the subscriber can undo (not a bounce, spam report or lost chat)."""
    if endpoint.status == "paused":
        return True
    low = endpoint.status_reason.lower()
    final = low.startswith("suppressed") or low in ("connected to another account", REMOVED)
    return endpoint.status == "disabled" and not final


def endpoint_row(
    endpoint: Endpoint, channels: frozenset[str], *, own: str | None = None, email_ready: bool = True
) -> EndpointRow:
    """How the dashboard lists ``endpoint``. ``own`` is the demo's inspector prefix (its webhooks
    link to their inspector page); without ``email_ready`` (no SMTP server) an email endpoint is
    shown as not working."""
    in_plan = endpoint.channel in channels
    inspect_path = ""
    if own and endpoint.channel == "webhook" and endpoint.url.startswith(f"webhook+{own}"):
        inspect_path = urlsplit(own).path + endpoint.url.removeprefix(f"webhook+{own}")
    if endpoint.channel == "email" and not email_ready and endpoint.status == "active" and in_plan:
        return EndpointRow(
            id=endpoint.id,
            channel=endpoint.channel,
            name=channel_title("email"),
            target=redact(endpoint),
            status="unavailable",
            note="Not working: this site cannot send email yet (its operator has not set up a mail server), "
            "so nothing reaches your inbox. Use another channel until then.",
            in_plan=in_plan,
            can_pause=True,
            can_resume=False,
            can_test=False,
        )
    return EndpointRow(
        id=endpoint.id,
        channel=endpoint.channel,
        name=channel_title(endpoint.channel),
        target=redact(endpoint),
        status=endpoint.status,
        note=explain(endpoint),
        in_plan=in_plan,
        can_pause=endpoint.status == "active",
        can_resume=_resumable(endpoint),
        can_test=in_plan and (endpoint.status == "active" or _resumable(endpoint)),
        inspect_path=inspect_path,
    )


def _listed(endpoint: Endpoint, channels: frozenset[str]) -> bool:
    """Removed endpoints are gone from view; the automatic email one only shows when the plan sends email."""
    removed = endpoint.status == "disabled" and endpoint.status_reason == REMOVED
    return not removed and (endpoint.channel in channels or endpoint.channel != "email")


def delivery_context(ctx: AppContext, viewer: Viewer) -> dict[str, Any]:
    """What the dashboard's "Where alerts go" section shows (``dashboard_delivery.html``)."""
    assert viewer.subscriber is not None
    channels = viewer.plan.channels if viewer.plan is not None else frozenset()
    found = ctx.db.read_sync(list_endpoints, viewer.subscriber.id)
    own = inspector_prefix(ctx.settings)
    email_ready = bool(ctx.settings.email.host)
    rows = [endpoint_row(e, channels, own=own, email_ready=email_ready) for e in found if _listed(e, channels)]
    telegram = ctx.settings.telegram
    return {
        "inspector_offer": own is not None and "webhook" in channels,
        "delivery_shown": bool(channels & DELIVERY_CHANNELS) or any(not r.in_plan for r in rows),
        "endpoint_rows": rows,
        "add_channels": [c for c in api.subscriber_channels() if c in channels],
        "telegram_ready": bool(telegram.bot and telegram.token) and "telegram" in channels,
        "feed_url": api.feed_url(ctx, viewer)["url"] if "rss" in channels else None,
        "group_choices": GROUP_CHOICES,
        "quiet_modes": QUIET_MODES,
    }


def _own(ctx: AppContext, viewer: Viewer, endpoint_id: int) -> Endpoint:
    assert viewer.subscriber is not None
    found = ctx.db.read_sync(list_endpoints, viewer.subscriber.id, ids=[endpoint_id])
    if not found:
        raise HTTPException(404, "You have no endpoint with that id.")
    return found[0]


def _changed(ctx: AppContext) -> None:
    """The fan-out caches where alerts go: a changed endpoint must reach it at once (as in the API)."""
    if ctx.engine is not None:
        ctx.engine.fanout.invalidate()


# -- adding a webhook or an Apprise URL --------------------------------------------------------


@router.post("/dashboard/endpoints", response_class=HTMLResponse)
async def add_endpoint(request: Request, ctx: Ctx, me: Me) -> Response:
    form = await read_form(request, "channel", "url", "csrf")
    check_csrf(me, ctx, form["csrf"])
    channel, url = form["channel"], form["url"].strip()
    if channel not in api.subscriber_channels() or me.plan is None or channel not in me.plan.channels:
        raise HTTPException(403, "Your plan does not include that kind of endpoint.")
    field = f"add_{channel}"
    try:
        body = api.EndpointIn.model_validate({"channel": channel, "url": url})
        made = await api.add(body, ctx, me)  # the API's own checks: plan, count, private addresses
    except LimitError:
        problem = f"You have {api.MAX_ENDPOINTS} endpoints, the most there can be: remove one first."
        return _page(request, ctx, me, status=400, errors={field: problem}, values={field: url[:2000]})
    except ValidationError:
        problem = "Enter the whole address, from https:// on (at most 2,000 characters)."
        if channel == "apprise":
            problem = "Enter a whole Apprise URL, e.g. json://hooks.example/alerts (at most 2,000 characters)."
        return _page(request, ctx, me, status=400, errors={field: problem}, values={field: url[:2000]})
    except HTTPException as exc:
        if exc.status_code != 422:
            raise
        return _page(request, ctx, me, status=400, errors={field: _refusal(exc, url)}, values={field: url[:2000]})
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
    _changed(ctx)


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
    await _set_status(ctx, me, endpoint_id, lambda e: e.status == "active" or _resumable(e), "active", "")
    return redirect(HERE.format("resumed"))


@router.post("/dashboard/endpoints/{endpoint_id}/remove")
async def remove(endpoint_id: Id, request: Request, ctx: Ctx, me: Me) -> Response:
    form = await read_form(request, "csrf")
    check_csrf(me, ctx, form["csrf"])
    await _set_status(ctx, me, endpoint_id, lambda e: True, "disabled", REMOVED)  # what DELETE over the API writes
    return redirect(HERE.format("removed"))


@dataclass(frozen=True, slots=True)
class Flash:
    tone: str  # success | error
    title: str
    detail: str


@router.post("/dashboard/endpoints/{endpoint_id}/test", response_class=HTMLResponse)
async def send_test(endpoint_id: Id, request: Request, ctx: Ctx, me: Me) -> Response:
    form = await read_form(request, "csrf")
    check_csrf(me, ctx, form["csrf"])
    endpoint = _own(ctx, me, endpoint_id)
    if me.plan is None or endpoint.channel not in me.plan.channels:
        raise HTTPException(403, f"Your plan does not include {channel_title(endpoint.channel)} alerts.")
    throttle(request, ctx, "endpoint-test")
    result = await api.test_event(endpoint_id, ctx, me)  # the same code as POST /api/v1/me/endpoints/{id}/test
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
    return _page(request, ctx, me, delivery_flash=flash)


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
    link = (await api.telegram_link(ctx, me))["link"]  # 404 without a bot, 403 outside the plan
    return _page(request, ctx, me, telegram_link=link)


@router.post("/dashboard/feed/rotate")
async def rotate_feed(request: Request, ctx: Ctx, me: Me) -> Response:
    form = await read_form(request, "csrf")
    check_csrf(me, ctx, form["csrf"])
    if me.plan is None or "rss" not in me.plan.channels:
        raise HTTPException(403, "Your plan does not include the feed.")
    api.rotate_feed(ctx, me)
    return redirect(HERE.format("feed"))
