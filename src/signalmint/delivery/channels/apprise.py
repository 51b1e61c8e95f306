"""Apprise: an Apprise URL (Discord, Slack, ntfy, Pushover, Zulip, email...) as a channel.

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

SSRF: only reviewed Apprise services are allowed (:data:`REVIEWED_SCHEMES`); an operator can
add others with ``delivery.apprise_extra_schemes``, knowingly. A reviewed service dials only
through ``requests`` or ``smtplib`` in the threads Apprise sends from, and every host it takes
from the URL is known: the ``host`` of self-hosted services (``json://``, ntfy, Gotify,
Mattermost...), the ``{organization}.{hostname}`` of Zulip, the SMTP server of ``mailto://``
(``smtp=``, or the host) and, with ``wkd=yes``, the recipients' domains. Those are vetted by
:func:`vet_apprise_url` at registration (no DNS), and resolved and vetted again before each
send. Then the send runs inside :func:`signalmint.net.dial_guard.guarded`: every address
the plugin actually connects to (after its own DNS lookup, after a redirect, an SMTP server)
passes the webhook guard's rule in the socket layer, so a rebinding name cannot switch it.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, NamedTuple

import apprise
from apprise.attachment.memory import AttachMemory
from apprise.manager_plugins import NotificationManager

from signalmint.delivery.channels.base import ChannelContext, Message, Receipt
from signalmint.errors import DeliveryError
from signalmint.net.dial_guard import guarded
from signalmint.net.ssrf import BAD_PORTS, UnsafeTarget, check_host, resolve_safe

__all__ = ["EXTRA_SCHEMES_SETTING", "REVIEWED_SCHEMES", "AppriseChannel", "vet_apprise_url"]

PREFIX: Final = "apprise+"
DEFAULT_TIMEOUT: Final = 30.0
EXTRA_SCHEMES_SETTING: Final = "delivery.apprise_extra_schemes"
_CLOUD_MODES: Final = frozenset({"cloud", "official"})
_LOG_PREFIX = re.compile(r"^\S+ \S+ - [A-Z]+ - ")  # Apprise's "date time - LEVEL - " before each message
_ASSET = apprise.AppriseAsset(storage_mode="memory")  # no persistent cache files on disk
_PLUGINS = NotificationManager()  # type: ignore[no-untyped-call]  # Apprise's registry of services, by scheme


class Host(NamedTuple):
    """A host a plugin takes from the URL; ``dialled`` when it connects to that very name."""

    name: str
    port: int = 0
    dialled: bool = True


Dialled = list[Host]


def _user_host(plugin: Any) -> Dialled:
    """The ``host`` (and port) of a self-hosted service; nothing in a service's own cloud."""
    if "host" not in getattr(type(plugin), "template_tokens", {}):
        return []  # the service's host is fixed by the plugin
    if getattr(plugin, "mode", None) in _CLOUD_MODES:
        return []  # e.g. ntfy://topic goes to ntfy.sh
    host = getattr(plugin, "host", None)
    if not isinstance(host, str) or not host:
        return []
    port = getattr(plugin, "port", None)
    return [Host(host, port if isinstance(port, int) else 0)]


def _fixed(plugin: Any) -> Dialled:
    return []  # the plugin dials only its service's own hosts


def _zulip(plugin: Any) -> Dialled:
    return [Host(f"{plugin.organization}.{plugin.hostname}", 443)]  # https://{org}.{hostname}/api/v1/messages


def _email(plugin: Any) -> Dialled:
    """The SMTP server (``smtp=``, else the URL's host); the mail domain and, with ``wkd=yes``, the
    recipients' domains (OpenPGP keys come from ``openpgpkey.<domain>``) are vetted by name only."""
    port = plugin.port if isinstance(plugin.port, int) else 0
    hosts = [Host(str(plugin.smtp_host or plugin.host or ""), port), Host(str(plugin.host or ""), port, dialled=False)]
    if getattr(plugin, "use_wkd", False):
        hosts += [Host(str(to).rpartition("@")[2], 443, dialled=False) for _, to in getattr(plugin, "targets", [])]
    return hosts


