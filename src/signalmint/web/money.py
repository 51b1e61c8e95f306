"""The money filters (:mod:`signalmint.formatting`) for templates, and a plan's API terms in words."""

from __future__ import annotations

import jinja2

from ..formatting import fmt_credits, fmt_delay, fmt_money, fmt_price
from ..records import Plan

__all__ = ["api_terms", "register_money_filters"]


def api_terms(plan: Plan) -> str:
    """What a plan sells of the API, in the words the pricing cards, the dashboard and the 403 use.

    Derived from the terms :mod:`signalmint.web.api_access` enforces, so the two cannot disagree.

    >>> pro = Plan(id="pro", version=1, name="Pro", automations=("*",), channels=frozenset({"api"}),
    ...            api_quota=10_000, overage_price=1, rate_per_second=20, burst=40)
    >>> api_terms(pro)
    '10,000 calls/month, then $0.01 a call; up to 20 a second, bursts of 40'
    >>> from dataclasses import replace
    >>> api_terms(replace(pro, overage_price=0, rate_per_second=0.5))
    '10,000 calls/month, then none until the next month; up to 0.5 a second, bursts of 40'
    >>> api_terms(replace(pro, api_quota=None))
    'unlimited calls; up to 20 a second, bursts of 40'
    >>> api_terms(replace(pro, channels=frozenset({"web"})))
    'no API access'
    """
    if not plan.api:
        return "no API access"
    if plan.api_quota is None:
        calls = "unlimited calls"
    else:
        after = (
            f"then {fmt_money(plan.overage_price, plan.currency)} a call"
            if plan.overage_price
            else "then none until the next month"
        )
        calls = f"{plan.api_quota:,} calls/month, {after}"
    return f"{calls}; up to {plan.rate_per_second:,g} a second, bursts of {plan.burst:,}"


def register_money_filters(env: jinja2.Environment) -> None:
    """Install :func:`fmt_money`, :func:`fmt_price`, :func:`fmt_credits`, :func:`fmt_delay` and :func:`api_terms`."""
    env.filters.update(
        fmt_delay=fmt_delay, fmt_money=fmt_money, fmt_price=fmt_price, fmt_credits=fmt_credits, api_terms=api_terms
    )
