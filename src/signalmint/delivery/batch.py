"""What one delivery round knows: the claimed rows' signals, endpoints and subscribers.

:mod:`~signalmint.delivery.claim` fills a :class:`Batch` in a handful of queries; the later
steps read it (:mod:`~signalmint.delivery.decide`, :mod:`~signalmint.delivery.compose`) and
no step queries the store per row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..access import Grant
from ..records import Endpoint, Plan, Signal, quick
from ..store.series import Series

__all__ = ["Allowance", "Batch", "Body", "SubscriberView"]

#: A signal as one view sees it: (masked signal JSON, webhook payload, the payload encoded).
Body = tuple[dict[str, Any], dict[str, Any], bytes]


@dataclass(slots=True)
class Allowance:
    """Messages a daily budget still allows this round; taken before any await, so concurrent
    messages cannot overspend it."""

    left: int


@quick
@dataclass(frozen=True, slots=True)
class SubscriberView:
    """What a subscriber holds when the round runs: a grant per automation, the plan, its budget."""

    grants: Mapping[str, Grant]
    plan: Plan
    budget: Allowance | None  # the plan's alerts per day left today (None: no daily budget)


@dataclass(slots=True)
class Batch:
    signals: dict[int, Signal]
    endpoints: dict[int, Endpoint]
    views: dict[int, SubscriberView | None]  # subscriber id -> None: no plan any more
    titles: dict[str, str]  # automation -> its title
    at: datetime
    own_budgets: dict[tuple[int, str], Allowance] = field(default_factory=dict)  # (subscriber, channel)
    series: dict[int, Series] = field(default_factory=dict)  # the chart of each signal that has one
    charts: dict[int, bytes] = field(default_factory=dict)  # one PNG per signal, for the people-read channels
    bodies: dict[tuple[int, frozenset[str]], Body] = field(default_factory=dict)  # (signal, hidden) -> body
