"""Composing messages: a signal masked for its subscriber's plan, as a webhook payload and,
for channels people read, as text (with a chart where the channel shows one).

Thousands of subscribers share a few views of a signal: each (signal, hidden fields) is
masked and encoded once per round, and each signal's chart is drawn once.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Sequence
from datetime import datetime
from hashlib import sha256
from typing import Any

from ..access import masked_json
from ..delivery.shapes import signal_json
from ..records import Delivery, Endpoint, Signal
from ..store.outbox import group_message_id
from ..store.series import CHART_FIELDS
from .batch import Batch, Body
from .channels.base import Message
from .render import chart_png, group_text, signal_text
from .send import for_people, renders_chart

__all__ = ["Composer", "draw_charts", "encode", "unsubscribe_token"]


def unsubscribe_token(endpoint_id: int, pepper: bytes) -> str:
    """The secret in an endpoint's one-click unsubscribe link (RFC 8058: no cookies, no login)."""
    return hmac.new(pepper, f"unsubscribe:{endpoint_id}".encode(), sha256).hexdigest()[:32]


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def draw_charts(batch: Batch) -> None:
    """Draw the chart of each signal that has one (~25 ms each: once per signal, never per delivery)."""
    for signal_id, series in batch.series.items():
        if series.highlight is not None and signal_id not in batch.charts:
            batch.charts[signal_id] = chart_png(series.times, series.volume, series.baseline, series.highlight)


class Composer:
    """Builds the message of one signal, or of a group of signals, for one endpoint."""

    def __init__(self, base_url: str, pepper: bytes) -> None:
        self.base_url = base_url
        self.pepper = pepper
        self._for_people: dict[str, bool] = {}  # channel kind -> people read it (asked once per kind)

    def for_people(self, kind: str) -> bool:
        answer = self._for_people.get(kind)
        if answer is None:
            answer = self._for_people[kind] = for_people(kind)
        return answer

    def body(self, signal: Signal, hidden: frozenset[str], batch: Batch) -> Body:
        """(masked signal, webhook payload, payload as JSON), once per (signal, what is hidden)."""
        cache_key = (signal.id or 0, hidden)
        cached = batch.bodies.get(cache_key)
        if cached is None:
            body = masked_json(signal_json(signal), hidden)
            payload = {"type": "signal.created", "version": 1, "timestamp": batch.at.isoformat(), "data": body}
            cached = batch.bodies[cache_key] = (body, payload, encode(payload))
        return cached

    def unsubscribe_url(self, endpoint: Endpoint) -> str | None:
        if endpoint.channel != "email":
            return None
        token = unsubscribe_token(endpoint.id, self.pepper)
        return f"{self.base_url.rstrip('/')}/unsubscribe/{endpoint.id}/{token}"

    def single(
        self, delivery: Delivery, endpoint: Endpoint, signal: Signal, hidden: frozenset[str], batch: Batch,
        now: datetime,
    ) -> Message:  # fmt: skip
        """The message of one signal."""
        body, payload, encoded = self.body(signal, hidden, batch)
        unsubscribe = self.unsubscribe_url(endpoint)
        subject, text, html = "", "", None
        chart = None
        if self.for_people(endpoint.channel):  # people read these: render them
            if renders_chart(endpoint.channel) and not hidden & CHART_FIELDS:
                chart = batch.charts.get(signal.id or 0)
            title = batch.titles.get(signal.automation, signal.automation)
            subject, text, html = signal_text(
                body, title, base_url=self.base_url, unsubscribe_url=unsubscribe, chart=chart is not None
            )
        else:
            subject = f"{signal.key} {signal.kind}"
        # positional (Message's field order): a keyword call costs more, once per delivery
        return Message(
            delivery.idempotency_id, subject, text, payload, now, html, chart, (signal.id or 0,), unsubscribe, encoded
        )

    def group(
        self, group_key: str, endpoint: Endpoint, ready: Sequence[tuple[Signal, frozenset[str]]], batch: Batch,
        now: datetime,
    ) -> Message:  # fmt: skip
        """One message for several signals: ``signal.group`` for a webhook, a list for people."""
        bodies = [self.body(signal, hidden, batch)[0] for signal, hidden in ready]
        signal_ids = tuple(signal.id or 0 for signal, _ in ready)
        data = {"reason": "digest" if group_key.startswith("d:") else "group", "count": len(bodies), "signals": bodies}
        payload = {"type": "signal.group", "version": 1, "timestamp": batch.at.isoformat(), "data": data}
        unsubscribe = self.unsubscribe_url(endpoint)
        subject, text, html = f"{len(bodies)} signals", "", None
        if self.for_people(endpoint.channel):
            titles = list(dict.fromkeys(batch.titles.get(s.automation, s.automation) for s, _ in ready))
            subject, text, html = group_text(
                bodies, " · ".join(titles), base_url=self.base_url, unsubscribe_url=unsubscribe
            )
        return Message(
            idempotency_id=group_message_id(group_key, signal_ids),
            subject=subject,
            text=text,
            html=html,
            payload=payload,
            body=encode(payload),
            created_at=now,
            signal_ids=signal_ids,
            unsubscribe_url=unsubscribe,
        )
