"""PostgreSQL ``NOTIFY`` on the store's commits, and the ``LISTEN`` side's SQL.

Two channels, both named after the schema so that several signalmint databases (or test
schemas) in one PostgreSQL database never wake each other:

- ``signalmint_signals``: ``<automation>:<id>`` of the newest signal of a commit, sent by
  :func:`notify_signals` inside the transaction that stores the signals. PostgreSQL delivers
  a notification only when (and if) that transaction commits, so a listener never hears of a
  signal it cannot read yet.
- ``signalmint_cache``: what a web process changed that other replicas cache
  (``sub:<id>``, ``key:<prefix>``, ``plans``, ``all``), sent by :func:`notify_cache`.

In the ``public`` schema the channels are exactly those names; in any other schema
``_<schema>`` is appended. On SQLite every function here does nothing.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Connection, Engine, text

__all__ = [
    "CACHE",
    "SIGNALS",
    "channel_names",
    "connect_listener",
    "listen_statements",
    "notify_cache",
    "notify_signals",
    "ping_listener",
]

SIGNALS = "signalmint_signals"
CACHE = "signalmint_cache"

# The channel for ``base`` in the connection's current schema (one SQL expression).
_CHANNEL = "CASE WHEN current_schema() = 'public' THEN {base} ELSE {base} || '_' || current_schema() END"
_NOTIFY = text(f"SELECT pg_notify({_CHANNEL.format(base=':base')}, :payload)")


def _postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def notify_signals(conn: Connection, automation: str, last_id: int) -> None:
    """Announce, on commit, that ``automation`` stored signals up to id ``last_id``."""
    if _postgres(conn):
        conn.execute(_NOTIFY, {"base": SIGNALS, "payload": f"{automation}:{last_id}"})


def notify_cache(conn: Connection, payload: str) -> None:
    """Tell every web replica to drop what it caches about ``payload`` (``sub:7``, ``plans``...)."""
    if _postgres(conn):
        conn.execute(_NOTIFY, {"base": CACHE, "payload": payload[:7000]})


def channel_names(schema: str) -> tuple[str, str]:
    """The (signals, cache) channel names in ``schema``.

    >>> channel_names("public")
    ('signalmint_signals', 'signalmint_cache')
    >>> channel_names("t_1")
    ('signalmint_signals_t_1', 'signalmint_cache_t_1')
    """
    if schema == "public":
        return SIGNALS, CACHE
    return f"{SIGNALS}_{schema}", f"{CACHE}_{schema}"


def listen_statements(schema: str) -> list[str]:
    """The ``LISTEN`` statements of a listener connection whose current schema is ``schema``.

    >>> listen_statements("t_1")
    ['LISTEN "signalmint_signals_t_1"', 'LISTEN "signalmint_cache_t_1"']
    """
    return ['LISTEN "{}"'.format(name.replace('"', '""')) for name in channel_names(schema)]


CURRENT_SCHEMA = "SELECT current_schema()"


async def connect_listener(engine: Engine, *, timeout: float = 5.0) -> tuple[psycopg.AsyncConnection[Any], str, str]:
    """A new autocommit connection to ``engine``'s database listening on both channels of its
    schema; returns it with the (signals, cache) channel names. TCP keepalives are on, so a
    silently lost server is noticed within about 30 seconds even when nothing is said."""
    args, kwargs = engine.dialect.create_connect_args(engine.url)
    kwargs = {k: v for k, v in kwargs.items() if k not in {"prepare_threshold"}}
    kwargs.update(keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3)
    kwargs.setdefault("connect_timeout", max(1, int(timeout)))
    conn = await psycopg.AsyncConnection.connect(*args, autocommit=True, **kwargs)
    try:
        row = await (await conn.execute(CURRENT_SCHEMA)).fetchone()
        schema = str(row[0]) if row is not None else "public"
        # Named after the schema, so an operator (or a test) can tell whose listener a backend is.
        await conn.execute("SELECT set_config('application_name', %s, false)", (f"signalmint listener {schema}"[:63],))
        for statement in listen_statements(schema):
            await conn.execute(sql.SQL(statement))  # a quoted identifier
    except BaseException:
        await conn.close()
        raise
    signals_channel, cache_channel = channel_names(schema)
    return conn, signals_channel, cache_channel


async def ping_listener(conn: psycopg.AsyncConnection[Any]) -> None:
    """A round trip on a listener connection (it raises if the server is gone)."""
    await conn.execute("SELECT 1")
