"""API overage: meter events for Stripe-billed subscriptions, credits for the others, reported once."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, select

from signalmint.billing.credits import balance, credit
from signalmint.billing.metering import (
    MeterEvent,
    mark_reported,
    pending_meter_events,
    record_overage,
    report_meter_events,
)
from signalmint.billing.usage import UsageMeter, month_of
from signalmint.config import PlanConfig, Settings, WebConfig
from signalmint.errors import BillingError, StoreError
from signalmint.records import Automation
from signalmint.store import Database, sync_automations
from signalmint.store.accounts import confirm_subscriber, ensure_subscriber, start_subscription
from signalmint.store.ledger import get_meter_event, list_entries
from signalmint.store.plans import load_plans
from signalmint.store.tables import meter_events
from signalmint.store.usage import add_usage, get_usage
from signalmint.web.app import create_app

NOW = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)
_emails = itertools.count()


def person(db: Database) -> int:
    return db.write_sync(lambda conn: ensure_subscriber(conn, f"m{next(_emails)}@example.com", NOW).id)


def identifiers(db: Database) -> list[tuple[str, int]]:
    def read(conn: Connection) -> list[tuple[str, int]]:
        rows = conn.execute(select(meter_events.c.identifier, meter_events.c.value).order_by(meter_events.c.created_at))
        return [(r.identifier, r.value) for r in rows]

    return db.read_sync(read)


# --- the store side --------------------------------------------------------------------------------


def test_identifiers_come_from_the_overage_counter_and_a_replay_gets_the_same_one(db: Database) -> None:
    sid = person(db)

    def flush(conn: Connection, crash: bool) -> MeterEvent | None:
        add_usage(conn, {(sid, "2026-03"): (5, 3)}, NOW)
        event = record_overage(conn, sid, 3, "2026-03", NOW)
        if crash:
            raise RuntimeError("the process died before commit")
        return event

    with pytest.raises(RuntimeError):
        db.write_sync(flush, True)
    assert identifiers(db) == []
    first = db.write_sync(flush, False)
    assert first is not None and first.identifier == f"ovg-{sid}-2026-03-3" and first.value == 3
    assert db.write_sync(record_overage, sid, 3, "2026-03", NOW) is None  # the same event again: dropped
    second = db.write_sync(flush, False)
    assert second is not None and second.identifier == f"ovg-{sid}-2026-03-6"
    assert identifiers(db) == [(f"ovg-{sid}-2026-03-3", 3), (f"ovg-{sid}-2026-03-6", 3)]


def test_overage_must_be_counted_before_it_is_metered(db: Database) -> None:
    sid = person(db)
    with pytest.raises(StoreError, match="add them to usage first"):
        db.write_sync(record_overage, sid, 1, "2026-03", NOW)
    db.write_sync(add_usage, {(sid, "2026-03"): (3, 1)}, NOW)
    with pytest.raises(StoreError, match="fewer than the 2 to report"):
        db.write_sync(record_overage, sid, 2, "2026-03", NOW)
    with pytest.raises(ValueError, match="at least one call"):
        db.write_sync(record_overage, sid, 0, "2026-03", NOW)


def test_the_usage_meter_flush_writes_usage_and_meter_events_together(db: Database) -> None:
    sid, other = person(db), person(db)
    meter = UsageMeter(db, clock=lambda: NOW, meter_event="api_calls_over")
    for _ in range(4):
        meter.record(sid, "2026-03", overage=False)
    for _ in range(3):
        meter.record(sid, "2026-03", overage=True, metered=True)
    meter.record(other, "2026-03", overage=True)  # paid from credits: no meter event
    asyncio.run(meter.flush())
    for _ in range(2):
        meter.record(sid, "2026-03", overage=True, metered=True)
    asyncio.run(meter.flush())
    assert db.read_sync(get_usage, sid, "2026-03") == (9, 5)
    assert identifiers(db) == [(f"ovg-{sid}-2026-03-3", 3), (f"ovg-{sid}-2026-03-5", 2)]
    event = db.read_sync(get_meter_event, f"ovg-{sid}-2026-03-5")
    assert event is not None and event.event_name == "api_calls_over" and event.reported_at is None


# --- reporting -------------------------------------------------------------------------------------


class Provider:
    """A stand-in for the provider's meter-event endpoint: dedups by identifier, can refuse or die."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.totals: dict[str, int] = {}
        self.refuse: set[str] = set()
        self.die_after_taking: set[str] = set()

    async def send(self, event: MeterEvent) -> None:
        self.calls.append(event.identifier)
        if event.identifier in self.refuse:
            raise BillingError(f"no customer for {event.identifier}")
        self.totals.setdefault(event.identifier, event.value)
        if event.identifier in self.die_after_taking:
            self.die_after_taking.discard(event.identifier)
            raise RuntimeError("connection lost after the provider took the event")


