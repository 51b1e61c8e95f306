"""Telegram: ``telegram://CHAT_ID`` (or ``telegram://TOKEN@CHAT_ID``) through the Bot API over httpx.

The operator's bot token comes from the :class:`ChannelContext` unless the URL carries one;
``to_url(redact=True)`` never shows more of a token than the bot's numeric id. The Bot API
address is ``context.telegram_base_url`` (tests point it at a local fake).

Sending: with a chart, ``sendPhoto`` (multipart) whose caption holds the start of the text
(captions stop at 1,024 characters), the rest in ``sendMessage`` follow-ups; with a file among
the message's attachments (a report's PDF), ``sendDocument`` (multipart, field ``document``) in
the same way; with neither,
``sendMessage``; text is split at paragraph, line or word boundaries into parts of at most
4,096 characters. Text goes as ``parse_mode=HTML``, escaped, the subject in bold. The parts
already delivered for an ``idempotency_id`` are remembered (bounded), so a retry after a
failure halfway resumes where it stopped and a repeated send is not shown twice.

Pacing (:class:`~signalmint.delivery.pacing.Pacer`, one per bot): at most one message a second
per chat and 30 a second overall. Outcomes of the Bot API:

===============================  ===========================================================
``ok``                           ``Receipt(provider_id="<message_id>[,<message_id>...]")``
429 Too Many Requests            retryable with ``retry_after`` from ``parameters``; the pacer
                                 holds that chat (and every chat when two chats hit it
                                 within a second: the bot-wide limit)
403 (blocked, kicked,            :class:`EndpointBlocked`: permanent, ``pause_endpoint``
deactivated user)
400 migrated to a supergroup     :class:`ChatMigrated` (permanent, with ``new_chat_id``)
other 400 (chat not found...)    permanent
401, 404 (bad token), 409, 5xx   retryable: the operator's setup or Telegram's own trouble
timeouts, connection errors      retryable
===============================  ===========================================================

Connecting a chat: the site shows :func:`deep_link` (``https://t.me/<bot>?start=<token>``);
the bot reads updates with :meth:`TelegramBot.poll_updates` (``getUpdates``) and
:meth:`TelegramBot.handle_update` hands ``/start <token>``, ``/status``, ``/pause``,
``/resume`` and ``/watchlist`` to a :class:`BotCommands` implementation, replying with what it
returns. :func:`run_polling` loops over both until asked to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from typing import Any, ClassVar, NamedTuple, Protocol

import httpx

from signalmint.delivery.pacing import Pacer
from signalmint.errors import ConfigError, DeliveryError

from .base import Attachment, ChannelContext, Message, Receipt

__all__ = [
    "BotCommands",
    "ChatMigrated",
    "Command",
    "EndpointBlocked",
    "TelegramBot",
    "TelegramChannel",
    "Update",
    "close",
    "deep_link",
    "parse_command",
    "run_polling",
    "split_text",
    "telegram_bot",
]

log = logging.getLogger("signalmint.delivery.telegram")

TEXT_LIMIT, CAPTION_LIMIT = 4096, 1024
_TOKEN = re.compile(r"^\d+:[A-Za-z0-9_-]+$")
_CHAT = re.compile(r"^(-?\d{1,20}|@[A-Za-z][A-Za-z0-9_]{3,31})$")
_START = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_BOTS_KEY, _HTTP_KEY, _PACER_KEY, _SENT_KEY = "telegram.bots", "telegram.http", "telegram.pacer", "telegram.sent"
_SENT_KEEP = 10_000  # idempotency ids whose delivered parts we remember


class EndpointBlocked(DeliveryError):
    """The chat refuses the bot (blocked it, removed it, or the user is gone): pause the endpoint."""

    pause_endpoint: ClassVar[bool] = True

    def __init__(self, message: str, *, reason: str) -> None:
        self.reason = reason
        super().__init__(message, permanent=True)


class ChatMigrated(DeliveryError):
    """The group became a supergroup with a new chat id: the endpoint's URL should follow it."""

    def __init__(self, message: str, *, new_chat_id: int) -> None:
        self.new_chat_id = new_chat_id
        super().__init__(message, permanent=True)


# --- splitting text -----------------------------------------------------------------------------


