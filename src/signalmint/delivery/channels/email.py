"""Email: ``mailto:ada@example.com`` over SMTP (aiosmtplib), through a small pool of connections.

Each message is multipart/alternative (plain text and HTML); when the message carries a chart
the HTML part becomes multipart/related with the PNG inline under ``cid:`` ``CHART_CID``.
``Message-ID`` is ``<{idempotency_id}@{sender domain}>``, the same on every attempt, so a
receiver (or a person) can tell a retried duplicate. ``List-Unsubscribe`` and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058) go with every message that has
an ``unsubscribe_url``.

SMTP connections are reused: one :class:`~signalmint.delivery.smtp.SmtpPool` per worker (kept
in the :class:`ChannelContext`, see :mod:`signalmint.delivery.smtp`) sends one transaction after
another on each of its few sessions. Close it with :func:`close` when the worker stops.

A message's :attr:`~signalmint.delivery.channels.base.Message.attachments` go along: files
(a report's PDF) make the whole multipart/mixed, images with a ``content_id`` join the HTML's
multipart/related so the HTML shows them with ``cid:`` (email clients block ``data:`` images).

The MIME text is written directly (quoted-printable text and HTML, the chart's base64 encoded
once per chart): the email package takes milliseconds per message with an image. The body goes on
the wire ready for DATA (CRLF line ends, lines starting with ``.`` doubled: RFC 5321 4.5.2),
prepared once for all the messages that share it (a report's thousands); per recipient only the
headers are written (:func:`wire_message`): aiosmtplib's ``sendmail()`` would normalise line
ends and dot-stuff all 40 KB of a report again for every recipient (a millisecond of CPU each).

Errors: a recipient refused with a 5xx code or a message refused at DATA with 5xx is permanent;
when the enhanced status says the address itself is wrong (5.1.x: no such mailbox or domain)
it is a hard bounce, :class:`MailboxUnavailable`, which also pauses the endpoint. 4xx answers,
timeouts and connection trouble are retryable, and so are problems of the operator's own setup
(login, sender refused, STARTTLS missing), which a retry gets past once they are fixed.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.policy import default as default_policy
from email.utils import format_datetime, parseaddr
from html import escape
from typing import Any, ClassVar
from urllib.parse import quote, unquote

import aiosmtplib

from signalmint.delivery.render import CHART_CID
from signalmint.delivery.smtp import SmtpPool, close, dot_stuffed, smtp_pool
from signalmint.errors import ConfigError, DeliveryError

from .base import Attachment, ChannelContext, Message, Receipt

__all__ = [
    "EmailChannel",
    "MailboxUnavailable",
    "SmtpPool",
    "build_email",
    "close",
    "dot_stuffed",
    "email_bytes",
    "message_id",
    "smtp_pool",
    "wire_message",
]

_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_DOMAIN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_BAD_MAILBOX = re.compile(r"^5\.1\.\d+\b")  # RFC 3463 X.1.X: the address itself is wrong
_ID_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+")


class MailboxUnavailable(DeliveryError):
    """A hard bounce: the server says the address does not exist (enhanced status 5.1.x).

    Permanent, and ``pause_endpoint`` tells the outbox to stop mailing the address (suppression)."""

    pause_endpoint: ClassVar[bool] = True

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


@functools.lru_cache(maxsize=8)
def _domain_of(sender: str) -> str:
    address = parseaddr(sender)[1]
    return address.rpartition("@")[2] or "localhost"


def message_id(idempotency_id: str, sender: str) -> str:
    """``<{idempotency_id}@{sender domain}>``; characters a Message-ID cannot hold become ``=XX``.

    >>> message_id("d-42.7", "signalmint <alerts@sm.example>")
    '<d-42.7@sm.example>'
    >>> message_id("a b@c", "alerts@sm.example")
    '<a=20b=40c@sm.example>'
    """
    out: list[str] = []
    for i, char in enumerate(idempotency_id):
        dot_ok = char == "." and 0 < i < len(idempotency_id) - 1 and idempotency_id[i - 1] != "."
        out.append(char if char in _ID_SAFE or dot_ok else "".join(f"={b:02X}" for b in char.encode()))
    return f"<{''.join(out) or 'empty'}@{_domain_of(sender)}>"


def _redact(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def _with_chart(html: str) -> str:
    """The HTML with the chart referenced (added before ``</body>`` when the renderer left it out)."""
    if f"cid:{CHART_CID}" in html:
        return html
    img = f'<p><img src="cid:{CHART_CID}" alt="Chart" style="display:block;max-width:100%;height:auto;border:0;"></p>'
    at = html.lower().rfind("</body>")
    return html + img if at < 0 else html[:at] + img + html[at:]


# Boundaries that start with "=_" cannot occur in quoted-printable (which writes "=" as "=3D")
# or base64 text, so fixed ones are safe and the bytes of a message are reproducible.
_ALT, _REL = b"=_sm-alternative", b"=_sm-related"
_CRLF = b"\r\n"


def _qp(text: str, stuffed: bool = False) -> bytes:
    """UTF-8 text as quoted-printable with CRLF line ends (lines of at most 76 characters);
    ``stuffed``: with lines starting with ``.`` doubled, as they go after DATA.

    Encoded line by line (quoted-printable wraps each line on its own), each line once: the
    messages of one alert differ in a line or two (the unsubscribe link), not in the rest.
    """
    *lines, last = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    encode = _qp_stuffed_line if stuffed else _qp_line
    return b"".join([*(encode(line, True) for line in lines), encode(last, False)])


@functools.lru_cache(maxsize=4096)
def _qp_line(line: str, ended: bool) -> bytes:
    """One line (``ended``: followed by a line end, which b2a_qp wraps differently from the end of the text)."""
    data = line.encode("utf-8") + b"\n" if ended else line.encode("utf-8")
    return binascii.b2a_qp(data, istext=True).replace(b"\n", _CRLF)


@functools.lru_cache(maxsize=4096)
def _qp_stuffed_line(line: str, ended: bool) -> bytes:
    """:func:`_qp_line` dot-stuffed (RFC 5321 4.5.2): it starts a line, and so do its soft breaks."""
    encoded = _qp_line(line, ended).replace(b"\r\n.", b"\r\n..")
    return b"." + encoded if encoded[:1] == b"." else encoded


@functools.lru_cache(maxsize=32)
def _text_part(subtype: str, text: str, stuffed: bool = False) -> bytes:
    """A text part; kept for a text many messages share (a report's HTML goes to thousands)."""
    head = f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
    return head.encode() + _qp(text, stuffed)


@functools.lru_cache(maxsize=16)
def _png_part(png: bytes) -> bytes:
    """The chart's MIME part; encoded once per chart, however many subscribers get it."""
    head = (f"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\nContent-ID: <{CHART_CID}>\r\n"
            'Content-Disposition: inline; filename="chart.png"\r\n\r\n')  # fmt: skip
    return head.encode() + base64.encodebytes(png).replace(b"\n", _CRLF)


_MIX = b"=_sm-mixed"
_FILENAME_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.+")


@functools.lru_cache(maxsize=16)
def _file_part(file: Attachment) -> bytes:
    """One attachment's MIME part, base64 encoded once however many recipients get it."""
    name = "".join(c if c in _FILENAME_SAFE else "_" for c in file.filename)[:120] or "file"
    kind = (
        file.content_type
        if re.fullmatch(r"[a-z0-9.+-]+/[a-z0-9.+-]+", file.content_type)
        else "application/octet-stream"
    )
    head = f'Content-Type: {kind}; name="{name}"\r\nContent-Transfer-Encoding: base64\r\n'
    if file.content_id is not None:
        cid = "".join(c for c in file.content_id if c in _ID_SAFE or c in ".@")
        head += f'Content-ID: <{cid}>\r\nContent-Disposition: inline; filename="{name}"\r\n\r\n'
    else:
        head += f'Content-Disposition: attachment; filename="{name}"\r\n\r\n'
    return head.encode() + base64.encodebytes(file.data).replace(b"\n", _CRLF)


def _multipart(subtype: str, boundary: bytes, parts: list[bytes], params: str = "") -> bytes:
    head = f'Content-Type: multipart/{subtype}; boundary="{boundary.decode()}"{params}\r\n\r\n'.encode()
    body = b"".join(b"--" + boundary + _CRLF + part + _CRLF for part in parts)
    return head + body + b"--" + boundary + b"--" + _CRLF


def _body(
    text: str,
    html: str | None,
    chart_png: bytes | None,
    attachments: tuple[Attachment, ...] = (),
    *,
    stuffed: bool = False,
) -> bytes:
    """The MIME entity: text/plain, or multipart/alternative of text and HTML (multipart/related
    with the chart and inline images when there are some), inside multipart/mixed with the files.

    Written out directly: the email package takes milliseconds for a message with an image,
    which would cap one worker at a few hundred emails a second. Every line ends in CRLF but
    maybe the last, and only the quoted-printable text can start a line with ``.`` (headers,
    boundaries and base64 never do): ``stuffed`` doubles those dots, so the result is
    :func:`dot_stuffed` of the plain one but its final CRLF, each text line stuffed only once.
    """
    inline = [_file_part(a) for a in attachments if a.content_id is not None]
    files = [_file_part(a) for a in attachments if a.content_id is None]
    if html is None and chart_png:
        html = f'<pre style="font-family:inherit;white-space:pre-wrap;">{escape(text)}</pre>'
    if html is None:
        entity = _text_part("plain", text, stuffed)
    else:
        html_part = _text_part("html", _with_chart(html) if chart_png else html, stuffed)
        related = ([_png_part(chart_png)] if chart_png else []) + inline
        if related:
            html_part = _multipart("related", _REL, [html_part, *related], '; type="text/html"')
        entity = _multipart("alternative", _ALT, [_text_part("plain", text, stuffed), html_part])
    if files:
        entity = _multipart("mixed", _MIX, [entity, *files])
    return b"MIME-Version: 1.0\r\n" + entity


@functools.lru_cache(maxsize=16)
def _wire_body(
    text: str, html: str | None, chart_png: bytes | None, attachments: tuple[Attachment, ...]
) -> tuple[bytes, int]:
    """The body ready for DATA (:func:`dot_stuffed`) and its size before stuffing; made once for a
    body many messages share, and from lines stuffed once for the messages of one alert."""
    body = _body(text, html, chart_png, attachments, stuffed=True)
    size = len(body) - body.count(b"\r\n..") - body.startswith(b"..")  # each stuffed line has one dot more
    return (body, size) if body.endswith(_CRLF) else (body + _CRLF, size)


@functools.lru_cache(maxsize=8)
def _header(name: str, value: str) -> bytes:
    """A header through the email package (addresses with display names); cached, as it is slow."""
    folded: str = SMTP_POLICY.fold(name, SMTP_POLICY.header_factory(name, value))
    return folded.encode("ascii")


@functools.lru_cache(maxsize=256)
def _words(text: str) -> str:
    """``text`` as it may appear in a header: as is when printable ASCII, else RFC 2047 encoded
    words (base64 of at most 39 UTF-8 bytes each, never splitting a character), folded so that
    no line passes 78 characters.

    >>> _words("AAPL traded 7.4× its usual volume")
    '=?utf-8?b?QUFQTCB0cmFkZWQgNy40w5cgaXRzIHVzdWFsIHZvbHVtZQ==?='
    """
    if text.isascii() and text.isprintable() and len(text) < 900:
        return text
    chunks, current = [], b""
    for char in text:
        encoded = char.encode("utf-8")
        if len(current) + len(encoded) > 39:
            chunks.append(current)
            current = b""
        current += encoded
    chunks.append(current)
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(chunk).decode()}?=" for chunk in chunks)


