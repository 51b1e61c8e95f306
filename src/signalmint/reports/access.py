"""Who may read a stored report: pure functions over records (no I/O).

A report is readable by the operator; by a subscriber whose plan is in the definition's
audience while that subscription is entitled (trial, active, grace...); by whoever bought it;
and by everyone when it is the definition's public sample.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from ..access import is_entitled
from ..config.reports import ReportConfig
from ..records import Plan, Report, Subscriber, Subscription

__all__ = ["in_audience", "may_read", "sample_key"]


def in_audience(
    spec: ReportConfig,
    plan: Plan | None,
    subscription: Subscription | None,
    subscriber: Subscriber | None,
    now: datetime,
) -> bool:
    """Whether this subscriber receives the definition's reports through their plan at ``now``."""
    if plan is None or subscription is None or subscriber is None or plan.id not in spec.audience.plans:
        return False
    return is_entitled(subscription, plan, subscriber, now)


def sample_key(spec: ReportConfig, stored: Iterable[Report]) -> str | None:
    """The period key of the definition's public sample among its ``stored`` reports (None: none).

    ``first`` is the oldest stored period; a period key names one (public once it is stored).
    """
    if spec.sample == "none":
        return None
    keys = [(r.period_end, r.period_key) for r in stored if r.name == spec.name]
    if spec.sample == "first":
        return min(keys)[1] if keys else None
    return spec.sample if any(k == spec.sample for _, k in keys) else None


def may_read(report: Report, *, admin: bool, audience: bool, bought: bool, sample: str | None) -> bool:
    """Whether a viewer may read ``report`` (see the module's rules)."""
    return admin or audience or bought or report.period_key == sample
