"""Who receives a stored report, enqueued in the transaction that stores it (or records a purchase).

:func:`publish` stores a rendering and, when this rendering is the one kept, puts one row per
entitled endpoint in the report outbox (:mod:`signalmint.store.report_outbox`) before the
transaction commits: a report is never stored without its deliveries, and the unique
``(report, endpoint)`` means a restart or a second engine never enqueues one twice.
:func:`enqueue_purchase` does the same for one buyer, in the purchase's transaction.

The audience: every subscriber whose open subscription is to a plan in the definition's
``audience.plans`` and entitles at that instant (trialing, active, past due within grace,
canceled until the period's end, comped: :func:`~signalmint.access.is_entitled`), on each
active endpoint whose channel the plan allows and the installation can send. A channel the
subscriber switched off (preferences) gets nothing; during the subscriber's quiet hours the
row waits until they end (a report is one message: it is held, never digested). Reports do not
count against the daily alert budgets. A buyer receives the report at once on every active
endpoint they have not switched off: they asked for it a moment ago, and paid for this report
rather than for a plan's channels.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ..access import quiet_until
from ..config import Settings, delivery_channels
from ..config.reports import ReportConfig
from ..records import Report
from ..store import Connection
from ..store.accounts import open_subscriptions
from ..store.outbox import list_endpoints
from ..store.plans import load_plans
from ..store.report_outbox import all_preferences, enqueue_reports
from ..store.reports import store_report
from .access import in_audience

__all__ = ["enqueue_purchase", "find_spec", "publish", "recipients"]


def find_spec(settings: Settings, automation: str, name: str) -> ReportConfig | None:
    """The definition of a stored report in the current settings (None: removed since)."""
    for candidate in settings.automations:
        if candidate.name == automation:
            return next((r for r in candidate.reports if r.name == name), None)
    return None


def recipients(
    conn: Connection, spec: ReportConfig, report: Report, channels: Iterable[str], now: datetime
) -> list[dict[str, Any]]:
    """Report outbox rows for the definition's audience at ``now`` (see the module docstring)."""
    sendable = frozenset(channels)
    plans = load_plans(conn)
    entitled = []
    for subscription, subscriber in open_subscriptions(conn):
        plan = plans.get((subscription.plan_id, subscription.plan_version))
        if plan is not None and in_audience(spec, plan, subscription, subscriber, now):
            entitled.append((plan, subscriber))
    if not entitled:
        return []
    by_subscriber: dict[int, list[Any]] = {}
    for endpoint in list_endpoints(conn, active_only=True):
        if endpoint.channel in sendable:
            by_subscriber.setdefault(endpoint.subscriber_id, []).append(endpoint)
    prefs = all_preferences(conn)
    rows: dict[int, dict[str, Any]] = {}
    for plan, subscriber in entitled:
        for endpoint in by_subscriber.get(subscriber.id, ()):
            pref = prefs.get((subscriber.id, endpoint.channel))
            if endpoint.channel not in plan.channels or (pref is not None and not pref.enabled):
                continue
            held = quiet_until(now, pref, subscriber.timezone) if pref is not None else None
            rows[endpoint.id] = {
                "report_id": report.id,
                "endpoint_id": endpoint.id,
                "subscriber_id": subscriber.id,
                "reason": "plan",
                "next_attempt_at": held or now,
            }
    return list(rows.values())


def publish(conn: Connection, settings: Settings, report: Report, now: datetime) -> tuple[Report, bool, int]:
    """Store ``report`` and enqueue its deliveries in this transaction: (the stored report,
    whether this rendering was the one kept, rows enqueued)."""
    kept, ours = store_report(conn, report)
    if not ours:
        return kept, False, 0
    spec = find_spec(settings, kept.automation, kept.name)
    if spec is None:
        return kept, True, 0
    return kept, True, enqueue_reports(conn, recipients(conn, spec, kept, delivery_channels(settings), now), now)


def enqueue_purchase(conn: Connection, settings: Settings, report_id: int, subscriber_id: int, now: datetime) -> int:
    """Enqueue a bought report to the buyer's endpoints, due at once (call in the purchase's transaction)."""
    sendable = delivery_channels(settings)
    prefs = all_preferences(conn, [subscriber_id])
    rows = [
        {
            "report_id": report_id,
            "endpoint_id": endpoint.id,
            "subscriber_id": subscriber_id,
            "reason": "purchase",
            "next_attempt_at": now,
        }
        for endpoint in list_endpoints(conn, subscriber_id, active_only=True)
        if endpoint.channel in sendable
        and ((pref := prefs.get((subscriber_id, endpoint.channel))) is None or pref.enabled)
    ]
    return enqueue_reports(conn, rows, now)
