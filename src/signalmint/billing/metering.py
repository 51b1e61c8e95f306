"""API overage of Stripe-billed subscriptions, as meter events reported exactly once.

Calls beyond the quota of a subscription that Stripe bills are not paid from credits:
they are stored as rows of ``meter_events`` and reported to the provider later (Stripe's
``/v1/billing/meter_events``), each with an identifier the provider deduplicates on.

The identifier comes from our own counter, ``usage.overage`` for the subscriber and month,
read in the transaction that just added the calls to it::

    ovg-<subscriber>-<YYYY-MM>-<overage count after these calls>

A flush that fails and is replayed computes the same identifier (and the primary key
drops a second copy); a report that reached the provider but was not marked reported is
sent again with the same identifier, which the provider ignores.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

from ..errors import BillingError, StoreError
from ..records import MeterEvent
from ..store import Connection, Database
from ..store.ledger import (
    insert_meter_event,
    mark_meter_failed,
    mark_meter_reported,
    pending_meter_events,
)
from ..store.usage import lock_overage

__all__ = [
    "MeterEvent",
    "MeterSend",
    "mark_reported",
    "pending_meter_events",
    "record_overage",
    "report_meter_events",
    "run_meter_reporter",
]

log = logging.getLogger("signalmint.billing.metering")


class MeterSend(Protocol):
    """Reports one event to the provider; raises :class:`BillingError` when it was not taken."""

    def __call__(self, event: MeterEvent, /) -> Awaitable[None]: ...


def record_overage(
    conn: Connection,
    subscriber_id: int,
    calls: int,
    period: str,
    now: datetime,
    *,
    event_name: str = "api_overage",
) -> MeterEvent | None:
    """Store ``calls`` overage calls to report; None when this very event was already stored.

    Call it in the transaction that added the calls to ``usage`` (as the usage meter's
    flush does): that counter names the event, and its row lock orders concurrent writers.
    """
    if calls <= 0:
        raise ValueError(f"calls={calls}: an overage event reports at least one call")
    counted = lock_overage(conn, subscriber_id, period)
    if counted is None or counted < calls:
        raise StoreError(
            f"subscriber {subscriber_id} has {counted or 0} overage calls counted for {period}, fewer than the "
            f"{calls} to report: add them to usage first, in the same transaction"
        )
    event = MeterEvent(
        identifier=f"ovg-{subscriber_id}-{period}-{counted}",
        subscriber_id=subscriber_id,
        event_name=event_name,
        value=calls,
        period=period,
        created_at=now,
    )
    return event if insert_meter_event(conn, event) else None


def mark_reported(conn: Connection, identifier: str, now: datetime) -> bool:
    """The provider took the event; False when it was already marked."""
    return mark_meter_reported(conn, identifier, now)


async def report_meter_events(
    db: Database,
    send: MeterSend,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    limit: int = 100,
    max_attempts: int = 10,
) -> int:
    """Send what is pending, oldest first, marking each event as it is taken; how many were taken.

    An event whose ``send`` raised :class:`BillingError` counts an attempt and its error, and
    is tried again next round, up to ``max_attempts`` (then it waits for a person).
    """
    events = await db.read(pending_meter_events, limit=limit, max_attempts=max_attempts)
    taken = 0
    for event in events:
        try:
            await send(event)
        except BillingError as exc:
            log.warning("meter event %s not taken: %s", event.identifier, exc)
            await db.write(mark_meter_failed, event.identifier, str(exc))
            continue
        await db.write(mark_meter_reported, event.identifier, clock())
        taken += 1
    return taken


async def run_meter_reporter(
    db: Database,
    send: MeterSend,
    *,
    every: float = 60.0,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Report pending events every ``every`` seconds until cancelled; a failed round is logged."""
    while True:
        try:
            await report_meter_events(db, send, clock=clock)
        except Exception:
            log.exception("meter events could not be reported; trying again in %s s", every)
        await asyncio.sleep(every)
