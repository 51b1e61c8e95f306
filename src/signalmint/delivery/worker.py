"""The delivery worker: claims due outbox rows, sends them, records every attempt.

Each round runs five steps, each with one owner:

1. claim (:mod:`~signalmint.delivery.claim`): lease up to ``batch`` due rows (one
   transaction), load what they need in one read, and group them into messages;
2. decide (:mod:`~signalmint.delivery.decide`): check entitlement again (a plan that ended
   since the fan-out gets nothing), the daily budgets, and pay-per-alert credits;
3. compose (:mod:`~signalmint.delivery.compose`): mask each signal for its subscriber's plan
   and build one message per (signal, view), or one per group;
4. send (:mod:`~signalmint.delivery.send`): through the endpoint's channel, all messages
   concurrently, outside any transaction;
5. record (:mod:`~signalmint.delivery.record`): every outcome in one transaction. Retries
   follow the Standard Webhooks schedule with jitter; after the last attempt a delivery is
   a dead letter with its reason.

A killed worker's leases expire and its rows are sent again, with the same idempotency id.

Rows that share a ``group_key`` (grouping, quiet-hours digests) become one message: each
signal is checked for entitlement on its own (a row no longer entitled is skipped), the rest
go out together (a webhook gets ``signal.group`` with a list of signals, people get
:func:`~signalmint.delivery.render.group_text`) under
:func:`~signalmint.store.outbox.group_message_id`, and the outcome is recorded on every row.
A group counts as one alert against the daily budget. A group left with one signal is sent
like any single signal.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from ..config import Settings
from ..errors import DeliveryError
from ..records import Delivery, Signal
from ..store import Database
from ..store.outbox import claim
from .batch import Batch
from .channels.base import ChannelContext
from .claim import load_batch, messages
from .collector import fewer_collections
from .compose import Composer, draw_charts, unsubscribe_token
from .decide import entitled, pay, release, take_budgets
from .record import RETRY_SCHEDULE, Recorder, backoff, sent, skipped
from .send import ChannelFactory, Sender, default_channel_factory

__all__ = ["RETRY_SCHEDULE", "Worker", "backoff", "default_channel_factory", "unsubscribe_token"]

log = logging.getLogger("signalmint.delivery")


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
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.batch = batch
        self.lease = lease
        self.clock = clock
        self.concurrency = concurrency
        self.pepper = pepper
        self.composer = Composer(settings.base_url, pepper)
        self.sender = Sender(context, channel_factory)
        self.sent = 0
        self.failed = 0

    async def run_once(self) -> int:
        """Claim, send and record one batch; the number of deliveries handled."""
        with fewer_collections():  # the round's objects live until it ends: see collector.py
            return await self._round()

    async def _round(self) -> int:
        now = self.clock()
        claimed = await self.db.write(claim, self.owner, now, lease=self.lease, limit=self.batch)
        if not claimed:
            return 0
        batch = await self.db.read(load_batch, claimed, now)
        if batch.series:
            await asyncio.to_thread(draw_charts, batch)
        recorder = Recorder()
        grouped = messages(claimed)
        queue = iter(grouped)

        async def lane() -> None:  # `concurrency` lanes take the messages in turn: sends in flight stay bounded
            for rows in queue:
                await self._deliver(rows, batch, recorder)

        await asyncio.gather(*(lane() for _ in range(min(self.concurrency, len(grouped)))))
        for endpoint_id in await recorder.store(self.db, self.owner, self.clock()):
            self.sender.forget(endpoint_id)
        return len(claimed)

    async def run(self, stop: asyncio.Event, *, idle: float = 0.5, wake: asyncio.Event | None = None) -> None:
        """Rounds until ``stop``; after a round that found nothing, wait ``idle`` seconds, or
        until ``wake`` is set (new rows are due: :mod:`~signalmint.delivery.wake`)."""
        wake = wake or asyncio.Event()
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                wake.clear()  # before the claim: a wake-up that lands during the round is kept
                try:
                    handled = await self.run_once()
                except Exception:
                    log.exception("delivery round failed; trying again")
                    handled = 0
                if handled == 0 and not wake.is_set():
                    woken = asyncio.ensure_future(wake.wait())
                    try:
                        await asyncio.wait({stopping, woken}, timeout=idle, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        woken.cancel()
        finally:
            stopping.cancel()

    async def _deliver(self, rows: list[Delivery], batch: Batch, recorder: Recorder) -> None:
        """Send one message (one row, or every row of a group); an outcome for each row."""
        now = self.clock()
        ready: list[tuple[Delivery, Signal, frozenset[str]]] = []
        for delivery in rows:
            decided = entitled(delivery, batch, now)
            if isinstance(decided, str):
                recorder.add(skipped([delivery], decided))
            else:
                ready.append((delivery, *decided))
        if not ready:
            return
        first = ready[0][0]
        going = [d for d, *_ in ready]
        view = batch.views[first.subscriber_id]
        endpoint = batch.endpoints[first.endpoint_id]
        if view is None:  # (entitled() skipped these already)
            recorder.add(skipped(going, "the subscriber has no plan any more"))
            return
        taken = take_budgets(view, batch.own_budgets.get((first.subscriber_id, endpoint.channel)), endpoint.channel)
        if isinstance(taken, str):
            recorder.add(skipped(going, taken))
            return
        price = view.plan.alert_price
        if price > 0 and not await pay(self.db, [d.id for d in going], first.subscriber_id, price, self.clock()):
            release(taken)
            recorder.add(skipped(going, "not enough credits for this pay-per-alert plan: top up"))
            return
        if len(ready) == 1 or first.group_key is None:
            delivery, signal, hidden = ready[0]
            message = self.composer.single(delivery, endpoint, signal, hidden, batch, now)
        else:
            message = self.composer.group(first.group_key, endpoint, [(s, h) for _, s, h in ready], batch, now)
        try:
            receipt = await self.sender.send(endpoint, message)
        except DeliveryError as exc:
            self.failed += 1
            recorder.failed(going, endpoint.id, exc, self.clock())
            return
        self.sent += len(going)
        recorder.add(sent(going, receipt, message.idempotency_id if len(going) > 1 else None))
