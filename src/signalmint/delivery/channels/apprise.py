"""Apprise: any Apprise URL (Discord, Slack, ntfy, Pushover, Matrix...) as a channel.

URL form: ``apprise+<apprise url>``, e.g. ``apprise+ntfy://topic``,
``apprise+discord://ID/TOKEN`` or ``apprise+json://hooks.example.com/path`` (Apprise's own
generic JSON poster). ``to_url(redact=True)`` is Apprise's privacy-mode URL.

Apprise reports a failed send by logging it and returning False. Here a failure raises a
retryable :class:`~signalmint.errors.DeliveryError` carrying what Apprise logged for that
call, so the outbox retries it like any other channel; Apprise's own retries are left off.
A URL Apprise cannot use raises a permanent DeliveryError at :meth:`AppriseChannel.from_url`.
The send runs through Apprise's async API (its blocking plugins run in Apprise's own thread
pool, never on the event loop); the chart goes along as an attachment where the service
takes attachments.

SSRF: services whose host comes from the user (``json://``, ``xml://``, ``form://``,
self-hosted ntfy, Gotify, Matrix, Mattermost... any plugin with a ``host`` URL token, unless
the URL picked the service's cloud) have that host vetted by :func:`vet_apprise_url` at
registration, and again, resolved, right before each send. Apprise then dials through its
own HTTP client, which resolves the name again: unlike webhooks, the dialled address is not
pinned, so a rebinding name has a window of milliseconds. Plans that sell user-hosted
targets should prefer the webhook channel.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

import apprise
from apprise.attachment.memory import AttachMemory

from signalmint.delivery.channels.base import ChannelContext, Message, Receipt
from signalmint.delivery.ssrf import BAD_PORTS, UnsafeTarget, check_host, resolve_safe
from signalmint.errors import DeliveryError

__all__ = ["AppriseChannel", "vet_apprise_url"]

PREFIX: Final = "apprise+"
DEFAULT_TIMEOUT: Final = 30.0
_CLOUD_MODES: Final = frozenset({"cloud", "official"})
# Apprise's generic HTTP posters: like webhooks, they may not aim at mail, SSH, DNS... ports.
_HTTP_POSTERS: Final = frozenset({"json", "jsons", "xml", "xmls", "form", "forms"})
_LOG_PREFIX = re.compile(r"^\S+ \S+ - [A-Z]+ - ")  # Apprise's "date time - LEVEL - " before each message
_ASSET = apprise.AppriseAsset(storage_mode="memory")  # no persistent cache files on disk


class _ThreadLogs(logging.Handler):
    """Collects Apprise's log records emitted by the current thread only."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.lines.append(record.getMessage())


@contextmanager
def _apprise_logs() -> Iterator[list[str]]:
    handler = _ThreadLogs()
    logger = logging.getLogger("apprise")
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


def _instantiate(url: str) -> Any:
    """Apprise's plugin for ``url`` (without our prefix), or a permanent DeliveryError saying why not."""
    with _apprise_logs() as lines:
        try:
            plugin = apprise.Apprise.instantiate(url, asset=_ASSET, suppress_exceptions=False)
        except Exception as exc:  # plugins raise TypeError, ValueError... on bad tokens
            lines.append(str(exc))
            plugin = None
    if plugin is None:
        scheme = url.split("://", 1)[0] if "://" in url else url[:20]
        why = "; ".join(dict.fromkeys(line.strip() for line in lines if line.strip())) or "unsupported URL"
        raise DeliveryError(f"apprise cannot use this {scheme}:// URL: {why}", permanent=True)
    return plugin


def _dialled_host(plugin: Any) -> tuple[str, int] | None:
    """The host and port the plugin will connect to when the user chose them, else None."""
    if "host" not in getattr(type(plugin), "template_tokens", {}):
        return None  # the service's host is fixed by the plugin
    if getattr(plugin, "mode", None) in _CLOUD_MODES:
        return None  # e.g. ntfy://topic goes to ntfy.sh
    host = getattr(plugin, "host", None)
    if not isinstance(host, str) or not host:
        return None
    port = getattr(plugin, "port", None)
    return host, port if isinstance(port, int) else 0


