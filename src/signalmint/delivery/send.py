"""Sending: an endpoint's channel, found by its kind in the ``signalmint.channels`` entry points.

A :class:`Sender` keeps one channel object per endpoint (its connection pool, a bot's state)
for as long as the worker runs. A channel raises :class:`~signalmint.errors.DeliveryError`
when a message was not taken; any other exception is a channel bug, logged and turned into
a temporary error so the delivery is retried, never lost.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import cast

from ..errors import ConfigError, DeliveryError
from ..records import Endpoint
from ..registry import channel_class
from .channels.base import Channel, ChannelContext, Message, Receipt

__all__ = ["ChannelFactory", "Sender", "default_channel_factory", "for_people", "renders_chart"]

log = logging.getLogger("signalmint.delivery")

ChannelFactory = Callable[[Endpoint, ChannelContext], Channel]


def default_channel_factory(endpoint: Endpoint, context: ChannelContext) -> Channel:
    """The channel of an endpoint, by its kind in the ``signalmint.channels`` entry points.

    A channel's module is imported on first use: a worker loads only what it sends.
    """
    try:
        cls = channel_class(endpoint.channel)
    except ConfigError as exc:
        raise DeliveryError(f"no channel for {endpoint.channel!r}: {exc}", permanent=True) from exc
    if cls.takes_secrets:
        return cast(Channel, cls.from_url(endpoint.url, context, secrets=endpoint.secrets))
    return cast(Channel, cls.from_url(endpoint.url, context))


def for_people(kind: str) -> bool:
    """People read this channel: the worker renders text (and a list for a group)."""
    with contextlib.suppress(ConfigError):
        return bool(channel_class(kind).for_people)
    return False


def renders_chart(kind: str) -> bool:
    """This channel shows a signal's chart (a PNG rendered once per signal)."""
    with contextlib.suppress(ConfigError):
        return bool(channel_class(kind).renders_chart)
    return False


class Sender:
    """Sends messages through each endpoint's channel, made once per endpoint by ``factory``."""

    def __init__(self, context: ChannelContext, factory: ChannelFactory = default_channel_factory) -> None:
        self.context = context
        self.factory = factory
        self._channels: dict[int, Channel] = {}

    async def send(self, endpoint: Endpoint, message: Message) -> Receipt:
        """The receiver's receipt; :class:`DeliveryError` when the message was not taken."""
        try:
            channel = self._channels.get(endpoint.id)
            if channel is None:
                channel = self._channels[endpoint.id] = self.factory(endpoint, self.context)
            return await channel.send(message)
        except DeliveryError:
            raise
        except Exception as exc:  # a channel bug must not lose the delivery: retry it
            log.exception("channel %s crashed", endpoint.channel)
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc

    def forget(self, endpoint_id: int) -> None:
        """Drop the endpoint's channel (its status or settings changed): the next send makes a new one."""
        self._channels.pop(endpoint_id, None)
