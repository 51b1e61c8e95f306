"""The delivery worker: claims due outbox rows, sends them, records every attempt.

Each round: lease up to ``batch`` due rows (one transaction), then outside any transaction
mask each signal for its subscriber's plan (checking entitlement again: a plan that ended
since the fan-out gets nothing), build one message per (signal, view) and send them all
concurrently, then record the outcomes (one transaction). Retries follow the Standard
Webhooks schedule with jitter; after the last attempt a delivery is a dead letter with its
reason. A killed worker's leases expire and its rows are sent again, with the same
idempotency id.

Rows that share a ``group_key`` (grouping, quiet-hours digests) become one message: each
signal is checked for entitlement on its own (a row no longer entitled is skipped), the rest
go out together (a webhook gets ``signal.group`` with a list of signals, people get
:func:`~signalmint.delivery.render.group_text`) under :func:`group_message_id`, and the
outcome is recorded on every row. A group counts as one alert against the daily budget. A
group left with one signal is sent like any single signal.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from typing import Any, cast

from sqlalchemy import Connection, select

from ..access import grants, masked_json
from ..config import Settings
from ..errors import ConfigError, DeliveryError
from ..records import Signal
from ..registry import channel_class
from ..store import Database, list_automations
from ..store.accounts import open_subscriptions_of, subscribers_by_id, watchlists_of
from ..store.outbox import (
    Delivery,
    Endpoint,
    Outcome,
    claim,
    group_message_id,
    list_endpoints,
    record,
    sent_since_by_channel,
    sent_since_many,
    set_endpoint_status,
)
from ..store.plans import load_plans
from ..store.series import CHART_FIELDS, signal_series
from ..store.signals import row_to_signal
from ..store.tables import preferences
from ..store.tables import signals as signals_table
from .channels.base import Channel, ChannelContext, Message, Receipt
from .render import chart_png, group_text, signal_text
from .shapes import signal_json

__all__ = ["RETRY_SCHEDULE", "Charge", "Worker", "backoff", "unsubscribe_token"]

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
#: Debits one alert: (conn, subscriber id, delivery id, micro-units, now) -> whether the wallet paid.
Charge = Callable[[Connection, int, int, int, datetime], bool]


def default_channel_factory(endpoint: Endpoint, context: ChannelContext) -> Channel:
    """The channel of an endpoint, by its kind in the ``signalmint.channels`` entry points.

    A channel's module is imported on first use: a worker loads only what it sends.
    """
    try:
        cls = channel_class(endpoint.channel)
    except ConfigError as exc:
        raise DeliveryError(f"no channel for {endpoint.channel!r}: {exc}", permanent=True) from exc
    if cls.takes_secrets:
        return cast(Channel, cls.from_url(endpoint.url, context, secrets=list(endpoint.secrets)))
    return cast(Channel, cls.from_url(endpoint.url, context))


def _for_people(kind: str) -> bool:
    """People read this channel: the worker renders text (and a list for a group)."""
    with contextlib.suppress(ConfigError):
        return bool(channel_class(kind).for_people)
    return False


def _renders_chart(kind: str) -> bool:
    with contextlib.suppress(ConfigError):
        return bool(channel_class(kind).renders_chart)
    return False


class _Unpaid(Exception):
    """A pay-per-alert message the subscriber's credits cannot pay."""


