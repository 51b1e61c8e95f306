"""Credits: a wallet that never goes negative, under real concurrency, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, create_engine, select, text, update
from sqlalchemy.exc import IntegrityError

from signalmint.billing.credits import (
    balance,
    charge_alert,
    credit,
    debit,
    ledger_csv,
    ledger_page,
    micros_to_minor,
    minor_to_micros,
    pay_overage,
)
from signalmint.errors import BillingError
from signalmint.records import LedgerEntry, Plan
from signalmint.store import Database, is_sqlite
from signalmint.store.accounts import ensure_subscriber
from signalmint.store.ledger import ledger_sums, list_entries
from signalmint.store.tables import wallets

NOW = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)
T = TypeVar("T")
_emails = itertools.count()


def people(db: Database, n: int) -> list[int]:
    def write(conn: Connection) -> list[int]:
        return [ensure_subscriber(conn, f"p{next(_emails)}@example.com", NOW).id for _ in range(n)]

    return db.write_sync(write)


def entries(db: Database, subscriber_id: int) -> list[LedgerEntry]:
    return sorted(db.read_sync(list_entries, subscriber_id, limit=10_000), key=lambda e: e.id)


def race(
    db: Database, n: int, fn: Callable[[Connection], T], before: Callable[[Connection], Any] | None = None
) -> list[T]:
    """``fn`` in ``n`` threads, each in its own transaction on its own connection, released together.

    ``before`` runs in each transaction before the barrier, so every thread has done it
    before any goes on (the worst interleaving for a read-then-write).
    """
    engine: Engine = (
        create_engine(db.url, pool_size=n, max_overflow=0, connect_args={"timeout": 30, "check_same_thread": False})
        if is_sqlite(db.engine)
        else create_engine(db.url, pool_size=n, max_overflow=0)
    )
    barrier = threading.Barrier(n, timeout=60)

    def one(_: int) -> T:
        with engine.begin() as conn:
            if before is not None:
                before(conn)
            barrier.wait()
            return fn(conn)

    try:
        with ThreadPoolExecutor(max_workers=n) as pool:
            return list(pool.map(one, range(n)))
    finally:
        engine.dispose()


# --- the basics ------------------------------------------------------------------------------------


def test_credit_then_debit_writes_one_entry_each_with_the_balance_it_left(db: Database) -> None:
    (sid,) = people(db, 1)
    assert db.read_sync(balance, sid) == 0
    assert db.write_sync(credit, sid, 5_000_000, "topup", "pay_1", NOW) == 5_000_000
    assert db.write_sync(debit, sid, 2_000, "alert", None, NOW)
    assert db.write_sync(debit, sid, 1_998_000, "api_call", None, NOW)
    assert db.read_sync(balance, sid) == 3_000_000
    got = [(e.delta, e.balance_after, e.reason, e.ref) for e in entries(db, sid)]
    assert got == [
        (5_000_000, 5_000_000, "topup", "pay_1"),
        (-2_000, 4_998_000, "alert", None),
        (-1_998_000, 3_000_000, "api_call", None),
    ]


def test_a_debit_the_wallet_cannot_pay_changes_nothing(db: Database) -> None:
    sid, empty = people(db, 2)
    db.write_sync(credit, sid, 10, "grant", None, NOW)
    assert not db.write_sync(debit, sid, 11, "alert", None, NOW)
    assert not db.write_sync(debit, empty, 1, "alert", None, NOW)  # no wallet at all
    assert db.read_sync(balance, sid) == 10
    assert len(entries(db, sid)) == 1 and entries(db, empty) == []
    assert db.write_sync(debit, sid, 10, "alert", None, NOW)
    assert db.read_sync(balance, sid) == 0


@pytest.mark.parametrize("micros", [0, -5, 1.5, True])
def test_amounts_are_positive_integers(db: Database, micros: Any) -> None:
    (sid,) = people(db, 1)
    with pytest.raises(ValueError, match="positive number of micro-units"):
        db.write_sync(credit, sid, micros, "grant", None, NOW)
    with pytest.raises(ValueError, match="positive number of micro-units"):
        db.write_sync(debit, sid, micros, "alert", None, NOW)


def test_the_check_constraint_is_a_backstop_against_any_other_write(db: Database) -> None:
    (sid,) = people(db, 1)
    db.write_sync(credit, sid, 5, "grant", None, NOW)

    def overdraw(conn: Connection) -> None:
        conn.execute(update(wallets).where(wallets.c.subscriber_id == sid).values(balance=wallets.c.balance - 6))

    with pytest.raises(IntegrityError, match=r"ck_wallets_balance_never_negative|CHECK constraint failed"):
        db.write_sync(overdraw)
    assert db.read_sync(balance, sid) == 5


# --- once per (reason, ref) ---------------------------------------------------------------------


def test_a_replayed_top_up_credits_once(db: Database) -> None:
    (sid,) = people(db, 1)
    for _ in range(3):
        assert db.write_sync(credit, sid, 1_000_000, "topup", "stripe:pi_123", NOW) == 1_000_000
    assert db.read_sync(balance, sid) == 1_000_000
    assert len(entries(db, sid)) == 1


def test_a_ref_names_one_change_only(db: Database) -> None:
    sid, other = people(db, 2)
    db.write_sync(credit, sid, 1_000, "topup", "pi_1", NOW)
    with pytest.raises(BillingError, match="a ref names one change"):
        db.write_sync(credit, sid, 2_000, "topup", "pi_1", NOW)
    with pytest.raises(BillingError, match="a ref names one change"):
        db.write_sync(credit, other, 1_000, "topup", "pi_1", NOW)
    db.write_sync(credit, sid, 1_000, "grant", "pi_1", NOW)  # another reason: another change
    assert db.read_sync(balance, sid) == 2_000 and db.read_sync(balance, other) == 0


def test_a_retried_delivery_is_charged_once_even_when_the_wallet_is_empty_by_then(db: Database) -> None:
    (sid,) = people(db, 1)
    db.write_sync(credit, sid, 5_000, "topup", "pi_1", NOW)
    assert db.write_sync(charge_alert, sid, 41, 2_000, NOW)
    assert db.write_sync(charge_alert, sid, 42, 3_000, NOW)
    assert db.read_sync(balance, sid) == 0
    assert db.write_sync(charge_alert, sid, 42, 3_000, NOW)  # the retry: already paid
    assert not db.write_sync(charge_alert, sid, 43, 1, NOW)  # a new alert: cannot pay
    assert [e.ref for e in entries(db, sid)] == ["pi_1", "delivery:41", "delivery:42"]


def test_concurrent_duplicates_of_one_ref_apply_once(db: Database) -> None:
    (sid,) = people(db, 1)
    assert set(race(db, 20, lambda conn: credit(conn, sid, 7_000, "topup", "pi_dup", NOW))) == {7_000}
    assert db.read_sync(balance, sid) == 7_000
    assert all(race(db, 20, lambda conn: debit(conn, sid, 3_000, "alert", "delivery:9", NOW)))
    assert db.read_sync(balance, sid) == 4_000
    assert [e.delta for e in entries(db, sid)] == [7_000, -3_000]


# --- never negative, under real concurrency ------------------------------------------------------


def test_fifty_concurrent_debits_through_the_writer_take_exactly_the_balance(db: Database) -> None:
    (sid,) = people(db, 1)
    db.write_sync(credit, sid, 10, "grant", None, NOW)

    async def spend() -> list[bool]:
        return await asyncio.gather(*(db.write(debit, sid, 1, "api_call", None, NOW) for _ in range(50)))

    results = asyncio.run(spend())
    assert results.count(True) == 10 and results.count(False) == 40
    assert db.read_sync(balance, sid) == 0
    assert db.read_sync(ledger_sums, [sid]) == {sid: 0}


def test_fifty_racing_transactions_on_their_own_connections_take_exactly_the_balance(db: Database) -> None:
    (sid,) = people(db, 1)
    db.write_sync(credit, sid, 10, "grant", None, NOW)

    def read(conn: Connection) -> None:  # every transaction has seen balance 10 before any debits
        assert conn.execute(select(wallets.c.balance).where(wallets.c.subscriber_id == sid)).scalar() == 10

    results = race(db, 50, lambda conn: debit(conn, sid, 1, "api_call", None, NOW), before=read)
    assert results.count(True) == 10
    assert db.read_sync(balance, sid) == 0
    after = [e.balance_after for e in entries(db, sid)]
    assert sorted(after[1:], reverse=True) == list(range(9, -1, -1))


def test_the_race_is_real_a_naive_read_then_write_oversells_under_it(db: Database) -> None:
    """The same harness with a read-then-write debit: every thread read 10, so all "succeed"."""
    (sid,) = people(db, 1)
    db.write_sync(credit, sid, 10, "grant", None, NOW)
    seen: dict[int, int] = {}

    def read(conn: Connection) -> None:
        seen[threading.get_ident()] = conn.execute(
            text(f"SELECT balance FROM wallets WHERE subscriber_id={sid}")
        ).scalar_one()

    def naive(conn: Connection) -> bool:
        held = seen[threading.get_ident()]
        if held < 1:
            return False
        conn.execute(text(f"UPDATE wallets SET balance={held - 1} WHERE subscriber_id={sid}"))
        return True

    results = race(db, 20, naive, before=read)
    assert results.count(True) == 20  # 20 sold out of a balance of 10: what debit() prevents
    assert db.read_sync(balance, sid) == 9


# --- property: the ledger adds up -----------------------------------------------------------------

OPS = st.lists(
    st.tuples(st.sampled_from(["credit", "debit", "replay"]), st.integers(0, 2), st.integers(1, 50), st.booleans()),
    max_size=30,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_property_the_ledger_sums_to_the_balance_which_never_goes_negative(db: Database, ops: list[Any]) -> None:
    ids = people(db, 3)
    model = dict.fromkeys(ids, 0)
    recorded: dict[str, tuple[str, int, int]] = {}  # ref -> (kind, subscriber, amount) of recorded changes
    issued: list[tuple[str, int, int, str]] = []
    for n, (kind, who, amount, with_ref) in enumerate(ops):
        sid = ids[who]
        ref: str | None = f"r{n}-{sid}" if with_ref else None
        if kind == "replay":
            if not issued:
                continue
            kind, sid, amount, ref = issued[n % len(issued)]
        elif ref is not None:
            issued.append((kind, sid, amount, ref))
        done = ref is not None and ref in recorded
        if kind == "credit":
            after = db.write_sync(credit, sid, amount, "topup", ref, NOW)
            if not done:
                model[sid] += amount
            assert after == model[sid]
        else:
            ok = db.write_sync(debit, sid, amount, "alert", ref, NOW)
            if done:
                assert ok
            else:
                assert ok == (model[sid] >= amount)
                if ok:
                    model[sid] -= amount
                else:
                    continue
        if ref is not None:
            recorded[ref] = (kind, sid, amount)
        assert db.read_sync(balance, sid) >= 0
    sums = db.read_sync(ledger_sums, ids)
    for sid in ids:
        got = db.read_sync(balance, sid)
        assert got == model[sid] >= 0
        assert sums.get(sid, 0) == got
        running = 0
        for entry in entries(db, sid):
            running += entry.delta
            assert entry.balance_after == running >= 0


@settings(deadline=None)
@given(amount=st.integers(-(10**12), 10**12), currency=st.sampled_from(["usd", "jpy", "kwd", "eur"]))
def test_property_minor_units_round_trip_through_micros(amount: int, currency: str) -> None:
    micros = minor_to_micros(amount, currency)
    assert micros_to_minor(micros, currency) == amount == micros_to_minor(micros, currency, round_up=True)
    assert micros_to_minor(micros + 1, currency) == amount
    assert micros_to_minor(micros + 1, currency, round_up=True) == amount + 1


# --- reading and exporting ------------------------------------------------------------------------


def test_ledger_pages_walk_newest_first_without_gaps_or_repeats(db: Database) -> None:
    sid, other = people(db, 2)
    for i in range(7):
        db.write_sync(credit, sid, i + 1, "grant", None, NOW)
        db.write_sync(credit, other, 100, "grant", None, NOW)
    seen: list[int] = []
    cursor: int | None = None
    sizes = []
    while True:
        page = db.read_sync(ledger_page, sid, before_id=cursor, limit=3)
        sizes.append(len(page.entries))
        seen += [e.delta for e in page.entries]
        if page.next_before_id is None:
            break
        cursor = page.next_before_id
    assert sizes == [3, 3, 1]
    assert seen == [7, 6, 5, 4, 3, 2, 1]
    with pytest.raises(ValueError, match="1 to 1000"):
        db.read_sync(ledger_page, sid, limit=0)


def test_csv_exports_are_exact_and_formula_safe(db: Database) -> None:
    sid, other = people(db, 2)
    db.write_sync(credit, sid, 1_500_000, "topup", '=HYPERLINK("http://x")', NOW)
    db.write_sync(charge_alert, sid, 7, 2_000, NOW)
    db.write_sync(credit, other, 3, "grant", "@SUM(A1)", NOW)
    rows = list(csv.reader(io.StringIO(db.read_sync(ledger_csv, sid, currency="usd", batch=1))))
    assert rows[0] == ["id", "created_at", "subscriber_id", "reason", "ref", "delta", "balance_after", "currency"]
    assert [r[3:] for r in rows[1:]] == [
        ["topup", '\'=HYPERLINK("http://x")', "1.500000", "1.500000", "USD"],
        ["alert", "delivery:7", "-0.002000", "1.498000", "USD"],
    ]
    everyone = list(csv.reader(io.StringIO(db.read_sync(ledger_csv, currency="eur"))))
    assert len(everyone) == 4 and everyone[3][4] == "'@SUM(A1)" and everyone[3][5] == "0.000003"
    assert [int(r[0]) for r in everyone[1:]] == sorted(int(r[0]) for r in everyone[1:])


# --- overage paid from credits -------------------------------------------------------------------


def test_overage_is_paid_in_micros_only_in_the_wallet_currency(db: Database) -> None:
    (sid,) = people(db, 1)
    plan = Plan(
        id="pro", version=1, name="Pro", automations=(), channels=frozenset({"api"}), api_quota=1, overage_price=2
    )
    refusing = Plan(id="p", version=1, name="P", automations=(), channels=frozenset({"api"}), api_quota=1)
    db.write_sync(credit, sid, 50_000, "topup", "pi", NOW)
    assert db.write_sync(pay_overage, sid, plan, "usd", NOW)
    assert db.write_sync(pay_overage, sid, plan, "usd", NOW)
    assert not db.write_sync(pay_overage, sid, plan, "usd", NOW)  # 10_000 left, a call is 20_000
    assert not db.write_sync(pay_overage, sid, plan, "eur", NOW)
    assert not db.write_sync(pay_overage, sid, refusing, "usd", NOW)
    assert db.read_sync(balance, sid) == 10_000
    assert [e.reason for e in entries(db, sid)] == ["topup", "api_call", "api_call"]
