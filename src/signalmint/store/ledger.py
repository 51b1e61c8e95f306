"""Wallet, ledger and meter-event rows, and the credits and debits that change a wallet.

Wallet balances are integer micro-units of the billing currency (1_000_000 = one major
unit). Every function takes the caller's connection: a wallet change and its ledger
entry commit together or not at all. The never-negative rule lives in one statement,
:func:`take_from_wallet` (``UPDATE ... WHERE balance >= n RETURNING balance``), with the
table's CHECK constraint as the backstop. :func:`credit` and :func:`debit` pair a wallet change
with its entry, once per ``(reason, ref)``; :func:`charge_alert` is the delivery worker's debit
(here, below both delivery and billing, so the worker charges credits without importing billing).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update

from ..errors import BillingError
from ..records import LedgerEntry, MeterEvent
from .sql import upsert_into
from .tables import ledger, meter_events, wallets

__all__ = [
    "LedgerEntry",
    "MeterEvent",
    "add_to_wallet",
    "charge_alert",
    "credit",
    "debit",
    "find_entry",
    "get_meter_event",
    "insert_entry",
    "insert_meter_event",
    "ledger_sums",
    "list_entries",
    "mark_meter_failed",
    "mark_meter_reported",
    "pending_meter_events",
    "take_from_wallet",
    "wallet_balance",
]


def _entry(row: Any) -> LedgerEntry:
    return LedgerEntry(
        id=row.id,
        subscriber_id=row.subscriber_id,
        delta=row.delta,
        balance_after=row.balance_after,
        reason=row.reason,
        ref=row.ref,
        created_at=row.created_at,
    )


# --- wallets -------------------------------------------------------------------------------------
# The hot statements are built once, with bound parameters: building one per call costs more
# than running it (bench/ledger.py).

_BALANCE = select(wallets.c.balance).where(wallets.c.subscriber_id == bindparam("sid"))
_TAKE = (
    update(wallets)
    .where(wallets.c.subscriber_id == bindparam("sid"), wallets.c.balance >= bindparam("n"))
    .values(balance=wallets.c.balance - bindparam("n"), updated_at=bindparam("now"))
    .returning(wallets.c.balance)
)
_FIND = select(ledger).where(ledger.c.reason == bindparam("reason"), ledger.c.ref == bindparam("ref"))
_dialect_statements: dict[str, tuple[Any, Any]] = {}


def _statements(conn: Connection) -> tuple[Any, Any]:
    """(add to a wallet, append a ledger entry) for this connection's dialect."""
    name = conn.dialect.name
    if name not in _dialect_statements:
        add = upsert_into(conn, wallets).values(
            subscriber_id=bindparam("sid"), balance=bindparam("n"), updated_at=bindparam("now")
        )
        add = add.on_conflict_do_update(
            index_elements=[wallets.c.subscriber_id],
            set_={"balance": wallets.c.balance + add.excluded.balance, "updated_at": add.excluded.updated_at},
        ).returning(wallets.c.balance)
        entry = (
            upsert_into(conn, ledger)
            .values(
                subscriber_id=bindparam("sid"),
                delta=bindparam("delta"),
                balance_after=bindparam("after"),
                reason=bindparam("reason"),
                ref=bindparam("ref"),
                created_at=bindparam("now"),
            )
            .on_conflict_do_nothing()
            .returning(ledger.c.id)
        )
        _dialect_statements[name] = (add, entry)
    return _dialect_statements[name]


def wallet_balance(conn: Connection, subscriber_id: int) -> int:
    """The balance in micro-units; 0 for a subscriber without a wallet."""
    found = conn.execute(_BALANCE, {"sid": subscriber_id}).scalar()
    return int(found) if found is not None else 0


def add_to_wallet(conn: Connection, subscriber_id: int, micros: int, now: datetime) -> int:
    """Add ``micros`` (creating the wallet if needed); the new balance."""
    return int(conn.execute(_statements(conn)[0], {"sid": subscriber_id, "n": micros, "now": now}).scalar_one())


