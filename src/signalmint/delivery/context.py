"""The resources channels share in a process (an HTTP session, SMTP settings, the bot token...),
built from the settings: by the delivery worker, the operator's alerts and the web app's
endpoint tests alike."""

from __future__ import annotations

from ..config import Settings
from .channels.base import ChannelContext
from .channels.webhook import make_http_session
from .inspect import inspector_prefix

__all__ = ["channel_context"]


def channel_context(settings: Settings) -> ChannelContext:
    """Channel resources from settings (call inside the event loop; close ``http`` when done)."""
    context = ChannelContext(
        smtp=settings.email,
        telegram_token=settings.telegram.token,
        telegram_base_url=settings.telegram.base_url,
        allow_loopback=settings.delivery.allow_loopback_targets,
        apprise_schemes=frozenset(settings.delivery.apprise_extra_schemes),
        own=inspector_prefix(settings),
    )
    context.http = make_http_session(context)
    return context