def _vet(plugin: Any, allow_loopback: bool) -> tuple[str, int] | None:
    dialled = _dialled_host(plugin)
    if dialled is None:
        return None
    host, port = dialled
    subject = f"{PREFIX}{plugin.url(privacy=True)}"
    scheme = str(plugin.url(privacy=True)).split("://", 1)[0].lower()
    if not 0 <= port < 65536 or (port and scheme in _HTTP_POSTERS and port in BAD_PORTS):
        raise UnsafeTarget(f"{subject}: port {port} is not allowed", target=subject, reason="bad port")
    return check_host(host, allow_loopback=allow_loopback, subject=subject), port


def vet_apprise_url(url: str, allow_loopback: bool = False) -> str | None:
    """Vet an Apprise URL (with or without ``apprise+``) at registration; no DNS.

    Returns the user-chosen host it will dial (None when the service's host is fixed).
    Raises a permanent DeliveryError for a URL Apprise cannot use and
    :class:`~signalmint.delivery.ssrf.UnsafeTarget` for a host that is not public.
    """
    vetted = _vet(_instantiate(url.removeprefix(PREFIX)), allow_loopback)
    return None if vetted is None else vetted[0]


def _clean(line: str) -> str:
    return _LOG_PREFIX.sub("", line).strip()


class AppriseChannel:
    """Send through one Apprise URL. Build it with :meth:`from_url`."""

    scheme: ClassVar[str] = "apprise"

    def __init__(self, url: str, context: ChannelContext, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url  # the Apprise URL, without our prefix
        self.context = context
        self.timeout = timeout
        self.plugin = _instantiate(url)
        self.service = str(getattr(self.plugin, "service_name", "") or self.url.split("://", 1)[0])

    @classmethod
    def from_url(cls, url: str, context: ChannelContext, *, timeout: float = DEFAULT_TIMEOUT) -> AppriseChannel:
        if not url.startswith(PREFIX):
            raise DeliveryError(f"an Apprise channel URL starts with {PREFIX}", permanent=True)
        channel = cls(url.removeprefix(PREFIX), context, timeout=timeout)
        _vet(channel.plugin, context.allow_loopback)
        return channel

    def to_url(self, redact: bool = True) -> str:
        return PREFIX + (str(self.plugin.url(privacy=True)) if redact else self.url)

    def __repr__(self) -> str:
        return f"AppriseChannel({self.to_url()!r})"

    async def send(self, message: Message) -> Receipt:
        """Notify through Apprise; a Receipt when it reports success, else a retryable DeliveryError."""
        plugin = _instantiate(self.url)  # a fresh plugin per send: no state shared across threads
        vetted = _vet(plugin, self.context.allow_loopback)
        if vetted is not None:
            host, port = vetted
            await resolve_safe(host, port, resolver=self.context.resolver, allow_loopback=self.context.allow_loopback)
        notifier = apprise.Apprise(asset=_ASSET)
        notifier.add(plugin)
        attach = None
        if message.chart_png and getattr(plugin, "attachment_support", False):
            attach = [AttachMemory(content=message.chart_png, name="chart.png", mimetype="image/png")]  # type: ignore[no-untyped-call]
        result = await notifier.async_notify(
            body=message.text, title=message.subject, attach=attach, timeout=self.timeout
        )
        if result:
            return Receipt(channel=self.scheme, at=datetime.now(UTC), detail=f"sent via {self.service}")
        said = "; ".join(dict.fromkeys(_clean(entry.message) for entry in result.logs())) or "no reason logged"
        raise DeliveryError(f"apprise {self.service} failed: {said}", permanent=False)
