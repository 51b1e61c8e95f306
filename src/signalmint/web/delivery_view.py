"""How the dashboard shows where alerts go: endpoint rows, why one is paused, the noise choices.

Shared by the dashboard's page (:mod:`.dashboard_page`), its "Where alerts go" forms
(:mod:`.routes.dashboard_delivery`) and the demo's inspector button. An endpoint is shown
without its URL's secrets and never with its signing secret.

The noise choices of each channel (grouping alerts, and whether quiet hours hold alerts or
gather them in one digest) are offered here in :data:`GROUP_CHOICES` and :data:`QUIET_MODES`,
shown in the notifications form and read by :func:`noise_choice`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..delivery.inspect import inspector_prefix
from ..errors import ConfigError
from ..registry import channel_class, channel_kinds
from ..store.outbox import Endpoint, list_endpoints
from .auth import Viewer
from .context import AppContext
from .endpoint_ops import subscriber_channels
from .feed_links import feed_urls
from .params import is_digits

__all__ = [
    "DELIVERY_CHANNELS",
    "GROUP_CHOICES",
    "PAUSED_BY_YOU",
    "QUIET_MODES",
    "REMOVED",
    "EndpointRow",
    "channel_title",
    "delivery_context",
    "endpoint_row",
    "explain",
    "listed",
    "noise_choice",
    "redact",
    "resumable",
]


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


def resumable(endpoint: Endpoint) -> bool:
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
        can_resume=resumable(endpoint),
        can_test=in_plan and (endpoint.status == "active" or resumable(endpoint)),
        inspect_path=inspect_path,
    )


def listed(endpoint: Endpoint, channels: frozenset[str]) -> bool:
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
    rows = [endpoint_row(e, channels, own=own, email_ready=email_ready) for e in found if listed(e, channels)]
    telegram = ctx.settings.telegram
    return {
        "inspector_offer": own is not None and "webhook" in channels,
        "delivery_shown": bool(channels & DELIVERY_CHANNELS) or any(not r.in_plan for r in rows),
        "endpoint_rows": rows,
        "add_channels": [c for c in subscriber_channels() if c in channels],
        "telegram_ready": bool(telegram.bot and telegram.token) and "telegram" in channels,
        "feed_url": feed_urls(ctx, viewer)["url"] if "rss" in channels else None,
        "group_choices": GROUP_CHOICES,
        "quiet_modes": QUIET_MODES,
    }
