"""Recording: what became of each claimed row, retries on the Standard Webhooks schedule.

Every outcome of a round is stored in one transaction (:func:`~signalmint.store.outbox.record`),
with the endpoint changes; a worker going on to its next claim at once stores them in that claim's
transaction (one commit less a round);
a row whose lease moved to another worker is left alone. A failed row is tried again after
:func:`backoff` (with jitter, honouring a receiver's Retry-After up to a day), and after the
last attempt it is a dead letter with its reason. An endpoint that a channel found gone is
disabled, one that asked for a pause is paused.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from ..errors import DeliveryError
from ..records import Delivery, DeliveryOutcome
from ..store import Connection, Database
from ..store.outbox import record, set_endpoint_status
from .channels.base import Receipt

__all__ = [
    "MAX_RETRY_AFTER",
    "RETRY_SCHEDULE",
    "Recorder",
    "backoff",
    "failure",
    "receipt_json",
    "sent",
    "skipped",
]

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


def receipt_json(receipt: Receipt) -> dict[str, Any]:
    return {
        "channel": receipt.channel,
        "at": receipt.at.isoformat(),
        "id": receipt.provider_id,
        "detail": receipt.detail,
    }


def sent(rows: Iterable[Delivery], receipt: Receipt, message_id: str | None = None) -> list[DeliveryOutcome]:
    """Rows that went out in one message; ``message_id`` names a group's message in each receipt."""
    stored = receipt_json(receipt)
    if message_id is not None:  # which message the row went out in
        stored["message"] = message_id
    return [DeliveryOutcome(d.id, "sent", receipt=stored) for d in rows]


def skipped(rows: Iterable[Delivery], reason: str) -> list[DeliveryOutcome]:
    return [DeliveryOutcome(d.id, "skipped", error=reason) for d in rows]


def failure(delivery: Delivery, exc: DeliveryError, now: datetime) -> DeliveryOutcome:
    """A row whose message was not taken: retried later, or dead (permanent, or out of attempts)."""
    if exc.permanent:
        return DeliveryOutcome(delivery.id, "dead", error=f"permanent: {exc}")
    wait = backoff(delivery.attempts, exc.retry_after)
    if wait is None:
        return DeliveryOutcome(delivery.id, "dead", error=f"gave up after {delivery.attempts} attempts: {exc}")
    return DeliveryOutcome(delivery.id, "pending", error=str(exc), next_attempt_at=now + timedelta(seconds=wait))


class Recorder:
    """Collects a round's outcomes and endpoint changes, and stores them at the end of the round."""

    def __init__(self) -> None:
        self.outcomes: list[DeliveryOutcome] = []
        self.endpoint_changes: dict[int, tuple[str, str]] = {}  # endpoint id -> (status, reason)
        self.stored = False  # committed (set by whoever awaited the transaction)

    def add(self, outcomes: Iterable[DeliveryOutcome]) -> None:
        self.outcomes.extend(outcomes)

    def sent_one(self, delivery: Delivery, receipt: Receipt) -> None:
        """:func:`sent` of a message of one row."""
        self.outcomes.append(DeliveryOutcome(delivery.id, "sent", None, receipt_json(receipt)))

    def skip(self, delivery: Delivery, reason: str) -> None:
        """:func:`skipped` of one row."""
        self.outcomes.append(DeliveryOutcome(delivery.id, "skipped", reason))

    def failed(self, rows: Iterable[Delivery], endpoint_id: int, exc: DeliveryError, now: datetime) -> None:
        """Rows whose message the endpoint did not take; the endpoint is disabled or paused if asked."""
        if getattr(exc, "disable_endpoint", False):
            self.endpoint_changes[endpoint_id] = ("disabled", str(exc))
        if getattr(exc, "pause_endpoint", False):
            self.endpoint_changes[endpoint_id] = ("paused", str(exc))
        self.outcomes.extend(failure(d, exc, now) for d in rows)

    def write(self, conn: Connection, owner: str, now: datetime) -> list[int]:
        """Store the outcomes and endpoint changes (in the caller's transaction); the endpoints that
        changed. Only rows still leased to ``owner`` move."""
        record(conn, self.outcomes, now, owner)
        for endpoint_id, (status, reason) in self.endpoint_changes.items():
            set_endpoint_status(conn, endpoint_id, status, reason, now)
        return list(self.endpoint_changes)

    async def store(self, db: Database, owner: str, now: datetime) -> list[int]:
        """:meth:`write`, each statement committing alone on PostgreSQL (no BEGIN and COMMIT round trips)."""
        changed = await db.write(self.write, owner, now, autocommit=True)
        self.stored = True
        return changed
