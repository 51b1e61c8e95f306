"""API keys, one-time tokens (magic links) and sessions, stored as hashes only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, update

from ..errors import LimitError
from ..records import ApiKey
from .accounts import lock_subscriber
from .sql import upsert_into
from .tables import api_keys, sessions, settings_kv, tokens

__all__ = [
    "MAX_KEYS",
    "SessionRow",
    "TokenRow",
    "consume_token",
    "create_api_key",
    "create_session",
    "find_api_key",
    "get_or_create_setting",
    "get_session",
    "get_setting",
    "issue_token",
    "list_api_keys",
    "replace_setting",
    "revoke_api_key",
    "revoke_session",
]

#: Active API keys one subscriber may hold (admin keys are the operator's, and not counted).
MAX_KEYS = 10


def _key(r: Any) -> ApiKey:
    return ApiKey(
        id=r.id,
        subscriber_id=r.subscriber_id,
        name=r.name,
        prefix=r.prefix,
        created_at=r.created_at,
        last_used_at=r.last_used_at,
        revoked_at=r.revoked_at,
        admin=r.admin,
    )


def create_api_key(
    conn: Connection,
    *,
    prefix: str,
    hash: str,
    name: str,
    now: datetime,
    subscriber_id: int | None,
    admin: bool,
) -> ApiKey:
    """A new key; a subscriber holds at most :data:`MAX_KEYS` active ones (LimitError past that)."""
    if subscriber_id is not None and not admin:
        lock_subscriber(conn, subscriber_id)
        active = conn.execute(
            select(func.count())
            .select_from(api_keys)
            .where(api_keys.c.subscriber_id == subscriber_id, api_keys.c.revoked_at.is_(None))
        ).scalar_one()
        if active >= MAX_KEYS:
            raise LimitError(f"You have {MAX_KEYS} active keys: revoke one first.", cap=MAX_KEYS)
    new_id = conn.execute(
        api_keys.insert()
        .values(prefix=prefix, hash=hash, name=name, created_at=now, subscriber_id=subscriber_id, admin=admin)
        .returning(api_keys.c.id)
    ).scalar_one()
    return _key(conn.execute(select(api_keys).where(api_keys.c.id == new_id)).one())


def find_api_key(conn: Connection, prefix: str) -> tuple[ApiKey, str] | None:
    """The key with this public prefix and its stored hash (revoked keys included)."""
    row = conn.execute(select(api_keys).where(api_keys.c.prefix == prefix)).first()
    return (_key(row), row.hash) if row else None


def list_api_keys(conn: Connection, subscriber_id: int | None, *, admin: bool = False) -> list[ApiKey]:
    query = select(api_keys).where(api_keys.c.admin.is_(admin))
    query = query.where(api_keys.c.subscriber_id == subscriber_id) if subscriber_id is not None else query
    return [_key(r) for r in conn.execute(query.order_by(api_keys.c.id))]


def revoke_api_key(conn: Connection, key_id: int, now: datetime, *, owner: int | None, admin: bool = False) -> bool:
    """Revoke a key only if ``owner`` holds it (``admin=True``: an admin key); False if not found."""
    query = update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
    if admin:
        query = query.where(api_keys.c.admin.is_(True))
    else:
        query = query.where(api_keys.c.subscriber_id == owner, api_keys.c.admin.is_(False))
    return bool(conn.execute(query.values(revoked_at=now)).rowcount)


def touch_api_keys(conn: Connection, used: dict[int, datetime]) -> None:
    for key_id, at in used.items():
        conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=at))


@dataclass(frozen=True, slots=True)
class TokenRow:
    purpose: str
    email: str
    subscriber_id: int | None
    plan_id: str | None = None  # a paid plan to check out once the link is used


def issue_token(
    conn: Connection,
    *,
    hash: str,
    purpose: str,
    email: str,
    subscriber_id: int | None,
    now: datetime,
    expires_at: datetime,
    plan_id: str | None = None,
) -> None:
    conn.execute(
        tokens.insert().values(
            hash=hash,
            purpose=purpose,
            email=email,
            subscriber_id=subscriber_id,
            created_at=now,
            expires_at=expires_at,
            plan_id=plan_id,
        )
    )


def consume_token(conn: Connection, hash: str, purpose: str, now: datetime) -> TokenRow | None:
    """Use a one-time token: None if unknown, of another purpose, expired or already used."""
    done = conn.execute(
        update(tokens)
        .where(
            tokens.c.hash == hash,
            tokens.c.purpose == purpose,
            tokens.c.used_at.is_(None),
            tokens.c.expires_at > now,
        )
        .values(used_at=now)
    )
    if done.rowcount != 1:
        return None
    row = conn.execute(select(tokens).where(tokens.c.hash == hash)).one()
    return TokenRow(row.purpose, row.email, row.subscriber_id, row.plan_id)


@dataclass(frozen=True, slots=True)
class SessionRow:
    subscriber_id: int | None
    admin: bool
    expires_at: datetime


def create_session(
    conn: Connection,
    *,
    hash: str,
    subscriber_id: int | None,
    admin: bool,
    now: datetime,
    expires_at: datetime,
) -> None:
    conn.execute(
        sessions.insert().values(
            hash=hash, subscriber_id=subscriber_id, admin=admin, created_at=now, expires_at=expires_at
        )
    )


def get_session(conn: Connection, hash: str, now: datetime) -> SessionRow | None:
    row = conn.execute(
        select(sessions).where(sessions.c.hash == hash, sessions.c.revoked_at.is_(None), sessions.c.expires_at > now)
    ).first()
    return SessionRow(row.subscriber_id, row.admin, row.expires_at) if row else None


def revoke_session(conn: Connection, hash: str, now: datetime) -> None:
    conn.execute(update(sessions).where(sessions.c.hash == hash).values(revoked_at=now))


def get_setting(conn: Connection, name: str) -> str | None:
    """A stored setting, or None (reading never creates one)."""
    row = conn.execute(select(settings_kv.c.value).where(settings_kv.c.name == name)).first()
    return str(row.value) if row is not None else None


def get_or_create_setting(conn: Connection, name: str, make: Callable[[], str]) -> str:
    """The stored setting ``name``, stored first as ``make()`` when missing. Processes starting at
    once (web replicas creating the server secret) all get the one value the first of them stored."""
    row = conn.execute(select(settings_kv.c.value).where(settings_kv.c.name == name)).first()
    if row is not None:
        return str(row.value)
    conn.execute(upsert_into(conn, settings_kv).values(name=name, value=make()).on_conflict_do_nothing())
    return str(conn.execute(select(settings_kv.c.value).where(settings_kv.c.name == name)).scalar_one())


def replace_setting(conn: Connection, name: str, make: Callable[[], str]) -> str:
    """Set ``name`` to a fresh ``make()`` whatever it held; the new value."""
    conn.execute(settings_kv.delete().where(settings_kv.c.name == name))
    return get_or_create_setting(conn, name, make)
