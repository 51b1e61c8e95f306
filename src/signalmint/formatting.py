"""Prices and plan terms as a reader expects them: ``$29/mo``, ``€9.99/mo``, ``Free``, ``15 min delay``.

Money arrives as integer minor units with an ISO 4217 code, like Stripe sends it
(2900 usd is 29.00 USD, 500 jpy is 500 yen: the yen has no minor unit). Like the
filters in :mod:`.filters`, each accepts ``None`` and then shows an em dash.

:mod:`signalmint.web.money` installs them as template filters. They live outside ``web``
so billing can use them without importing the web app.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import jinja2

from .errors import AccessError

__all__ = ["fmt_credits", "fmt_delay", "fmt_money", "fmt_price", "minor_digits", "parse_minor", "parse_money"]

DASH = "—"

# Stripe's lists of currencies without minor units, and with three decimals.
_ZERO_DECIMAL = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)
_THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})
_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "inr": "₹", "krw": "₩", "cad": "CA$", "aud": "A$"}
_INTERVALS = {"day": "/day", "week": "/wk", "month": "/mo", "year": "/yr"}


def minor_digits(currency: str) -> int:
    """How many decimals the minor unit of ``currency`` has.

    >>> minor_digits("usd"), minor_digits("JPY"), minor_digits("kwd")
    (2, 0, 3)
    """
    code = currency.lower()
    return 0 if code in _ZERO_DECIMAL else 3 if code in _THREE_DECIMAL else 2


def parse_minor(text: str, *, max_digits: int = 9) -> int:
    """An amount in minor units as a person typed it: the ASCII digits 0-9 only, at most ``max_digits``.

    ``str.isdigit`` also accepts ``²``, ``①`` or Arabic-Indic digits, which ``int`` refuses or reads as
    another number; this is the one parser of typed amounts, and its ValueError carries the message.

    >>> parse_minor("500"), parse_minor(" 0042 ")
    (500, 42)
    >>> parse_minor("²")
    Traceback (most recent call last):
    ...
    ValueError: give the amount in minor units (cents), digits 0-9 only: 500 is 5.00
    """
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > max_digits:
        raise ValueError("give the amount in minor units (cents), digits 0-9 only: 500 is 5.00")
    return int(text)


def fmt_money(amount_minor: Any, currency: str = "usd") -> str:
    """An amount in minor units, without trailing ``.00`` for whole amounts.

    >>> fmt_money(2900, "usd"), fmt_money(999, "eur"), fmt_money(129900, "usd")
    ('$29', '€9.99', '$1,299')
    >>> fmt_money(500, "jpy"), fmt_money(1250, "chf"), fmt_money(1500, "kwd")
    ('¥500', '12.50 CHF', '1.500 KWD')
    >>> fmt_money(-250, "gbp"), fmt_money(None)
    ('-£2.50', '—')
    """
    if amount_minor is None or isinstance(amount_minor, bool | jinja2.Undefined):
        return DASH
    amount = int(amount_minor)
    digits = minor_digits(currency)
    whole, part = divmod(abs(amount), 10**digits)
    number = f"{whole:,}" if part == 0 else f"{whole:,}.{part:0{digits}d}"
    sign = "-" if amount < 0 else ""
    symbol = _SYMBOLS.get(currency.lower())
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{number} {currency.upper()}"


def _ascii_digits(text: str) -> bool:
    """``str.isdigit`` also takes ``²`` or ``①``, which ``int`` refuses: only 0-9 count here."""
    return bool(text) and all("0" <= c <= "9" for c in text)


def parse_money(text: str, currency: str = "usd") -> int:
    """What a person typed as an amount of ``currency`` (``5``, ``$5``, ``5.50``, ``1,000``), in minor units.

    >>> parse_money("5"), parse_money(" $5.50 "), parse_money("1,000"), parse_money("0.5")
    (500, 550, 100000, 50)
    >>> parse_money("€12", "eur"), parse_money("12 EUR", "eur"), parse_money("500", "jpy")
    (1200, 1200, 500)
    >>> parse_money("5.555")
    Traceback (most recent call last):
    ...
    signalmint.errors.AccessError: give the amount in dollars, like 5 or 5.50 (at most 2 decimals)
    """
    code = currency.lower()
    digits = minor_digits(code)
    number = text.strip()
    symbol = _SYMBOLS.get(code)
    if symbol and number.startswith(symbol):
        number = number[len(symbol) :]
    if number.lower().endswith(code):
        number = number[: -len(code)]
    number = number.strip().replace(",", "")
    whole, dot, part = number.partition(".")
    ok = _ascii_digits(whole) and len(whole) <= 9 and (not dot or (_ascii_digits(part) and len(part) <= digits))
    if not ok:
        unit = _UNIT_NAMES.get(code, code.upper())
        if digits == 0:
            raise AccessError(f"give the amount in whole {unit}, like 500")
        raise AccessError(
            f"give the amount in {unit}, like 5 or 5.{'5'.ljust(digits, '0')} (at most {digits} decimals)"
        )
    minor: int = int(whole) * 10**digits + int(part.ljust(digits, "0") or 0)
    return minor


_UNIT_NAMES = {"usd": "dollars", "eur": "euros", "gbp": "pounds", "jpy": "yen", "cad": "dollars", "aud": "dollars"}


def fmt_price(amount_minor: Any, currency: str = "usd", interval: str | None = "month") -> str:
    """A plan's price per interval; ``Free`` when it costs nothing.

    >>> fmt_price(2900, "usd", "month"), fmt_price(999, "eur", "month"), fmt_price(0, "usd", "month")
    ('$29/mo', '€9.99/mo', 'Free')
    >>> fmt_price(49000, "usd", "year"), fmt_price(3000, "jpy", "month"), fmt_price(2900, "usd", None)
    ('$490/yr', '¥3,000/mo', '$29')
    """
    if amount_minor == 0:
        return "Free"
    money = fmt_money(amount_minor, currency)
    if money == DASH or not interval:
        return money
    return money + _INTERVALS.get(interval, f"/{interval}")


def fmt_delay(delay: Any) -> str:
    """How late a plan's signals arrive.

    >>> fmt_delay(timedelta(0)), fmt_delay(timedelta(minutes=15)), fmt_delay(timedelta(seconds=90))
    ('real time', '15 min delay', '90 s delay')
    >>> fmt_delay(timedelta(hours=2)), fmt_delay(timedelta(days=1)), fmt_delay(timedelta(minutes=90))
    ('2 h delay', '1 day delay', '90 min delay')
    """
    if not isinstance(delay, timedelta):
        return DASH
    seconds = int(delay.total_seconds())
    if seconds <= 0:
        return "real time"
    for size, unit in ((86400, " day"), (3600, " h"), (60, " min")):
        if seconds % size == 0:
            count = seconds // size
            return f"{count}{unit}{'s' if unit == ' day' and count > 1 else ''} delay"
    return f"{seconds} s delay"


def fmt_credits(micros: Any, currency: str = "usd") -> str:
    """A credit balance in micro-units (1,000,000 = one major unit), to the micro-unit when needed.

    >>> fmt_credits(12_500_000, "usd"), fmt_credits(1_000, "usd"), fmt_credits(0, "eur")
    ('$12.50', '$0.001', '€0')
    """
    if micros is None or isinstance(micros, bool | jinja2.Undefined):
        return DASH
    amount = int(micros)
    digits = minor_digits(currency)
    if amount % 10 ** (6 - digits) == 0:
        return fmt_money(amount // 10 ** (6 - digits), currency)
    whole, part = divmod(abs(amount), 1_000_000)
    symbol = _SYMBOLS.get(currency.lower())
    number = f"{whole:,}." + f"{part:06d}".rstrip("0")
    sign = "-" if amount < 0 else ""
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{number} {currency.upper()}"