@functools.lru_cache(maxsize=64)
def _date(at: datetime) -> str:
    """The Date header's value (a report's thousands of emails share one)."""
    return format_datetime(at.astimezone(UTC))


def _ascii_value(name: str, value: str) -> str:
    if not (value.isascii() and value.isprintable()) or len(value) > 900:
        raise ValueError(f"{name} {value!r} cannot go in a header")
    return value


def _head(message: Message, to: str, sender: str) -> bytes:
    """The headers for ``to``, ending in CRLF (no line of them starts with ``.``)."""
    created = message.created_at if message.created_at.tzinfo else message.created_at.replace(tzinfo=UTC)
    lines = [
        f"To: {_ascii_value('address', to)}",
        f"Subject: {_words(' '.join(message.subject.split()))}",
        f"Date: {_date(created)}",
        f"Message-ID: {message_id(message.idempotency_id, sender)}",
        "Auto-Submitted: auto-generated",  # RFC 3834: no vacation auto-replies
    ]
    if message.unsubscribe_url:
        url = _ascii_value("unsubscribe_url", message.unsubscribe_url)
        if " " in url or "<" in url or ">" in url:
            raise ValueError(f"unsubscribe_url {url!r} cannot go in a header")
        lines.append(f"List-Unsubscribe: <{url}>")
        lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")  # RFC 8058
    return _header("From", sender) + "".join(line + "\r\n" for line in lines).encode("ascii")


