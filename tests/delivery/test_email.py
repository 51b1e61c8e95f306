"""The email channel against a real aiosmtpd server on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import numpy as np
import pytest
from aiosmtpd.controller import Controller

from signalmint.config import EmailConfig
from signalmint.delivery.channels.base import Attachment, Channel, ChannelContext, Message
from signalmint.delivery.channels.email import EmailChannel, MailboxUnavailable, SmtpPool, close, smtp_pool
from signalmint.delivery.render import CHART_CID, chart_png, signal_text
from signalmint.errors import ConfigError, DeliveryError

SENDER = "signalmint <alerts@sm.example>"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Recorder:
    """An aiosmtpd handler that keeps what it receives and answers as scripted.

    ``rcpt_answers`` maps an address to the SMTP answer to its RCPT (e.g. ``550 ...``);
    ``data_answer`` replaces the ``250`` answer to DATA; ``data_delay`` stalls DATA.
    """

    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    rcpt_answers: dict[str, str] = field(default_factory=dict)
    data_answer: str | None = None
    data_delay: float = 0.0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.rcpt_answers:
            return self.rcpt_answers[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        if self.data_answer:
            return self.data_answer
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 2.0.0 queued"

    def parsed(self, i: int = -1) -> EmailMessage:
        msg = message_from_bytes(self.received[i][2], policy=default_policy)
        assert isinstance(msg, EmailMessage)
        return msg


@dataclass
class SmtpServer:
    handler: Recorder
    port: int

    def context(self, **pool: Any) -> ChannelContext:
        config = EmailConfig(host="127.0.0.1", port=self.port, starttls=False, sender=SENDER)
        context = ChannelContext(smtp=config)
        if pool:
            context.extra["email.smtp_pool"] = SmtpPool(config, **pool)
        return context


@contextmanager
def _serve(handler: Recorder, **smtp_kwargs: Any) -> Iterator[SmtpServer]:
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **smtp_kwargs)
    controller.start()
    try:
        yield SmtpServer(handler, port)
    finally:
        controller.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with _serve(Recorder()) as server:
        yield server


def _message(idempotency_id: str = "d-42-7", **kw: Any) -> Message:
    fields: dict[str, Any] = {
        "subject": "AAPL traded 7.4× its usual volume",
        "text": "AAPL traded 7.4× its usual volume\n\nVolume 12.3M",
        "payload": {},
        "created_at": datetime(2024, 1, 2, 14, 30, tzinfo=UTC),
    }
    fields.update(kw)
    return Message(idempotency_id=idempotency_id, **fields)


def _send(channel: EmailChannel, *messages: Message) -> list[Any]:
    async def run() -> list[Any]:
        try:
            return [await channel.send(m) for m in messages]
        finally:
            await close(channel.context)

    return asyncio.run(run())


def _rich_message() -> Message:
    doc = {"id": 42, "automation": "volume", "key": "AAPL", "time": "2024-01-02T14:30:00Z",
           "kind": "volume_spike", "score": 12.3, "url": "/signals/42",
           "payload": {"ratio": 7.43, "volume": 12.3e6}, "masked": []}  # fmt: skip
    subject, text, html = signal_text(doc, "Unusual volume", base_url="https://sm.example", chart=True,
                                      unsubscribe_url="https://sm.example/unsubscribe/tok123")  # fmt: skip
    times = np.arange(30).astype("datetime64[m]")
    png = chart_png(times, np.r_[np.ones(29), 7.4], np.ones(30), 29)
    return _message(subject=subject, text=text, html=html, chart_png=png,
                    unsubscribe_url="https://sm.example/unsubscribe/tok123")  # fmt: skip


def test_headers_and_mime_structure(smtp: SmtpServer) -> None:
    message = _rich_message()
    channel = EmailChannel.from_url("mailto:ada@example.com", smtp.context())
    (receipt,) = _send(channel, message)

    mail_from, rcpt_tos, _ = smtp.handler.received[0]
    assert (mail_from, rcpt_tos) == ("alerts@sm.example", ["ada@example.com"])
    msg = smtp.handler.parsed()
    assert msg["Message-ID"] == "<d-42-7@sm.example>" == receipt.provider_id
    assert msg["Subject"] == "AAPL traded 7.4× its usual volume"
    assert msg["To"] == "ada@example.com"
    assert msg["List-Unsubscribe"] == "<https://sm.example/unsubscribe/tok123>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Date"] and msg["Auto-Submitted"] == "auto-generated"
    assert receipt.channel == "email" and "queued" in receipt.detail

    assert msg.get_content_type() == "multipart/alternative"
    plain, related = msg.iter_parts()
    assert plain.get_content_type() == "text/plain"
    assert "7.4×" in plain.get_content()
    assert related.get_content_type() == "multipart/related"
    html, png = related.iter_parts()
    assert html.get_content_type() == "text/html"
    assert f'src="cid:{CHART_CID}"' in html.get_content()
    assert "https://sm.example/signals/42" in html.get_content()
    assert png.get_content_type() == "image/png"
    assert png["Content-ID"] == f"<{CHART_CID}>"
    assert png.get_content_disposition() == "inline"
    assert png.get_content() == message.chart_png


def test_message_id_is_stable_across_sends(smtp: SmtpServer) -> None:
    channel = EmailChannel.from_url("mailto:ada@example.com", smtp.context())
    first, second = _send(channel, _message("sig-9.ep-3"), _message("sig-9.ep-3"))
    ids = [smtp.handler.parsed(i)["Message-ID"] for i in range(2)]
    assert ids == ["<sig-9.ep-3@sm.example>"] * 2
    assert first.provider_id == second.provider_id == ids[0]


def test_text_survives_the_wire_exactly(smtp: SmtpServer) -> None:
    long_subject = "NVDA traded 12× its usual volume — σ " + "é" * 60
    text = ".leading dot\n..two dots\nFrom the start\n" + "a=b " * 60 + "\ntrailing space \n" + "ünïcödé ×σ" * 20
    html = "<p>" + "x" * 300 + " ×</p>\n.<b>dot</b>"
    channel = EmailChannel.from_url("mailto:ada@example.com", smtp.context())
    _send(channel, _message(subject=long_subject + "\r\nBcc: eve@example.com", text=text, html=html))
    raw = smtp.handler.received[0][2]
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78 and raw.isascii()
    msg = smtp.handler.parsed()
    assert msg["Subject"] == long_subject + " Bcc: eve@example.com"  # folded into the subject, no header injected
    assert msg["Bcc"] is None and [r[1] for r in smtp.handler.received] == [["ada@example.com"]]
    plain = msg.get_body(preferencelist=("plain",))
    html_part = msg.get_body(preferencelist=("html",))
    assert plain is not None and html_part is not None
    assert plain.get_content().replace("\r\n", "\n") == text
    assert html_part.get_content().replace("\r\n", "\n") == html


def test_plain_message_without_html_or_unsubscribe(smtp: SmtpServer) -> None:
    channel = EmailChannel.from_url("mailto:ada@example.com", smtp.context())
    _send(channel, _message())
    msg = smtp.handler.parsed()
    assert msg.get_content_type() == "text/plain"
    assert msg["List-Unsubscribe"] is None and msg["List-Unsubscribe-Post"] is None


def test_chart_without_html_still_goes_inline(smtp: SmtpServer) -> None:
    channel = EmailChannel.from_url("mailto:ada@example.com", smtp.context())
    _send(channel, _message(chart_png=b"\x89PNG\r\n\x1a\nfake"))
    html = smtp.handler.parsed().get_body(preferencelist=("html",))
    assert html is not None and f"cid:{CHART_CID}" in html.get_content()


def test_files_are_attached_and_inline_images_join_the_html(smtp: SmtpServer) -> None:
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF"
    png = b"\x89PNG\r\n\x1a\n" + bytes(200)
    files = (
        Attachment("stocks-weekly-2026-W48.pdf", "application/pdf", pdf),
        Attachment("chart1.png", "image/png", png, content_id="r1-chart1@signalmint"),
    )
    html = '<p>Report</p><img src="cid:r1-chart1@signalmint">'
    channel = EmailChannel.from_url("mailto:ada@example.com", smtp.context())
    _send(channel, _message(html=html, attachments=files))
    msg = smtp.handler.parsed()
    assert msg.get_content_type() == "multipart/mixed"
    alternative, attached = msg.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    assert attached.get_content_type() == "application/pdf" and attached.get_content_disposition() == "attachment"
    assert attached.get_filename() == "stocks-weekly-2026-W48.pdf" and attached.get_content() == pdf
    plain, related = alternative.iter_parts()
    assert plain.get_content_type() == "text/plain"
    body, image = related.iter_parts()
    assert "cid:r1-chart1@signalmint" in body.get_content()
    assert image["Content-ID"] == "<r1-chart1@signalmint>" and image.get_content() == png
    assert image.get_content_disposition() == "inline"
    raw = smtp.handler.received[0][2]
    assert raw.isascii() and max(len(line) for line in raw.split(b"\r\n")) <= 78


@pytest.mark.parametrize(
    ("answer", "permanent", "pause"),
    [
        ("550 5.1.1 no such user", True, True),
        ("550 5.7.1 relaying denied", True, False),
        ("550 mailbox unavailable", True, False),
        ("451 4.3.0 try later", False, False),
    ],
)
def test_recipient_refusal(smtp: SmtpServer, answer: str, permanent: bool, pause: bool) -> None:
    smtp.handler.rcpt_answers["gone@example.com"] = answer
    context = smtp.context()

    async def run() -> None:
        gone = EmailChannel.from_url("mailto:gone@example.com", context)
        with pytest.raises(DeliveryError) as caught:
            await gone.send(_message())
        assert caught.value.permanent is permanent
        assert isinstance(caught.value, MailboxUnavailable) is pause
        assert getattr(caught.value, "pause_endpoint", False) is pause
        assert answer.split()[0] in str(caught.value) and "g***@example.com" in str(caught.value)
        await EmailChannel.from_url("mailto:ada@example.com", context).send(_message())  # the session survives
        assert smtp_pool(context).connections_opened == 1
        await close(context)

    asyncio.run(run())
    assert [r[1] for r in smtp.handler.received] == [["ada@example.com"]]


@pytest.mark.parametrize(("answer", "permanent"), [("554 5.7.1 rejected as spam", True), ("452 4.3.1 full", False)])
def test_data_refusal(smtp: SmtpServer, answer: str, permanent: bool) -> None:
    smtp.handler.data_answer = answer
    channel = EmailChannel.from_url("mailto:ada@example.com", smtp.context())
    with pytest.raises(DeliveryError) as caught:
        _send(channel, _message())
    assert caught.value.permanent is permanent


def test_connection_refused_is_retryable() -> None:
    config = EmailConfig(host="127.0.0.1", port=_free_port(), starttls=False, sender=SENDER)
    channel = EmailChannel.from_url("mailto:ada@example.com", ChannelContext(smtp=config))
    with pytest.raises(DeliveryError) as caught:
        _send(channel, _message())
    assert caught.value.permanent is False


def test_timeout_is_retryable(smtp: SmtpServer) -> None:
    smtp.handler.data_delay = 1.0
    channel = EmailChannel.from_url("mailto:ada@example.com", smtp.context(timeout=0.2))
    started = time.monotonic()
    with pytest.raises(DeliveryError) as caught:
        _send(channel, _message())
    assert caught.value.permanent is False and "Timeout" in str(caught.value)
    assert time.monotonic() - started < 0.9


def test_not_configured_is_retryable() -> None:
    channel = EmailChannel.from_url("mailto:ada@example.com", ChannelContext())
    with pytest.raises(DeliveryError, match="not set up") as caught:
        _send(channel, _message())
    assert caught.value.permanent is False


def test_pool_reuses_few_connections(smtp: SmtpServer) -> None:
    context = smtp.context(size=3)

    async def run() -> int:
        channels = [EmailChannel.from_url(f"mailto:user{i}@example.com", context) for i in range(30)]
        await asyncio.gather(*(c.send(_message(f"d-{i}")) for i, c in enumerate(channels)))
        opened = smtp_pool(context).connections_opened
        await close(context)
        return opened

    assert asyncio.run(run()) == 3
    assert sorted(r[1][0] for r in smtp.handler.received) == sorted(f"user{i}@example.com" for i in range(30))


def test_sessions_are_rotated_after_max_messages(smtp: SmtpServer) -> None:
    context = smtp.context(size=1, max_messages=3)

    async def run() -> int:
        channel = EmailChannel.from_url("mailto:ada@example.com", context)
        for i in range(7):
            await channel.send(_message(f"d-{i}"))
        opened = smtp_pool(context).connections_opened
        await close(context)
        return opened

    assert asyncio.run(run()) == 3
    assert len(smtp.handler.received) == 7


def test_session_closed_by_the_server_is_replaced() -> None:
    with _serve(Recorder(), timeout=0.2) as server:  # aiosmtpd drops sessions idle for 0.2 s
        context = server.context()

        async def run() -> int:
            channel = EmailChannel.from_url("mailto:ada@example.com", context)
            await channel.send(_message("d-1"))
            await asyncio.sleep(0.5)
            await channel.send(_message("d-2"))
            opened = smtp_pool(context).connections_opened
            await close(context)
            return opened

        assert asyncio.run(run()) == 2
        assert [server.handler.parsed(i)["Message-ID"] for i in range(2)] == ["<d-1@sm.example>", "<d-2@sm.example>"]


def test_url_round_trip_and_redaction() -> None:
    context = ChannelContext()
    channel = EmailChannel.from_url("mailto:ada.lovelace+alerts@example.com", context)
    assert isinstance(channel, Channel)
    assert channel.to_url(redact=False) == "mailto:ada.lovelace%2Balerts@example.com"
    assert EmailChannel.from_url(channel.to_url(redact=False), context).address == "ada.lovelace+alerts@example.com"
    assert channel.to_url() == "mailto:a***@example.com"
    assert "lovelace" not in repr(channel)


@pytest.mark.parametrize(
    "url",
    [
        "mailto:",
        "mailto:ada",
        "mailto:@example.com",
        "mailto:ada@",
        "https://example.com",
        "mailto:a\r\nb@x.org",
        "mailto:ada@exa mple.com",
        "mailto:a..b@example.com",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigError):
        EmailChannel.from_url(url, ChannelContext())
