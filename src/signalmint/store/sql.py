"""SQL helpers the store's hot queries share."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any, Final

from sqlalchemy import BigInteger, ColumnElement, Connection, String, Table, any_, func, literal, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import ColumnClause

__all__ = ["among", "autocommitting", "raw_columns", "reader", "upsert_into", "writer"]


#: SQLite has ``json_each`` built in from 3.38 (JSON1 was optional before).
_JSON_EACH: Final = sqlite3.sqlite_version_info >= (3, 38)
#: From how many ids SQLite gets them as one JSON array rather than one placeholder each.
_MANY: Final = 32


def autocommitting(conn: Connection) -> bool:
    """Whether each statement on ``conn`` commits alone (``Database.write(..., autocommit=True)``
    on PostgreSQL): no transaction to hold a claim's locks."""
    return conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT"


def among(conn: Connection, column: ColumnElement[Any], ids: Iterable[int]) -> ColumnElement[bool]:
    """``column IN ids``; on PostgreSQL ``column = ANY(:ids)``: one array parameter whatever the
    count, so the statement's text is the same every time (psycopg converts it once, the server
    can prepare it) rather than a new text of n placeholders per batch. On SQLite, many integer
    ids go as one JSON array (``IN (SELECT value FROM json_each(:ids))``): a delivery round's
    thousands of ids are not each rendered and bound by SQLAlchemy."""
    wanted = list(ids)
    if conn.dialect.name == "postgresql":
        return column == any_(literal(wanted, ARRAY(BigInteger)))
    if _JSON_EACH and len(wanted) >= _MANY and all(type(i) is int for i in wanted):
        listed = func.json_each(literal(json.dumps(wanted), String()))
        return column.in_(select(literal_column("value")).select_from(listed).scalar_subquery())
    return column.in_(wanted)


def upsert_into(conn: Connection, table: Table) -> Any:
    """``INSERT INTO table`` in the connection's dialect, which offers ``on_conflict_do_nothing``
    and ``on_conflict_do_update`` (PostgreSQL and SQLite spell them alike)."""
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


# --- bulk rows without per-value type processing -----------------------------------------------
# SQLAlchemy runs every value of every row through its column type's processors (a time: the
# driver's string or naive datetime, then UTCDateTime's aware one), a Python call or two per
# value. The outbox's hot statements move thousands of rows whose times are nearly all alike
# (one signal's rows share their not_before, next_attempt_at and created_at), so they read and
# write raw driver values and convert each distinct one once, with the very processors
# SQLAlchemy would have used.

#: Distinct values a converter remembers before it starts afresh.
_MEMO_SIZE = 4096


def _same(value: Any) -> Any:
    return value


class _Memo:
    """``convert(value)``, remembered per distinct value (None stays None). The answers are
    shared: only for immutable ones, or ones their users copy (a JSON list made a tuple)."""

    __slots__ = ("convert", "seen")

    def __init__(self, convert: Callable[[Any], Any]) -> None:
        self.convert = convert
        self.seen: dict[Any, Any] = {}

    def __call__(self, value: Any) -> Any:
        if value is None:
            return None
        seen = self.seen
        try:
            return seen[value]
        except KeyError:
            pass
        except TypeError:  # unhashable (a driver that decodes JSON itself): convert it every time
            return self.convert(value)
        if len(seen) >= _MEMO_SIZE:
            seen.clear()
        out = seen[value] = self.convert(value)
        return out


_readers: dict[tuple[type[Dialect], ColumnElement[Any], bool], Callable[[Any], Any]] = {}
_writers: dict[tuple[type[Dialect], ColumnElement[Any], bool], Callable[[Any], Any]] = {}


def reader(conn: Connection, column: ColumnElement[Any], *, memo: bool = True) -> Callable[[Any], Any]:
    """What ``column``'s type makes of a raw driver value on ``conn`` (the result processing
    SQLAlchemy would do), each distinct value converted once when ``memo`` (hashable, immutable
    values such as times; not JSON)."""
    key = (type(conn.dialect), column, memo)
    found = _readers.get(key)
    if found is None:
        process = column.type.dialect_impl(conn.dialect).result_processor(conn.dialect, None)
        found = _readers[key] = _same if process is None else _Memo(process) if memo else process
    return found


def writer(conn: Connection, column: ColumnElement[Any], *, memo: bool = True) -> Callable[[Any], Any]:
    """What ``column``'s type hands the driver for a value on ``conn`` (SQLAlchemy's bind
    processing), each distinct value converted once when ``memo``."""
    key = (type(conn.dialect), column, memo)
    found = _writers.get(key)
    if found is None:
        process = column.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
        found = _writers[key] = _same if process is None else _Memo(process) if memo else process
    return found


def raw_columns(table: Table, names: Iterable[str], *, qualified: bool = False) -> list[ColumnClause[Any]]:
    """``table``'s columns ``names`` (``table.name`` first when ``qualified``: in a join), untyped:
    a statement returning them hands back the driver's values as they are (convert them with
    :func:`reader`)."""
    prefix = f"{table.name}." if qualified else ""
    return [literal_column(prefix + table.c[name].name) for name in names]