def _units(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units."""
    return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)


def _cut(text: str, limit: int) -> int:
    """Where to end a part of at most ``limit`` units: a paragraph, line or word boundary if one
    lies in its second half (in that order of preference), else the limit itself."""
    end, units = 0, 0
    for end, char in enumerate(text):  # noqa: B007 (end is used after the loop)
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            break
    else:
        return len(text)
    for sep in ("\n\n", "\n", " "):
        at = text.rfind(sep, 0, end + 1)
        if at > 0 and at >= end // 2:
            return at
    return end


def split_text(text: str, first: int = TEXT_LIMIT, rest: int = TEXT_LIMIT) -> list[str]:
    """``text`` in parts of at most ``first`` units, then ``rest`` units, cut at boundaries.

    >>> split_text("one two three", first=8, rest=6)
    ['one two', 'three']
    >>> [len(p) for p in split_text("x" * 10_000)]
    [4096, 4096, 1808]
    """
    parts, limit = [], first
    text = text.strip()
    while text:
        if _units(text) <= limit:
            parts.append(text)
            break
        at = _cut(text, limit)
        parts.append(text[:at].rstrip())
        text, limit = text[at:].lstrip(), rest
    return parts


def _html(part: str, bold: str) -> str:
    """One part as Telegram HTML: escaped, its leading ``bold`` (the subject) in bold."""
    if bold and part.startswith(bold):
        return f"<b>{escape(bold, quote=False)}</b>{escape(part[len(bold) :], quote=False)}"
    return escape(part, quote=False)


# --- the Bot API ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Update:
    """One update from getUpdates, reduced to what signalmint uses (``raw`` keeps the rest)."""

    update_id: int
    chat_id: int | None = None
    text: str | None = None
    username: str | None = None
    member_status: str | None = None  # my_chat_member: "kicked" when a user blocks the bot
    raw: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Update:
        message = data.get("message") or data.get("edited_message") or {}
        member = data.get("my_chat_member") or {}
        source = message or member
        chat, sender = source.get("chat") or {}, source.get("from") or {}
        status = (member.get("new_chat_member") or {}).get("status")
        chat_id = chat.get("id")
        return cls(
            update_id=int(data["update_id"]),
            chat_id=chat_id if isinstance(chat_id, int) else None,
            text=message.get("text") if isinstance(message.get("text"), str) else None,
            username=sender.get("username"),
            member_status=status if isinstance(status, str) else None,
            raw=data,
        )


class Command(NamedTuple):
    chat_id: int
    command: str  # lowercase, without the slash or a @botname suffix
    args: tuple[str, ...]


def parse_command(update: Update) -> Command | None:
    """``/start abc`` -> ``Command(chat_id, "start", ("abc",))``; None for anything but a command.

    >>> parse_command(Update(1, chat_id=42, text="/Start@SignalBot tok_123"))
    Command(chat_id=42, command='start', args=('tok_123',))
    >>> parse_command(Update(2, chat_id=42, text="hello")) is None
    True
    """
    if update.chat_id is None or not update.text or not update.text.startswith("/"):
        return None
    head, *args = update.text.split()
    command = head[1:].partition("@")[0].lower()
    return Command(update.chat_id, command, tuple(args)) if command else None


def deep_link(bot_username: str, token: str) -> str:
    """The link that opens the bot and sends ``/start <token>``.

    >>> deep_link("@SignalmintBot", "c0nnect_Me-1")
    'https://t.me/SignalmintBot?start=c0nnect_Me-1'
    """
    if not _START.match(token):
        raise ValueError("a start token is 1-64 characters of A-Z, a-z, 0-9, _ and -")
    return f"https://t.me/{bot_username.lstrip('@')}?start={token}"


class BotCommands(Protocol):
    """What the bot's commands do; each returns the reply (plain text) sent to the chat."""

    async def start(self, chat_id: int, token: str, update: Update) -> str: ...

    async def status(self, chat_id: int) -> str: ...

    async def pause(self, chat_id: int) -> str: ...

    async def resume(self, chat_id: int) -> str: ...

    async def watchlist(self, chat_id: int, args: Sequence[str]) -> str: ...

    async def tip(self, chat_id: int, args: Sequence[str]) -> str: ...


HELP = (
    "signalmint alerts.\n/status: your plan and this chat's state\n/pause and /resume: stop or restart alerts here\n"
    "/watchlist: the symbols you follow (/watchlist add AAPL, /watchlist remove AAPL)\n"
    "/tip: leave a tip, pay what you want (/tip 5)"
)
CONNECT = "To connect this chat, open the Telegram link on your signalmint account page."


class TelegramBot:
    """One bot: Bot API calls through an httpx client, paced, with errors as :class:`DeliveryError`."""

    def __init__(
        self,
        token: str,
        base_url: str = "https://api.telegram.org",
        http: httpx.AsyncClient | None = None,
        *,
        pacer: Pacer | None = None,
        timeout: float = 15.0,
    ) -> None:
        self.token = token
        self.base_url = base_url.rstrip("/")
        self._own_http = http is None
        self.http = http if http is not None else httpx.AsyncClient(timeout=timeout)
        self.pacer = pacer if pacer is not None else Pacer(per_key_interval=1.0, global_rate=30.0)
        self.timeout = timeout
        self._last_429: tuple[float, str] | None = None

    def __repr__(self) -> str:
        return f"TelegramBot({self.token.partition(':')[0]}:***, {self.base_url!r})"

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    async def call(
        self,
        method: str,
        data: Mapping[str, Any] | None = None,
        *,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        timeout: float | None = None,
        chat: str | None = None,
    ) -> Any:
        """POST ``method``; the ``result`` on success. ``chat`` names the chat for 429 backoff."""
        url = f"{self.base_url}/bot{self.token}/{method}"
        try:
            if files:
                response = await self.http.post(url, data=data, files=files, timeout=timeout or self.timeout)
            else:
                response = await self.http.post(url, json=data or {}, timeout=timeout or self.timeout)
        except httpx.TimeoutException as exc:
            raise DeliveryError(f"Telegram {method}: timed out ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:  # the message can hold the URL, hence the token: leave it out
            raise DeliveryError(f"Telegram {method}: {type(exc).__name__}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise DeliveryError(f"Telegram {method}: HTTP {response.status_code} without a Bot API answer")
        if body.get("ok") is True:
            return body.get("result")
        raise self._error(method, response.status_code, body, chat)

    def _error(self, method: str, status: int, body: Mapping[str, Any], chat: str | None) -> DeliveryError:
        code = body.get("error_code") if isinstance(body.get("error_code"), int) else status
        description = str(body.get("description") or "no description").replace(self.token, "***")
        raw = body.get("parameters")
        parameters: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
        said = f"Telegram {method}: {code} {description}"
        retry_after = parameters.get("retry_after")
        wait = float(retry_after) if isinstance(retry_after, int | float) and retry_after >= 0 else None
        if code == 429:
            self._backoff(chat, 5.0 if wait is None else wait)
            return DeliveryError(said, retry_after=wait)
        if code == 403:
            lowered = description.lower()
            reason = next((r for r in ("blocked", "kicked", "deactivated") if r in lowered), "forbidden")
            return EndpointBlocked(said, reason=reason)
        new_chat = parameters.get("migrate_to_chat_id")
        if code == 400 and isinstance(new_chat, int):
            return ChatMigrated(said, new_chat_id=new_chat)
        if code == 400:
            return DeliveryError(said, permanent=True)
        if code in (401, 404):
            return DeliveryError(f"{said} (is the bot token right?)")
        return DeliveryError(said, retry_after=wait)

    def _backoff(self, chat: str | None, seconds: float) -> None:
        now = self.pacer.clock()
        if chat is not None:
            self.pacer.backoff(chat, seconds)
        last, self._last_429 = self._last_429, (now, chat or "")
        if chat is None or (last is not None and last[1] != chat and now - last[0] < 1.0):
            self.pacer.backoff_all(seconds)  # more than one chat limited at once: the bot-wide limit

    async def send_message(self, chat_id: int | str, text: str, *, parse_mode: str | None = "HTML") -> Any:
        await self.pacer.wait(str(chat_id))
        data: dict[str, Any] = {"chat_id": chat_id, "text": text, "link_preview_options": {"is_disabled": True}}
        if parse_mode:
            data["parse_mode"] = parse_mode
        return await self.call("sendMessage", data, chat=str(chat_id))

    async def send_photo(self, chat_id: int | str, png: bytes, caption: str = "") -> Any:
        await self.pacer.wait(str(chat_id))
        data = {"chat_id": str(chat_id), "caption": caption, "parse_mode": "HTML"}
        files = {"photo": ("chart.png", png, "image/png")}
        return await self.call("sendPhoto", data, files=files, chat=str(chat_id))

    async def send_document(
        self, chat_id: int | str, data: bytes, filename: str, content_type: str, caption: str = ""
    ) -> Any:
        """``sendDocument``: a file (up to 50 MB through the Bot API) with an HTML caption."""
        await self.pacer.wait(str(chat_id))
        fields = {"chat_id": str(chat_id), "caption": caption, "parse_mode": "HTML"}
        files = {"document": (filename, data, content_type)}
        return await self.call("sendDocument", fields, files=files, chat=str(chat_id), timeout=max(self.timeout, 60.0))

    async def poll_updates(self, offset: int | None = None, timeout: float = 25.0) -> list[Update]:
        """getUpdates (long polling ``timeout`` seconds); pass ``offset`` = last update_id + 1."""
        data: dict[str, Any] = {"timeout": int(timeout), "allowed_updates": ["message", "my_chat_member"]}
        if offset is not None:
            data["offset"] = offset
        result = await self.call("getUpdates", data, timeout=timeout + 10)
        updates = []
        for item in result if isinstance(result, list) else []:
            try:
                updates.append(Update.from_json(item))
            except (KeyError, TypeError, ValueError, AttributeError):
                log.warning("skipping a malformed Telegram update")
        return updates

    async def handle_update(self, update: Update, handlers: BotCommands) -> str | None:
        """Run the command in ``update`` (if any) and send its reply; returns the reply."""
        command = parse_command(update)
        if command is None:
            return None
        chat, name, args = command
        try:
            if name == "start":
                reply = await handlers.start(chat, args[0], update) if args else CONNECT
            elif name == "status":
                reply = await handlers.status(chat)
            elif name == "pause":
                reply = await handlers.pause(chat)
            elif name == "resume":
                reply = await handlers.resume(chat)
            elif name == "watchlist":
                reply = await handlers.watchlist(chat, args)
            elif name == "tip":
                reply = await handlers.tip(chat, args)
            else:
                reply = HELP
        except Exception:
            log.exception("Telegram command /%s failed", name)
            reply = "Sorry, that did not work. Please try again in a minute."
        await self.send_message(chat, reply, parse_mode=None)
        return reply


async def run_polling(bot: TelegramBot, handlers: BotCommands, stop: asyncio.Event, *, timeout: float = 25.0) -> None:
    """Read updates and answer commands until ``stop`` is set (errors wait and retry)."""
    offset: int | None = None
    while not stop.is_set():
        poll = asyncio.ensure_future(bot.poll_updates(offset, timeout))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({poll, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not poll.done():
            poll.cancel()
            await asyncio.gather(poll, return_exceptions=True)
            break
        stopping.cancel()
        try:
            updates = poll.result()
        except DeliveryError as exc:
            log.warning("Telegram getUpdates failed: %s", exc)
            await _sleep_or_stop(stop, exc.retry_after or 5.0)
            continue
        for update in updates:
            offset = update.update_id + 1
            try:
                await bot.handle_update(update, handlers)
            except DeliveryError as exc:
                log.warning("Telegram reply to update %d failed: %s", update.update_id, exc)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


# --- the channel ----------------------------------------------------------------------------------


def telegram_bot(context: ChannelContext, token: str) -> TelegramBot:
    """The worker's bot for ``token``: one httpx client and one pacer (``context.extra``) per bot."""
    bots: dict[str, TelegramBot] = context.extra.setdefault(_BOTS_KEY, {})
    bot = bots.get(token)
    if bot is None:
        http = context.extra.get(_HTTP_KEY)
        if not isinstance(http, httpx.AsyncClient):
            http = context.extra[_HTTP_KEY] = httpx.AsyncClient(timeout=15.0)
        pacer = context.extra.get(_PACER_KEY)
        bot = bots[token] = TelegramBot(token, context.telegram_base_url, http,
                                        pacer=pacer if isinstance(pacer, Pacer) else None)  # fmt: skip
    return bot


async def close(context: ChannelContext) -> None:
    """Close the HTTP client this module opened for ``context``."""
    context.extra.pop(_BOTS_KEY, None)
    http = context.extra.pop(_HTTP_KEY, None)
    if isinstance(http, httpx.AsyncClient):
        await http.aclose()


class TelegramChannel:
    """``telegram://CHAT_ID`` or ``telegram://TOKEN@CHAT_ID`` (a chat id or a public @channel)."""

    scheme: ClassVar[str] = "telegram"
    kind: ClassVar[str] = "telegram"
    url_prefix: ClassVar[str] = "telegram://"
    title: ClassVar[str] = "Telegram"
    subscriber_added: ClassVar[bool] = False
    for_people: ClassVar[bool] = True
    renders_chart: ClassVar[bool] = True
    requires: ClassVar[str | None] = "telegram.token"
    position: ClassVar[int] = 20  # where pages list it (plugins: 100 unless they say)
    takes_secrets: ClassVar[bool] = False
    permanent_status: ClassVar[int | None] = 403  # the bot was blocked: retrying cannot help

    @classmethod
    def example_url(cls, sink: Any) -> str:
        """A URL reaching the local sinks of :func:`signalmint.testing.check_channel`."""
        return f"telegram://123456:{sink.secret}@42"  # the bot API sink comes in the context

    def __init__(self, chat: str, context: ChannelContext, *, token: str | None = None) -> None:
        self.chat = chat
        self.token = token
        self.context = context

    @classmethod
    def from_url(cls, url: str, context: ChannelContext) -> TelegramChannel:
        scheme, sep, rest = url.partition("://")
        token, chat = "", rest.rstrip("/")
        if "@" in rest and not rest.startswith("@"):  # a token never holds "@"; a @channel name starts with one
            token, _, chat = chat.partition("@")
        if scheme.lower() != cls.scheme or not sep or not _CHAT.match(chat) or (token and not _TOKEN.match(token)):
            raise ConfigError(f"{_redact_url(url)!r} is not a Telegram channel URL", key="url",
                              hint="write telegram://CHAT_ID or telegram://BOT_TOKEN@CHAT_ID")  # fmt: skip
        return cls(chat, context, token=token or None)

    def to_url(self, redact: bool = True) -> str:
        if not self.token:
            return f"telegram://{self.chat}"
        token = f"{self.token.partition(':')[0]}:***" if redact else self.token
        return f"telegram://{token}@{self.chat}"

    def __repr__(self) -> str:
        return f"TelegramChannel({self.to_url()!r})"

    def parts(self, message: Message) -> list[str]:
        """The HTML texts to send: the caption first when there is a chart, then the messages."""
        subject = " ".join(message.subject.split())
        body = message.text.strip()
        if body.startswith(message.subject):
            body = body[len(message.subject) :].lstrip()
        full = f"{subject}\n\n{body}" if subject and body else subject or body or "(no text)"
        first = CAPTION_LIMIT if message.chart_png or _document(message) else TEXT_LIMIT
        return [_html(part, subject if i == 0 else "") for i, part in enumerate(split_text(full, first))]

    async def send(self, message: Message) -> Receipt:
        token = self.token or self.context.telegram_token
        if not token:
            raise DeliveryError("no Telegram bot token configured (telegram.token)")
        bot = telegram_bot(self.context, token)
        sent: OrderedDict[tuple[str, str], list[str]] = self.context.extra.setdefault(_SENT_KEY, OrderedDict())
        key = (message.idempotency_id, self.chat)
        done = sent.setdefault(key, [])
        sent.move_to_end(key)
        while len(sent) > _SENT_KEEP:
            sent.popitem(last=False)
        parts = self.parts(message)
        already = len(done) >= len(parts)
        document = _document(message)
        for i in range(len(done), len(parts)):
            if i == 0 and message.chart_png:
                result = await bot.send_photo(self.chat, message.chart_png, parts[0])
            elif i == 0 and document is not None:
                result = await bot.send_document(
                    self.chat, document.data, document.filename, document.content_type, parts[0]
                )
            else:
                result = await bot.send_message(self.chat, parts[i])
            done.append(str(result.get("message_id", "")) if isinstance(result, dict) else "")
        detail = "already sent (same idempotency id)" if already else f"{len(parts)} message(s)"
        return Receipt(channel="telegram", at=datetime.now(UTC), provider_id=",".join(done), detail=detail)


def _document(message: Message) -> Attachment | None:
    """The file a message sends as a document: its first attachment that is not an inline image."""
    return next((a for a in message.attachments if a.content_id is None), None)


def _redact_url(url: str) -> str:
    """Whatever stands where a token would (before the chat's ``@``) is hidden."""
    return re.sub(r"://[^@]+@", "://***@", url, count=1)
