"""Migrating the schema with Alembic: ``signalmint migrate``, and a process's start-up when
its database is behind (:meth:`Database.at_head <signalmint.store.database.Database.at_head>`
says; at head, Alembic, a quarter second to import, is never loaded).

Several processes or hosts may migrate one database at once: one migrates while the others
wait, then find nothing to do. PostgreSQL: a transaction-scoped advisory lock taken before
Alembic reads the version; SQLite: an exclusive lock on a ``.migrate.lock`` file beside the
database.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from ..errors import StoreError
from .database import MIGRATIONS, Database, is_sqlite

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: concurrent SQLite migrations are not locked there
    fcntl = None  # type: ignore[assignment]

__all__ = ["MIGRATION_LOCK", "head_revision", "migrate"]

#: The PostgreSQL advisory lock key ``signalmint migrate`` holds while it upgrades ("sgnlmint").
MIGRATION_LOCK = 0x73676E6C6D696E74


def _alembic(connection: Connection | None = None) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def migrate(db: Database, revision: str = "head") -> None:
    """Bring the schema of ``db`` up to ``revision`` (idempotent), safely when several processes
    or hosts run it at once."""
    try:
        with _migration_lock(db), db.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            command.upgrade(_alembic(connection), revision)
    except SQLAlchemyError as exc:
        raise StoreError(f"migrating {db.safe_url} failed: {exc}") from exc


def head_revision() -> str | None:
    """The newest revision, as Alembic reads the migrations (importing each)."""
    return ScriptDirectory.from_config(_alembic()).get_current_head()


@contextlib.contextmanager
def _migration_lock(db: Database) -> Iterator[None]:
    path = db.url.split(":///", 1)[-1] if is_sqlite(db.engine) else ""
    if not path or path == ":memory:" or path.startswith("file:") or fcntl is None:
        yield
        return
    lock = Path(path).expanduser().with_name(Path(path).name + ".migrate.lock")
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
