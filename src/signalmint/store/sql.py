"""SQL helpers the store's hot queries share."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Connection, Table, any_, literal
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY

__all__ = ["among", "upsert_into"]


def among(conn: Connection, column: ColumnElement[Any], ids: Iterable[int]) -> ColumnElement[bool]:
    """``column IN ids``; on PostgreSQL ``column = ANY(:ids)``: one array parameter whatever the
    count, so the statement's text is the same every time (psycopg converts it once, the server
    can prepare it) rather than a new text of n placeholders per batch."""
    wanted = list(ids)
    if conn.dialect.name == "postgresql":
        return column == any_(literal(wanted, ARRAY(BigInteger)))
    return column.in_(wanted)


def upsert_into(conn: Connection, table: Table) -> Any:
    """``INSERT INTO table`` in the connection's dialect, which offers ``on_conflict_do_nothing``
    and ``on_conflict_do_update`` (PostgreSQL and SQLite spell them alike)."""
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)
