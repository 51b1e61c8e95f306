"""Sending email: SMTP through aiosmtplib, or a log when no server is configured.

Magic links and confirmations use this today; the email channel builds on it.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Protocol

import aiosmtplib

from ..config import EmailConfig
from ..errors import DeliveryError

__all__ = ["Email", "LogMailer", "Mailer", "SmtpMailer", "mailer_for"]

log = logging.getLogger("signalmint.mail")


@dataclass(frozen=True, slots=True)
class Email:
    to: str
    subject: str
    text: str
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


class Mailer(Protocol):
    async def send(self, message: Email) -> str: ...


def build_message(message: Email, sender: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = message.to
    msg["Subject"] = message.subject
    domain = sender.rsplit("@", 1)[-1].strip(">") or "localhost"
    msg["Message-ID"] = message.headers.get("Message-ID") or make_msgid(domain=domain)
    for name, value in message.headers.items():
        if name != "Message-ID":
            msg[name] = value
    msg.set_content(message.text)
    if message.html:
        msg.add_alternative(message.html, subtype="html")
    return msg


class SmtpMailer:
    """Sends through an SMTP server; failures raise :class:`DeliveryError`."""

    def __init__(self, config: EmailConfig) -> None:
        self.config = config

    async def send(self, message: Email) -> str:
        msg = build_message(message, self.config.sender)
        c = self.config
        try:
            await aiosmtplib.send(
                msg,
                hostname=c.host,
                port=c.port,
                username=c.username,
                password=c.password,
                use_tls=c.tls,
                start_tls=c.starttls and not c.tls,
                timeout=15,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"the server refused {message.to}: {exc}", permanent=True) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"sending to {message.to} failed: {exc}") from exc
        return str(msg["Message-ID"])


class LogMailer:
    """No SMTP server configured: log each message and keep the last ones (demo and development)."""

    def __init__(self, sender: str = "signalmint <alerts@localhost>", keep: int = 50) -> None:
        self.sender = sender
        self.outbox: deque[EmailMessage] = deque(maxlen=keep)

    async def send(self, message: Email) -> str:
        msg = build_message(message, self.sender)
        self.outbox.append(msg)
        log.info(
            "email (not sent: no SMTP server configured) to %s: %s\n%s",
            message.to,
            message.subject,
            message.text,
        )
        return str(msg["Message-ID"])


def mailer_for(config: EmailConfig) -> Mailer:
    return SmtpMailer(config) if config.host else LogMailer(config.sender)
