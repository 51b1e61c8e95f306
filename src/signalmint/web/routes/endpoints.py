"""Where a subscriber's alerts go: endpoints over the API, and the one-click unsubscribe link.

Webhook and Apprise URLs are checked against private and local addresses when registered
(and again by the worker at send time, on the address actually dialled). A webhook's
signing secret is shown once, at registration. Only channels the subscriber's plan allows
can be registered.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ...delivery.channels.base import ChannelContext
from ...delivery.worker import unsubscribe_token
from ...errors import ConfigError, DeliveryError
from ...registry import channel_class, channel_kinds, in_display_order
from ...shapes import delivery_json
from ...store.outbox import MAX_ENDPOINTS, add_endpoint, list_deliveries, list_endpoints, set_endpoint_status
from ..context import AppContext, ctx_dependency
from ..openapi import errors
from ..params import Id
from .api import RESPONSES
from .me import Me

__all__ = ["MAX_ENDPOINTS", "router"]

router = APIRouter(tags=["me"])
Ctx = Annotated[AppContext, Depends(ctx_dependency)]


class EndpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: str = Field(description="a channel a subscriber adds by URL: webhook, apprise (or a plugin's)")
    url: str = Field(min_length=8, max_length=2000, description="https://... (webhook) or an Apprise URL")

    @field_validator("channel")
    @classmethod
    def _added_by_url(cls, value: str) -> str:
        addable = subscriber_channels()
        if value not in addable:
            raise ValueError(f"use one of: {', '.join(addable)}")
        return value


def subscriber_channels() -> tuple[str, ...]:
    """The installed channels a subscriber adds by URL (their class's ``subscriber_added``), in display order."""
    return in_display_order(k for k in channel_kinds() if channel_class(k).subscriber_added)


def _endpoint_json(endpoint: Any) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "channel": endpoint.channel,
        "url": _redacted(endpoint),
        "status": endpoint.status,
        "status_reason": endpoint.status_reason,
    }


def _redacted(endpoint: Any) -> str:
    if endpoint.channel == "email":
        local, _, domain = endpoint.url.removeprefix("mailto:").partition("@")
        return f"mailto:{local[:1]}***@{domain}"
    if endpoint.channel == "webhook":
        return str(endpoint.url.split("?", 1)[0])
    if endpoint.channel == "telegram":
        return "telegram://" + str(endpoint.url).removeprefix("telegram://").rsplit("@", 1)[-1]  # never the token
    if endpoint.channel == "apprise":
        return "apprise:***"
    try:  # a plugin's channel redacts its own URL
        return str(channel_class(endpoint.channel).from_url(endpoint.url, ChannelContext()).to_url(redact=True))
    except (ConfigError, DeliveryError):
        return f"{endpoint.channel}:***"


def _vet(ctx: AppContext, body: EndpointIn) -> tuple[str, list[str]]:
    allow = ctx.settings.delivery.allow_loopback_targets
    if body.channel == "webhook":
        from ...delivery.channels.webhook import new_secret
        from ...delivery.inspect import inspector_prefix
        from ...delivery.ssrf import check_url

        url = body.url.removeprefix("webhook+")
        try:
            check_url(url, allow_loopback=allow, own=inspector_prefix(ctx.settings))
        except DeliveryError as exc:
            raise HTTPException(422, f"url: {exc}") from None
        return f"webhook+{url}", [new_secret()]
    if body.channel != "apprise":  # a plugin's channel: its own from_url vets the URL
        cls = channel_class(body.channel)
        url = body.url if body.url.startswith(cls.url_prefix) else cls.url_prefix + body.url
        try:
            cls.from_url(url, ChannelContext(allow_loopback=allow))
        except DeliveryError as exc:
            raise HTTPException(422, f"url: {exc}") from None
        return url, []
    from ...delivery.channels.apprise import vet_apprise_url

    url = body.url.removeprefix("apprise+")
    try:
        vet_apprise_url(url, allow_loopback=allow, extra_schemes=ctx.settings.delivery.apprise_extra_schemes)
    except DeliveryError as exc:
        raise HTTPException(422, f"url: {exc}") from None
    return f"apprise+{url}", []


@router.get("/api/v1/me/endpoints", responses=RESPONSES)
def endpoints(ctx: Ctx, viewer: Me) -> dict[str, Any]:
    """Where your alerts go (email, webhooks, Apprise, Telegram) and each one's status."""
    assert viewer.subscriber is not None
    items = [_endpoint_json(e) for e in ctx.db.read_sync(list_endpoints, viewer.subscriber.id)]
    return {"items": items, "next_cursor": None}