def take_from_wallet(conn: Connection, subscriber_id: int, micros: int, now: datetime) -> int | None:
    """Take ``micros`` if the wallet holds that much; the new balance, or None (nothing changed).

    One conditional statement, so concurrent takes can never overdraw: PostgreSQL re-checks
    the condition on the row a concurrent transaction committed, SQLite runs one writer.
    """
    done = conn.execute(_TAKE, {"sid": subscriber_id, "n": micros, "now": now}).scalar()
    return int(done) if done is not None else None


# --- the ledger ----------------------------------------------------------------------------------


def insert_entry(
    conn: Connection,
    subscriber_id: int,
    delta: int,
    balance_after: int,
    reason: str,
    ref: str | None,
    now: datetime,
) -> int | None:
    """Append an entry; its id, or None when ``(reason, ref)`` is already in the ledger."""
    params = {"sid": subscriber_id, "delta": delta, "after": balance_after, "reason": reason, "ref": ref, "now": now}
    found = conn.execute(_statements(conn)[1], params).scalar()
    return int(found) if found is not None else None


def find_entry(conn: Connection, reason: str, ref: str) -> LedgerEntry | None:
    row = conn.execute(_FIND, {"reason": reason, "ref": ref}).first()
    return _entry(row) if row else None


def list_entries(
    conn: Connection,
    subscriber_id: int | None = None,
    *,
    before_id: int | None = None,
    after_id: int | None = None,
    limit: int = 50,
) -> list[LedgerEntry]:
    """Entries of one subscriber (None: everyone's): newest first below ``before_id``,
    or oldest first above ``after_id`` (for exports)."""
    query = select(ledger).limit(limit)
    if subscriber_id is not None:
        query = query.where(ledger.c.subscriber_id == subscriber_id)
    if after_id is not None:
        query = query.where(ledger.c.id > after_id).order_by(ledger.c.id)
    else:
        query = query.order_by(ledger.c.id.desc())
        if before_id is not None:
            query = query.where(ledger.c.id < before_id)
    return [_entry(r) for r in conn.execute(query)]


def ledger_sums(conn: Connection, subscriber_ids: Iterable[int]) -> dict[int, int]:
    """The sum of every entry per subscriber (a wallet's balance must equal it)."""
    ids = list(subscriber_ids)
    rows = conn.execute(
        select(ledger.c.subscriber_id, func.sum(ledger.c.delta))
        .where(ledger.c.subscriber_id.in_(ids))
        .group_by(ledger.c.subscriber_id)
    )
    return {int(sid): int(total) for sid, total in rows}


# --- meter events ------------------------------------------------------------------------------


def _meter_event(row: Any) -> MeterEvent:
    return MeterEvent(
        identifier=row.identifier,
        subscriber_id=row.subscriber_id,
        event_name=row.event_name,
        value=row.value,
        period=row.period,
        created_at=row.created_at,
        reported_at=row.reported_at,
        attempts=row.attempts,
        last_error=row.last_error,
    )


def insert_meter_event(conn: Connection, event: MeterEvent) -> bool:
    """Store an event to report; False when its identifier is already stored."""
    done = conn.execute(
        upsert_into(conn, meter_events)
        .values(
            identifier=event.identifier,
            subscriber_id=event.subscriber_id,
            event_name=event.event_name,
            value=event.value,
            period=event.period,
            created_at=event.created_at,
            reported_at=None,
            attempts=0,
            last_error=None,
        )
        .on_conflict_do_nothing()
        .returning(meter_events.c.identifier)
    ).scalar()
    return done is not None  # (rowcount is -1 for this statement on psycopg)


def get_meter_event(conn: Connection, identifier: str) -> MeterEvent | None:
    row = conn.execute(select(meter_events).where(meter_events.c.identifier == identifier)).first()
    return _meter_event(row) if row else None


