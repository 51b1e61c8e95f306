"""SMTP sessions for the email channel: a small pool of aiosmtplib connections, and the wire format.

One :class:`SmtpPool` per worker (kept in the :class:`ChannelContext`) holds up to ``size`` open
sessions and sends one transaction after another on each, so a batch costs a MAIL/RCPT/DATA
exchange per message instead of a TCP and TLS handshake, EHLO and login. Close it with
:func:`close` when the worker stops.

A message goes out ready for DATA (:func:`dot_stuffed`: CRLF line ends, lines starting with ``.``
doubled, RFC 5321 4.5.2), in chunks, so a body that thousands of messages share (a report) is
prepared once. The transaction is aiosmtplib's ``execute_command`` for MAIL, RCPT and DATA, then
those bytes written straight to its protocol and the answer read: ``sendmail()`` would parse the
addresses and pass over all 40 KB of a report twice more for every recipient (line ends, then
dot-stuffing), a millisecond of CPU each. Commands are not pipelined: aiosmtplib's protocol
keeps one answer at a time and drops what arrives before it is asked for.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from dataclasses import dataclass
from email.utils import parseaddr

import aiosmtplib
from aiosmtplib.email import parse_address
from aiosmtplib.typing import SMTPStatus

from signalmint.config import EmailConfig
from signalmint.errors import ConfigError

from .channels.base import ChannelContext

__all__ = ["SmtpPool", "close", "dot_stuffed", "smtp_pool"]

_POOL_KEY = "email.smtp_pool"
_LINE_END = re.compile(rb"\r\n|\n|\r(?!\n)")


def dot_stuffed(data: bytes) -> bytes:
    r"""``data`` as it goes after ``DATA``: CRLF line ends, ending in CRLF, and every line that
    starts with ``.`` starting with ``..`` (RFC 5321 4.5.2), without the final ``.`` line.

    >>> dot_stuffed(b".hidden\n.\r\nend")
    b'..hidden\r\n..\r\nend\r\n'
    """
    crlf = data.count(b"\r\n")
    if data.count(b"\r") != crlf or data.count(b"\n") != crlf:  # a lone CR or LF somewhere
        data = _LINE_END.sub(b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    data = data.replace(b"\r\n.", b"\r\n..")
    return b"." + data if data[:1] == b"." else data


@dataclass(slots=True)
class _Session:
    smtp: aiosmtplib.SMTP
    last_used: float
    sent: int = 0


class SmtpPool:
    """Up to ``size`` SMTP sessions, each reused for ``max_messages`` messages or until idle ``max_idle`` s."""

    def __init__(
        self,
        config: EmailConfig,
        *,
        size: int = 4,
        timeout: float = 15.0,
        max_messages: int = 100,
        max_idle: float = 20.0,
    ) -> None:
        if not config.host:
            raise ConfigError("no SMTP server configured", key="email.host", hint="set email.host (and port)")
        self.config = config
        self.size = size
        self.timeout = timeout
        self.max_messages = max_messages
        self.max_idle = max_idle
        self.sender = config.sender
        self.envelope_from = parseaddr(config.sender)[1]
        try:
            self._mail_from = f"<{parse_address(self.envelope_from)}>".encode("ascii")
        except ValueError as exc:
            raise ConfigError(f"{config.sender!r} cannot go in MAIL FROM: {exc}", key="email.sender") from exc
        self._idle: list[_Session] = []
        self._slots = asyncio.Semaphore(size)
        self._hostname: str | None = None
        self.connections_opened = 0

    async def send(self, data: bytes, recipient: str) -> str:
        """One SMTP transaction; returns the server's answer to DATA. aiosmtplib errors pass through."""
        return await self.send_wire((dot_stuffed(data),), len(data), recipient)

    async def send_wire(self, chunks: tuple[bytes, ...], size: int, recipient: str) -> str:
        """:meth:`send` for a message already dot-stuffed, in chunks (the email channel's
        :func:`~signalmint.delivery.channels.email.wire_message`); ``size`` before stuffing."""
        rcpt_to = b"TO:<" + parse_address(recipient).encode("ascii") + b">"  # ValueError: nothing sent
        async with self._slots:
            session = self._take()
            reused = session is not None
            if session is None:
                session = await self._open()
            try:
                try:
                    answer = await self._transaction(session.smtp, chunks, size, recipient, rcpt_to)
                except aiosmtplib.SMTPServerDisconnected:
                    if not reused:
                        raise
                    session.smtp.close()  # the server dropped an idle session: one fresh try
                    session = await self._open()
                    answer = await self._transaction(session.smtp, chunks, size, recipient, rcpt_to)
            except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
                await self._reset(session)
                raise
            except BaseException:
                session.smtp.close()
                raise
            session.sent += 1
            if session.sent >= self.max_messages:  # rotate: some servers cap messages per session
                await self._quit(session)
            else:
                self._give_back(session)
            return answer

    async def _transaction(
        self, smtp: aiosmtplib.SMTP, chunks: tuple[bytes, ...], size: int, recipient: str, rcpt_to: bytes
    ) -> str:
        """MAIL, RCPT and DATA, the message written as is (it is dot-stuffed already).

        The commands go through ``execute_command`` with the addresses checked and quoted once
        (``parse_address``, ``rcpt_to`` is ``TO:<address>``), as ``mail()`` and ``rcpt()`` would,
        without parsing them again for every message."""
        options = [f"SIZE={size}".encode()] if smtp.supports_extension("size") else []
        answer = await smtp.execute_command(b"MAIL", b"FROM:" + self._mail_from, *options)
        if answer.code != SMTPStatus.completed:
            raise aiosmtplib.SMTPSenderRefused(answer.code, answer.message, self.envelope_from)
        answer = await smtp.execute_command(b"RCPT", rcpt_to)
        if answer.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
            refused = aiosmtplib.SMTPRecipientRefused(answer.code, answer.message, recipient)
            raise aiosmtplib.SMTPRecipientsRefused([refused])
        start = await smtp.execute_command(b"DATA")
        if start.code != SMTPStatus.start_input:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        protocol = smtp.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        try:  # no await between the writes and read_response: the answer cannot be missed
            for chunk in chunks:
                protocol.write(chunk)
            protocol.write(b".\r\n")
            answer = await protocol.read_response(timeout=self.timeout)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            smtp.close()
            raise
        if answer.code != SMTPStatus.completed:
            raise aiosmtplib.SMTPDataError(answer.code, answer.message)
        return answer.message

    async def _reset(self, session: _Session) -> None:
        """RSET after a refusal, so the session is clean for the next message (else it is closed)."""
        try:
            await session.smtp.rset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            session.smtp.close()
        self._give_back(session)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for session in idle:
            await self._quit(session)

    @staticmethod
    async def _quit(session: _Session) -> None:
        try:
            await asyncio.wait_for(session.smtp.quit(), timeout=2)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            session.smtp.close()

    def _take(self) -> _Session | None:
        now = time.monotonic()
        while self._idle:
            session = self._idle.pop()
            if session.smtp.is_connected and now - session.last_used < self.max_idle:
                return session
            session.smtp.close()
        return None

    def _give_back(self, session: _Session) -> None:
        session.last_used = time.monotonic()
        if session.smtp.is_connected:
            self._idle.append(session)
        else:
            session.smtp.close()

    async def _open(self) -> _Session:
        c = self.config
        if self._hostname is None:
            self._hostname = await asyncio.to_thread(socket.getfqdn)
        smtp = aiosmtplib.SMTP(
            hostname=c.host,
            port=c.port,
            username=c.username,
            password=c.password,
            use_tls=c.tls,
            start_tls=c.starttls and not c.tls,
            timeout=self.timeout,
            local_hostname=self._hostname,
        )
        try:
            await smtp.connect()
            if smtp.is_ehlo_or_helo_needed:  # once per session: mail() would ask on every message
                try:
                    await smtp.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await smtp.helo()
        except BaseException:
            smtp.close()
            raise
        self.connections_opened += 1
        return _Session(smtp, time.monotonic())


def smtp_pool(context: ChannelContext) -> SmtpPool:
    """The worker's SMTP pool, made on first use from ``context.smtp`` (an :class:`EmailConfig`)."""
    pool = context.extra.get(_POOL_KEY)
    if not isinstance(pool, SmtpPool):
        if not isinstance(context.smtp, EmailConfig):
            raise ConfigError("no SMTP server configured", key="email.host", hint="set email.host (and port)")
        pool = context.extra[_POOL_KEY] = SmtpPool(context.smtp)
    return pool


async def close(context: ChannelContext) -> None:
    """Close the SMTP sessions this module opened for ``context``."""
    pool = context.extra.pop(_POOL_KEY, None)
    if isinstance(pool, SmtpPool):
        await pool.aclose()
