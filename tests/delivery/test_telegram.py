"""The Telegram channel and bot against a local fake Bot API (Starlette + uvicorn on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from html.parser import HTMLParser
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from signalmint.delivery.channels.base import Attachment, Channel, ChannelContext, Message
from signalmint.delivery.channels.telegram import (
    CAPTION_LIMIT,
    TEXT_LIMIT,
    ChatMigrated,
    EndpointBlocked,
    TelegramBot,
    TelegramChannel,
    Update,
    close,
    deep_link,
    parse_command,
    run_polling,
    split_text,
    telegram_bot,
)
from signalmint.delivery.pacing import Pacer
from signalmint.errors import ConfigError, DeliveryError
from tests.conftest import LiveServer

TOKEN = "123456:TEST-token_abc"
ALLOWED_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "blockquote"}


class _Visible(HTMLParser):
    """Telegram's HTML parse mode: the text a reader sees; unknown tags are an error."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.bad = False

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.bad |= tag not in ALLOWED_TAGS

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def visible(text: str, parse_mode: str | None) -> str | None:
    if parse_mode != "HTML":
        return text
    parser = _Visible()
    parser.feed(text)
    parser.close()
    return None if parser.bad else "".join(parser.text)


@dataclass
class Call:
    method: str
    chat_id: str
    text: str  # as the reader sees it
    sent: str  # as sent (HTML)
    parse_mode: str | None
    at: float
    photo: bytes | None = None  # the photo, or the document of a sendDocument
    photo_filename: str | None = None
    photo_type: str | None = None


@dataclass
class FakeBotApi:
    """The parts of the Bot API we use, with scripted failures per chat and Telegram's limits."""

    token: str = TOKEN
    calls: list[Call] = field(default_factory=list)
    failures: dict[str, deque[tuple[int, str, dict[str, Any]]]] = field(default_factory=dict)
    updates: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.failures.clear()
            self.updates.clear()

    def fail(self, chat: str, status: int, description: str, **parameters: Any) -> None:
        self.failures.setdefault(chat, deque()).append((status, description, parameters))

    def to(self, chat: str) -> list[Call]:
        return [c for c in self.calls if c.chat_id == chat]

    async def endpoint(self, request: Request) -> JSONResponse:
        if request.path_params["token"] != self.token:
            return self._error(401, "Unauthorized")
        method = request.path_params["method"]
        data, files = await _form(request)
        if method == "getUpdates":
            return await self._get_updates(data)
        chat = str(data.get("chat_id"))
        with self.lock:
            queue = self.failures.get(chat)
            if queue:
                status, description, parameters = queue.popleft()
                return self._error(status, description, parameters)
        captioned = method in ("sendPhoto", "sendDocument")
        text_field = "caption" if captioned else "text"
        sent = str(data.get(text_field, ""))
        seen = visible(sent, data.get("parse_mode"))
        if seen is None:
            return self._error(400, "Bad Request: can't parse entities")
        limit = CAPTION_LIMIT if captioned else TEXT_LIMIT
        if len(seen.encode("utf-16-le")) // 2 > limit:
            return self._error(400, f"Bad Request: message {'caption ' if captioned else ''}is too long")
        if method == "sendMessage" and not seen.strip():
            return self._error(400, "Bad Request: message text is empty")
        file_field = {"sendPhoto": "photo", "sendDocument": "document"}.get(method)
        photo = files.get(file_field) if file_field else None  # the photo or document sent
        if file_field is not None and photo is None:
            return self._error(400, f"Bad Request: there is no {file_field} in the request")
        with self.lock:
            self.calls.append(Call(method, chat, seen, sent, data.get("parse_mode"), time.monotonic(),
                                   *(photo or (None, None, None))))  # fmt: skip
            message_id = len(self.calls)
        return JSONResponse({"ok": True, "result": {"message_id": message_id, "chat": {"id": chat}}})

    async def _get_updates(self, data: dict[str, Any]) -> JSONResponse:
        offset = int(data.get("offset") or 0)
        deadline = time.monotonic() + min(float(data.get("timeout") or 0), 0.3)
        while True:
            with self.lock:
                found = [u for u in self.updates if u["update_id"] >= offset]
            if found or time.monotonic() >= deadline:
                return JSONResponse({"ok": True, "result": found})
            await asyncio.sleep(0.02)

    @staticmethod
    def _error(status: int, description: str, parameters: dict[str, Any] | None = None) -> JSONResponse:
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if parameters:
            body["parameters"] = parameters
        return JSONResponse(body, status_code=status)


