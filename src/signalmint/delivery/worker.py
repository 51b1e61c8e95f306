"""The delivery worker: claims due outbox rows, sends them, records every attempt.

Each round runs five steps, each with one owner:

1. claim (:mod:`~signalmint.delivery.claim`): lease up to ``batch`` due rows and load what
   they need (one call on the writer; on PostgreSQL usually one statement), and group them into
   messages;
2. decide (:mod:`~signalmint.delivery.decide`): check entitlement again (a plan that ended
   since the fan-out gets nothing), the daily budgets, and pay-per-alert credits;
3. compose (:mod:`~signalmint.delivery.compose`): mask each signal for its subscriber's plan
   and build one message per (signal, view), or one per group;
4. send (:mod:`~signalmint.delivery.send`): through the endpoint's channel, all messages
   concurrently, outside any transaction;
5. record (:mod:`~signalmint.delivery.record`): every outcome in one call on the writer (the
   next round's claim, when that follows at once). Retries
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
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from ..config import Settings
from ..errors import DeliveryError
from ..records import Delivery, Signal
from ..store import Connection, Database
from .batch import Batch
from .channels.base import ChannelContext
from .claim import Plans, claim_batch, messages
from .collector import IdleCollections, fewer_collections
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
        self.plans = Plans()  # the plan versions read so far (immutable once stored)
        self.collections = IdleCollections()  # run() collects garbage cycles when it goes idle
        self.sent = 0
        self.failed = 0

    async def run_once(self) -> int:
        """Claim, send and record one batch; the number of deliveries handled."""
        with fewer_collections():  # until the outcomes are stored and dropped: see collector.py
            handled, recorder = await self._round(None)
            await self._store(recorder)
            del recorder
        return handled

    async def _round(self, previous: Recorder | None) -> tuple[int, Recorder | None]:
        """Claim (storing ``previous``, the last round's outcomes, in the same writer call) and send
        one batch; the number of deliveries handled and their outcomes, not stored yet."""
        with fewer_collections():  # the round's objects live until it ends: see collector.py
            return await self._claim_and_send(previous)

    async def _claim_and_send(self, previous: Recorder | None) -> tuple[int, Recorder | None]:
        now = self.clock()
        # with no transaction around them (PostgreSQL): the outcomes' statements and the claim's
        # one statement are each atomic alone, and BEGIN and COMMIT would be two more round trips
        if previous is None:
            got = await self.db.write(claim_batch, self.owner, now, self.lease, self.batch, self.plans, autocommit=True)
        else:
            got = await self.db.write(self._store_and_claim, previous, now, autocommit=True)
            previous.stored = True
            self._forget(previous)
        if got is None:  # a group is due: its claim holds locks until its transaction ends
            got = await self.db.write(claim_batch, self.owner, now, self.lease, self.batch, self.plans)
        claimed, batch = got or ([], None)
        if batch is None:
            return 0, None
        if batch.series:
            await asyncio.to_thread(draw_charts, batch)
        recorder = Recorder()
        grouped = messages(claimed)
        queue = iter(grouped)

        async def lane() -> None:  # `concurrency` lanes take the messages in turn: sends in flight stay bounded
            for rows in queue:
                if len(rows) == 1:
                    await self._deliver_one(rows[0], batch, recorder)
                else:
                    await self._deliver(rows, batch, recorder)

        await asyncio.gather(*(lane() for _ in range(min(self.concurrency, len(grouped)))))
        return len(claimed), recorder

    def _store_and_claim(
        self, conn: Connection, previous: Recorder, now: datetime
    ) -> tuple[list[Delivery], Batch | None] | None:
        previous.write(conn, self.owner, self.clock())
        return claim_batch(conn, self.owner, now, self.lease, self.batch, self.plans)

    async def _store(self, recorder: Recorder | None) -> None:
        if recorder is not None and not recorder.stored:
            with fewer_collections():  # the round's outcomes are still alive: see collector.py
                await recorder.store(self.db, self.owner, self.clock())
            self._forget(recorder)

    def _forget(self, recorder: Recorder) -> None:
        for endpoint_id in recorder.endpoint_changes:  # their channels are built afresh
            self.sender.forget(endpoint_id)

    async def run(self, stop: asyncio.Event, *, idle: float = 0.5, wake: asyncio.Event | None = None) -> None:
        """Rounds until ``stop``; after a round that found less than a full batch, wait ``idle``
        seconds, or until ``wake`` is set (new rows are due: :mod:`~signalmint.delivery.wake`).

        A round followed at once by another (a full batch, or woken meanwhile) has its outcomes
        stored with the next claim; any other round stores them before waiting."""
        wake = wake or asyncio.Event()
        stopping = asyncio.ensure_future(stop.wait())
        pending: Recorder | None = None  # the last round's outcomes, stored with the next claim
        # Rounds that follow one another keep young collections rare until the worker waits
        # (collector.py): a round's outcomes and batch die by reference counting once stored,
        # and a collection when each round ends would walk them all first.
        busy = contextlib.ExitStack()
        held = False
        self.collections.start()
        try:
            while not stop.is_set():
                if not held:
                    busy.enter_context(fewer_collections())
                    held = True
                wake.clear()  # before the claim: a wake-up that lands during the round is kept
                try:
                    handled, pending = await self._round(pending)
                except Exception:
                    log.exception("delivery round failed; trying again")
                    handled = 0
                    await self._settle(pending)  # unless it was stored with the claim
                    pending = None
                # a round that took less than a full batch left nothing due behind it: wait for the
                # next wake-up (rows committed meanwhile set it) or the poll, not an empty claim
                if handled < self.batch and not wake.is_set():
                    await self._settle(pending)
                    pending = None
                    busy.close()
                    held = False
                    self.collections.idle()  # the cycles rounds left: see collector.py
                    woken = asyncio.ensure_future(wake.wait())
                    try:
                        await asyncio.wait({stopping, woken}, timeout=idle, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        woken.cancel()
        finally:
            stopping.cancel()
            await self._settle(pending)
            busy.close()

    async def _settle(self, recorder: Recorder | None) -> None:
        """Store outcomes not stored yet; a failure is logged (the leases expire, the rows go again)."""
        try:
            await self._store(recorder)
        except Exception:
            log.exception("storing a delivery round's outcomes failed; its rows are sent again when the lease ends")

    async def _deliver_one(self, delivery: Delivery, batch: Batch, recorder: Recorder) -> None:
        """:meth:`_deliver` of a message of one row (the usual case), without its lists."""
        now = self.clock()
        decided = entitled(delivery, batch, now)
        if isinstance(decided, str):
            recorder.skip(delivery, decided)
            return
        signal, hidden = decided
        view = batch.views[delivery.subscriber_id]
        endpoint = batch.endpoints[delivery.endpoint_id]
        if view is None:  # (entitled() skipped these already)
            recorder.skip(delivery, "the subscriber has no plan any more")
            return
        own = batch.own_budgets.get((delivery.subscriber_id, endpoint.channel)) if batch.own_budgets else None
        taken = take_budgets(view, own, endpoint.channel)
        if isinstance(taken, str):
            recorder.skip(delivery, taken)
            return
        price = view.plan.alert_price
        if price > 0 and not await pay(self.db, [delivery.id], delivery.subscriber_id, price, self.clock()):
            release(taken)
            recorder.skip(delivery, "not enough credits for this pay-per-alert plan: top up")
            return
        message = self.composer.single(delivery, endpoint, signal, hidden, batch, now)
        try:
            receipt = await self.sender.send(endpoint, message)
        except DeliveryError as exc:
            self.failed += 1
            recorder.failed((delivery,), endpoint.id, exc, self.clock())
            return
        self.sent += 1
        recorder.sent_one(delivery, receipt)

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
