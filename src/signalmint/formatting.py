"""How signalmint shows numbers, times and money to a reader, on the site and in every message.

One module for the web pages (:mod:`signalmint.web.filters` and :mod:`signalmint.web.money`
install these as template filters) and for the channels' messages
(:mod:`signalmint.delivery.render`), so a page and an email never disagree. It sits below both:
billing, delivery and web import it, it imports nothing of theirs.

Every formatter is a pure function that accepts ``None`` (and NaN, for numbers) and then shows
an em dash, so a template never has to guard a missing value. ``live.js`` formats streamed
signals with the same rules; keep the two in step.

Money arrives as integer minor units with an ISO 4217 code, like Stripe sends it (2900 usd is
29.00 USD, 500 jpy is 500 yen: the yen has no minor unit): ``$29/mo``, ``€9.99/mo``, ``Free``,
``15 min delay``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import jinja2

from .errors import AccessError

__all__ = [
    "DASH",
    "TEXT_LIMIT",
    "direction",
    "fmt_ago",
    "fmt_credits",
    "fmt_date",
    "fmt_delay",
    "fmt_iso",
    "fmt_money",
    "fmt_num",
    "fmt_pct",
    "fmt_price",
    "fmt_ratio",
    "fmt_time",
    "fmt_value",
    "fmt_z",
    "minor_digits",
    "parse_minor",
    "parse_money",
    "ratio_tier",
    "short_hash",
]

DASH = "—"

# -- numbers and times -----------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing (also a jinja Undefined) or not a number."""
    if value is None or isinstance(value, (bool, jinja2.Undefined)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _trim(text: str) -> str:
    """Drop trailing zeros after a decimal point: ``"1.50"`` -> ``"1.5"``, ``"150"`` stays."""
    return text.rstrip("0").rstrip(".") if "." in text else text


def _moment(value: Any) -> datetime | None:
    """Naive datetimes are taken to be UTC already (records always carry UTC)."""
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def fmt_time(value: Any) -> str:
    """A moment as minutes in UTC.

    >>> fmt_time(datetime(2013, 2, 27, 21, 0, 59, tzinfo=UTC))
    '2013-02-27 21:00 UTC'
    >>> fmt_time(None)
    '—'
    """
    moment = _moment(value)
    return DASH if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


def fmt_date(value: Any) -> str:
    """A calendar day in UTC.

    >>> fmt_date(datetime(2013, 2, 7, 23, 30, tzinfo=UTC))
    'Feb 7, 2013'
    >>> fmt_date(None)
    '—'
    """
    moment = _moment(value)
    return DASH if moment is None else f"{moment:%b} {moment.day}, {moment.year}"


def fmt_iso(value: Any) -> str:
    """ISO 8601 in UTC for ``<time datetime=...>``; empty when unknown.

    >>> fmt_iso(datetime(2013, 2, 27, 21, 0, tzinfo=UTC))
    '2013-02-27T21:00:00Z'
    >>> fmt_iso(None)
    ''
    """
    moment = _moment(value)
    return "" if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


_AGO_UNITS = (
    (365 * 86400, "year", "years"),
    (30 * 86400, "month", "months"),
    (86400, "day", "days"),
    (3600, "h", "h"),
    (60, "min", "min"),
)


def fmt_ago(value: Any, now: datetime | None = None) -> str:
    """How long before ``now`` (default: the current time) ``value`` was.

    >>> now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    >>> fmt_ago(datetime(2024, 5, 1, 11, 57, tzinfo=UTC), now)
    '3 min ago'
    >>> fmt_ago(datetime(2024, 5, 1, 11, 59, 30, tzinfo=UTC), now)
    'just now'
    >>> fmt_ago(datetime(2024, 4, 29, 12, 0, tzinfo=UTC), now)
    '2 days ago'
    >>> fmt_ago(datetime(2013, 2, 27, tzinfo=UTC), now)
    '11 years ago'
    >>> fmt_ago(datetime(2024, 5, 1, 14, 0, tzinfo=UTC), now)
    'in 2 h'
    >>> fmt_ago(None)
    '—'
    """
    moment = _moment(value)
    if moment is None:
        return DASH
    reference = _moment(now) or datetime.now(UTC)
    seconds = (reference - moment).total_seconds()
    span = abs(seconds)
    if span < 60:
        return "just now"
    for size, one, many in _AGO_UNITS:
        if span >= size:
            count = int(span // size)
            text = f"{count} {one if count == 1 else many}"
            return f"{text} ago" if seconds > 0 else f"in {text}"
    raise AssertionError("unreachable: the last unit is one minute")  # pragma: no cover


def fmt_num(value: Any) -> str:
    """A compact number: separators below a million, then M, B and T.

    >>> [fmt_num(v) for v in (0, 7, 12.5, 1234, 999_999, 1_520_000, 150e6, 3.2e9, -4.5e12)]
    ['0', '7', '12.5', '1,234', '999,999', '1.52M', '150M', '3.2B', '-4.5T']
    >>> fmt_num(float("nan")), fmt_num(None), fmt_num(float("inf"))
    ('—', '—', '∞')
    """
    number = _number(value)
    if number is None:
        return DASH
    if math.isinf(number):
        return "∞" if number > 0 else "-∞"
    size = abs(number)
    if round(size, 2) < 1000:
        text = _trim(f"{number:.2f}")
        return "0" if text == "-0" else text
    if round(size) < 1_000_000:
        return f"{number:,.0f}"
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if size >= scale * 0.9995 or suffix == "M":
            scaled = number / scale
            digits = max(0, 2 - int(math.log10(abs(scaled))))
            return _trim(f"{scaled:.{digits}f}") + suffix
    raise AssertionError("unreachable: M is the fallback")  # pragma: no cover


def fmt_ratio(value: Any) -> str:
    """A volume multiple: one decimal, none from 100 up.

    >>> fmt_ratio(7.43), fmt_ratio(3), fmt_ratio(240.6), fmt_ratio(float("inf")), fmt_ratio(None)
    ('7.4×', '3.0×', '241×', '∞×', '—')
    """
    number = _number(value)
    if number is None:
        return DASH
    if math.isinf(number):
        return "∞×"
    return f"{number:.0f}×" if abs(number) >= 100 else f"{number:.1f}×"


def fmt_z(value: Any) -> str:
    """A robust z-score in standard deviations.

    >>> fmt_z(12.31), fmt_z(float("inf")), fmt_z(-2), fmt_z(float("nan"))
    ('12.3σ', '∞σ', '-2.0σ', '—')
    """
    number = _number(value)
    if number is None:
        return DASH
    if math.isinf(number):
        return "∞σ" if number > 0 else "-∞σ"
    return f"{number:.1f}σ"


def fmt_pct(value: Any) -> str:
    """A signed percentage from a fraction.

    >>> fmt_pct(0.0123), fmt_pct(-0.05), fmt_pct(0), fmt_pct(None)
    ('+1.23%', '-5.00%', '0.00%', '—')
    """
    number = _number(value)
    if number is None or math.isinf(number):
        return DASH
    text = f"{number * 100:+.2f}%"
    return "0.00%" if text in ("+0.00%", "-0.00%") else text


def direction(value: Any) -> str:
    """``"up"``, ``"down"`` or ``"flat"`` for a signed change (CSS colours by it);
    flat whenever :func:`fmt_pct` shows no change, so colour and text agree.

    >>> direction(0.012), direction(-0.3), direction(0.00001), direction(None)
    ('up', 'down', 'flat', 'flat')
    """
    number = _number(value)
    if number is None or fmt_pct(number) in ("0.00%", DASH):
        return "flat"
    return "up" if number > 0 else "down"


def ratio_tier(value: Any) -> int:
    """0-4: how loud a volume multiple is, for the colour of its pill.

    >>> [ratio_tier(r) for r in (None, 2.0, 3.5, 6, 12, 40)]
    [0, 0, 1, 2, 3, 4]
    """
    number = _number(value)
    if number is None:
        return 0
    return sum(number >= edge for edge in (3, 5, 10, 20))


def short_hash(value: Any, length: int = 10) -> str:
    """The first characters of a hash, enough to compare by eye.

    >>> short_hash("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
    '9f86d08188'
    >>> short_hash(""), short_hash(None)
    ('—', '—')
    """
    return str(value)[:length] if value else DASH


#: Text values are cut to this many characters in messages and tiles (the JSON has them whole).
TEXT_LIMIT = 500


def fmt_value(value: Any) -> str:
    """A payload value of any detector: numbers as :func:`fmt_num`, texts as they are (cut
    to :data:`TEXT_LIMIT`), a ranking's list as ``rank. key move``, other lists joined.

    >>> fmt_value(1520000.0), fmt_value("Kettle, 1.7 l"), fmt_value(["rust", "/go/"])
    ('1.52M', 'Kettle, 1.7 l', 'rust, /go/')
    >>> fmt_value([{"rank": 1, "key": "A", "move": 10.0}, {"rank": 2, "key": "B", "move": -5.25}])
    '1. A 10; 2. B -5.25'
    """
    if isinstance(value, str):
        return value if len(value) <= TEXT_LIMIT else value[:TEXT_LIMIT] + "…"
    if isinstance(value, list):
        parts = [
            f"{v.get('rank')}. {v.get('key')} {fmt_num(v.get('move'))}" if isinstance(v, dict) else fmt_value(v)
            for v in value
        ]
        return fmt_value(("; " if value and isinstance(value[0], dict) else ", ").join(parts))
    return fmt_num(value)


# -- money ---------------------------------------------------------------------------------

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