# Reviewed (Apprise 2.2): each dials only through requests or smtplib, from the thread Apprise
# runs it in, and the hosts it takes from the URL are the ones named here. HTTP services may not
# aim at mail, SSH, DNS... ports, like webhooks.
_REVIEWED: Final[dict[str, tuple[Callable[[Any], Dialled], bool]]] = {
    **dict.fromkeys(("json", "jsons", "xml", "xmls", "form", "forms"), (_user_host, True)),  # generic posters
    **dict.fromkeys(("ntfy", "ntfys", "gotify", "gotifys", "mmost", "mmosts"), (_user_host, True)),
    **dict.fromkeys(("rocket", "rockets", "apprise", "apprises"), (_user_host, True)),
    **dict.fromkeys(("mailto", "mailtos"), (_email, False)),
    "zulip": (_zulip, True),
    **dict.fromkeys(("discord", "slack", "tgram", "pover", "pbul", "ifttt", "pagerduty", "opsgenie"), (_fixed, True)),
}
REVIEWED_SCHEMES: Final = frozenset(_REVIEWED)
"""Apprise schemes allowed by default: each was reviewed for every address it can dial."""


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


def _schemes(plugin: Any) -> set[str]:
    """Every scheme of the plugin's service (``json`` and ``jsons``...), lowercase."""
    names: set[str] = set()
    for attr in ("protocol", "secure_protocol"):
        value = getattr(type(plugin), attr, None)
        values = (value,) if isinstance(value, str) else tuple(value or ())
        names.update(str(v).lower() for v in values)
    return names


def _refuse_scheme(scheme: str) -> UnsafeTarget:
    why = (
        f"the {scheme}:// Apprise service is not one of the reviewed ones ({', '.join(sorted(REVIEWED_SCHEMES))}); "
        f"the operator can allow it with the {EXTRA_SCHEMES_SETTING} setting, knowing the SSRF guard "
        "cannot vouch for every address it dials"
    )
    return UnsafeTarget(f"{PREFIX}{scheme}://: {why}", target=f"{scheme}://", reason=why)


def _allowed(url: str, extra: Collection[str]) -> None:
    """Refuse, before Apprise parses it, a URL whose scheme names an Apprise service not allowed here."""
    scheme = url.split("://", 1)[0].strip().lower() if "://" in url else ""
    known = scheme in _PLUGINS
    if known and scheme not in REVIEWED_SCHEMES and scheme not in extra:
        raise _refuse_scheme(scheme)


def _vet(plugin: Any, allow_loopback: bool, extra: Collection[str] = ()) -> Dialled:
    """Check a plugin's service is allowed and every host it takes from the URL is public; no DNS."""
    schemes = _schemes(plugin)
    reviewed = sorted(schemes & REVIEWED_SCHEMES)
    if not reviewed and not schemes & set(extra):  # e.g. a native https:// URL of another service
        raise _refuse_scheme(min(schemes) if schemes else "unknown")
    # an operator's addition: its URL host is vetted; its protocol (and so its bad ports) is unknown
    dials, is_http = _REVIEWED[reviewed[0]] if reviewed else (_user_host, False)
    subject = f"{PREFIX}{plugin.url(privacy=True)}"
    vetted: Dialled = []
    for host in dials(plugin):
        if not 0 <= host.port < 65536 or (host.port and is_http and host.port in BAD_PORTS):
            raise UnsafeTarget(f"{subject}: port {host.port} is not allowed", target=subject, reason="bad port")
        checked = host._replace(name=check_host(host.name, allow_loopback=allow_loopback, subject=subject))
        if checked.name not in [h.name for h in vetted]:
            vetted.append(checked)
    return vetted


def vet_apprise_url(url: str, allow_loopback: bool = False, *, extra_schemes: Collection[str] = ()) -> list[str]:
    """Vet an Apprise URL (with or without ``apprise+``) at registration; no DNS.

    Returns the hosts taken from the URL that it will dial (none when the service's hosts are
    fixed). Raises a permanent DeliveryError for a URL Apprise cannot use and
    :class:`~signalmint.net.ssrf.UnsafeTarget` for a service not allowed here
    (``extra_schemes``: the operator's additions) or a host that is not public.
    """
    url = url.removeprefix(PREFIX)
    _allowed(url, extra_schemes)
    return [host.name for host in _vet(_instantiate(url), allow_loopback, extra_schemes)]


