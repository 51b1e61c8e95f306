"""What every channel speaks: a :class:`Message` in, a :class:`Receipt` out, or a DeliveryError.

A channel is configured by a URL (``mailto:ada@example.com``, ``telegram://CHAT_ID``,
``webhook+https://example.com/hook``, ``apprise+ntfy://topic``...) with a
``from_url()``/``to_url(redact=True)`` round trip, and sends with
``async send(message) -> Receipt``. Failures raise
:class:`~signalmint.errors.DeliveryError` with ``permanent`` (retrying cannot help: a 410,
a bad address, a blocked bot) and ``retry_after`` (the receiver's own hint, in seconds).
The outbox records every attempt; channels never swallow a failure.

Shared resources (HTTP client, SMTP settings, the operator's bot token, the SSRF policy)
come in a :class:`ChannelContext`, built once per worker and passed to ``from_url``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

from ...records import quick

__all__ = ["Attachment", "Channel", "ChannelContext", "Message", "Receipt"]


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file that goes with a message: a report's PDF, or (``content_id`` set) an image the HTML
    shows inline (``cid:``). Channels that cannot carry files ignore them: the text has a link."""

    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None


@quick
@dataclass(frozen=True, slots=True)
class Message:
    """One delivery to one endpoint; several grouped signals make one message.

    ``idempotency_id`` is the same on every attempt for a (signal or group, endpoint): the
    webhook-id, the email Message-ID, the Telegram dedup key.
    """

    idempotency_id: str
    subject: str
    text: str
    payload: Mapping[str, Any]  # the versioned JSON a webhook receives
    created_at: datetime
    html: str | None = None
    chart_png: bytes | None = None
    signal_ids: tuple[int, ...] = ()
    unsubscribe_url: str | None = None  # email: List-Unsubscribe (RFC 8058 one-click POST)
    body: bytes | None = None  # ``payload`` already encoded as compact JSON (shared by many deliveries)
    attachments: tuple[Attachment, ...] = ()  # email attaches them; Telegram sends the first file as a document


@quick
@dataclass(frozen=True, slots=True)
class Receipt:
    """What the receiver said: its own id for the message (if any) and a short detail."""

    channel: str
    at: datetime
    provider_id: str | None = None
    detail: str = ""


@dataclass
class ChannelContext:
    """Resources shared by every channel of a worker."""

    http: Any = None  # an async HTTP client session, owned by the worker
    smtp: Any = None  # signalmint.config.EmailConfig
    telegram_token: str | None = None
    telegram_base_url: str = "https://api.telegram.org"
    allow_loopback: bool = False  # SSRF guard: only for local testing
    own: str | None = None  # SSRF guard, demo mode only: the demo's inspector prefix (see ssrf.check_url)
    resolver: Any = None  # SSRF guard: an async resolver (host -> list of IPs); None: the system's
    apprise_schemes: frozenset[str] = frozenset()  # Apprise services allowed beyond the reviewed ones
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Channel(Protocol):
    """An outbox channel, registered under ``kind`` in the ``signalmint.channels`` entry points.

    Its class attributes tell the rest of signalmint what it is, so no list of channels is
    kept by hand: ``url_prefix`` (how its endpoint URLs start: ``webhook+``, ``mailto:``),
    ``title`` (its name on pages), ``subscriber_added`` (a subscriber adds one by URL on the
    dashboard and the API), ``for_people`` (people read it: the worker renders text, a group
    is a list rather than ``signal.group`` JSON), ``renders_chart`` (a single signal's message
    carries a chart), ``requires`` (the dotted setting that must be set for the installation
    to send it, e.g. ``email.host``; ``None``: nothing), ``position`` (optional) and ``takes_secrets`` (``from_url``
    takes the endpoint's signing ``secrets=``). ``example_url(sink)`` (optional) gives a URL
    that reaches the local test sinks, for :func:`signalmint.testing.check_channel`.
    """

    kind: ClassVar[str]
    scheme: ClassVar[str]
    url_prefix: ClassVar[str]
    title: ClassVar[str]
    subscriber_added: ClassVar[bool]
    for_people: ClassVar[bool]
    renders_chart: ClassVar[bool]
    requires: ClassVar[str | None]
    takes_secrets: ClassVar[bool]
    # optional: ``position`` (int, where pages list it; default 100), ``permanent_status``
    # (the HTTP answer the conformance suite expects to be permanent; default 410, None: cannot tell)

    @classmethod
    def from_url(cls, url: str, context: ChannelContext) -> Channel: ...

    def to_url(self, redact: bool = True) -> str: ...

    async def send(self, message: Message) -> Receipt: ...
