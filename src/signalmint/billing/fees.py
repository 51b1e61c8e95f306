"""Processing fees: what a payment costs, what is left, and prices the fees eat.

A card processor takes a percent of each payment plus a fixed amount (2.9% + 30 cents by
default, :class:`~signalmint.config.FeeModel`). The fixed part hurts small prices: a
1 USD/month plan loses a third of every payment. :func:`price_warnings` says so, and
suggests selling prepaid credits in one larger payment instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal

from ..config import FeeModel
from ..formatting import fmt_money, fmt_price, minor_digits
from ..records import Plan

__all__ = ["fee_for", "fee_share", "net_of", "price_warnings", "suggested_credits"]


def fee_for(amount: int, model: FeeModel) -> int:
    """The fee on a payment of ``amount`` minor units: percent (rounded half up) plus fixed.

    >>> model = FeeModel(percent=2.9, fixed=30)
    >>> fee_for(2900, model), fee_for(100, model), fee_for(1000, model), fee_for(0, model)
    (114, 33, 59, 0)
    >>> fee_for(50, FeeModel(percent=1, fixed=0))  # 0.5 cents rounds up
    1
    """
    if amount <= 0:
        return 0
    part = (Decimal(amount) * Decimal(str(model.percent)) / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return int(part) + model.fixed


def net_of(amount: int, model: FeeModel) -> int:
    """What is left of a payment after its fee (negative when the fee exceeds a tiny payment).

    >>> net_of(2900, FeeModel()), net_of(20, FeeModel())
    (2786, -11)
    """
    return amount - fee_for(amount, model)


def fee_share(amount: int, model: FeeModel) -> float:
    """The fee as a percent of the payment.

    >>> round(fee_share(100, FeeModel()), 1), round(fee_share(2900, FeeModel()), 1)
    (33.0, 3.9)
    """
    return 100.0 * fee_for(amount, model) / amount if amount > 0 else 0.0


def suggested_credits(price: int, model: FeeModel, currency: str = "usd") -> int | None:
    """The smallest round amount (1, 2, 5, 10, 20, 50... major units), at least ``price``, whose fees
    stay halfway between the percent (which no amount avoids) and ``warn_above``; None when the
    percent alone reaches ``warn_above``.

    >>> suggested_credits(100, FeeModel()), suggested_credits(1500, FeeModel())  # fees under 8.95%
    (1000, 2000)
    >>> suggested_credits(100, FeeModel(percent=15)) is None
    True
    """
    if model.percent >= model.warn_above:
        return None
    target = (model.percent + model.warn_above) / 2
    unit = int(10 ** minor_digits(currency))
    for power in range(0, 12):
        for step in (1, 2, 5):
            amount: int = step * 10**power * unit
            if amount >= price and fee_share(amount, model) <= target:
                return amount
    return None


def price_warnings(plans: Iterable[Plan], model: FeeModel) -> list[str]:
    """A sentence for each paid plan whose fees take more than ``warn_above`` percent of its price.

    >>> basic = Plan(id="basic", version=1, name="Basic", automations=(), price=100)
    >>> pro = Plan(id="pro", version=1, name="Pro", automations=(), price=2900)
    >>> for line in price_warnings([basic, pro], FeeModel()):
    ...     print(line)  # doctest: +ELLIPSIS
    plan basic ($1/mo): fees of $0.33 take 33.0% of each payment (warning above 15%); sell $10 ... (fees 5.9%)
    """

    warnings = []
    for plan in plans:
        if plan.price <= 0:
            continue
        share = fee_share(plan.price, model)
        if share <= model.warn_above:
            continue
        fee = fee_for(plan.price, model)
        text = (
            f"plan {plan.id} ({fmt_price(plan.price, plan.currency, plan.interval)}): fees of "
            f"{fmt_money(fee, plan.currency)} take {share:.1f}% of each payment (warning above {model.warn_above:g}%)"
        )
        pack = suggested_credits(plan.price, model, plan.currency)
        if pack is not None:
            text += (
                f"; sell {fmt_money(pack, plan.currency)} of prepaid credits instead "
                f"(fees {fee_share(pack, model):.1f}%)"
            )
        else:
            text += f"; the {model.percent:g}% fee alone is too much: raise the price or use another processor"
        warnings.append(text)
    return warnings
