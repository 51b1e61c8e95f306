"""The demo's mail catcher: a local SMTP server (aiosmtpd) that keeps what it is sent, like Mailpit.

``signalmint demo`` binds one on ``127.0.0.1`` (a free port) before anything else starts and
points ``email.host``/``email.port`` at it, so confirmation links, magic links, email alerts
and digests go through the same SMTP code as in production and end up here instead of in
someone's inbox. The web app shows them at ``/demo/mail``.

Messages are kept in memory, newest last, bounded twice: at most ``keep`` messages and at most
``max_bytes`` of them in all (the oldest go first). One message may be at most
``message_limit`` bytes (the server answers 552 past it).

>>> import asyncio, aiosmtplib
>>> async def demo() -> list[str]:
...     catcher = MailCatcher()
...     await catcher.start()
...     await aiosmtplib.send(b"Subject: hi\\r\\nFrom: a@x.example\\r\\n\\r\\nhello\\r\\n", sender="a@x.example",
...                           recipients=["b@y.example"], hostname="127.0.0.1", port=catcher.port, start_tls=False)
...     await catcher.close()
...     return [m.subject for m in catcher.messages()]
>>> asyncio.run(demo())
['hi']
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage, Message
from email.policy import default as default_policy
from functools import cached_property
from typing import Any, cast

from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["Caught", "MailCatcher", "Part"]


@dataclass(frozen=True, slots=True)
class Part:
    """One leaf of a caught message's MIME tree (text, HTML, an image, an attachment)."""

    index: int
    content_type: str
    filename: str | None
    content_id: str | None  # without the angle brackets
    size: int
    inline: bool


@dataclass(frozen=True)
class Caught:
    """One message as the catcher received it: the SMTP envelope and the raw bytes."""

    id: int
    at: datetime
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes

    @cached_property
    def parsed(self) -> EmailMessage:
        parsed: EmailMessage = message_from_bytes(self.data, policy=default_policy)
        return parsed

    @property
    def subject(self) -> str:
        return str(self.parsed.get("Subject", ""))

    @property
    def sender(self) -> str:
        return str(self.parsed.get("From", self.mail_from))

    @property
    def to(self) -> str:
        return str(self.parsed.get("To", ", ".join(self.rcpt_tos)))

    def headers(self) -> list[tuple[str, str]]:
        return [(name, str(value)) for name, value in self.parsed.items()]

    def _body(self, subtype: str) -> str | None:
        part = self.parsed.get_body(preferencelist=(subtype,))
        if part is None:
            return None
        try:
            return str(cast(Any, part).get_content())
        except (LookupError, ValueError):
            payload = part.get_payload(decode=True)
            return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else None

    @property
    def text(self) -> str | None:
        return self._body("plain")

    @property
    def html(self) -> str | None:
        return self._body("html")

    def _leaves(self) -> list[Message]:
        return [p for p in self.parsed.walk() if not p.is_multipart()]

    def parts(self) -> list[Part]:
        out = []
        for i, part in enumerate(self._leaves()):
            payload = part.get_payload(decode=True)
            cid = part.get("Content-ID")
            out.append(
                Part(
                    index=i,
                    content_type=part.get_content_type(),
                    filename=part.get_filename(),
                    content_id=str(cid).strip().strip("<>") if cid else None,
                    size=len(payload) if isinstance(payload, bytes) else 0,
                    inline=part.get_content_disposition() != "attachment",
                )
            )
        return out

    def attachments(self) -> list[Part]:
        """Every part that is not the text or HTML body: attachments and inline images."""
        return [p for p in self.parts() if p.content_type not in ("text/plain", "text/html") or p.filename]

    def part_bytes(self, index: int) -> tuple[str, bytes] | None:
        leaves = self._leaves()
        if not 0 <= index < len(leaves):
            return None
        payload = leaves[index].get_payload(decode=True)
        return leaves[index].get_content_type(), payload if isinstance(payload, bytes) else b""

    def part_by_cid(self, cid: str) -> int | None:
        return next((p.index for p in self.parts() if p.content_id == cid), None)


class _Handler:
    def __init__(self, catcher: MailCatcher) -> None:
        self.catcher = catcher

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        data = content if isinstance(content, bytes) else content.encode()
        self.catcher.add(str(envelope.mail_from or ""), tuple(str(r) for r in envelope.rcpt_tos), data)
        return "250 Message caught by the signalmint demo"


class MailCatcher:
    """An SMTP server on ``host`` that keeps the messages it receives (see the module docstring).

    The socket is bound when the catcher is made, so its port is known (and connections
    queue) before :meth:`start` serves it on the running event loop.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        keep: int = 200,
        max_bytes: int = 20 * 1024 * 1024,
        message_limit: int = 2 * 1024 * 1024,
    ) -> None:
        self.host = host
        self.keep = keep
        self.max_bytes = max_bytes
        self.message_limit = message_limit
        self._sock: socket.socket | None = socket.create_server((host, port))
        self.port: int = self._sock.getsockname()[1]
        self._messages: deque[Caught] = deque()
        self._bytes = 0
        self._next_id = 1
        self._lock = threading.Lock()
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Serve the bound socket on the running loop (once; later calls do nothing)."""
        if self._server is not None or self._sock is None:
            return
        self._server = await asyncio.get_running_loop().create_server(self._protocol, sock=self._sock)

    def _protocol(self) -> SMTP:
        return SMTP(
            _Handler(self),
            hostname="signalmint-demo",
            ident="signalmint demo mail catcher",
            data_size_limit=self.message_limit,
            timeout=60,
        )

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), timeout=2)
        elif self._sock is not None:
            self._sock.close()
        self._sock = None

    def add(self, mail_from: str, rcpt_tos: tuple[str, ...], data: bytes) -> Caught:
        with self._lock:
            caught = Caught(self._next_id, datetime.now(UTC), mail_from, rcpt_tos, data)
            self._next_id += 1
            self._messages.append(caught)
            self._bytes += len(data)
            while len(self._messages) > 1 and (len(self._messages) > self.keep or self._bytes > self.max_bytes):
                self._bytes -= len(self._messages.popleft().data)
            return caught

    def messages(self) -> list[Caught]:
        """Every kept message, oldest first."""
        with self._lock:
            return list(self._messages)

    def get(self, message_id: int) -> Caught | None:
        with self._lock:
            return next((m for m in self._messages if m.id == message_id), None)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()
            self._bytes = 0
