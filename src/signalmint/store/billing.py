"""Billing rows: checkouts, provider customers and prices, events seen once, payments.

Every function takes the caller's connection, so a webhook's effect and the record that
it was seen commit together (or not at all).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from ..records import Checkout, Payment, Subscription
from .accounts import _subscription
from .sql import upsert_into
from .tables import billing_customers, billing_events, checkouts, payments, provider_prices, subscriptions

__all__ = [
    "complete_checkout",
    "create_checkout",
    "customer_ref",
    "first_seen",
    "get_checkout",
    "price_ref",
    "record_payment",
    "refund_payment",
    "save_customer",
    "save_price",
    "subscriber_of_customer",
    "subscription_by_ref",
]


def _checkout(row: Any) -> Checkout:
    return Checkout(
        id=row.id,
        token=row.token,
        provider=row.provider,
        kind=row.kind,
        amount=row.amount,
        currency=row.currency,
        status=row.status,
        created_at=row.created_at,
        subscriber_id=row.subscriber_id,
        email=row.email,
        plan_id=row.plan_id,
        plan_version=row.plan_version,
        automation=row.automation,
        provider_ref=row.provider_ref,
        completed_at=row.completed_at,
    )


def create_checkout(conn: Connection, *, token: str, now: datetime, **values: Any) -> Checkout:
    """Store a new open checkout (``values``: provider, kind, amount, currency, subscriber_id...)."""
    new_id = conn.execute(
        checkouts.insert().values(token=token, status="open", created_at=now, **values).returning(checkouts.c.id)
    ).scalar_one()
    return _checkout(conn.execute(select(checkouts).where(checkouts.c.id == new_id)).one())


def get_checkout(conn: Connection, *, token: str | None = None, checkout_id: int | None = None) -> Checkout | None:
    query = select(checkouts)
    query = query.where(checkouts.c.token == token) if token is not None else query.where(checkouts.c.id == checkout_id)
    row = conn.execute(query).first()
    return _checkout(row) if row else None


def set_checkout_ref(conn: Connection, checkout_id: int, provider_ref: str) -> None:
    conn.execute(update(checkouts).where(checkouts.c.id == checkout_id).values(provider_ref=provider_ref))


def complete_checkout(
    conn: Connection, checkout_id: int, now: datetime, *, status: str = "complete", provider_ref: str | None = None
) -> bool:
    """Close an open checkout; True only for the call that closed it (so its effect applies once)."""
    values: dict[str, Any] = {"status": status, "completed_at": now}
    if provider_ref is not None:
        values["provider_ref"] = provider_ref
    done = conn.execute(
        update(checkouts).where(checkouts.c.id == checkout_id, checkouts.c.status == "open").values(**values)
    )
    return done.rowcount == 1


def first_seen(
    conn: Connection, provider: str, event_id: str, kind: str, object_ref: str | None, now: datetime
) -> bool:
    """Remember a provider's event; False when it was already seen (then do nothing with it)."""
    done = conn.execute(
        upsert_into(conn, billing_events)
        .values(provider=provider, event_id=event_id, type=kind, object_ref=object_ref, received_at=now)
        .on_conflict_do_nothing()
        .returning(billing_events.c.event_id)
    )
    return done.first() is not None  # not rowcount: psycopg reports -1 for SQLAlchemy's inserts


def customer_ref(conn: Connection, subscriber_id: int, provider: str) -> str | None:
    return conn.execute(
        select(billing_customers.c.customer_ref).where(
            billing_customers.c.subscriber_id == subscriber_id, billing_customers.c.provider == provider
        )
    ).scalar()


def save_customer(conn: Connection, subscriber_id: int, provider: str, ref: str, now: datetime) -> None:
    conn.execute(
        upsert_into(conn, billing_customers)
        .values(subscriber_id=subscriber_id, provider=provider, customer_ref=ref, created_at=now)
        .on_conflict_do_nothing()
    )