def test_pending_events_are_reported_once_and_failures_retried_up_to_a_limit(db: Database) -> None:
    a, b = person(db), person(db)
    db.write_sync(add_usage, {(a, "2026-03"): (10, 4), (b, "2026-03"): (10, 2)}, NOW)
    db.write_sync(record_overage, a, 4, "2026-03", NOW)
    db.write_sync(record_overage, b, 2, "2026-03", NOW)
    provider = Provider()
    provider.refuse = {f"ovg-{b}-2026-03-2"}
    assert asyncio.run(report_meter_events(db, provider.send, clock=lambda: NOW, max_attempts=3)) == 1
    assert asyncio.run(report_meter_events(db, provider.send, clock=lambda: NOW, max_attempts=3)) == 0
    failed = db.read_sync(get_meter_event, f"ovg-{b}-2026-03-2")
    assert failed is not None and failed.attempts == 2 and failed.last_error == f"no customer for ovg-{b}-2026-03-2"
    assert asyncio.run(report_meter_events(db, provider.send, clock=lambda: NOW, max_attempts=3)) == 0
    assert db.read_sync(pending_meter_events, max_attempts=3) == []  # three strikes: waits for a person
    assert provider.calls.count(f"ovg-{a}-2026-03-4") == 1 and provider.calls.count(f"ovg-{b}-2026-03-2") == 3
    provider.refuse.clear()
    assert asyncio.run(report_meter_events(db, provider.send, clock=lambda: NOW, max_attempts=4)) == 1
    assert provider.totals == {f"ovg-{a}-2026-03-4": 4, f"ovg-{b}-2026-03-2": 2}
    assert not db.write_sync(mark_reported, f"ovg-{a}-2026-03-4", NOW)  # already marked


def test_an_event_taken_but_not_marked_is_resent_with_the_same_identifier(db: Database) -> None:
    sid = person(db)
    db.write_sync(add_usage, {(sid, "2026-03"): (7, 7)}, NOW)
    db.write_sync(record_overage, sid, 7, "2026-03", NOW)
    provider = Provider()
    provider.die_after_taking = {f"ovg-{sid}-2026-03-7"}
    with pytest.raises(RuntimeError):
        asyncio.run(report_meter_events(db, provider.send, clock=lambda: NOW))
    assert asyncio.run(report_meter_events(db, provider.send, clock=lambda: NOW)) == 1
    assert provider.calls == [f"ovg-{sid}-2026-03-7"] * 2  # sent twice, one identifier: counted once
    assert provider.totals == {f"ovg-{sid}-2026-03-7": 7}
    assert db.read_sync(pending_meter_events) == []


# --- the API: Stripe meters it, credits pay for it, or it is refused ------------------------------


class Api:
    def __init__(self, db: Database) -> None:
        plans = [
            PlanConfig(id="pro", channels=["web", "api"], api_quota=2, overage_price=5, rate_per_second=100, burst=100)
        ]
        settings = Settings(
            database=db.url, web=WebConfig(public_rate_per_second=1000, public_burst=1000),
            secret="test-secret-0123456789abcdef", plans=plans,
        )  # fmt: skip
        now = datetime.now(UTC)
        db.write_sync(sync_automations, [Automation("spikes", "Spikes", "", "synthetic", "volume_spike", {})], now)
        self.app = create_app(settings, db)
        self.ctx: Any = self.app.state.ctx
        self.db = db
        self.client = TestClient(self.app)
        self.plan = db.read_sync(load_plans, current_only=True)
        self.ids: dict[str, int] = {}
        self.keys: dict[str, str] = {}

    def subscriber(self, name: str, provider: str) -> int:
        (plan,) = [p for p in self.plan.values() if p.id == "pro"]

        def write(conn: Connection) -> int:
            sid = ensure_subscriber(conn, f"{name}{next(_emails)}@example.com", NOW).id
            confirm_subscriber(conn, sid, NOW)
            start_subscription(conn, sid, plan, NOW, origin="test", state="active", provider=provider)
            return sid

        self.ids[name] = self.db.write_sync(write)
        self.keys[name] = asyncio.run(self.ctx.accounts.create_key("k", subscriber_id=self.ids[name]))[1]
        return self.ids[name]

    def calls(self, name: str, n: int) -> list[Any]:
        headers = {"Authorization": f"Bearer {self.keys[name]}"}
        return [self.client.get("/api/v1/automations", headers=headers) for _ in range(n)]


def test_api_overage_is_metered_for_stripe_paid_from_credits_or_refused(db: Database) -> None:
    api = Api(db)
    stripe = api.subscriber("stripe", "stripe")
    wallet = api.subscriber("wallet", "local")
    broke = api.subscriber("broke", "none")
    db.write_sync(credit, wallet, 120_000, "topup", "pi_w", NOW)  # 12 cents: two calls at 5 cents

    assert [r.status_code for r in api.calls("stripe", 5)] == [200] * 5
    assert [r.status_code for r in api.calls("wallet", 5)] == [200, 200, 200, 200, 429]
    refused = api.calls("broke", 3)
    assert [r.status_code for r in refused] == [200, 200, 429]
    assert "top up credits to keep calling at $0.05 a call" in refused[-1].json()["detail"]
    assert int(refused[-1].headers["retry-after"]) >= 1

    assert db.read_sync(balance, wallet) == 20_000
    assert [e.delta for e in db.read_sync(list_entries, wallet)] == [-50_000, -50_000, 120_000]
    assert db.read_sync(balance, stripe) == 0 and db.read_sync(list_entries, stripe) == []

    asyncio.run(api.ctx.meter.flush())
    month = month_of(datetime.now(UTC))
    assert db.read_sync(get_usage, stripe, month) == (5, 3)
    assert db.read_sync(get_usage, wallet, month) == (4, 2)
    assert db.read_sync(get_usage, broke, month) == (2, 0)
    assert identifiers(db) == [(f"ovg-{stripe}-{month}-3", 3)]