async def _form(request: Request) -> tuple[dict[str, Any], dict[str, tuple[bytes, str | None, str]]]:
    """JSON bodies, or multipart/form-data parsed with the email package (no extra dependency)."""
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return (await request.json() if body else {}), {}
    parsed = message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    data: dict[str, Any] = {}
    files: dict[str, tuple[bytes, str | None, str]] = {}
    for part in parsed.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(name, str) and isinstance(payload, bytes)
        if part.get_filename():
            files[name] = (payload, part.get_filename(), part.get_content_type())
        else:
            data[name] = payload.decode()
    return data, files


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[FakeBotApi, str]]:
    fake = FakeBotApi()
    app = Starlette(routes=[Route("/bot{token}/{method}", fake.endpoint, methods=["GET", "POST"])])
    with LiveServer(app) as server:
        yield fake, server.url


@pytest.fixture
def fake(fake_server: tuple[FakeBotApi, str]) -> FakeBotApi:
    fake_server[0].reset()
    return fake_server[0]


@pytest.fixture
def base_url(fake_server: tuple[FakeBotApi, str]) -> str:
    return fake_server[1]


def _context(base_url: str, pacer: Pacer | None = None) -> ChannelContext:
    context = ChannelContext(telegram_token=TOKEN, telegram_base_url=base_url)
    context.extra["telegram.pacer"] = Pacer(per_key_interval=0.0, global_rate=math.inf) if pacer is None else pacer
    return context


def _message(idempotency_id: str = "d-1", **kw: Any) -> Message:
    fields: dict[str, Any] = {
        "subject": "AT&T traded 7.4× its usual volume",
        "text": "AT&T traded 7.4× its usual volume\n\nVolume <12.3M> & rising\nhttps://sm.example/signals/1",
        "payload": {},
        "created_at": datetime(2024, 1, 2, 14, 30, tzinfo=UTC),
    }
    fields.update(kw)
    return Message(idempotency_id=idempotency_id, **fields)


def _run(context: ChannelContext, *sends: Any) -> list[Any]:
    """Run the coroutines one after another in one loop; exceptions are returned, not raised."""

    async def run() -> list[Any]:
        out = []
        try:
            for send in sends:
                try:
                    out.append(await send)
                except DeliveryError as exc:
                    out.append(exc)
        finally:
            await close(context)
        return out

    return asyncio.run(run())


def _send(context: ChannelContext, chat: str, *messages: Message) -> list[Any]:
    channel = TelegramChannel.from_url(f"telegram://{chat}", context)
    return _run(context, *(channel.send(m) for m in messages))


# --- URLs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["telegram://123456", "telegram://-1001234567890", "telegram://@alerts_channel",
                                 f"telegram://{TOKEN}@42", f"telegram://{TOKEN}@@alerts_channel"])  # fmt: skip
def test_url_round_trip(url: str) -> None:
    channel = TelegramChannel.from_url(url, ChannelContext())
    assert isinstance(channel, Channel)
    assert channel.to_url(redact=False) == url
    assert TelegramChannel.from_url(channel.to_url(redact=False), ChannelContext()).to_url(redact=False) == url


def test_redacted_url_hides_the_token() -> None:
    channel = TelegramChannel.from_url(f"telegram://{TOKEN}@42", ChannelContext())
    assert channel.to_url() == "telegram://123456:***@42"
    assert "TEST-token" not in repr(channel) and "TEST-token" not in repr(telegram_bot(ChannelContext(), TOKEN))


