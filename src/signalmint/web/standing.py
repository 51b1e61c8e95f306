"""Where a subscription stands, in words: the badge on the dashboard, the billing page and the operator's pages."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..access import is_entitled
from ..records import Plan, Subscriber, Subscription

__all__ = ["Standing", "standing"]


@dataclass(frozen=True, slots=True)
class Standing:
    """Where a subscription stands, in words: a label, a tone for its badge, and what it means."""

    label: str
    tone: str  # good | brand | warn | bad
    detail: str
    entitled: bool


def _day(at: datetime | None) -> str:
    return f"{at:%b} {at.day}, {at.year}" if at else ""


def standing(sub: Subscription | None, plan: Plan | None, subscriber: Subscriber, now: datetime) -> Standing:
    """The subscription's state as a reader wants it (trial end, renewal, grace...)."""
    if sub is None or plan is None:
        return Standing("No plan", "bad", "You have no plan: choose one to receive signals.", False)
    ok = is_entitled(sub, plan, subscriber, now)
    if sub.state == "trialing":
        if ok and sub.trial_end is not None:
            days = max(1, math.ceil((sub.trial_end - now) / timedelta(days=1)))
            left = f"{days} day{'s' if days != 1 else ''} left"
            return Standing("Trial", "brand", f"Free trial until {_day(sub.trial_end)} ({left}).", ok)
        return Standing("Trial ended", "bad", f"Your trial ended on {_day(sub.trial_end)}.", ok)
    if sub.state == "active":
        detail = f"Renews on {_day(sub.period_end)}." if sub.period_end else "No end date."
        return Standing("Active", "good", detail, ok)
    if sub.state == "past_due":
        if ok and sub.past_due_since is not None:
            until = sub.past_due_since + timedelta(days=plan.grace_days)
            return Standing("Past due", "warn", f"A payment failed. Access continues until {_day(until)}.", ok)
        return Standing("Past due", "bad", "A payment failed and the grace period is over.", ok)
    if sub.state == "canceled":
        if ok:
            return Standing("Canceled", "warn", f"Canceled: access until {_day(sub.period_end)}.", ok)
        return Standing("Ended", "bad", f"Your plan ended on {_day(sub.period_end)}.", ok)
    if sub.state == "comped":
        if ok:
            end = f"until {_day(sub.period_end)}" if sub.period_end else "with no end date"
            return Standing("Complimentary", "brand", f"Complimentary access {end}.", ok)
        return Standing("Ended", "bad", f"Complimentary access ended on {_day(sub.period_end)}.", ok)
    return Standing("Expired", "bad", "This plan has expired.", ok)
