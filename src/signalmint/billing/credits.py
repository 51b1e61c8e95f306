"""Prepaid credits: a wallet per subscriber that never goes below zero, and its ledger.

Credits are integer micro-units of the billing currency (1_000_000 = 1 USD), so a price
below a cent (an alert at 0.2 cents is 2_000 micros) stays exact. Every change of a
wallet is one ledger entry written in the same transaction, carrying the balance it
left; ``sum(delta)`` over a subscriber's entries is their balance.

* :func:`debit` takes credits only if the wallet holds them, in one conditional
  ``UPDATE ... WHERE balance >= n``: concurrent debits never overdraw, on SQLite or
  PostgreSQL, and the table's CHECK constraint is the backstop.
* With a ``ref``, an operation happens once per ``(reason, ref)``: a replayed top-up
  credits once, a retried delivery is charged once (:func:`charge_alert`).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime

from ..formatting import fmt_credits, minor_digits
from ..records import Plan
from ..store import Connection
from ..store.ledger import (
    LedgerEntry,
    charge_alert,
    credit,
    debit,
    list_entries,
    wallet_balance,
)
from ..store.reports import Purchase, owns_report, record_purchase, report_ref

__all__ = [
    "MICROS",
    "LedgerPage",
    "balance",
    "buy_report",
    "charge_alert",
    "credit",
    "debit",
    "fmt_credits",
    "ledger_csv",
    "ledger_page",
    "micros_to_minor",
    "minor_to_micros",
    "overage_micros",
    "pay_overage",
]

MICROS = 1_000_000  # micro-units in one major unit of a currency


def _micros_per_minor(currency: str) -> int:
    return int(10 ** (6 - minor_digits(currency)))


def minor_to_micros(amount_minor: int, currency: str) -> int:
    """Minor units of ``currency`` (cents) as credit micro-units: always exact.

    >>> minor_to_micros(500, "usd"), minor_to_micros(500, "jpy"), minor_to_micros(1, "kwd")
    (5000000, 500000000, 1000)
    """
    return amount_minor * _micros_per_minor(currency)


def micros_to_minor(micros: int, currency: str, *, round_up: bool = False) -> int:
    """Micro-units as minor units of ``currency``: rounded down (what a wallet can pay out), or up.

    >>> micros_to_minor(5_000_000, "usd"), micros_to_minor(1_234_567, "usd")
    (500, 123)
    >>> micros_to_minor(1_234_567, "usd", round_up=True), micros_to_minor(1_000_000, "jpy", round_up=True)
    (124, 1)
    """
    whole, rest = divmod(micros, _micros_per_minor(currency))
    return whole + (1 if round_up and rest else 0)


def balance(conn: Connection, subscriber_id: int) -> int:
    """The wallet's balance in micro-units (0 without a wallet)."""
    return wallet_balance(conn, subscriber_id)


def buy_report(conn: Connection, report_id: int, subscriber_id: int, micros: int, now: datetime) -> Purchase:
    """Pay ``micros`` of credit for one report, once: ``owned`` when bought before (nothing taken),
    ``insufficient`` when the wallet cannot pay (nothing changed), else ``bought``."""
    if owns_report(conn, report_id, subscriber_id):
        return "owned"
    if not debit(conn, subscriber_id, micros, "report", report_ref(report_id, subscriber_id), now):
        return "insufficient"
    return "bought" if record_purchase(conn, report_id, subscriber_id, micros, now) else "owned"


def overage_micros(plan: Plan, currency: str) -> int | None:
    """What one API call beyond the quota costs in credits; None when credits cannot pay for it
    (the plan refuses overage, or prices it in another currency than the wallets).

    >>> pro = Plan(id="pro", version=1, name="Pro", automations=(), api_quota=10, overage_price=2)
    >>> overage_micros(pro, "usd"), overage_micros(pro, "eur")
    (20000, None)
    """
    if plan.overage_price <= 0 or plan.currency.lower() != currency.lower():
        return None
    return minor_to_micros(plan.overage_price, currency)


def pay_overage(conn: Connection, subscriber_id: int, plan: Plan, currency: str, now: datetime) -> bool:
    """Pay one API call beyond the quota from the wallet; False when it cannot (then refuse the call)."""
    price = overage_micros(plan, currency)
    return price is not None and debit(conn, subscriber_id, price, "api_call", None, now)


# --- reading and exporting ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LedgerPage:
    entries: list[LedgerEntry]
    next_before_id: int | None  # pass as ``before_id`` for the next (older) page; None: the last page


def ledger_page(conn: Connection, subscriber_id: int, *, before_id: int | None = None, limit: int = 50) -> LedgerPage:
    """A subscriber's entries, newest first, ``limit`` at a time."""
    if not 1 <= limit <= 1000:
        raise ValueError(f"limit={limit}: pages hold 1 to 1000 entries")
    rows = list_entries(conn, subscriber_id, before_id=before_id, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return LedgerPage(rows, rows[-1].id if more else None)


CSV_COLUMNS = ["id", "created_at", "subscriber_id", "reason", "ref", "delta", "balance_after", "currency"]


def _cell(value: str) -> str:
    """Neutralise spreadsheet formulas (CSV injection), as the admin exports do.

    >>> _cell("=HYPERLINK(1)"), _cell("delivery:42")
    ("'=HYPERLINK(1)", 'delivery:42')
    """
    return "'" + value if value[:1] in {"=", "+", "-", "@", "\t", "\r"} else value


def _decimal(micros: int) -> str:
    sign = "-" if micros < 0 else ""
    whole, part = divmod(abs(micros), MICROS)
    return f"{sign}{whole}.{part:06d}"


def ledger_csv(conn: Connection, subscriber_id: int | None = None, *, currency: str, batch: int = 1000) -> str:
    """The ledger of one subscriber (None: everyone's) as CSV, oldest first.

    Amounts are major units with six decimals (``-0.002000``: an alert at 0.2 cents).
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    after = 0
    while rows := list_entries(conn, subscriber_id, after_id=after, limit=batch):
        for e in rows:
            writer.writerow(
                [
                    e.id,
                    e.created_at.isoformat(),
                    e.subscriber_id,
                    _cell(e.reason),
                    _cell(e.ref or ""),
                    _decimal(e.delta),
                    _decimal(e.balance_after),
                    currency.upper(),
                ]
            )
        after = rows[-1].id
    return out.getvalue()
