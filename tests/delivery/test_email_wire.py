"""The email channel's wire format against a real aiosmtpd server: dot-stuffing, line ends, big files."""

from __future__ import annotations

import asyncio
import binascii
import hashlib
from collections.abc import Iterator

import aiosmtplib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signalmint.config import EmailConfig
from signalmint.delivery.channels.base import Attachment
from signalmint.delivery.channels.email import EmailChannel, SmtpPool, _qp, dot_stuffed, email_bytes, wire_message

from .test_email import SENDER, Recorder, SmtpServer, _message, _send, _serve


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with _serve(Recorder()) as server:
        yield server


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (b"", b"\r\n"),
        (b".", b"..\r\n"),
        (b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n"),
        (b"a\n.b\rc\r\n..d", b"a\r\n..b\r\nc\r\n...d\r\n"),
        (b"x.\r\n .y\r\n", b"x.\r\n .y\r\n"),
    ],
)
def test_dot_stuffed(data: bytes, wire: bytes) -> None:
    assert dot_stuffed(data) == wire


def _pool_send(server: SmtpServer, data: bytes, to: str = "ada@example.com") -> str:
    async def run() -> str:
        config = EmailConfig(host="127.0.0.1", port=server.port, starttls=False, sender=SENDER)
        pool = SmtpPool(config)
        try:
            return await pool.send(data, to)
        finally:
            await pool.aclose()

    return asyncio.run(run())


def test_lines_starting_with_a_dot_arrive_intact(smtp: SmtpServer) -> None:
    # A line of just "." would end DATA early if it were not stuffed; "..." must not lose a dot.
    data = b"Subject: dots\r\n\r\n.\r\n.leading\r\n..two\r\n...\r\nlast line.\r\n.\r\n"
    answer = _pool_send(smtp, data)
    assert answer.startswith("2.0.0 queued")
    assert smtp.handler.received[0][2] == data


def test_lone_line_ends_go_out_as_crlf(smtp: SmtpServer) -> None:
    _pool_send(smtp, b"Subject: ends\n\nunix\nline\rmac\r\n.dot")
    assert smtp.handler.received[0][2] == b"Subject: ends\r\n\r\nunix\r\nline\r\nmac\r\n.dot\r\n"


def test_a_large_attachment_round_trips_byte_exact(smtp: SmtpServer) -> None:
    data = hashlib.shake_256(b"signalmint").digest(3_000_000) + b"\r\n.\r\n\n.\n"  # 3 MB, with a '.' line
    files = (Attachment("big.bin", "application/octet-stream", data),)
    channel = EmailChannel.from_url("mailto:ada@example.com", smtp.context())
    _send(channel, _message(html="<p>big</p>\n.<p>dot</p>", attachments=files))
    msg = smtp.handler.parsed()
    _, attached = msg.iter_parts()
    assert attached.get_filename() == "big.bin" and attached.get_payload(decode=True) == data


def test_the_wire_is_the_message_stuffed_and_the_body_is_shared() -> None:
    message = _message(html="<p>x</p>", attachments=(Attachment("r.pdf", "application/pdf", b"%PDF" * 100),))
    (head_a, body_a), size_a = wire_message(message, "a@example.com", SENDER)
    (head_b, body_b), size_b = wire_message(message, "bb@example.com", SENDER)
    assert body_a is body_b and head_a != head_b and size_b == size_a + 1
    assert head_a + body_a == dot_stuffed(email_bytes(message, "a@example.com", SENDER))
    assert size_a == len(email_bytes(message, "a@example.com", SENDER))


def test_a_refused_recipient_leaves_the_session_usable(smtp: SmtpServer) -> None:
    smtp.handler.rcpt_answers["gone@example.com"] = "550 5.1.1 no such user"

    async def run() -> tuple[int, str]:
        config = EmailConfig(host="127.0.0.1", port=smtp.port, starttls=False, sender=SENDER)
        pool = SmtpPool(config, size=1)
        try:
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
                await pool.send(b"Subject: one\r\n\r\nnot sent\r\n", "gone@example.com")
            answer = await pool.send(b"Subject: two\r\n\r\nsent\r\n", "ada@example.com")
            return pool.connections_opened, answer
        finally:
            await pool.aclose()

    opened, answer = asyncio.run(run())
    assert opened == 1 and answer.startswith("2.0.0")  # RSET cleaned the envelope, the session went on
    assert [(r[1], r[2]) for r in smtp.handler.received] == [(["ada@example.com"], b"Subject: two\r\n\r\nsent\r\n")]


def test_an_unsendable_address_is_refused_before_connecting() -> None:
    pool = SmtpPool(EmailConfig(host="127.0.0.1", port=1, starttls=False, sender=SENDER))
    with pytest.raises(ValueError):
        asyncio.run(pool.send(b"x\r\n", "ada lovelace@example.com"))
    assert pool.connections_opened == 0


_TEXT = st.lists(
    st.sampled_from([".", "..", "a", "é", "×", " ", "\t", "=", "\n", "\r", "\r\n", "x" * 70, ". ", "\n.\n"]),
    max_size=40,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=_TEXT, html=st.none() | _TEXT, chart=st.booleans(), files=st.booleans())
def test_the_wire_body_is_the_body_dot_stuffed(text: str, html: str | None, chart: bool, files: bool) -> None:
    """The body is stuffed line by line as it is written (each text line once); the result is
    exactly what stuffing the whole message would give, and its size the unstuffed one."""
    attachments = (Attachment(".hidden", "application/pdf", b"%PDF\r\n.\r\n" * 50),) if files else ()
    message = _message(text=text, html=html, chart_png=b"\x89PNG." * 40 if chart else None, attachments=attachments)
    (head, body), size = wire_message(message, "a@example.com", SENDER)
    plain = email_bytes(message, "a@example.com", SENDER)
    assert head + body == dot_stuffed(plain)
    assert size == len(plain)


@settings(max_examples=500, deadline=None)
@given(_TEXT)
def test_quoted_printable_line_by_line_is_quoted_printable_of_the_whole(text: str) -> None:
    whole = binascii.b2a_qp(text.replace("\r\n", "\n").replace("\r", "\n").encode(), istext=True)
    assert _qp(text) == whole.replace(b"\n", b"\r\n")
