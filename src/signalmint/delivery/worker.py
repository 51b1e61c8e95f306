"""The delivery worker: claims due outbox rows, sends them, records every attempt.

Each round: lease up to ``batch`` due rows (one transaction), then outside any transaction
mask each signal for its subscriber's plan (checking entitlement again: a plan that ended
since the fan-out gets nothing), build one message per (signal, view) and send them all
concurrently, then record the outcomes (one transaction). Retries follow the Standard
Webhooks schedule with jitter; after the last attempt a delivery is a dead letter with its
reason. A killed worker's leases expire and its rows are sent again, with the same
idempotency id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from typing import Any

from sqlalchemy import Connection, select

from ..access import grants, masked_json
from ..config import Settings
from ..errors import DeliveryError
from ..records import Signal
from ..series import CHART_FIELDS, signal_series
from ..shapes import signal_json
from ..store import Database, list_automations
from ..store.accounts import open_subscriptions_of, subscribers_by_id, watchlists_of
from ..store.outbox import (
    Delivery,
    Endpoint,
    Outcome,
    claim,
    list_endpoints,
    record,
    sent_since_many,
    set_endpoint_status,
)
from ..store.plans import load_plans
from ..store.signals import row_to_signal
from ..store.tables import signals as signals_table
from .channels.base import Channel, ChannelContext, Message, Receipt
from .render import chart_png, signal_text

__all__ = ["RETRY_SCHEDULE", "Worker", "backoff", "unsubscribe_token"]

log = logging.getLogger("signalmint.delivery")

#: Seconds before attempt 2, 3, ... (Standard Webhooks: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h).
RETRY_SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 36000)
#: A receiver's Retry-After is honoured up to a day (a hostile one cannot park a row for ever).
MAX_RETRY_AFTER = 86_400.0


def backoff(attempts: int, retry_after: float | None = None, *, rng: random.Random | None = None) -> float | None:
    """Seconds to wait after ``attempts`` failed attempts (None: give up), with ±10% jitter.

    A receiver's ``retry_after`` is honoured when it asks for longer (up to a day).

    >>> backoff(1, rng=random.Random(0)) is not None and 4.5 <= backoff(1, rng=random.Random(0)) <= 5.5
    True
    >>> backoff(len(RETRY_SCHEDULE) + 1) is None
    True
    """
    if attempts > len(RETRY_SCHEDULE):
        return None
    base = RETRY_SCHEDULE[attempts - 1]
    wait = base * (rng or random).uniform(0.9, 1.1)
    return max(wait, min(retry_after or 0.0, MAX_RETRY_AFTER))


def unsubscribe_token(endpoint_id: int, pepper: bytes) -> str:
    """The secret in an endpoint's one-click unsubscribe link (RFC 8058: no cookies, no login)."""
    return hmac.new(pepper, f"unsubscribe:{endpoint_id}".encode(), sha256).hexdigest()[:32]


ChannelFactory = Callable[[Endpoint, ChannelContext], Channel]


def default_channel_factory(endpoint: Endpoint, context: ChannelContext) -> Channel:
    """The channel of an endpoint, by its kind (imports stay lazy: a worker loads what it uses)."""
    if endpoint.channel == "webhook":
        from .channels.webhook import WebhookChannel

        return WebhookChannel.from_url(endpoint.url, context, secrets=list(endpoint.secrets))
    if endpoint.channel == "email":
        from .channels.email import EmailChannel

        return EmailChannel.from_url(endpoint.url, context)
    if endpoint.channel == "telegram":
        from .channels.telegram import TelegramChannel

        return TelegramChannel.from_url(endpoint.url, context)
    if endpoint.channel == "apprise":
        from .channels.apprise import AppriseChannel

        return AppriseChannel.from_url(endpoint.url, context)
    raise DeliveryError(f"no channel for {endpoint.channel!r}", permanent=True)


@dataclass
class _Batch:
    signals: dict[int, Signal]
    endpoints: dict[int, Endpoint]
    views: dict[int, Any]  # subscriber id -> (grants, plan, budget) or None (no plan)
    titles: dict[str, str]
    at: datetime
    bodies: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any], bytes]] = field(default_factory=dict)
    charts: dict[int, bytes] = field(default_factory=dict)  # one PNG per signal, for the people-read channels