def pending_meter_events(conn: Connection, *, limit: int = 100, max_attempts: int = 10) -> list[MeterEvent]:
    """Events not reported yet, oldest first; those that failed ``max_attempts`` times wait for a person."""
    rows = conn.execute(
        select(meter_events)
        .where(meter_events.c.reported_at.is_(None), meter_events.c.attempts < max_attempts)
        .order_by(meter_events.c.created_at, meter_events.c.identifier)
        .limit(limit)
    )
    return [_meter_event(r) for r in rows]


def mark_meter_reported(conn: Connection, identifier: str, now: datetime) -> bool:
    done = conn.execute(
        update(meter_events)
        .where(meter_events.c.identifier == identifier, meter_events.c.reported_at.is_(None))
        .values(reported_at=now, attempts=meter_events.c.attempts + 1, last_error=None)
    )
    return done.rowcount == 1


def mark_meter_failed(conn: Connection, identifier: str, error: str) -> None:
    conn.execute(
        update(meter_events)
        .where(meter_events.c.identifier == identifier)
        .values(attempts=meter_events.c.attempts + 1, last_error=error[:2000])
    )


# --- credits and debits: a wallet change and its entry, once per (reason, ref) ------------------------


def _amount(micros: int) -> None:
    if isinstance(micros, bool) or not isinstance(micros, int) or micros <= 0:
        raise ValueError(f"an amount of credits is a positive number of micro-units, not {micros!r}")


def _replayed(conn: Connection, subscriber_id: int, delta: int, reason: str, ref: str) -> bool:
    """Whether ``(reason, ref)`` is already in the ledger, for this very change (else: an error)."""
    entry = find_entry(conn, reason, ref)
    if entry is None:
        return False
    if (entry.subscriber_id, entry.delta) != (subscriber_id, delta):
        raise BillingError(
            f"ledger entry {reason} {ref!r} already records {entry.delta} micros for subscriber "
            f"{entry.subscriber_id}, not {delta} for subscriber {subscriber_id}: a ref names one change"
        )
    return True


def credit(conn: Connection, subscriber_id: int, micros: int, reason: str, ref: str | None, now: datetime) -> int:
    """Add ``micros`` to the wallet (once per ``(reason, ref)``); the balance after."""
    _amount(micros)
    if ref is not None and _replayed(conn, subscriber_id, micros, reason, ref):
        return wallet_balance(conn, subscriber_id)
    after = add_to_wallet(conn, subscriber_id, micros, now)
    if insert_entry(conn, subscriber_id, micros, after, reason, ref, now) is None and ref is not None:
        # A concurrent transaction recorded the same (reason, ref) and committed while we waited
        # for the wallet row: it stands, ours is undone (we still hold the row, so this succeeds).
        _replayed(conn, subscriber_id, micros, reason, ref)
        undone = take_from_wallet(conn, subscriber_id, micros, now)
        if undone is None:
            raise BillingError(f"could not undo a duplicate credit {reason} {ref!r}")
        return undone
    return after


def debit(conn: Connection, subscriber_id: int, micros: int, reason: str, ref: str | None, now: datetime) -> bool:
    """Take ``micros`` from the wallet if it holds them.

    True when the debit stands (made now, or made before under the same ``(reason, ref)``);
    False when the wallet cannot pay, and then nothing changed.
    """
    _amount(micros)
    if ref is not None and _replayed(conn, subscriber_id, -micros, reason, ref):
        return True
    after = take_from_wallet(conn, subscriber_id, micros, now)
    if after is None:
        return False
    if insert_entry(conn, subscriber_id, -micros, after, reason, ref, now) is None and ref is not None:
        # a concurrent duplicate committed while we waited for the wallet row: it stands, ours is undone
        _replayed(conn, subscriber_id, -micros, reason, ref)
        add_to_wallet(conn, subscriber_id, micros, now)
    return True


def charge_alert(conn: Connection, subscriber_id: int, delivery_id: int, micros: int, now: datetime) -> bool:
    """Charge one delivered alert of a pay-per-alert plan; a retried delivery is charged once.

    False: the wallet cannot pay (the caller holds the alert back or drops it).
    """
    return debit(conn, subscriber_id, micros, "alert", f"delivery:{delivery_id}", now)