@pytest.mark.parametrize("url", ["telegram://", "telegram://abc", "tg://42", "telegram://not a token@42",
                                 f"telegram://{TOKEN}@", "telegram://@ab", "mailto:42"])  # fmt: skip
def test_bad_urls_are_refused_without_echoing_a_token(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        TelegramChannel.from_url(url, ChannelContext())
    assert "TEST-token" not in str(caught.value)


# --- sending -------------------------------------------------------------------------------------


def test_text_message_is_escaped_html_with_a_bold_subject(fake: FakeBotApi, base_url: str) -> None:
    (receipt,) = _send(_context(base_url), "42", _message())
    (call,) = fake.calls
    assert (call.method, call.chat_id, call.parse_mode) == ("sendMessage", "42", "HTML")
    assert call.sent.startswith("<b>AT&amp;T traded 7.4× its usual volume</b>\n\n")
    assert "Volume &lt;12.3M&gt; &amp; rising" in call.sent
    assert call.text == _message().text  # what the reader sees is the text, once
    assert receipt.channel == "telegram" and receipt.provider_id == "1"


def test_long_text_is_split_at_line_boundaries(fake: FakeBotApi, base_url: str) -> None:
    lines = [f"line {i:05d} " + "word " * 15 for i in range(150)]  # ~13,000 characters
    message = _message(subject="Many alerts", text="\n".join(lines))
    (receipt,) = _send(_context(base_url), "42", message)
    assert len(fake.calls) == 4 and all(c.method == "sendMessage" for c in fake.calls)
    assert all(len(c.text) <= TEXT_LIMIT for c in fake.calls)
    assert fake.calls[0].sent.startswith("<b>Many alerts</b>")
    received = [line.strip() for c in fake.calls for line in c.text.split("\n") if line.strip()]
    assert received == ["Many alerts", *(line.strip() for line in lines)]  # nothing cut mid-line, nothing lost
    assert receipt.provider_id == "1,2,3,4"


def test_chart_goes_as_a_photo_with_a_caption_then_follow_ups(fake: FakeBotApi, base_url: str) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
    long_text = "AT&T traded 7.4× its usual volume\n\n" + "\n".join(f"detail line {i} " * 3 for i in range(60))
    _send(_context(base_url), "42", _message(chart_png=png, text=long_text))
    photo, *rest = fake.calls
    assert photo.method == "sendPhoto" and photo.photo == png
    assert (photo.photo_filename, photo.photo_type) == ("chart.png", "image/png")
    assert photo.sent.startswith("<b>AT&amp;T traded") and len(photo.text) <= CAPTION_LIMIT
    assert rest and all(c.method == "sendMessage" for c in rest)
    assert "detail line 59" in rest[-1].text


def test_a_file_goes_as_a_document_with_a_caption_then_follow_ups(fake: FakeBotApi, base_url: str) -> None:
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 40
    files = (Attachment("chart.png", "image/png", b"\x89PNG", content_id="c1"),  # inline: not the document
             Attachment("stocks-weekly-2026-W48.pdf", "application/pdf", pdf))  # fmt: skip
    long_text = "Weekly report\n\n" + "\n".join(f"detail line {i} " * 3 for i in range(60))
    _send(_context(base_url), "42", _message(text=long_text, subject="Weekly report", attachments=files))
    document, *rest = fake.calls
    assert document.method == "sendDocument" and document.photo == pdf
    assert (document.photo_filename, document.photo_type) == ("stocks-weekly-2026-W48.pdf", "application/pdf")
    assert document.sent.startswith("<b>Weekly report</b>") and len(document.text) <= CAPTION_LIMIT
    assert rest and all(c.method == "sendMessage" for c in rest) and "detail line 59" in rest[-1].text


def test_429_surfaces_retry_after_and_holds_the_chat(fake: FakeBotApi, base_url: str) -> None:
    fake.fail("42", 429, "Too Many Requests: retry after 7", retry_after=7)
    context = _context(base_url, Pacer())
    (error,) = _send(context, "42", _message())
    assert isinstance(error, DeliveryError) and not error.permanent and error.retry_after == 7.0
    pacer = context.extra["telegram.pacer"]
    assert 6.5 < pacer.delay("42") <= 7.0 and pacer.delay("43") < 0.1  # other chats go on


def test_429_in_two_chats_at_once_holds_the_whole_bot(fake: FakeBotApi, base_url: str) -> None:
    fake.fail("42", 429, "Too Many Requests: retry after 3", retry_after=3)
    fake.fail("43", 429, "Too Many Requests: retry after 3", retry_after=3)
    context = _context(base_url, Pacer())
    a, b = (TelegramChannel.from_url(f"telegram://{chat}", context) for chat in ("42", "43"))
    _run(context, a.send(_message()), b.send(_message()))
    assert context.extra["telegram.pacer"].delay("44") > 2.5


@pytest.mark.parametrize(
    ("description", "reason"),
    [
        ("Forbidden: bot was blocked by the user", "blocked"),
        ("Forbidden: bot was kicked from the group chat", "kicked"),
        ("Forbidden: user is deactivated", "deactivated"),
    ],
)
def test_403_is_permanent_and_pauses_the_endpoint(
    fake: FakeBotApi, base_url: str, description: str, reason: str
) -> None:
    fake.fail("42", 403, description)
    (error,) = _send(_context(base_url), "42", _message())
    assert isinstance(error, EndpointBlocked) and error.permanent and error.pause_endpoint
    assert error.reason == reason and description in str(error)


def test_400_chat_not_found_is_permanent(fake: FakeBotApi, base_url: str) -> None:
    fake.fail("42", 400, "Bad Request: chat not found")
    (error,) = _send(_context(base_url), "42", _message())
    assert isinstance(error, DeliveryError) and error.permanent
    assert not getattr(error, "pause_endpoint", False)


def test_migrated_group_names_its_new_chat(fake: FakeBotApi, base_url: str) -> None:
    fake.fail("-42", 400, "Bad Request: group chat was upgraded to a supergroup chat", migrate_to_chat_id=-1000042)
    (error,) = _send(_context(base_url), "-42", _message())
    assert isinstance(error, ChatMigrated) and error.permanent and error.new_chat_id == -1000042


def test_wrong_token_is_retryable_and_never_leaks(fake: FakeBotApi, base_url: str) -> None:
    context = _context(base_url)
    context.telegram_token = "999:WRONG-secret"
    (error,) = _send(context, "42", _message())
    assert isinstance(error, DeliveryError) and not error.permanent and "401" in str(error)
    assert "WRONG-secret" not in str(error)


def test_unreachable_api_is_retryable_and_never_leaks() -> None:
    context = _context("http://127.0.0.1:9")  # discard port: nothing listens
    (error,) = _send(context, "42", _message())
    assert isinstance(error, DeliveryError) and not error.permanent
    assert "TEST-token" not in str(error) and error.__cause__ is None and error.__suppress_context__


def test_no_token_configured_is_retryable() -> None:
    (error,) = _send(ChannelContext(), "42", _message())
    assert isinstance(error, DeliveryError) and not error.permanent and "token" in str(error)


def test_a_repeated_send_is_not_shown_twice(fake: FakeBotApi, base_url: str) -> None:
    message = _message(subject="Split", text="\n".join("x" * 80 for _ in range(120)))  # 3 parts
    fake.fail("42", 503, "Service Unavailable")
    context = _context(base_url)
    channel = TelegramChannel.from_url("telegram://42", context)
    failed, sent, again = _run(context, channel.send(message), channel.send(message), channel.send(message))
    assert isinstance(failed, DeliveryError) and not failed.permanent
    assert sent.provider_id == "1,2,3" and len(fake.calls) == 3
    assert again.provider_id == "1,2,3" and again.detail.startswith("already sent") and len(fake.calls) == 3
    other = _run(context, channel.send(_message("d-2")))[0]  # another idempotency id is sent
    assert other.provider_id == "4"


def test_a_retry_after_a_partial_send_skips_what_arrived(fake: FakeBotApi, base_url: str) -> None:
    message = _message(subject="Split", text="\n".join("y" * 80 for _ in range(120)))  # 3 parts
    context = _context(base_url, Pacer(per_key_interval=0.3, global_rate=math.inf))
    channel = TelegramChannel.from_url("telegram://42", context)

    async def fail_after_first_part() -> Any:
        async def arm() -> None:
            while not fake.to("42"):
                await asyncio.sleep(0.001)
            fake.fail("42", 502, "Bad Gateway")

        arming = asyncio.create_task(arm())
        try:
            return await channel.send(message)
        except DeliveryError as exc:
            return exc
        finally:
            await arming

    first, second = _run(context, fail_after_first_part(), channel.send(message))
    assert isinstance(first, DeliveryError) and not first.permanent
    assert [c.text.startswith("Split") for c in fake.calls] == [True, False, False]  # part 1 once, then 2 and 3
    assert second.provider_id == "1,2,3"


# --- pacing, measured on the fake --------------------------------------------------------------


def test_at_most_one_message_a_second_per_chat(fake: FakeBotApi, base_url: str) -> None:
    context = _context(base_url, Pacer(per_key_interval=1.0, global_rate=30.0))
    same = TelegramChannel.from_url("telegram://42", context)
    other = TelegramChannel.from_url("telegram://43", context)
    started = time.monotonic()

    async def run() -> None:
        await asyncio.gather(*(same.send(_message(f"d-{i}")) for i in range(3)), other.send(_message("d-other")))
        await close(context)

    asyncio.run(run())
    times = [c.at for c in fake.to("42")]
    assert len(times) == 3 and all(b - a >= 0.97 for a, b in itertools.pairwise(times))
    assert fake.to("43")[0].at - started < 0.5  # another chat is not held back by this one


def test_at_most_thirty_messages_a_second_overall(fake: FakeBotApi, base_url: str) -> None:
    context = _context(base_url, Pacer(per_key_interval=1.0, global_rate=30.0))
    channels = [TelegramChannel.from_url(f"telegram://{1000 + i}", context) for i in range(45)]

    async def run() -> None:
        await asyncio.gather(*(c.send(_message()) for c in channels))
        await close(context)

    asyncio.run(run())
    times = sorted(c.at for c in fake.calls)
    assert len(times) == 45
    # These are arrival times at the fake, which jitter on a loaded machine (a send delayed by a
    # busy loop lands next to the following ones); the pacer's exact spacing is tested in virtual
    # time in test_pacing. Unpaced, all 45 would land within a few milliseconds.
    assert times[-1] - times[0] >= 44 / 30 - 0.2
    assert max(sum(1 for t in times if start <= t < start + 0.97) for start in times) <= 30 + 3


# --- connecting and commands ---------------------------------------------------------------------


@dataclass
class Handlers:
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    async def start(self, chat_id: int, token: str, update: Update) -> str:
        self.calls.append(("start", chat_id, token, update.username))
        return "Connected. Alerts will arrive here."

    async def status(self, chat_id: int) -> str:
        self.calls.append(("status", chat_id))
        return "Premium, active"

    async def pause(self, chat_id: int) -> str:
        self.calls.append(("pause", chat_id))
        raise RuntimeError("database down")

    async def resume(self, chat_id: int) -> str:
        self.calls.append(("resume", chat_id))
        return "Resumed"

    async def watchlist(self, chat_id: int, args: Sequence[str]) -> str:
        self.calls.append(("watchlist", chat_id, tuple(args)))
        return "Watching AAPL"

    async def tip(self, chat_id: int, args: Sequence[str]) -> str:
        self.calls.append(("tip", chat_id, tuple(args)))
        return "Thanks for the tip"


def _update(update_id: int, text: str, chat: int = 777) -> dict[str, Any]:
    chat_json = {"id": chat, "type": "private"}
    sender = {"id": chat, "is_bot": False, "username": "ada"}
    message = {"message_id": update_id, "text": text, "date": 0, "chat": chat_json, "from": sender}
    return {"update_id": update_id, "message": message}


def test_deep_link_start_token_is_parsed_and_answered(fake: FakeBotApi, base_url: str) -> None:
    link = deep_link("SignalmintBot", "tok_AbC-123")
    assert link == "https://t.me/SignalmintBot?start=tok_AbC-123"
    fake.updates.extend([
        _update(10, "/start " + link.partition("start=")[2]), _update(11, "/status"), _update(12, "hello"),
        _update(13, "/watchlist add AAPL"), _update(14, "/pause@SignalmintBot"), _update(15, "/start"),
        _update(16, "/frobnicate"),
        {"update_id": 17, "my_chat_member": {"chat": {"id": 778, "type": "private"}, "from": {"id": 778},
         "new_chat_member": {"status": "kicked"}}},
    ])  # fmt: skip
    handlers = Handlers()
    bot = TelegramBot(TOKEN, base_url, pacer=Pacer(0.0, math.inf))

    async def run() -> tuple[list[Update], list[str | None], list[Update]]:
        try:
            updates = await bot.poll_updates(None, timeout=1)
            replies = [await bot.handle_update(u, handlers) for u in updates]
            later = await bot.poll_updates(updates[-1].update_id + 1, timeout=0)
            return updates, replies, later
        finally:
            await bot.aclose()

    updates, replies, later = asyncio.run(run())
    assert [u.update_id for u in updates] == list(range(10, 18)) and later == []
    assert parse_command(updates[0]) == (777, "start", ("tok_AbC-123",))
    assert updates[-1].member_status == "kicked" and updates[-1].chat_id == 778
    assert handlers.calls == [("start", 777, "tok_AbC-123", "ada"), ("status", 777),
                              ("watchlist", 777, ("add", "AAPL")), ("pause", 777)]  # fmt: skip
    assert replies[0] == "Connected. Alerts will arrive here." and replies[2] is None and replies[7] is None
    assert "try again" in (replies[4] or "")  # a failing handler still gets an answer to the user
    assert "open the Telegram link" in (replies[5] or "") and "/status" in (replies[6] or "")
    assert [c.text for c in fake.to("777")] == [r for r in replies if r is not None]
    assert all(c.parse_mode is None for c in fake.calls)


def test_run_polling_answers_then_stops_promptly(fake: FakeBotApi, base_url: str) -> None:
    fake.updates.append(_update(20, "/resume"))
    handlers = Handlers()
    bot = TelegramBot(TOKEN, base_url, pacer=Pacer(0.0, math.inf))

    async def run() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(run_polling(bot, handlers, stop, timeout=5))
        while not fake.to("777"):
            await asyncio.sleep(0.01)
        fake.updates.clear()
        await asyncio.sleep(0.1)  # a long poll is waiting now
        stopped = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, timeout=2)
        await bot.aclose()
        return time.monotonic() - stopped

    assert asyncio.run(run()) < 0.5
    assert handlers.calls == [("resume", 777)] and [c.text for c in fake.calls] == ["Resumed"]


def test_deep_link_refuses_tokens_telegram_would_drop() -> None:
    for bad in ("", "has space", "x" * 65, "sla/sh"):
        with pytest.raises(ValueError):
            deep_link("SignalmintBot", bad)


# --- splitting -----------------------------------------------------------------------------------


def test_split_counts_utf16_units_and_prefers_boundaries() -> None:
    emoji = "📈" * 3000  # 2 units each
    parts = split_text(emoji)
    assert [len(p) for p in parts] == [2048, 952] and "".join(parts) == emoji
    text = "para one\n\npara two is longer\nline two"
    assert split_text(text, first=20, rest=20) == ["para one\n\npara two", "is longer\nline two"]
    assert split_text(text, first=12, rest=12) == ["para one", "para two is", "longer", "line two"]
    assert split_text("   ") == [] and split_text("short") == ["short"]
