"""Connecting, migrating, and the single writer.

SQLite runs in WAL mode with a busy timeout; every write goes through one
writer thread (:meth:`Database.write`), so writes never contend with each
other and readers never block them. PostgreSQL uses the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.exc import SQLAlchemyError

from ..errors import StoreError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: concurrent SQLite migrations are not locked there
    fcntl = None  # type: ignore[assignment]

__all__ = ["Connection", "Database", "DatabaseError", "is_sqlite"]

# ``Connection`` (imported above) is what every function handed to ``Database.read``/``write``
# receives; other packages name it through the store, never through SQLAlchemy.
#: Any error the database driver raised.
#: What the database driver raises (a connection lost, a locked file, a constraint...): callers
#: outside ``store/`` catch this name and never import SQLAlchemy themselves.
DatabaseError = SQLAlchemyError

T = TypeVar("T")
MIGRATIONS = Path(__file__).parent / "migrations"
#: The PostgreSQL advisory lock key ``signalmint migrate`` holds while it upgrades ("sgnlmint").
MIGRATION_LOCK = 0x73676E6C6D696E74


def is_sqlite(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "sqlite"


def _sqlite_read_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _read_only_sqlite(path: str) -> Callable[[], sqlite3.Connection]:
    """A connect function that opens an existing SQLite file read-only (never creating it)."""
    if not path or path == ":memory:":
        raise StoreError("an in-memory database has nothing to read")
    file = Path(path).expanduser()
    if not file.is_file():
        raise StoreError(f"no database at {file}")
    uri = f"file:{quote(str(file.resolve()))}?mode=ro"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=10)

    return connect


class Database:
    """An engine plus the one writer thread all writes go through."""

    def __init__(self, url: str, *, echo: bool = False, read_only: bool = False) -> None:
        """``read_only``: open an existing signalmint database to read it, never creating or
        changing anything (a SQLite file is opened in SQLite's read-only mode); a missing file,
        an unreachable server or a database without our schema is a :class:`StoreError`."""
        self.url = url
        self.read_only = read_only
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if url.startswith("sqlite"):
            path = url.split(":///", 1)[-1]
            if read_only:
                kwargs["creator"] = _read_only_sqlite(path)
            elif path and path != ":memory:":
                Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
        else:
            kwargs["pool_pre_ping"] = True
        try:
            self.engine = create_engine(url, **kwargs)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(f"cannot open database {self.safe_url}: {exc}") from None
        if is_sqlite(self.engine):
            event.listen(self.engine, "connect", _sqlite_read_pragmas if read_only else _sqlite_pragmas)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="signalmint-writer")
        self.audience_version = 0
        if read_only:
            self._check_schema()

    def _check_schema(self) -> None:
        try:
            revision = self.current_revision()
        except SQLAlchemyError as exc:
            self.close()
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise StoreError(f"cannot read database {self.safe_url}: {reason}") from None
        if revision is None:
            self.close()
            raise StoreError(f"{self.safe_url} is not a signalmint database (run `signalmint migrate` to create one)")

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True) if hasattr(self, "engine") else self.url

    # -- schema -----------------------------------------------------------------------------

    def _alembic(self, connection: Connection) -> AlembicConfig:
        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        return config

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema up to ``revision`` (idempotent), safely when several processes or
        hosts run it at once: one migrates while the others wait, then find nothing to do.
        PostgreSQL: a transaction-scoped advisory lock taken before Alembic reads the version;
        SQLite: an exclusive lock on a ``.migrate.lock`` file beside the database."""
        try:
            with self._migration_lock(), self.engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
                command.upgrade(self._alembic(connection), revision)
        except SQLAlchemyError as exc:
            raise StoreError(f"migrating {self.safe_url} failed: {exc}") from exc

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        path = self.url.split(":///", 1)[-1] if is_sqlite(self.engine) else ""
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

    def current_revision(self) -> str | None:
        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def head_revision(self) -> str | None:
        with self.engine.connect() as connection:
            return ScriptDirectory.from_config(self._alembic(connection)).get_current_head()

    def table_names(self) -> list[str]:
        return sorted(inspect(self.engine).get_table_names())

    def ping(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
            return True
        except SQLAlchemyError:
            return False

    # -- who gets alerts changed -------------------------------------------------------------

    def audience_changed(self) -> None:
        """Say, after committing it, that who gets alerts changed (endpoints, subscriptions).

        Bumps :attr:`audience_version`; readers that compile the audience once and reuse it
        (the fan-out, :class:`~signalmint.delivery.fanout.FanOut`) rebuild at their next use
        instead of after their refresh interval. In this process only: another process sees
        the change at its next refresh.
        """
        self.audience_version += 1

    # -- the single writer -------------------------------------------------------------------

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(connection, *args)`` in a transaction on the writer thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, functools.partial(self.write_sync, fn, *args, **kwargs))

    def write_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.read_only:
            raise StoreError(f"{self.safe_url} was opened read-only")
        with self.engine.begin() as connection:
            return fn(connection, *args, **kwargs)

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(connection, *args)`` on a worker thread with a read connection."""
        return await asyncio.to_thread(self.read_sync, fn, *args, **kwargs)

    def read_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self.engine.connect() as connection:
            return fn(connection, *args, **kwargs)

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self.engine.dispose()