class Worker:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        context: ChannelContext,
        pepper: bytes,
        *,
        owner: str | None = None,
        batch: int = 500,
        concurrency: int = 256,
        lease: timedelta = timedelta(seconds=60),
        channel_factory: ChannelFactory = default_channel_factory,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.db = db
        self.context = context
        self.pepper = pepper
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.batch = batch
        self.lease = lease
        self.clock = clock
        self.channel_factory = channel_factory
        self._channels: dict[int, Channel] = {}
        self._limit = asyncio.Semaphore(concurrency)
        self.sent = 0
        self.failed = 0
        self._endpoint_changes: dict[int, tuple[str, str]] = {}

    # -- one round ------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Claim, send and record one batch; the number of deliveries handled."""
        now = self.clock()
        claimed = await self.db.write(claim, self.owner, now, lease=self.lease, limit=self.batch)
        if not claimed:
            return 0
        batch = await self.db.read(self._load, claimed, now)
        outcomes = await asyncio.gather(*(self._deliver(d, batch) for d in claimed))
        await self.db.write(record, list(outcomes), self.clock(), self.owner)
        for endpoint_id, (status, reason) in self._endpoint_changes.items():
            await self.db.write(set_endpoint_status, endpoint_id, status, reason, self.clock())
            self._channels.pop(endpoint_id, None)
        self._endpoint_changes.clear()
        return len(claimed)

    async def run(self, stop: asyncio.Event, *, idle: float = 0.5) -> None:
        while not stop.is_set():
            try:
                handled = await self.run_once()
            except Exception:
                log.exception("delivery round failed; trying again")
                handled = 0
            if handled == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), idle)

    # -- loading ---------------------------------------------------------------------------

    def _load(self, conn: Connection, claimed: list[Delivery], now: datetime) -> _Batch:
        """Everything a batch needs, in a handful of queries (not a few per subscriber)."""
        ids = sorted({d.signal_id for d in claimed})
        found = {r.id: row_to_signal(r) for r in conn.execute(select(signals_table).where(signals_table.c.id.in_(ids)))}
        endpoint_ids = sorted({d.endpoint_id for d in claimed})
        endpoints = {e.id: e for e in list_endpoints(conn, ids=endpoint_ids)}
        automations = list_automations(conn, enabled_only=False)
        names = [a.name for a in automations]
        plans = load_plans(conn)
        subscriber_ids = sorted({d.subscriber_id for d in claimed})
        people = subscribers_by_id(conn, subscriber_ids)
        holdings = open_subscriptions_of(conn, subscriber_ids)
        watching = watchlists_of(conn, subscriber_ids)
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        budgeted = [
            sid for sid, sub in holdings.items()
            if (plan := plans.get((sub.plan_id, sub.plan_version))) is not None and plan.alerts_per_day is not None
        ]  # fmt: skip
        sent_today = sent_since_many(conn, budgeted, day) if budgeted else {}
        views: dict[int, Any] = {}
        expanded: dict[tuple[str, int], Any] = {}
        for subscriber_id in subscriber_ids:
            subscriber = people.get(subscriber_id)
            subscription = holdings.get(subscriber_id)
            plan = plans.get((subscription.plan_id, subscription.plan_version)) if subscription else None
            if subscriber is None or subscription is None or plan is None:
                views[subscriber_id] = None
                continue
            key = (plan.id, plan.version)
            if key not in expanded:
                expanded[key] = plan.expanded(names)
            held = grants([(subscription, expanded[key])], subscriber, watching.get(subscriber_id, frozenset()), now)
            budget = None
            if plan.alerts_per_day is not None:
                budget = [plan.alerts_per_day - sent_today.get(subscriber_id, 0)]
            views[subscriber_id] = (held, plan, budget)
        batch = _Batch(found, endpoints, views, {a.name: a.title for a in automations}, now)
        readers = {d.signal_id for d in claimed if endpoints.get(d.endpoint_id) and
                   endpoints[d.endpoint_id].channel in {"email", "telegram"}}  # fmt: skip
        windows = {a.name: int(a.detector_options.get("window", 30)) for a in automations}
        for signal_id in readers:  # ~25 ms each: once per signal, never per delivery
            signal = found.get(signal_id)
            if signal is None:
                continue
            series = signal_series(conn, signal, windows.get(signal.automation, 30), shown=60, after=5)
            if series.highlight is not None:
                batch.charts[signal_id] = chart_png(series.times, series.volume, series.baseline, series.highlight)
        return batch

    # -- sending ---------------------------------------------------------------------------

    def _message(self, delivery: Delivery, batch: _Batch, now: datetime) -> Message | str:
        """The message for a delivery, or why it is skipped."""
        signal = batch.signals.get(delivery.signal_id)
        endpoint = batch.endpoints.get(delivery.endpoint_id)
        view = batch.views.get(delivery.subscriber_id)
        if signal is None or endpoint is None:
            return "the signal or endpoint no longer exists"
        if endpoint.status != "active":
            return f"the endpoint is {endpoint.status}"
        if view is None:
            return "the subscriber has no plan any more"
        held, _plan, budget = view
        grant = held.get(signal.automation)
        hidden = grant.hidden_at(signal, now, endpoint.channel) if grant is not None else None
        if hidden is None:
            return "not entitled to this signal on this channel any more"
        if budget is not None:
            if budget[0] <= 0:
                return "the daily alert budget is used up"
            budget[0] -= 1
        # One body per (signal, what is hidden): thousands of subscribers share a few views.
        cache_key = (signal.id, hidden)
        cached = batch.bodies.get(cache_key)
        if cached is None:
            body = masked_json(signal_json(signal), hidden)
            payload = {"type": "signal.created", "version": 1, "timestamp": batch.at.isoformat(), "data": body}
            encoded = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
            cached = batch.bodies[cache_key] = (body, payload, encoded)
        body, payload, encoded = cached
        unsubscribe = None
        subject, text, html = "", "", None
        chart = None
        if endpoint.channel in {"email", "telegram", "apprise"}:  # people read these: render them
            if endpoint.channel == "email":
                token = unsubscribe_token(endpoint.id, self.pepper)
                unsubscribe = f"{self.settings.base_url.rstrip('/')}/unsubscribe/{endpoint.id}/{token}"
            if endpoint.channel in {"email", "telegram"} and not hidden & CHART_FIELDS:
                chart = batch.charts.get(signal.id or 0)
            title = batch.titles.get(signal.automation, signal.automation)
            subject, text, html = signal_text(
                body, title, base_url=self.settings.base_url, unsubscribe_url=unsubscribe, chart=chart is not None
            )
        else:
            subject = f"{signal.key} {signal.kind}"
        return Message(
            idempotency_id=delivery.idempotency_id,
            subject=subject,
            text=text,
            html=html,
            payload=payload,
            body=encoded,
            chart_png=chart,
            created_at=now,
            signal_ids=(signal.id or 0,),
            unsubscribe_url=unsubscribe,
        )

    async def _deliver(self, delivery: Delivery, batch: _Batch) -> Outcome:
        now = self.clock()
        message = self._message(delivery, batch, now)
        if isinstance(message, str):
            return Outcome(delivery.id, "skipped", error=message)
        endpoint = batch.endpoints[delivery.endpoint_id]
        try:
            channel = self._channels.get(endpoint.id)
            if channel is None:
                channel = self._channels[endpoint.id] = self.channel_factory(endpoint, self.context)
            async with self._limit:
                receipt: Receipt = await channel.send(message)
        except DeliveryError as exc:
            self.failed += 1
            return self._failure(delivery, endpoint, exc)
        except Exception as exc:  # a channel bug must not lose the delivery: retry it
            log.exception("channel %s crashed", endpoint.channel)
            self.failed += 1
            return self._failure(delivery, endpoint, DeliveryError(f"{type(exc).__name__}: {exc}"))
        self.sent += 1
        return Outcome(delivery.id, "sent", receipt=_receipt_json(receipt))

    def _failure(self, delivery: Delivery, endpoint: Endpoint, exc: DeliveryError) -> Outcome:
        if getattr(exc, "disable_endpoint", False):
            self._endpoint_changes[endpoint.id] = ("disabled", str(exc))
        if getattr(exc, "pause_endpoint", False):
            self._endpoint_changes[endpoint.id] = ("paused", str(exc))
        if exc.permanent:
            return Outcome(delivery.id, "dead", error=f"permanent: {exc}")
        wait = backoff(delivery.attempts, exc.retry_after)
        if wait is None:
            return Outcome(delivery.id, "dead", error=f"gave up after {delivery.attempts} attempts: {exc}")
        return Outcome(delivery.id, "pending", error=str(exc), next_attempt_at=self.clock() + timedelta(seconds=wait))


def _receipt_json(receipt: Receipt) -> dict[str, Any]:
    return {
        "channel": receipt.channel,
        "at": receipt.at.isoformat(),
        "id": receipt.provider_id,
        "detail": receipt.detail,
    }