def _clean(line: str) -> str:
    return _LOG_PREFIX.sub("", line).strip()


class AppriseChannel:
    """Send through one Apprise URL. Build it with :meth:`from_url`."""

    scheme: ClassVar[str] = "apprise"
    kind: ClassVar[str] = "apprise"
    url_prefix: ClassVar[str] = "apprise+"
    title: ClassVar[str] = "Apprise"
    subscriber_added: ClassVar[bool] = True
    for_people: ClassVar[bool] = True
    renders_chart: ClassVar[bool] = False
    requires: ClassVar[str | None] = None
    position: ClassVar[int] = 40  # where pages list it (plugins: 100 unless they say)
    takes_secrets: ClassVar[bool] = False
    permanent_status: ClassVar[int | None] = None  # Apprise reports a failure, not whether it will last

    @classmethod
    def example_url(cls, sink: Any) -> str:
        """A URL reaching the local sinks of :func:`signalmint.testing.check_channel`."""
        return "apprise+" + str(sink.http_url).replace("http://", f"json://ops:{sink.secret}@", 1) + "/notify"

    def __init__(self, url: str, context: ChannelContext, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url  # the Apprise URL, without our prefix
        self.context = context
        self.timeout = timeout
        _allowed(url, context.apprise_schemes)
        self.plugin = _instantiate(url)
        self.service = str(getattr(self.plugin, "service_name", "") or self.url.split("://", 1)[0])

    @classmethod
    def from_url(cls, url: str, context: ChannelContext, *, timeout: float = DEFAULT_TIMEOUT) -> AppriseChannel:
        """The channel for ``apprise+<url>``; the same checks as at registration (the policy may have tightened)."""
        if not url.startswith(PREFIX):
            raise DeliveryError(f"an Apprise channel URL starts with {PREFIX}", permanent=True)
        channel = cls(url.removeprefix(PREFIX), context, timeout=timeout)
        _vet(channel.plugin, context.allow_loopback, context.apprise_schemes)
        return channel

    def to_url(self, redact: bool = True) -> str:
        return PREFIX + (str(self.plugin.url(privacy=True)) if redact else self.url)

    def __repr__(self) -> str:
        return f"AppriseChannel({self.to_url()!r})"

    async def send(self, message: Message) -> Receipt:
        """Notify through Apprise; a Receipt when it reports success, else a DeliveryError.

        Every connection the plugin makes is vetted where it is made (:func:`guarded`); a
        refused one raises the permanent :class:`~signalmint.net.ssrf.UnsafeTarget`.
        """
        context = self.context
        plugin = _instantiate(self.url)  # a fresh plugin per send: no state shared across threads
        for host in _vet(plugin, context.allow_loopback, context.apprise_schemes):
            if host.dialled:  # resolved and vetted now for a clear refusal; the connection is vetted again
                await resolve_safe(
                    host.name, host.port, resolver=context.resolver, allow_loopback=context.allow_loopback
                )
        notifier = apprise.Apprise(asset=_ASSET)
        notifier.add(plugin)
        attach = None
        if message.chart_png and getattr(plugin, "attachment_support", False):
            attach = [AttachMemory(content=message.chart_png, name="chart.png", mimetype="image/png")]  # type: ignore[no-untyped-call]
        with guarded(allow_loopback=context.allow_loopback) as scope:
            result = await notifier.async_notify(
                body=message.text, title=message.subject, attach=attach, timeout=self.timeout
            )
        scope.raise_refusal()
        if result:
            return Receipt(channel=self.scheme, at=datetime.now(UTC), detail=f"sent via {self.service}")
        said = "; ".join(dict.fromkeys(_clean(entry.message) for entry in result.logs())) or "no reason logged"
        raise DeliveryError(f"apprise {self.service} failed: {said}", permanent=False)