@router.post("/api/v1/me/endpoints", status_code=201, responses={**RESPONSES, **errors(422)})
async def add(body: EndpointIn, ctx: Ctx, viewer: Me) -> dict[str, Any]:
    """Register a webhook (the response holds its signing secret, once) or an Apprise URL (at most 20 endpoints)."""
    assert viewer.subscriber is not None
    if viewer.plan is None or body.channel not in viewer.plan.channels:
        raise HTTPException(403, f"your plan does not include {body.channel} alerts")
    url, secrets = _vet(ctx, body)
    endpoint = await ctx.db.write(add_endpoint, viewer.subscriber.id, body.channel, url, datetime.now(UTC), secrets)
    _changed(ctx)
    out = _endpoint_json(endpoint)
    if secrets:
        out["secret"] = secrets[0]  # whsec_...: verify our signatures with it (Standard Webhooks)
    return out


@router.delete("/api/v1/me/endpoints/{endpoint_id}", status_code=204, responses={**RESPONSES, **errors(404, 422)})
async def remove(endpoint_id: Id, ctx: Ctx, viewer: Me) -> None:
    """Stop sending to one of your endpoints. Someone else's endpoint is a 404."""
    assert viewer.subscriber is not None
    done = await ctx.db.write(
        set_endpoint_status, endpoint_id, "disabled", "removed by the subscriber", datetime.now(UTC),
        owner=viewer.subscriber.id,
    )  # fmt: skip
    if not done:
        raise HTTPException(404, f"you have no endpoint with id {endpoint_id}")
    _changed(ctx)


@router.get("/api/v1/me/endpoints/{endpoint_id}/deliveries", responses={**RESPONSES, **errors(404, 422)})
def delivery_log(endpoint_id: Id, ctx: Ctx, viewer: Me) -> dict[str, Any]:
    """The last deliveries to one of your endpoints: status, attempts, last error, receipt."""
    assert viewer.subscriber is not None
    owned = {e.id for e in ctx.db.read_sync(list_endpoints, viewer.subscriber.id)}
    if endpoint_id not in owned:
        raise HTTPException(404, f"you have no endpoint with id {endpoint_id}")
    rows = ctx.db.read_sync(list_deliveries, endpoint_id=endpoint_id, limit=100)
    return {"items": [delivery_json(d) for d in rows], "next_cursor": None}


def _changed(ctx: AppContext) -> None:
    if ctx.engine is not None:
        ctx.engine.fanout.invalidate()


# --- one-click unsubscribe (RFC 8058): no cookies, no login -------------------------------------


def _unsubscribe_target(ctx: AppContext, endpoint_id: int, token: str) -> None:
    expected = unsubscribe_token(endpoint_id, ctx.pepper)
    if len(token) > 64 or not hmac.compare_digest(expected, token):
        raise HTTPException(404, "this unsubscribe link is not valid")


