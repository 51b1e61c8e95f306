"""Processing fees: exact integer arithmetic, and warnings for prices the fixed fee eats."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signalmint.billing.fees import fee_for, fee_share, net_of, price_warnings, suggested_credits
from signalmint.config import FeeModel
from signalmint.records import Plan

STRIPE = FeeModel()  # 2.9% + 30, warn above 15%


def plan(pid: str, price: int, currency: str = "usd", interval: str = "month") -> Plan:
    return Plan(id=pid, version=1, name=pid.title(), automations=(), price=price, currency=currency, interval=interval)


@pytest.mark.parametrize(
    ("amount", "fee"),
    [(0, 0), (1, 30), (17, 30), (18, 31), (100, 33), (500, 45), (1000, 59), (2900, 114), (9900, 317), (100_000, 2930)],
)
def test_fee_is_percent_rounded_half_up_plus_fixed(amount: int, fee: int) -> None:
    assert fee_for(amount, STRIPE) == fee
    assert net_of(amount, STRIPE) == amount - fee


@given(
    amount=st.integers(0, 10**9),
    percent=st.decimals(0, 100, places=2).map(float),
    fixed=st.integers(0, 1000),
)
def test_property_fee_matches_exact_rational_arithmetic(amount: int, percent: float, fixed: int) -> None:
    model = FeeModel(percent=percent, fixed=fixed)
    exact = Fraction(amount) * Fraction(str(percent)) / 100
    rounded = int(exact) + (1 if exact - int(exact) >= Fraction(1, 2) else 0)
    expected = 0 if amount == 0 else rounded + fixed
    assert fee_for(amount, model) == expected
    assert net_of(amount, model) + fee_for(amount, model) == amount
    assert fee_for(amount + 1, model) >= fee_for(amount, model)


def test_a_one_dollar_plan_warns_and_suggests_credits() -> None:
    (line,) = price_warnings([plan("tiny", 100), plan("pro", 2900), plan("free", 0)], STRIPE)
    assert line == (
        "plan tiny ($1/mo): fees of $0.33 take 33.0% of each payment (warning above 15%); "
        "sell $10 of prepaid credits instead (fees 5.9%)"
    )


def test_the_warning_line_is_the_models() -> None:
    assert price_warnings([plan("pro", 2900)], FeeModel(warn_above=3.9)) == [
        "plan pro ($29/mo): fees of $1.14 take 3.9% of each payment (warning above 3.9%); "
        "sell $100 of prepaid credits instead (fees 3.2%)"
    ]  # 114 / 2900 = 3.93% > 3.9; $100 is the first round amount with fees under (2.9 + 3.9) / 2
    assert price_warnings([plan("pro", 2900)], FeeModel(warn_above=4)) == []


def test_when_the_percent_alone_is_too_much_no_pack_is_suggested() -> None:
    (line,) = price_warnings([plan("p", 500)], FeeModel(percent=12, fixed=0, warn_above=10))
    assert line.endswith("the 12% fee alone is too much: raise the price or use another processor")
    assert suggested_credits(500, FeeModel(percent=9.9, fixed=0, warn_above=10)) == 1000  # $5: 49.5 rounds up to 10%


def test_yearly_prices_and_other_currencies_are_shown_as_sold() -> None:
    lines = price_warnings([plan("y", 200, interval="year"), plan("yen", 50, currency="jpy")], STRIPE)
    assert lines[0].startswith("plan y ($2/yr): fees of $0.36 take 18.0%")
    assert lines[1].startswith("plan yen (¥50/mo): fees of ¥31 take 62.0%")
    assert lines[1].endswith("sell ¥1,000 of prepaid credits instead (fees 5.9%)")


@given(price=st.integers(1, 10**7), percent=st.sampled_from([0.0, 1.5, 2.9, 5.0]), fixed=st.integers(0, 100))
def test_property_the_suggested_pack_is_the_smallest_round_amount_that_fits(
    price: int, percent: float, fixed: int
) -> None:
    model = FeeModel(percent=percent, fixed=fixed, warn_above=15)
    pack = suggested_credits(price, model)
    rounds = [step * 10**power * 100 for power in range(12) for step in (1, 2, 5)]
    fits = [a for a in rounds if a >= price and fee_share(a, model) <= (percent + 15) / 2]
    assert pack == (fits[0] if fits else None)
