"""PostgreSQL ``LISTEN`` connections on the channels :mod:`signalmint.store.notify` sends on
(psycopg's own async connections, apart from SQLAlchemy's pool)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Engine

from .notify import CACHE, OUTBOX, SIGNALS, channel_name, channel_names, listen_statements

__all__ = ["connect_listener", "connect_outbox_listener", "ping_listener"]


CURRENT_SCHEMA = "SELECT current_schema()"


async def connect_listener(engine: Engine, *, timeout: float = 5.0) -> tuple[psycopg.AsyncConnection[Any], str, str]:
    """A new autocommit connection to ``engine``'s database listening on both channels of its
    schema; returns it with the (signals, cache) channel names. TCP keepalives are on, so a
    silently lost server is noticed within about 30 seconds even when nothing is said."""
    conn, schema = await _listen(engine, (SIGNALS, CACHE), "listener", timeout)
    signals_channel, cache_channel = channel_names(schema)
    return conn, signals_channel, cache_channel


async def connect_outbox_listener(engine: Engine, *, timeout: float = 5.0) -> tuple[psycopg.AsyncConnection[Any], str]:
    """A new autocommit connection listening on the outbox channel of ``engine``'s schema (a
    delivery worker's), with the channel's name; its ``application_name`` is
    ``signalmint worker <schema>``."""
    conn, schema = await _listen(engine, (OUTBOX,), "worker", timeout)
    return conn, channel_name(OUTBOX, schema)


async def _listen(
    engine: Engine, bases: tuple[str, ...], role: str, timeout: float
) -> tuple[psycopg.AsyncConnection[Any], str]:
    args, kwargs = engine.dialect.create_connect_args(engine.url)
    kwargs = {k: v for k, v in kwargs.items() if k not in {"prepare_threshold"}}
    kwargs.update(keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3)
    kwargs.setdefault("connect_timeout", max(1, int(timeout)))
    conn = await psycopg.AsyncConnection.connect(*args, autocommit=True, **kwargs)
    try:
        row = await (await conn.execute(CURRENT_SCHEMA)).fetchone()
        schema = str(row[0]) if row is not None else "public"
        # Named after the schema, so an operator (or a test) can tell whose listener a backend is.
        await conn.execute("SELECT set_config('application_name', %s, false)", (f"signalmint {role} {schema}"[:63],))
        for statement in listen_statements(schema, bases):
            await conn.execute(sql.SQL(statement))  # a quoted identifier
    except BaseException:
        await conn.close()
        raise
    return conn, schema


async def ping_listener(conn: psycopg.AsyncConnection[Any]) -> None:
    """A round trip on a listener connection (it raises if the server is gone)."""
    await conn.execute("SELECT 1")
