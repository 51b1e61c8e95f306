"""A subscriber's endpoints: vetting, adding, testing and Telegram linking, for the API and the dashboard.

The JSON API (:mod:`.routes.endpoints`, :mod:`.routes.telegram`) and the dashboard's forms
(:mod:`.routes.dashboard_delivery`, the demo's inspector) run the same code from here: a
webhook is vetted against private addresses and gets its signing secret (shown once) exactly
as over the API.

Webhook and Apprise URLs are checked against private and local addresses when registered
(and again by the worker at send time, on the address actually dialled). Only channels the
subscriber's plan allows can be registered. Every change to where alerts go tells the store
(:meth:`~signalmint.store.Database.audience_changed`), so the fan-out reads it at once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..delivery.channels import email, telegram
from ..delivery.channels.apprise import vet_apprise_url
from ..delivery.channels.base import ChannelContext, Message
from ..delivery.channels.webhook import new_secret
from ..delivery.context import channel_context
from ..delivery.inspect import inspector_prefix
from ..delivery.telegram_commands import connect_link
from ..delivery.worker import default_channel_factory
from ..errors import ConfigError, DeliveryError
from ..net.ssrf import check_url
from ..registry import channel_class, channel_kinds, in_display_order
from ..store.outbox import MAX_ENDPOINTS, add_endpoint, list_endpoints
from .auth import Viewer
from .context import AppContext

__all__ = [
    "MAX_ENDPOINTS",
    "EndpointIn",
    "add",
    "endpoint_json",
    "subscriber_channels",
    "telegram_link",
    "test_event",
]


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


def endpoint_json(endpoint: Any) -> dict[str, Any]:
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

    url = body.url.removeprefix("apprise+")
    try:
        vet_apprise_url(url, allow_loopback=allow, extra_schemes=ctx.settings.delivery.apprise_extra_schemes)
    except DeliveryError as exc:
        raise HTTPException(422, f"url: {exc}") from None
    return f"apprise+{url}", []


async def add(body: EndpointIn, ctx: AppContext, viewer: Viewer) -> dict[str, Any]:
    """Register a webhook (the answer holds its signing secret, once) or an Apprise URL."""
    assert viewer.subscriber is not None
    if viewer.plan is None or body.channel not in viewer.plan.channels:
        raise HTTPException(403, f"your plan does not include {body.channel} alerts")
    url, secrets = _vet(ctx, body)
    endpoint = await ctx.db.write(add_endpoint, viewer.subscriber.id, body.channel, url, datetime.now(UTC), secrets)
    ctx.db.audience_changed()
    out = endpoint_json(endpoint)
    if secrets:
        out["secret"] = secrets[0]  # whsec_...: verify our signatures with it (Standard Webhooks)
    return out


async def test_event(endpoint_id: int, ctx: AppContext, viewer: Viewer) -> dict[str, Any]:
    """Send a test message to one of the viewer's endpoints now; the answer says what the receiver said."""

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

        for close in (email.close, telegram.close):
            await close(context)
    return {"ok": True, "receipt": {"id": receipt.provider_id, "detail": receipt.detail}}


async def telegram_link(ctx: AppContext, viewer: Viewer) -> dict[str, Any]:
    """A one-time link (valid for an hour) that connects a Telegram chat to the viewer's alerts."""

    assert viewer.subscriber is not None
    bot = ctx.settings.telegram.bot
    if not (bot and ctx.settings.telegram.token):
        raise HTTPException(404, "this site has no Telegram bot")
    if viewer.plan is None or "telegram" not in viewer.plan.channels:
        raise HTTPException(403, "your plan does not include Telegram alerts")
    link = await connect_link(ctx.db, ctx.pepper, bot, viewer.subscriber.id, viewer.subscriber.email)
    return {"link": link, "expires_in": 3600}
