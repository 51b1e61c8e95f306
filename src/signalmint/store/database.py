"""Connecting, the schema's revision, and the single writer.

SQLite runs in WAL mode with a busy timeout; every write goes through one
writer thread (:meth:`Database.write`), so writes never contend with each
other and readers never block them. PostgreSQL uses the same code.

Migrating is :mod:`signalmint.store.migrate`'s (Alembic, a quarter second to import): this
module reads the revision a database is at and the newest one without it, so a process whose
database is already at head (every start but the first) never loads Alembic.
"""

from __future__ import annotations

import asyncio
import functools
import re
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.exc import SQLAlchemyError

from ..errors import StoreError

__all__ = ["MIGRATIONS", "Connection", "Database", "DatabaseError", "is_sqlite", "schema_head"]

# ``Connection`` (imported above) is what every function handed to ``Database.read``/``write``
# receives; other packages name it through the store, never through SQLAlchemy.
#: Any error the database driver raised.
#: What the database driver raises (a connection lost, a locked file, a constraint...): callers
#: outside ``store/`` catch this name and never import SQLAlchemy themselves.
DatabaseError = SQLAlchemyError

T = TypeVar("T")
MIGRATIONS = Path(__file__).parent / "migrations"
#: Alembic's table of the revision a database is at (one row).
VERSION_TABLE = "alembic_version"

_REVISION = re.compile(r"^(down_revision|revision)\b[^=\n]*=(.*)$", re.MULTILINE)
_QUOTED = re.compile(r"[\"']([^\"']+)[\"']")


def schema_head(versions: Path = MIGRATIONS / "versions") -> str | None:
    """The newest revision of the migrations in ``versions``, read from their files' ``revision``
    and ``down_revision`` lines without importing Alembic: the one revision no other revises.
    ``None`` when that is not exactly one (a merge, or a file this cannot read): then Alembic,
    which imports every file, decides (:func:`signalmint.store.migrate.head_revision` must agree
    with this, tests/store/test_migrations.py checks it).

    >>> schema_head() == sorted(p.name[:4] for p in (MIGRATIONS / "versions").glob("0*.py"))[-1]
    True
    """
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in versions.glob("*.py"):
        lines = {m[1]: m[2] for m in _REVISION.finditer(path.read_text(encoding="utf-8"))}
        names = _QUOTED.findall(lines.get("revision", ""))
        if len(names) != 1 or "down_revision" not in lines:
            return None
        revisions.add(names[0])
        revised.update(_QUOTED.findall(lines["down_revision"]))
    heads = revisions - revised
    return heads.pop() if len(heads) == 1 else None


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

    def current_revision(self) -> str | None:
        """The migration the database is at (``None``: never migrated), read as Alembic reads it."""
        with self.engine.connect() as connection:
            if not inspect(connection).has_table(VERSION_TABLE):
                return None
            found = connection.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalars().all()
        if len(found) > 1:
            raise StoreError(f"{self.safe_url} is at several revisions at once: {', '.join(sorted(found))}")
        return found[0] if found else None

    def at_head(self) -> bool:
        """Whether the schema is already the code's newest (then there is nothing to migrate)."""
        head = schema_head()
        return head is not None and self.current_revision() == head

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

    async def write(self, fn: Callable[..., T], *args: Any, autocommit: bool = False, **kwargs: Any) -> T:
        """Run ``fn(connection, *args)`` in a transaction on the writer thread.

        ``autocommit``: on PostgreSQL, no transaction around ``fn``: each statement commits on
        its own, which saves the ``BEGIN`` and ``COMMIT`` round trips (for work whose
        statements need no common transaction, each being atomic alone). SQLite (one writer,
        where a transaction costs no round trip) runs ``fn`` in a transaction either way."""
        loop = asyncio.get_running_loop()
        call = functools.partial(self.write_sync, fn, *args, autocommit=autocommit, **kwargs)
        return await loop.run_in_executor(self._writer, call)

    def write_sync(self, fn: Callable[..., T], *args: Any, autocommit: bool = False, **kwargs: Any) -> T:
        if self.read_only:
            raise StoreError(f"{self.safe_url} was opened read-only")
        if autocommit and not is_sqlite(self.engine):
            with self.engine.connect() as connection:
                # the pool sets the connection's isolation level back when it is returned
                return fn(connection.execution_options(isolation_level="AUTOCOMMIT"), *args, **kwargs)
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
