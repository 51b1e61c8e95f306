"""PostgreSQL ``NOTIFY`` on the store's commits, and the ``LISTEN`` side's SQL.

Three channels, both named after the schema so that several signalmint databases (or test
schemas) in one PostgreSQL database never wake each other:

- ``signalmint_signals``: ``<automation>:<id>`` of the newest signal of a commit, sent by
  :func:`notify_signals` inside the transaction that stores the signals. PostgreSQL delivers
  a notification only when (and if) that transaction commits, so a listener never hears of a
  signal it cannot read yet.
- ``signalmint_cache``: what a web process changed that other replicas cache
  (``sub:<id>``, ``key:<prefix>``, ``plans``, ``all``), sent by :func:`notify_cache`.
- ``signalmint_outbox``: outbox rows that are due now were committed (the fan-out's
  :func:`~signalmint.store.outbox.enqueue`), sent by :func:`notify_outbox`; idle delivery
  workers (:mod:`signalmint.delivery.wake`) claim them at once instead of at their next poll.

In the ``public`` schema the channels are exactly those names; in any other schema
``_<schema>`` is appended. On SQLite every function here does nothing. The ``LISTEN`` side's
connections are :mod:`signalmint.store.listen`'s (psycopg, loaded only by the processes that
listen).
"""

from __future__ import annotations

import random

from sqlalchemy import Connection, text

__all__ = [
    "CACHE",
    "OUTBOX",
    "SIGNALS",
    "backoff_delay",
    "channel_name",
    "channel_names",
    "listen_statements",
    "notify_cache",
    "notify_outbox",
    "notify_signals",
]

SIGNALS = "signalmint_signals"
CACHE = "signalmint_cache"
OUTBOX = "signalmint_outbox"

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


def notify_outbox(conn: Connection, due: int) -> None:
    """Announce, on commit, that ``due`` outbox rows may be sent now (idle workers claim them)."""
    if _postgres(conn) and due > 0:
        # One payload per transaction whatever the count: PostgreSQL folds identical
        # notifications of a transaction into one, so a tick of many signals wakes once.
        conn.execute(_NOTIFY, {"base": OUTBOX, "payload": "due"})


def channel_name(base: str, schema: str) -> str:
    """The channel ``base`` in ``schema``.

    >>> channel_name(OUTBOX, "public"), channel_name(OUTBOX, "t_1")
    ('signalmint_outbox', 'signalmint_outbox_t_1')
    """
    return base if schema == "public" else f"{base}_{schema}"


def channel_names(schema: str) -> tuple[str, str]:
    """The (signals, cache) channel names in ``schema``.

    >>> channel_names("public")
    ('signalmint_signals', 'signalmint_cache')
    >>> channel_names("t_1")
    ('signalmint_signals_t_1', 'signalmint_cache_t_1')
    """
    return channel_name(SIGNALS, schema), channel_name(CACHE, schema)


def listen_statements(schema: str, bases: tuple[str, ...] = (SIGNALS, CACHE)) -> list[str]:
    """The ``LISTEN`` statements of a listener connection whose current schema is ``schema``.

    >>> listen_statements("t_1")
    ['LISTEN "signalmint_signals_t_1"', 'LISTEN "signalmint_cache_t_1"']
    >>> listen_statements("public", (OUTBOX,))
    ['LISTEN "signalmint_outbox"']
    """
    return ['LISTEN "{}"'.format(channel_name(base, schema).replace('"', '""')) for base in bases]


def backoff_delay(failures: int, *, first: float = 0.1, most: float = 5.0, rng: random.Random | None = None) -> float:
    """Seconds a listener waits before reconnect attempt ``failures`` (0 is the first retry), ±20% jitter.

    >>> [round(backoff_delay(n, rng=random.Random(1)), 3) for n in range(3)]  # 0.1, 0.2, 0.4 s, jittered
    [0.085, 0.171, 0.341]
    >>> 5.0 * 0.8 <= backoff_delay(30) <= 5.0 * 1.2
    True
    """
    base = min(most, first * 2.0 ** min(failures, 16))
    return base * (rng.uniform(0.8, 1.2) if rng is not None else random.uniform(0.8, 1.2))
