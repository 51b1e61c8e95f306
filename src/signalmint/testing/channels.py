"""The conformance suite of an outbox channel (built-in or a ``signalmint.channels`` plugin).

A channel class opts in with a classmethod ``example_url(sink) -> str``: a URL of its kind
that reaches the local sinks described by a :class:`ChannelSink` (an HTTP server answering
with the status it is told, an SMTP server), with :data:`SECRET` wherever the URL holds a
secret (a token, a password, a signed query). :func:`check_channel` then checks:

- the URL round trip: ``from_url(url).to_url(redact=False) == url``;
- redaction: ``to_url(redact=True)`` (and ``repr``) never shows :data:`SECRET`;
- a refused connection is a *temporary* :class:`~signalmint.errors.DeliveryError`;
- a 503 (or SMTP 451) is temporary, and ``permanent_status`` (410 unless the class says
  otherwise; SMTP 550) permanent, when the channel reports failures (``None``: it cannot tell);
- a stable idempotency id: a retried message reaches the sink with the same id as the first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..delivery.channels.base import ChannelContext, Message
from ..errors import DeliveryError

__all__ = ["SECRET", "ChannelSink", "channel_checks", "check_channel", "conformance_message"]

#: What an example URL puts wherever it holds a secret; never shown redacted.
SECRET = "S3cretToken0123456789abcdef"


@dataclass
class ChannelSink:
    """Local sinks a channel's ``example_url`` points at, and how to make them answer.

    ``reply(status)`` makes the next answers of both sinks fail with ``status`` (HTTP) or
    the matching SMTP code (4xx -> 451, 5xx/410 -> 550); ``reply(200)`` restores success.
    ``received()`` is every request or message they got so far, as bytes. ``closed_port`` is
    a local port nobody listens on (a refused connection).
    """

    http_url: str
    smtp_host: str
    smtp_port: int
    closed_port: int
    reply: Callable[[int], None]
    received: Callable[[], list[bytes]]
    #: The channels' shared context for these sinks (SMTP settings, a bot API base URL...).
    make_context: Callable[[ChannelSink], ChannelContext] = field(default=lambda _: ChannelContext(allow_loopback=True))
    secret: str = SECRET

    def context(self) -> ChannelContext:
        return self.make_context(self)


def conformance_message(idempotency_id: str = "conformance-1-2") -> Message:
    return Message(
        idempotency_id=idempotency_id,
        subject="ACME traded 7.4x its usual volume",
        text="ACME traded 7.4x its usual volume\nhttps://sm.example/signals/1",
        payload={"type": "signal.created", "version": 1, "data": {"key": "ACME"}},
        created_at=datetime(2024, 1, 2, 14, 30, tzinfo=UTC),
    )


def _send(cls: Any, url: str, sink: ChannelSink, message: Message, context: ChannelContext | None = None) -> Any:
    kwargs = (
        {"secrets": ["whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]} if getattr(cls, "takes_secrets", False) else {}
    )
    context = context or sink.context()
    channel = cls.from_url(url, context, **kwargs)

    async def run() -> Any:
        try:
            return await channel.send(message)
        finally:  # what the channel opened on the context (bot sessions, SMTP pools), as a worker would
            for held in list(context.extra.values()):
                closing = getattr(held, "aclose", None)
                if closing is not None:
                    await closing()

    return asyncio.run(run())


def check_url_round_trip(cls: Any, sink: ChannelSink) -> None:
    url = cls.example_url(sink)
    assert url.startswith(cls.url_prefix), f"{url!r} does not start with url_prefix {cls.url_prefix!r}"
    channel = cls.from_url(url, sink.context())
    assert channel.to_url(redact=False) == url, f"round trip: {channel.to_url(redact=False)!r} != {url!r}"
    again = cls.from_url(channel.to_url(redact=False), sink.context())
    assert again.to_url(redact=False) == url


def check_redaction(cls: Any, sink: ChannelSink) -> None:
    channel = cls.from_url(cls.example_url(sink), sink.context())
    redacted = channel.to_url(redact=True)
    assert SECRET not in redacted, f"to_url(redact=True) shows the secret: {redacted!r}"
    assert SECRET not in repr(channel), f"repr shows the secret: {channel!r}"
    if SECRET in cls.example_url(sink):
        assert redacted != channel.to_url(redact=False)


def check_refused_is_temporary(cls: Any, sink: ChannelSink) -> None:
    closed = ChannelSink(
        sink.http_url.rsplit(":", 1)[0] + f":{sink.closed_port}", sink.smtp_host, sink.closed_port,
        sink.closed_port, sink.reply, sink.received, sink.make_context,
    )  # fmt: skip
    url = cls.example_url(closed)
    try:
        _send(cls, url, closed, conformance_message("refused-1"))
    except DeliveryError as exc:
        assert not exc.permanent, f"a refused connection must be temporary: {exc!r}"
    else:
        raise AssertionError("a send to a closed port did not fail")


def check_failures(cls: Any, sink: ChannelSink) -> None:
    permanent_status = getattr(cls, "permanent_status", 410)
    if permanent_status is None:
        return
    for status, permanent in ((503, False), (permanent_status, True)):
        sink.reply(status)
        try:
            _send(cls, cls.example_url(sink), sink, conformance_message(f"fail-{status}"))
        except DeliveryError as exc:
            assert exc.permanent == permanent, f"an answer {status} gave {exc!r}: permanent should be {permanent}"
        else:
            raise AssertionError(f"an answer {status} did not raise DeliveryError")
        finally:
            sink.reply(200)


def check_stable_idempotency_id(cls: Any, sink: ChannelSink) -> None:
    message = conformance_message("stable-77-9")
    before = len(sink.received())
    receipt = _send(cls, cls.example_url(sink), sink, message)
    assert receipt.at.tzinfo is not None, "a Receipt's time is aware (UTC)"
    first = sink.received()[before:]
    assert first, "a successful send reached no sink"
    context = sink.context()  # a fresh worker: nothing remembered of the first attempt
    _send(cls, cls.example_url(sink), sink, message, context)
    second = sink.received()[before + len(first) :]
    carried = [message.idempotency_id.encode() in raw for raw in first]
    if any(carried):
        assert second and all(message.idempotency_id.encode() in raw for raw in second), (
            "a retry did not carry the first attempt's idempotency id"
        )


def channel_checks() -> list[Callable[[Any, ChannelSink], None]]:
    return [
        check_url_round_trip,
        check_redaction,
        check_refused_is_temporary,
        check_failures,
        check_stable_idempotency_id,
    ]


def check_channel(cls: Any, sink: ChannelSink) -> None:
    """Run every check over a channel class that has an ``example_url`` hook."""
    assert callable(getattr(cls, "example_url", None)), f"{cls.__name__} has no example_url(sink) hook"
    for attr in ("kind", "url_prefix", "title"):
        assert isinstance(getattr(cls, attr, None), str), f"{cls.__name__}.{attr} must be a str"
    for attr in ("subscriber_added", "for_people", "renders_chart", "takes_secrets"):
        assert isinstance(getattr(cls, attr, None), bool), f"{cls.__name__}.{attr} must be a bool"
    for check in channel_checks():
        check(cls, sink)