@router.get("/unsubscribe/{endpoint_id}/{token}", response_class=HTMLResponse, include_in_schema=False)
def unsubscribe_page(endpoint_id: Id, token: str, request: Request, ctx: Ctx) -> HTMLResponse:
    _unsubscribe_target(ctx, endpoint_id, token)
    html = (
        "<!doctype html><title>Unsubscribe</title><main style='font-family:system-ui;max-width:32rem;margin:4rem auto'>"
        "<h1>Stop these emails?</h1><form method='post'><button type='submit'>Unsubscribe</button></form></main>"
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


@router.post("/unsubscribe/{endpoint_id}/{token}", include_in_schema=False)
async def unsubscribe(endpoint_id: Id, token: str, ctx: Ctx) -> Response:
    """RFC 8058 one-click: mail clients POST ``List-Unsubscribe=One-Click`` without cookies."""
    _unsubscribe_target(ctx, endpoint_id, token)
    await ctx.db.write(set_endpoint_status, endpoint_id, "disabled", "unsubscribed", datetime.now(UTC))
    _changed(ctx)
    return HTMLResponse("<!doctype html><title>Unsubscribed</title><p>You will not get these emails any more.</p>")


# --- send a test event ---------------------------------------------------------------------------


@router.post("/api/v1/me/endpoints/{endpoint_id}/test", responses={**RESPONSES, **errors(404, 422)})
async def test_event(endpoint_id: Id, ctx: Ctx, viewer: Me) -> dict[str, Any]:
    """Send a test message to one of your endpoints now; the answer says what the receiver said."""
    from ...delivery.channels.base import Message
    from ...delivery.runner import channel_context
    from ...delivery.worker import default_channel_factory

    assert viewer.subscriber is not None
    owned = {e.id: e for e in ctx.db.read_sync(list_endpoints, viewer.subscriber.id)}
    endpoint = owned.get(endpoint_id)
    if endpoint is None:
        raise HTTPException(404, f"you have no endpoint with id {endpoint_id}")
    now = datetime.now(UTC)
    message = Message(
        idempotency_id=f"msg_test_{endpoint_id}_{int(now.timestamp())}",
        subject="signalmint test event",
        text="This is a test event: your endpoint is set up to receive signals.",
        payload={"type": "test", "version": 1, "timestamp": now.isoformat(), "data": {"endpoint": endpoint_id}},
        created_at=now,
    )
    context = channel_context(ctx.settings)
    try:
        receipt = await default_channel_factory(endpoint, context).send(message)
    except DeliveryError as exc:
        return {"ok": False, "error": str(exc), "permanent": exc.permanent, "retry_after": exc.retry_after}
    finally:
        await context.http.close()
        from ...delivery.channels import email, telegram

        for close in (email.close, telegram.close):
            await close(context)
    return {"ok": True, "receipt": {"id": receipt.provider_id, "detail": receipt.detail}}


# --- a private Atom feed per subscriber -------------------------------------------------------------


def _feed_nonce(ctx: AppContext, subscriber_id: int, *, rotate: bool = False) -> str:
    import secrets as random_secrets

    from ...store.auth import get_or_create_setting, replace_setting

    name = f"feed_nonce:{subscriber_id}"
    if rotate:
        return str(ctx.db.write_sync(replace_setting, name, lambda: random_secrets.token_hex(8)))
    return str(ctx.db.write_sync(get_or_create_setting, name, lambda: random_secrets.token_hex(8)))


def feed_token(ctx: AppContext, subscriber_id: int, nonce: str) -> str:
    return hmac.new(ctx.pepper, f"feed:{subscriber_id}:{nonce}".encode(), "sha256").hexdigest()[:40]


def _feed_url(ctx: AppContext, subscriber_id: int, nonce: str) -> str:
    return f"{ctx.settings.base_url.rstrip('/')}/feeds/{subscriber_id}/{feed_token(ctx, subscriber_id, nonce)}.atom"


@router.get("/api/v1/me/feed", responses=RESPONSES)
def feed_url(ctx: Ctx, viewer: Me) -> dict[str, Any]:
    """Your private Atom feed's address, and the same feed as RSS 2.0 (keep them secret; rotate if one leaks)."""
    assert viewer.subscriber is not None
    url = _feed_url(ctx, viewer.subscriber.id, _feed_nonce(ctx, viewer.subscriber.id))
    return {"url": url, "rss_url": url.removesuffix(".atom") + ".rss"}


@router.post("/api/v1/me/feed/rotate", responses=RESPONSES)
def rotate_feed(ctx: Ctx, viewer: Me) -> dict[str, Any]:
    """A new feed address; the old one stops working at once."""
    assert viewer.subscriber is not None
    url = _feed_url(ctx, viewer.subscriber.id, _feed_nonce(ctx, viewer.subscriber.id, rotate=True))
    return {"url": url, "rss_url": url.removesuffix(".atom") + ".rss"}


def _feed_viewer(request: Request, ctx: AppContext, subscriber_id: int, token: str) -> Any:
    """The subscriber behind a private feed address (404 for a wrong or rotated token)."""
    from ...store.auth import get_setting
    from ..auth import subscriber_viewer
    from .account import throttle

    # Reading only: a feed's nonce exists once its owner asked for the address; a made-up
    # subscriber id or token writes nothing, and wrong guesses from one address are throttled.
    nonce = ctx.db.read_sync(get_setting, f"feed_nonce:{subscriber_id}")
    if nonce is None or len(token) > 64 or not hmac.compare_digest(feed_token(ctx, subscriber_id, nonce), token):
        throttle(request, ctx, "feed")
        raise HTTPException(404, "no such feed")
    viewer = subscriber_viewer(ctx, subscriber_id)
    if viewer.plan is None or "rss" not in viewer.plan.channels:
        raise HTTPException(403, "your plan does not include the feed")
    return viewer


def _feed(request: Request, subscriber_id: int, token: str, ctx: AppContext, kind: str) -> Response:
    from ...store import list_signals
    from ..feeds import atom, entries, rss
    from ..visibility import scopes_for

    viewer = _feed_viewer(request, ctx, subscriber_id, token)
    now = datetime.now(UTC)
    rows = ctx.db.read_sync(list_signals, scopes=scopes_for(viewer, now, ctx.automation_names()), limit=50)
    base = ctx.settings.base_url.rstrip("/")
    address = f"{base}/feeds/{subscriber_id}/{token}"
    items = entries(rows, viewer, now, ctx.access.current(), base, f"{address}/signals")
    title = f"{ctx.settings.web.title} signals"
    headers = {"Cache-Control": "private, max-age=30"}
    if kind == "rss":
        xml = rss(items, title=title, self_url=f"{address}.rss", site=base, now=now)
        return Response(xml, media_type="application/rss+xml", headers=headers)
    xml = atom(
        items, title=title, feed_id=f"{base}/feeds/{subscriber_id}", self_url=f"{address}.atom", site=base, now=now
    )
    return Response(xml, media_type="application/atom+xml", headers=headers)


@router.get("/feeds/{subscriber_id}/{token}.atom", include_in_schema=False)
def atom_feed(subscriber_id: Id, token: str, request: Request, ctx: Ctx) -> Response:
    """The subscriber's signals as Atom, exactly as their plan shows them (delay, keys, masks)."""
    return _feed(request, subscriber_id, token, ctx, "atom")


@router.get("/feeds/{subscriber_id}/{token}.rss", include_in_schema=False)
def rss_feed(subscriber_id: Id, token: str, request: Request, ctx: Ctx) -> Response:
    """The same feed as RSS 2.0."""
    return _feed(request, subscriber_id, token, ctx, "rss")


@router.get("/feeds/{subscriber_id}/{token}/signals/{signal_id}/chart.svg", include_in_schema=False)
def feed_chart(subscriber_id: Id, token: str, signal_id: Id, request: Request, ctx: Ctx) -> Response:
    """A signal's volume chart for the feed's entries: only when the subscriber's plan shows it now."""
    from ...series import CHART_FIELDS, signal_series
    from ...store import get_signal, list_automations
    from .. import charts
    from ..feeds import chart_context

    viewer = _feed_viewer(request, ctx, subscriber_id, token)
    now = datetime.now(UTC)
    stored = ctx.db.read_sync(get_signal, signal_id)
    grant = viewer.grant(stored.automation) if stored is not None else None
    hidden = grant.hidden_at(stored, now) if grant is not None and stored is not None else None
    if stored is None or hidden is None or hidden & CHART_FIELDS:
        raise HTTPException(404, "no such chart, or not on your plan yet")
    options = next((a.detector_options for a in ctx.db.read_sync(list_automations, enabled_only=False)
                    if a.name == stored.automation), {})  # fmt: skip
    window, ratio = chart_context(options)
    series = ctx.db.read_sync(signal_series, stored, window)
    if series.highlight is None:
        raise HTTPException(404, "the bars behind this signal were removed by the retention setting")
    svg = charts.volume_chart(series.times, series.volume, series.baseline, series.highlight, ratio_line=ratio)
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "private, max-age=3600"})


