"""Tips and credit top-ups: amounts checked, money recorded once, the wallet filled in the same transaction."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Connection, create_engine, select

from signalmint.billing.credits import balance
from signalmint.billing.tips import check_tip, record_credit_topup, record_tip_payment
from signalmint.config import FeeModel, TipsConfig
from signalmint.errors import AccessError
from signalmint.store import Database, is_sqlite
from signalmint.store.accounts import ensure_subscriber
from signalmint.store.ledger import list_entries
from signalmint.store.tables import payments

NOW = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)
TIPS = TipsConfig(minimum=100, maximum=10_000)
FEES = FeeModel()


def rows(db: Database) -> list[dict[str, Any]]:
    return db.read_sync(lambda conn: [dict(r._mapping) for r in conn.execute(select(payments).order_by(payments.c.id))])


def person(db: Database, email: str = "fan@example.com") -> int:
    return db.write_sync(lambda conn: ensure_subscriber(conn, email, NOW).id)


# --- checking the amount ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (99, "a tip is at least $1 (this one is $0.99)"),
        (10_001, "a tip is at most $100 (this one is $100.01)"),
        (0, "a tip is at least $1 (this one is $0)"),
        (-500, "a tip is at least $1 (this one is -$5)"),
        (5.0, "a tip is a whole number of minor units (cents), not 5.0"),
        ("500", "a tip is a whole number of minor units (cents), not '500'"),
        (True, "a tip is a whole number of minor units (cents), not True"),
    ],
)
def test_a_bad_tip_says_what_is_allowed(amount: Any, message: str) -> None:
    with pytest.raises(AccessError) as caught:
        check_tip(amount, TIPS)
    assert str(caught.value) == message


def test_tips_can_be_turned_off_and_amounts_read_in_their_currency() -> None:
    with pytest.raises(AccessError, match="tips are turned off here"):
        check_tip(500, TipsConfig(enabled=False))
    with pytest.raises(AccessError, match=r"at least €1 \(this one is €0.50\)"):
        check_tip(50, TIPS, "eur")


@given(amount=st.integers(-(10**6), 10**6))
def test_property_a_tip_passes_exactly_when_it_is_within_the_bounds(amount: int) -> None:
    inside = TIPS.minimum <= amount <= TIPS.maximum
    if inside:
        assert check_tip(amount, TIPS) == amount
    else:
        with pytest.raises(AccessError):
            check_tip(amount, TIPS)


# --- recording the money once ------------------------------------------------------------------------


def test_a_tip_is_recorded_once_with_its_fee(db: Database) -> None:
    sid = person(db)
    first = db.write_sync(
        record_tip_payment, provider="stripe", provider_ref="pi_1", amount=500, currency="usd", fees=FEES, now=NOW,
        subscriber_id=sid, automation="spikes",
    )  # fmt: skip
    again = db.write_sync(
        record_tip_payment, provider="stripe", provider_ref="pi_1", amount=500, currency="usd", fees=FEES, now=NOW,
        subscriber_id=sid, automation="spikes",
    )  # fmt: skip
    anonymous = db.write_sync(
        record_tip_payment, provider="stripe", provider_ref="pi_2", amount=1000, currency="usd", fees=FEES, now=NOW,
        fee=61,
    )  # fmt: skip
    assert first is not None and again is None and anonymous is not None
    got = [(r["kind"], r["subscriber_id"], r["automation"], r["amount"], r["fee"], r["status"]) for r in rows(db)]
    assert got == [("tip", sid, "spikes", 500, 45, "paid"), ("tip", None, None, 1000, 61, "paid")]


def test_a_top_up_fills_the_wallet_once_in_micros(db: Database) -> None:
    sid = person(db)

    def top_up(conn: Connection, provider: str, ref: str) -> int | None:
        return record_credit_topup(
            conn,
            subscriber_id=sid,
            provider=provider,
            provider_ref=ref,
            amount=1000,
            currency="usd",
            fees=FEES,
            now=NOW,
        )

    assert db.write_sync(top_up, "stripe", "cs_1") is not None
    assert db.write_sync(top_up, "stripe", "cs_1") is None  # the webhook again
    assert db.write_sync(top_up, "local", "cs_1") is not None  # another provider's ref: another payment
    assert db.read_sync(balance, sid) == 20_000_000
    assert sorted(e.ref or "" for e in db.read_sync(list_entries, sid)) == ["local:cs_1", "stripe:cs_1"]
    assert [(r["kind"], r["fee"]) for r in rows(db)] == [("credits", 59), ("credits", 59)]


def test_a_failed_top_up_transaction_leaves_neither_payment_nor_credits(db: Database) -> None:
    sid = person(db)

    def crash(conn: Connection) -> None:
        record_credit_topup(
            conn,
            subscriber_id=sid,
            provider="stripe",
            provider_ref="cs_9",
            amount=500,
            currency="usd",
            fees=FEES,
            now=NOW,
        )
        raise RuntimeError("the webhook handler died")

    with pytest.raises(RuntimeError):
        db.write_sync(crash)
    assert rows(db) == [] and db.read_sync(balance, sid) == 0


def test_racing_deliveries_of_one_top_up_credit_once(db: Database) -> None:
    sid = person(db)
    n = 16
    engine = (
        create_engine(db.url, pool_size=n, max_overflow=0, connect_args={"timeout": 30, "check_same_thread": False})
        if is_sqlite(db.engine)
        else create_engine(db.url, pool_size=n, max_overflow=0)
    )
    barrier = threading.Barrier(n, timeout=60)

    def deliver(_: int) -> int | None:
        with engine.begin() as conn:
            barrier.wait()
            return record_credit_topup(
                conn, subscriber_id=sid, provider="stripe", provider_ref="cs_r", amount=2500, currency="usd",
                fees=FEES, now=NOW,
            )  # fmt: skip

    try:
        with ThreadPoolExecutor(max_workers=n) as pool:
            results = list(pool.map(deliver, range(n)))
    finally:
        engine.dispose()
    assert sum(r is not None for r in results) == 1
    assert db.read_sync(balance, sid) == 25_000_000
    assert len(rows(db)) == 1 and len(db.read_sync(list_entries, sid)) == 1
