"""Tips and credit top-ups: check the amount, then record the money once.

Providers call :func:`record_tip_payment` and :func:`record_credit_topup` when a checkout
completes, inside the transaction that marks the provider's event as seen. Both are
idempotent by ``(provider, provider_ref)``: a redelivered webhook records nothing twice,
and a top-up credits the wallet in the same transaction as its payment row.
"""

from __future__ import annotations

from datetime import datetime

from ..config import FeeModel, TipsConfig
from ..errors import AccessError
from ..money import fmt_money
from ..store import Connection
from ..store.billing import record_payment
from .credits import credit, minor_to_micros
from .fees import fee_for

__all__ = ["check_tip", "record_credit_topup", "record_tip_payment"]


def check_tip(amount: object, tips: TipsConfig, currency: str = "usd") -> int:
    """The tip in minor units, or :class:`AccessError` saying what is allowed.

    >>> tips = TipsConfig(minimum=100, maximum=10_000)
    >>> check_tip(500, tips)
    500
    >>> check_tip(50, tips)
    Traceback (most recent call last):
    ...
    signalmint.errors.AccessError: a tip is at least $1 (this one is $0.50)
    """

    if not tips.enabled:
        raise AccessError("tips are turned off here")
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise AccessError(f"a tip is a whole number of minor units (cents), not {amount!r}")
    if amount < tips.minimum:
        raise AccessError(
            f"a tip is at least {fmt_money(tips.minimum, currency)} (this one is {fmt_money(amount, currency)})"
        )
    if amount > tips.maximum:
        raise AccessError(
            f"a tip is at most {fmt_money(tips.maximum, currency)} (this one is {fmt_money(amount, currency)})"
        )
    return amount


def record_tip_payment(
    conn: Connection,
    *,
    provider: str,
    provider_ref: str,
    amount: int,
    currency: str,
    fees: FeeModel,
    now: datetime,
    subscriber_id: int | None = None,
    automation: str | None = None,
    fee: int | None = None,
    note: str = "",
) -> int | None:
    """Record a tip; the payment's id, or None when this provider ref was already recorded.

    ``fee``: what the provider reports it took; None computes it from the fee model.
    """
    return record_payment(
        conn,
        provider=provider,
        provider_ref=provider_ref,
        kind="tip",
        amount=amount,
        currency=currency,
        fee=fee_for(amount, fees) if fee is None else fee,
        now=now,
        subscriber_id=subscriber_id,
        automation=automation,
        note=note,
    )


def record_credit_topup(
    conn: Connection,
    *,
    subscriber_id: int,
    provider: str,
    provider_ref: str,
    amount: int,
    currency: str,
    fees: FeeModel,
    now: datetime,
    fee: int | None = None,
    note: str = "",
) -> int | None:
    """Record a credits purchase and fill the wallet with it; None when already recorded (then
    the wallet is left alone)."""
    payment_id = record_payment(
        conn,
        provider=provider,
        provider_ref=provider_ref,
        kind="credits",
        amount=amount,
        currency=currency,
        fee=fee_for(amount, fees) if fee is None else fee,
        now=now,
        subscriber_id=subscriber_id,
        note=note,
    )
    if payment_id is not None:
        credit(conn, subscriber_id, minor_to_micros(amount, currency), "topup", f"{provider}:{provider_ref}", now)
    return payment_id