@dataclass
class _Batch:
    signals: dict[int, Signal]
    endpoints: dict[int, Endpoint]
    views: dict[int, Any]  # subscriber id -> (grants, plan, budget) or None (no plan)
    titles: dict[str, str]
    at: datetime
    own_budgets: dict[tuple[int, str], list[int]] = field(default_factory=dict)  # (subscriber, channel) -> left
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
        charge: Charge | None = None,
    ) -> None:
        """``charge`` debits one alert of a pay-per-alert plan from the subscriber's credits
        (billing's :func:`~signalmint.billing.credits.charge_alert`, handed in by whoever runs the
        worker); without it such alerts cannot be paid and are skipped, never sent free."""
        self.settings = settings
        self.db = db
        self.context = context
        self.pepper = pepper
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.batch = batch
        self.lease = lease
        self.clock = clock
        self.channel_factory = channel_factory
        self.charge = charge
        self._channels: dict[int, Channel] = {}
        self.concurrency = concurrency
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
        messages = list(_messages(claimed))
        queue = iter(messages)
        outcomes: list[Outcome] = []

        async def lane() -> None:  # `concurrency` lanes take the messages in turn: sends in flight stay bounded
            for rows in queue:
                outcomes.extend(await self._deliver(rows, batch))

        await asyncio.gather(*(lane() for _ in range(min(self.concurrency, len(messages)))))
        await self.db.write(record, outcomes, self.clock(), self.owner)
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
        own = {  # the subscriber's own daily budget, per channel (on top of the plan's)
            (r.subscriber_id, r.channel): r.daily_budget
            for r in conn.execute(
                select(preferences.c.subscriber_id, preferences.c.channel, preferences.c.daily_budget).where(
                    preferences.c.subscriber_id.in_(subscriber_ids), preferences.c.daily_budget.is_not(None)
                )
            )
        }
        if own:
            sent = sent_since_by_channel(conn, sorted({sid for sid, _ in own}), day)
            batch.own_budgets = {key: [limit - sent.get(key, 0)] for key, limit in own.items()}
        sizes: dict[str, int] = {}
        for d in claimed:
            if d.group_key is not None:
                sizes[d.group_key] = sizes.get(d.group_key, 0) + 1
        readers = {  # a group's message has no chart
            d.signal_id
            for d in claimed
            if endpoints.get(d.endpoint_id)
            and _renders_chart(endpoints[d.endpoint_id].channel)
            and sizes.get(d.group_key or "", 1) == 1
        }
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

    def _entitled(self, delivery: Delivery, batch: _Batch, now: datetime) -> tuple[Signal, frozenset[str]] | str:
        """The signal and the fields its subscriber may not see, or why the delivery is skipped."""
        signal = batch.signals.get(delivery.signal_id)
        endpoint = batch.endpoints.get(delivery.endpoint_id)
        view = batch.views.get(delivery.subscriber_id)
        if signal is None or endpoint is None:
            return "the signal or endpoint no longer exists"
        if endpoint.status != "active":
            return f"the endpoint is {endpoint.status}"
        if view is None:
            return "the subscriber has no plan any more"
        held, _plan, _budget = view
        grant = held.get(signal.automation)
        hidden = grant.hidden_at(signal, now, endpoint.channel) if grant is not None else None
        if hidden is None:
            return "not entitled to this signal on this channel any more"
        return signal, hidden

    def _body(
        self, signal: Signal, hidden: frozenset[str], batch: _Batch
    ) -> tuple[dict[str, Any], dict[str, Any], bytes]:
        """(masked signal, webhook payload, payload as JSON), once per (signal, what is hidden):
        thousands of subscribers share a few views."""
        cache_key = (signal.id, hidden)
        cached = batch.bodies.get(cache_key)
        if cached is None:
            body = masked_json(signal_json(signal), hidden)
            payload = {"type": "signal.created", "version": 1, "timestamp": batch.at.isoformat(), "data": body}
            cached = batch.bodies[cache_key] = (body, payload, _encode(payload))
        return cached

    def _unsubscribe_url(self, endpoint: Endpoint) -> str | None:
        if endpoint.channel != "email":
            return None
        token = unsubscribe_token(endpoint.id, self.pepper)
        return f"{self.settings.base_url.rstrip('/')}/unsubscribe/{endpoint.id}/{token}"

    def _message(
        self, delivery: Delivery, signal: Signal, hidden: frozenset[str], batch: _Batch, now: datetime
    ) -> Message:
        """The message of one signal."""
        endpoint = batch.endpoints[delivery.endpoint_id]
        body, payload, encoded = self._body(signal, hidden, batch)
        unsubscribe = self._unsubscribe_url(endpoint)
        subject, text, html = "", "", None
        chart = None
        if _for_people(endpoint.channel):  # people read these: render them
            if _renders_chart(endpoint.channel) and not hidden & CHART_FIELDS:
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

    def _group_message(
        self, group_key: str, endpoint: Endpoint, ready: Sequence[tuple[Signal, frozenset[str]]], batch: _Batch,
        now: datetime,
    ) -> Message:  # fmt: skip
        """One message for several signals: ``signal.group`` for a webhook, a list for people."""
        bodies = [self._body(signal, hidden, batch)[0] for signal, hidden in ready]
        signal_ids = tuple(signal.id or 0 for signal, _ in ready)
        data = {"reason": "digest" if group_key.startswith("d:") else "group", "count": len(bodies), "signals": bodies}
        payload = {"type": "signal.group", "version": 1, "timestamp": batch.at.isoformat(), "data": data}
        unsubscribe = self._unsubscribe_url(endpoint)
        subject, text, html = f"{len(bodies)} signals", "", None
        if _for_people(endpoint.channel):
            titles = list(dict.fromkeys(batch.titles.get(s.automation, s.automation) for s, _ in ready))
            subject, text, html = group_text(
                bodies, " · ".join(titles), base_url=self.settings.base_url, unsubscribe_url=unsubscribe
            )
        return Message(
            idempotency_id=group_message_id(group_key, signal_ids),
            subject=subject,
            text=text,
            html=html,
            payload=payload,
            body=_encode(payload),
            created_at=now,
            signal_ids=signal_ids,
            unsubscribe_url=unsubscribe,
        )

    async def _deliver(self, rows: list[Delivery], batch: _Batch) -> list[Outcome]:
        """Send one message (one row, or every row of a group); an outcome for each row."""
        now = self.clock()
        outcomes: list[Outcome] = []
        ready: list[tuple[Delivery, Signal, frozenset[str]]] = []
        for delivery in rows:
            entitled = self._entitled(delivery, batch, now)
            if isinstance(entitled, str):
                outcomes.append(Outcome(delivery.id, "skipped", error=entitled))
            else:
                ready.append((delivery, *entitled))
        if not ready:
            return outcomes
        budget = batch.views[ready[0][0].subscriber_id][2]
        if budget is not None and budget[0] <= 0:  # a message counts once, however many signals it carries
            return outcomes + [Outcome(d.id, "skipped", error="the daily alert budget is used up") for d, *_ in ready]
        endpoint = batch.endpoints[ready[0][0].endpoint_id]
        own = batch.own_budgets.get((ready[0][0].subscriber_id, endpoint.channel))
        if own is not None and own[0] <= 0:
            return outcomes + [
                Outcome(d.id, "skipped", error=f"the subscriber's daily {endpoint.channel} budget is used up")
                for d, *_ in ready
            ]
        counters = [c for c in (budget, own) if c is not None]
        for counter in counters:  # taken before any await, so concurrent messages cannot overspend
            counter[0] -= 1
        plan = batch.views[ready[0][0].subscriber_id][1]
        if plan.alert_price > 0 and not await self._pay([d.id for d, *_ in ready], ready[0][0].subscriber_id, plan):
            for counter in counters:
                counter[0] += 1
            return outcomes + [
                Outcome(d.id, "skipped", error="not enough credits for this pay-per-alert plan: top up")
                for d, *_ in ready
            ]
        group_key = ready[0][0].group_key
        if len(ready) == 1 or group_key is None:
            message = self._message(*ready[0], batch, now)
        else:
            message = self._group_message(group_key, endpoint, [(s, h) for _, s, h in ready], batch, now)
        try:
            channel = self._channels.get(endpoint.id)
            if channel is None:
                channel = self._channels[endpoint.id] = self.channel_factory(endpoint, self.context)
            receipt: Receipt = await channel.send(message)
        except DeliveryError as exc:
            self.failed += 1
            return outcomes + [self._failure(d, endpoint, exc) for d, *_ in ready]
        except Exception as exc:  # a channel bug must not lose the delivery: retry it
            log.exception("channel %s crashed", endpoint.channel)
            self.failed += 1
            crashed = DeliveryError(f"{type(exc).__name__}: {exc}")
            return outcomes + [self._failure(d, endpoint, crashed) for d, *_ in ready]
        self.sent += len(ready)
        stored = _receipt_json(receipt)
        if len(ready) > 1:  # which message the row went out in
            stored["message"] = message.idempotency_id
        return outcomes + [Outcome(d.id, "sent", receipt=stored) for d, *_ in ready]

    async def _pay(self, delivery_ids: list[int], subscriber_id: int, plan: Any) -> bool:
        """Debit the plan's ``alert_price`` per alert from the subscriber's credits, all or none.

        Each charge is named by its delivery, so a retried delivery is never charged twice.
        """
        charge_alert = self.charge
        if charge_alert is None:
            return False

        def charge(conn: Connection) -> None:
            for delivery_id in delivery_ids:
                if not charge_alert(conn, subscriber_id, delivery_id, plan.alert_price, self.clock()):
                    raise _Unpaid  # roll back the charges of this message's other alerts

        try:
            await self.db.write(charge)
        except _Unpaid:
            return False
        return True

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


def _messages(claimed: list[Delivery]) -> list[list[Delivery]]:
    """Claimed rows by the message they go out in: each row alone, the rows of a group together.

    >>> at = datetime(2024, 1, 2, tzinfo=UTC)
    >>> rows = [Delivery(i, i, 1, 1, f"m{i}", "sending", at, at, 1, group_key=g)
    ...         for i, g in enumerate([None, "g:1:60", None, "g:1:60"])]
    >>> [[d.id for d in message] for message in _messages(rows)]
    [[0], [1, 3], [2]]
    """
    out: list[list[Delivery]] = []
    groups: dict[str, list[Delivery]] = {}
    for delivery in claimed:
        if delivery.group_key is None:
            out.append([delivery])
        elif delivery.group_key in groups:
            groups[delivery.group_key].append(delivery)
        else:
            out.append(groups.setdefault(delivery.group_key, [delivery]))
    return out


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _receipt_json(receipt: Receipt) -> dict[str, Any]:
    return {
        "channel": receipt.channel,
        "at": receipt.at.isoformat(),
        "id": receipt.provider_id,
        "detail": receipt.detail,
    }