def email_bytes(message: Message, to: str, sender: str) -> bytes:
    """The message for ``to`` (CRLF line ends, 7-bit), before dot-stuffing."""
    return _head(message, to, sender) + _body(message.text, message.html, message.chart_png, message.attachments)


def wire_message(message: Message, to: str, sender: str) -> tuple[tuple[bytes, ...], int]:
    """The message for ``to`` as written after DATA (the chunks, see :func:`dot_stuffed`) and its
    size for the SIZE extension; the body part is shared by every message with the same body."""
    head = dot_stuffed(_head(message, to, sender))
    body, size = _wire_body(message.text, message.html, message.chart_png, message.attachments)
    return (head, body), len(head) + size


def build_email(message: Message, to: str, sender: str) -> EmailMessage:
    """The message for ``to`` as an :class:`EmailMessage` (for catchers and tests; sending uses the bytes)."""
    return message_from_bytes(email_bytes(message, to, sender), policy=default_policy)


class EmailChannel:
    """``mailto:ada@example.com``."""

    scheme: ClassVar[str] = "mailto"
    kind: ClassVar[str] = "email"
    url_prefix: ClassVar[str] = "mailto:"
    title: ClassVar[str] = "Email"
    subscriber_added: ClassVar[bool] = False
    for_people: ClassVar[bool] = True
    renders_chart: ClassVar[bool] = True
    requires: ClassVar[str | None] = "email.host"
    position: ClassVar[int] = 10  # where pages list it (plugins: 100 unless they say)
    takes_secrets: ClassVar[bool] = False

    @classmethod
    def example_url(cls, sink: Any) -> str:
        """A URL reaching the local sinks of :func:`signalmint.testing.check_channel`."""
        return "mailto:ada@example.com"  # the SMTP sink comes in the context

    def __init__(self, address: str, context: ChannelContext) -> None:
        self.address = address
        self.context = context

    @classmethod
    def from_url(cls, url: str, context: ChannelContext) -> EmailChannel:
        scheme, _, rest = url.partition(":")
        address = unquote(rest.partition("?")[0]).strip()
        local, _, domain = address.rpartition("@")
        if scheme.lower() != cls.scheme or not _LOCAL.match(local) or len(local) > 64 or not _DOMAIN.match(domain):
            raise ConfigError(f"{url!r} is not an email channel URL", key="url", hint="write mailto:ada@example.com")
        return cls(address, context)

    def to_url(self, redact: bool = True) -> str:
        address = _redact(self.address) if redact else self.address
        return f"mailto:{quote(address, safe='@*')}"

    def __repr__(self) -> str:
        return f"EmailChannel({self.to_url()!r})"

    async def send(self, message: Message) -> Receipt:
        try:
            pool = smtp_pool(self.context)
        except ConfigError as exc:
            raise DeliveryError(f"email is not set up: {exc}") from exc
        to = _redact(self.address)
        try:
            chunks, size = wire_message(message, self.address, pool.sender)
            answer = await pool.send_wire(chunks, size, self.address)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refusals = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
            if all(r.code >= 500 and _BAD_MAILBOX.match(r.message) for r in exc.recipients):
                raise MailboxUnavailable(f"the server refused {to}: {refusals}") from exc
            permanent = all(r.code >= 500 for r in exc.recipients)
            raise DeliveryError(f"the server refused {to}: {refusals}", permanent=permanent) from exc
        except aiosmtplib.SMTPDataError as exc:
            raise DeliveryError(f"the server refused the message to {to}: {exc.code} {exc.message}",
                                permanent=exc.code >= 500) from exc  # fmt: skip
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryError(f"SMTP server answered {exc.code} {exc.message} (sending to {to})") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryError(f"sending to {to} failed: {type(exc).__name__}: {exc}") from exc
        except ValueError as exc:  # an address aiosmtplib cannot put on the wire
            raise DeliveryError(f"cannot send to {to}: {exc}", permanent=True) from exc
        provider_id = message_id(message.idempotency_id, pool.sender)
        return Receipt(channel="email", at=datetime.now(UTC), provider_id=provider_id, detail=answer)
