"""What an operator does to subscribers: comp, extend a trial, change a plan, export the list.

The admin pages and the admin API both call these, so they behave the same.
Each change goes through the writer and evicts the subscriber's cached access,
so entitlements follow at once.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import AccessError
from ..records import Plan, Subscription
from ..store import Database
from ..store.accounts import (
    SubscriberSummary,
    current_subscription,
    get_subscriber,
    list_subscribers,
    set_subscription_state,
    start_subscription,
)

__all__ = ["Operator", "summary_json"]

CSV_COLUMNS = [
    "id", "email", "confirmed", "created_at", "plan", "plan_version", "state", "trial_end", "period_end",
    "watchlist",
]  # fmt: skip


def summary_json(item: SubscriberSummary, plans: dict[tuple[str, int], Plan]) -> dict[str, Any]:
    sub = item.subscription
    plan = plans.get((sub.plan_id, sub.plan_version)) if sub else None
    return {
        "id": item.subscriber.id,
        "email": item.subscriber.email,
        "confirmed": item.subscriber.confirmed,
        "created_at": item.subscriber.created_at.isoformat(),
        "plan": sub.plan_id if sub else None,
        "plan_version": sub.plan_version if sub else None,
        "state": sub.state if sub else None,
        "trial_end": sub.trial_end.isoformat() if sub and sub.trial_end else None,
        "period_end": sub.period_end.isoformat() if sub and sub.period_end else None,
        "channels": sorted(plan.channels) if plan else [],
        "watchlist": sorted(item.watchlist),
        "last_delivery": None,  # deliveries arrive with the delivery issue
    }


class Operator:
    def __init__(
        self,
        db: Database,
        current_plans: Callable[[], list[Plan]],
        evict: Callable[[int], None],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.current_plans = current_plans
        self.evict = evict
        self.clock = clock

    def _require(self, subscriber_id: int) -> Subscription | None:
        if self.db.read_sync(get_subscriber, subscriber_id) is None:
            raise AccessError(f"no subscriber with id {subscriber_id}")
        return self.db.read_sync(current_subscription, subscriber_id)

    def _plan(self, plan_id: str) -> Plan:
        for plan in self.current_plans():
            if plan.id == plan_id:
                return plan
        raise AccessError(f"no plan {plan_id!r}; plans: {', '.join(p.id for p in self.current_plans())}")

    async def change_plan(self, subscriber_id: int, plan_id: str) -> Subscription:
        """Move a subscriber to the current version of a plan (a trial if it has one, else active)."""
        self._require(subscriber_id)
        plan = self._plan(plan_id)
        sub = await self.db.write(start_subscription, subscriber_id, plan, self.clock(), origin="admin")
        self.evict(subscriber_id)
        return sub

    async def comp(self, subscriber_id: int, plan_id: str | None = None, until: datetime | None = None) -> Subscription:
        """Complimentary access to a plan (the current one by default) until ``until`` (None: forever)."""
        current = self._require(subscriber_id)
        if until is not None and until.tzinfo is None:
            raise AccessError("until needs a timezone")
        if plan_id is None and current is None:
            raise AccessError("this subscriber has no plan; name the plan to comp")
        plan = self._plan(plan_id or current.plan_id)  # type: ignore[union-attr]
        sub = await self.db.write(
            start_subscription, subscriber_id, plan, self.clock(), origin="comp", state="comped", period_end=until
        )
        self.evict(subscriber_id)
        return sub

    async def extend_trial(self, subscriber_id: int, days: int) -> Subscription:
        """Add days to a trial (a subscriber not trialing starts one on their current plan)."""
        if not 1 <= days <= 365:
            raise AccessError("extend a trial by 1 to 365 days")
        current = self._require(subscriber_id)
        if current is None:
            raise AccessError("this subscriber has no plan to extend")
        now = self.clock()
        start = (
            current.trial_end if current.state == "trialing" and current.trial_end and current.trial_end > now else now
        )
        sub = await self.db.write(
            set_subscription_state, current.id, now, state="trialing", trial_end=start + timedelta(days=days)
        )
        self.evict(subscriber_id)
        return sub

    def export_csv(self) -> str:
        """Every subscriber as CSV (the operator owns the audience)."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        after = 0
        while True:
            batch = self.db.read_sync(list_subscribers, after_id=after, limit=1000)
            if not batch:
                break
            for item in batch:
                sub = item.subscription
                writer.writerow(
                    [
                        item.subscriber.id,
                        _safe(item.subscriber.email),
                        item.subscriber.confirmed,
                        item.subscriber.created_at.isoformat(),
                        sub.plan_id if sub else "",
                        sub.plan_version if sub else "",
                        sub.state if sub else "",
                        sub.trial_end.isoformat() if sub and sub.trial_end else "",
                        sub.period_end.isoformat() if sub and sub.period_end else "",
                        _safe(" ".join(sorted(item.watchlist))),
                    ]
                )
            after = batch[-1].subscriber.id
        return out.getvalue()


def _safe(value: str) -> str:
    """Neutralise spreadsheet formulas (CSV injection): a cell may not start with = + - @.

    >>> _safe("=HYPERLINK(1)")
    "'=HYPERLINK(1)"
    """
    return "'" + value if value[:1] in {"=", "+", "-", "@", "\t", "\r"} else value
