"""The money filters (:mod:`signalmint.money`) for templates."""

from __future__ import annotations

import jinja2

from ..money import DASH, fmt_credits, fmt_delay, fmt_money, fmt_price, minor_digits

__all__ = ["DASH", "fmt_credits", "fmt_delay", "fmt_money", "fmt_price", "minor_digits", "register_money_filters"]


def register_money_filters(env: jinja2.Environment) -> None:
    """Install :func:`fmt_money`, :func:`fmt_price`, :func:`fmt_credits` and :func:`fmt_delay` into ``env``."""
    env.filters.update(fmt_delay=fmt_delay, fmt_money=fmt_money, fmt_price=fmt_price, fmt_credits=fmt_credits)