def subscriber_of_customer(conn: Connection, provider: str, ref: str) -> int | None:
    return conn.execute(
        select(billing_customers.c.subscriber_id).where(
            billing_customers.c.provider == provider, billing_customers.c.customer_ref == ref
        )
    ).scalar()


def price_ref(conn: Connection, provider: str, plan_id: str, plan_version: int) -> str | None:
    return conn.execute(
        select(provider_prices.c.price_ref).where(
            provider_prices.c.provider == provider,
            provider_prices.c.plan_id == plan_id,
            provider_prices.c.plan_version == plan_version,
        )
    ).scalar()


def plan_of_price(conn: Connection, provider: str, ref: str) -> tuple[str, int] | None:
    row = conn.execute(
        select(provider_prices.c.plan_id, provider_prices.c.plan_version).where(
            provider_prices.c.provider == provider, provider_prices.c.price_ref == ref
        )
    ).first()
    return (row.plan_id, row.plan_version) if row else None


def save_price(
    conn: Connection,
    provider: str,
    plan_id: str,
    plan_version: int,
    *,
    lookup_key: str,
    product_ref: str,
    price_ref: str,
    now: datetime,
) -> None:
    conn.execute(
        upsert_into(conn, provider_prices)
        .values(
            provider=provider,
            plan_id=plan_id,
            plan_version=plan_version,
            lookup_key=lookup_key,
            product_ref=product_ref,
            price_ref=price_ref,
            created_at=now,
        )
        .on_conflict_do_nothing()
    )


def subscription_by_ref(conn: Connection, provider: str, ref: str) -> Subscription | None:
    """Our newest subscription billed as ``ref`` at ``provider`` (open or ended)."""
    row = conn.execute(
        select(subscriptions)
        .where(subscriptions.c.provider == provider, subscriptions.c.provider_ref == ref)
        .order_by(subscriptions.c.id.desc())
        .limit(1)
    ).first()
    return _subscription(row) if row else None


def record_payment(
    conn: Connection,
    *,
    provider: str,
    provider_ref: str | None,
    kind: str,
    amount: int,
    currency: str,
    fee: int,
    now: datetime,
    subscriber_id: int | None = None,
    plan_id: str | None = None,
    automation: str | None = None,
    note: str = "",
    status: str = "paid",
) -> int | None:
    """Record money received; the id, or None when ``(provider, provider_ref)`` was already recorded."""
    values = {
        "provider": provider,
        "provider_ref": provider_ref,
        "kind": kind,
        "amount": amount,
        "currency": currency,
        "fee": fee,
        "refunded": 0,
        "status": status,
        "note": note,
        "created_at": now,
        "subscriber_id": subscriber_id,
        "plan_id": plan_id,
        "automation": automation,
    }
    done = conn.execute(upsert_into(conn, payments).values(**values).on_conflict_do_nothing().returning(payments.c.id))
    return done.scalar()


def refund_payment(conn: Connection, provider: str, provider_ref: str, refunded: int) -> bool:
    """Set the refunded total of a payment (idempotent: the provider sends the running total)."""
    done = conn.execute(
        update(payments)
        .where(payments.c.provider == provider, payments.c.provider_ref == provider_ref)
        .values(refunded=refunded, status="refunded")
    )
    return done.rowcount == 1


def list_payments(conn: Connection, *, subscriber_id: int | None = None, limit: int = 100) -> list[Payment]:
    """Payments, newest first (only ``subscriber_id``'s when given)."""
    query = select(payments).order_by(payments.c.id.desc()).limit(limit)
    if subscriber_id is not None:
        query = query.where(payments.c.subscriber_id == subscriber_id)
    return [
        Payment(
            r.id, r.subscriber_id, r.provider, r.provider_ref, r.kind, r.plan_id, r.automation, r.amount, r.currency,
            r.fee, r.refunded, r.status, r.note, r.created_at,
        )
        for r in conn.execute(query)
    ]  # fmt: skip