# --- bounces and complaints from the email provider ------------------------------------------------


class EmailEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["bounce", "complaint", "delivered"]
    email: str = Field(max_length=320)
    permanent: bool = Field(default=True, description="a hard bounce (soft bounces are retried, not suppressed)")


@router.post(
    "/api/v1/email/events",
    tags=["operations"],
    responses=errors(401, 422),
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": EmailEvent.model_json_schema()}}}},
)
async def email_event(request: Request, ctx: Ctx) -> dict[str, Any]:
    """Your email provider reports hard bounces and complaints here; the address gets nothing more.

    Authenticate with ``Authorization: Bearer <email.inbound_secret>`` (checked before the body
    is even read).
    """
    secret = ctx.settings.email.inbound_secret
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not secret or not hmac.compare_digest(secret.encode(), given.encode()):
        raise HTTPException(401, "wrong or missing inbound secret", headers={"WWW-Authenticate": "Bearer"})
    try:
        event = EmailEvent.model_validate_json(await request.body())
    except ValidationError as exc:
        raise HTTPException(422, f"not an email event: {exc.errors()[0]['msg']}") from None
    if event.type == "delivered" or (event.type == "bounce" and not event.permanent):
        return {"suppressed": 0}
    address = f"mailto:{event.email.strip().lower()}"
    now = datetime.now(UTC)

    def suppress(conn: Any) -> int:
        hits = [e for e in list_endpoints(conn) if e.channel == "email" and e.url.lower() == address]
        for endpoint in hits:
            set_endpoint_status(conn, endpoint.id, "disabled", f"suppressed: {event.type}", now)
        return len(hits)

    count = await ctx.db.write(suppress)
    _changed(ctx)
    return {"suppressed": count}


@router.post("/api/v1/me/telegram", responses={**RESPONSES, **errors(404)})
async def telegram_link(ctx: Ctx, viewer: Me) -> dict[str, Any]:
    """A one-time link (valid for an hour) that connects a Telegram chat to your alerts."""
    from ...delivery.telegram_commands import connect_link

    assert viewer.subscriber is not None
    bot = ctx.settings.telegram.bot
    if not (bot and ctx.settings.telegram.token):
        raise HTTPException(404, "this site has no Telegram bot")
    if viewer.plan is None or "telegram" not in viewer.plan.channels:
        raise HTTPException(403, "your plan does not include Telegram alerts")
    link = await connect_link(ctx.db, ctx.pepper, bot, viewer.subscriber.id, viewer.subscriber.email)
    return {"link": link, "expires_in": 3600}
