"""The operator's alerts: the engine's watchdog news (an automation's data stopped, or flows
again) sent to every ``operator.alerts`` URL.

Alerts go through the subscribers' channel classes, so the URLs work the same; the channels
are built once. A failed alert is logged and counted, never raised into the engine's way.
:func:`signalmint.serve.wire_engine` hands an :class:`OperatorChannels` to the engine.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime
from typing import Any

from ..config import Settings
from ..engine.watchdog import Staleness
from ..errors import SignalmintError
from ..registry import channel_class, channel_kinds
from ..store.outbox import Endpoint
from .channels import email, telegram
from .channels.base import ChannelContext, Message
from .context import channel_context
from .send import default_channel_factory

__all__ = ["OperatorChannels", "alert_message"]

log = logging.getLogger("signalmint.watchdog")


def _kind(url: str) -> str:
    """The channel kind of an operator alert URL, by the installed channels' ``url_prefix``."""
    return next(kind for kind in channel_kinds() if url.startswith(channel_class(kind).url_prefix))


def _hhmm(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def alert_message(notice: Staleness) -> Message:
    """The message of one watchdog notice: a subject and text for people, and the webhook
    envelope (type, version, timestamp, data) subscribers' hooks get too."""
    name, since, now = notice.automation, notice.since, notice.at
    last_bar = notice.last_bar.isoformat() if notice.last_bar else None
    if notice.kind == "stale":
        subject = f"[signalmint] {name}: data delayed since {_hhmm(since)}"
        text = (
            f"No bar has reached the automation {name} since {_hhmm(since)} "
            f"(limit {notice.limit}). Subscribers see a 'data delayed' banner; "
            "a recovery message follows when bars come again."
        )
    else:
        subject = f"[signalmint] {name}: data flowing again"
        text = f"Bars reach the automation {name} again (delayed from {_hhmm(since)} to {_hhmm(now)})."
    payload = {
        "type": f"automation.{notice.kind}",
        "version": 1,
        "timestamp": now.isoformat(),
        "data": {"automation": name, "since": since.isoformat(), "at": now.isoformat(), "last_bar": last_bar},
    }
    stamp = int(since.timestamp())
    return Message(f"op-{notice.kind}-{name}-{stamp}", subject, text, payload, now)


class OperatorChannels:
    """Sends the operator's alerts to every ``operator.alerts`` URL (their channels are built once)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.urls = list(settings.operator.alerts)
        self.sent = 0
        self.failed = 0
        self._context: ChannelContext | None = None
        self._channels: dict[str, Any] = {}

    def _channel(self, url: str) -> Any:
        if self._context is None:
            self._context = channel_context(self.settings)
        if url not in self._channels:
            secret = self.settings.operator.webhook_secret
            endpoint = Endpoint(0, 0, _kind(url), url, (secret,) if secret else (), "active")
            self._channels[url] = default_channel_factory(endpoint, self._context)
        return self._channels[url]

    async def send(self, notice: Staleness) -> int:
        """Send to every URL; how many took it. Failures are logged, never raised."""
        message = alert_message(notice)
        ok = 0
        for url in self.urls:
            try:
                await self._channel(url).send(message)
            except (SignalmintError, OSError) as exc:
                self.failed += 1
                log.warning("operator alert to %s failed: %s", url.split(":", 1)[0], exc)
            else:
                ok += 1
                self.sent += 1
        return ok

    async def close(self) -> None:
        context = self._context
        if context is not None:
            for close in (email.close, telegram.close):  # the SMTP pool and the bot's client, if opened
                with contextlib.suppress(Exception):
                    await close(context)
            if context.http is not None:
                with contextlib.suppress(Exception):
                    await context.http.close()
        self._context = None
        self._channels.clear()
