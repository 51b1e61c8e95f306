"""The one definition of an id (in a path, a query cursor, a header or a form) and of a whole number
typed by a person.

Every id the store hands out is a signed 64-bit integer (``BIGINT`` in PostgreSQL, ``INTEGER`` in
SQLite), so an id outside ``1..MAX_ID`` cannot name anything: it is refused here with a 422 and a
message, before it reaches a driver that would overflow on it (a 500). Digits are ASCII digits only:
``str.isdigit`` also accepts ``²`` and ``①``, which ``int`` then refuses.

Path parameters use :data:`Id`, query cursors :data:`After` and :data:`Before`; ids that arrive as
text (an opaque cursor, ``Last-Event-ID``) go through :func:`parse_id`.

>>> parse_id("42"), parse_whole("7", low=1, high=36, what="months")
(42, 7)
>>> parse_id(str(2**63))
Traceback (most recent call last):
...
ValueError: not an id: ids are whole numbers from 1 to 9223372036854775807
>>> parse_id("0", low=0)
0
>>> parse_whole("²", low=1, high=36, what="months")
Traceback (most recent call last):
...
ValueError: give months as a whole number from 1 to 36 (digits 0-9)
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

__all__ = ["MAX_ID", "After", "Before", "Id", "is_digits", "parse_id", "parse_whole"]

#: The largest id the store can hold (signed 64-bit).
MAX_ID = 2**63 - 1
_ID_RANGE = f"ids are whole numbers from 1 to {MAX_ID}"

Id = Annotated[int, Path(ge=1, le=MAX_ID, description=_ID_RANGE)]
After = Annotated[int, Query(ge=0, le=MAX_ID, description="next_cursor of the previous page")]
Before = Annotated[int | None, Query(ge=1, le=MAX_ID, description="next_cursor of the previous page")]


def is_digits(text: str) -> bool:
    """True for a non-empty run of the ASCII digits 0-9 (``"²".isdigit()`` is True; this is not).

    >>> is_digits("0123"), is_digits("²"), is_digits("①"), is_digits("\u0661\u0662"), is_digits("")
    (True, False, False, False, False)
    """
    return text.isascii() and text.isdigit()


def parse_id(text: str, *, low: int = 1) -> int:
    """The id ``text`` spells (``low=0`` also lets 0 stand for "before the first"); ValueError
    (with the message to show) otherwise."""
    text = text.strip()
    if not is_digits(text) or len(text) > len(str(MAX_ID)) or not low <= int(text) <= MAX_ID:
        raise ValueError(f"not an id: ids are whole numbers from {low} to {MAX_ID}")
    return int(text)


def parse_whole(text: str, *, low: int, high: int, what: str) -> int:
    """A whole number from ``low`` to ``high`` typed in a form; ValueError with the message otherwise."""
    text = text.strip()
    if not is_digits(text) or len(text) > len(str(high)) or not low <= int(text) <= high:
        raise ValueError(f"give {what} as a whole number from {low} to {high} (digits 0-9)")
    return int(text)
