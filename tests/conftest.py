"""Shared fixtures: real databases (SQLite always, PostgreSQL when SIGNALMINT_TEST_PG is set)."""
# ruff: noqa: E402  (the bytecode switch below comes before the imports it is for)

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Bytecode: some machines (this CI's among them) set PYTHONDONTWRITEBYTECODE=1, and then every
# `signalmint` process a test starts compiles its ~550 modules again (3.5 s of CPU instead of
# 2.7 s). The test processes write the bytecode of what they import (before the imports below),
# and the processes they start read it.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

import psycopg
import pytest
import uvicorn
from sqlalchemy import create_engine, event, text

from signalmint.records import Signal
from signalmint.registry import Registry
from signalmint.store import Database, list_signals
from signalmint.store.migrate import head_revision, migrate

PG_URL = os.environ.get("SIGNALMINT_TEST_PG")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (pyproject's addopts): the whole suite runs in one process more than there are
    cores, up to 5 (pytest-xdist); chosen files or tests run in this one process, as do runs with
    ``-n 0``. A test waits a good part of its time (for PostgreSQL, for the processes it started,
    for a lease to run out): on 2 cores a third process keeps them busy (fresh clone, quiet
    machine: 233 s with 2, 207 s with 3, 224 s with 4, which also made the browser test late)."""
    if config.args_source != pytest.Config.ArgsSource.TESTPATHS:
        return 0
    cores = os.cpu_count() or 1
    return min(cores + 1, 5) if cores > 1 else 0


def _pg_schema_url() -> Iterator[str]:
    assert PG_URL is not None
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _schema_url(schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _schema_url(schema: str) -> str:
    """The test URL of one schema: its search path, and its name as every connection's
    ``application_name``, so that connections a test left open can be found.

    Its sessions commit without waiting for the server's WAL flush (``synchronous_commit=off``):
    6 ms a commit less on this machine's disk, and no test changes, since a commit is visible to
    every other session at once either way and only a crash of the server itself (never of a
    test's process) could lose one."""
    assert PG_URL is not None
    sep = "&" if "?" in PG_URL else "?"
    options = f"-csearch_path%3D{schema}%20-csynchronous_commit%3Doff"
    return f"{PG_URL}{sep}options={options}&application_name={schema}"


class _MigratedSchemas:
    """Migrated PostgreSQL schemas that this test process (one xdist worker) lends to one test
    at a time: the ``db`` fixture's, on PostgreSQL.

    Migrating a schema replays ~100 DDL statements (0.1-0.2 s of the server's CPU, more as the
    catalog grows) and dropping it takes another 20 ms; emptying a used one takes about 10 ms.
    A schema comes back to the pool only if it is as the migration left it but for its rows: no
    connection to it is still open (a connection's ``application_name`` is the schema's name, or
    ends with it for a listener), its tables, indexes and sequences are the same, and so is
    Alembic's version row. Its rows are then deleted and its sequences restarted, so that the
    next test finds it as new. Otherwise it is dropped, as before."""

    def __init__(self, script: str) -> None:
        assert PG_URL is not None
        self.script = script
        self.free: list[str] = []
        self.made: list[str] = []
        self.admin = psycopg.connect(PG_URL.replace("+psycopg", "", 1), autocommit=True)
        self.shape: str | None = None  # the fingerprint of a freshly migrated schema
        self.emptying: dict[str, str] = {}  # schema -> the statements that empty it

    def take(self) -> str:
        if self.free:
            return self.free.pop()
        schema = f"t_{uuid.uuid4().hex[:12]}"
        self.admin.execute(f'CREATE SCHEMA "{schema}"')
        self.made.append(schema)
        with self.admin.transaction():
            self.admin.execute(f'SET LOCAL search_path TO "{schema}"')
            self.admin.execute(self.script)
        shape = self._shape(schema)
        if self.shape is None:
            self.shape = shape
        assert shape == self.shape, "two migrations of an empty schema differ"
        tables = [r[0] for r in self.admin.execute(_TABLES, (schema,)) if r[0] != "alembic_version"]
        sequences = [r[0] for r in self.admin.execute(_SEQUENCES, (schema,))]
        self.emptying[schema] = ";".join(
            [
                "SET LOCAL session_replication_role = replica",  # no foreign-key checks while emptying
                *(f'DELETE FROM "{schema}"."{t}"' for t in tables),
                *(f'ALTER SEQUENCE "{schema}"."{q}" RESTART' for q in sequences),
            ]
        )
        return schema

    def give_back(self, schema: str) -> None:
        if self._closed(schema) and self._shape(schema) == self.shape:
            try:
                with self.admin.transaction():
                    self.admin.execute(self.emptying[schema])
            except psycopg.Error:
                pass  # not a superuser, or a lock held: drop it instead
            else:
                self.free.append(schema)
                return
        self.drop(schema)

    def _closed(self, schema: str) -> bool:
        """Whether every connection to ``schema`` is gone; a server process ends a moment after
        its client closes the connection, so wait a little for that (never for a connection that
        is still open: such a schema is dropped)."""
        for _ in range(30):
            row = self.admin.execute(_IN_USE, (schema, f"% {schema}")).fetchone()
            if row is not None and row[0] == 0:
                return True
            time.sleep(0.01)
        return False

    def drop(self, schema: str) -> None:
        self.admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        self.made.remove(schema)

    def _shape(self, schema: str) -> str:
        row = self.admin.execute(_SHAPE.format(schema=schema), (schema,)).fetchone()
        assert row is not None
        return f"{row[0]}/{row[1]}"

    def close(self) -> None:
        for schema in list(self.made):
            self.drop(schema)
        self.admin.close()


_TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename"
_SEQUENCES = "SELECT sequencename FROM pg_sequences WHERE schemaname = %s ORDER BY sequencename"
_IN_USE = (
    "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
    " AND (application_name = %s OR application_name LIKE %s)"
)
_SHAPE = (
    "SELECT (SELECT md5(string_agg(relname || ':' || relkind::text, ',' ORDER BY relname)) FROM pg_class"
    " WHERE relnamespace = to_regnamespace(%s)),"
    " (SELECT string_agg(version_num, ',') FROM \"{schema}\".alembic_version)"
)


@pytest.fixture(scope="session")
def _pg_schemas(_pg_migration_script: str) -> Iterator[_MigratedSchemas]:
    schemas = _MigratedSchemas(_pg_migration_script)
    try:
        yield schemas
    finally:
        schemas.close()


_MIGRATED: set[str] = set()
"""URLs of the schemas lent out migrated (the ``db`` fixture has nothing to migrate in them)."""


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A fresh database URL: a SQLite file, then a PostgreSQL schema. Empty, unless the test
    also uses the ``db`` fixture below: on PostgreSQL it is then a migrated schema (see
    ``_MigratedSchemas``)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    if PG_URL is None:
        pytest.skip("SIGNALMINT_TEST_PG is not set")
    if "_migrated_db" not in request.fixturenames:  # not the ``db`` fixture below (a module may have its own)
        yield from _pg_schema_url()
        return
    schemas: _MigratedSchemas = request.getfixturevalue("_pg_schemas")
    schema = schemas.take()
    url = _schema_url(schema)
    _MIGRATED.add(url)
    try:
        yield url
    finally:
        _MIGRATED.discard(url)
        schemas.give_back(schema)


# A migrated database per test, without running Alembic per test: Alembic migrates a template
# once per session and each test gets a copy (SQLite: the file; PostgreSQL: the statements the
# migration executed, replayed into the test's own schema in one round trip). The migration tests
# (tests/store/test_migrations.py) still migrate empty databases with Alembic.


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "migrated.db"
    database = Database(f"sqlite:///{path}")
    migrate(database)
    assert database.current_revision() == head_revision()
    database.close()  # the last connection checkpoints the WAL into the file
    return path


@pytest.fixture(scope="session")
def _pg_migration_script() -> Iterator[str]:
    """The SQL that Alembic runs to migrate an empty PostgreSQL schema to head, recorded once."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            return  # Alembic reading its version table; the copy starts empty as well
        assert not parameters, f"a migration statement with bound parameters cannot be replayed: {statement}"
        statements.append(statement)

    for url in _pg_schema_url():
        database = Database(url)
        event.listen(database.engine, "before_cursor_execute", record)
        migrate(database)
        event.remove(database.engine, "before_cursor_execute", record)
        assert database.current_revision() == head_revision()
        database.close()
    yield ";\n".join(statements)


def _copy_sqlite(template: Path, target: Path) -> str:
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def _migrated_db() -> None:
    """Marks a test that uses the ``db`` fixture below: ``db_url`` then lends it a migrated schema."""


@pytest.fixture
def db(request: pytest.FixtureRequest, db_url: str, tmp_path: Path, _migrated_db: None) -> Iterator[Database]:
    """A migrated database on each backend (a copy of one Alembic migrated for this session)."""
    if db_url.startswith("sqlite"):
        database = Database(_copy_sqlite(request.getfixturevalue("_sqlite_template"), tmp_path / "test.db"))
    elif db_url in _MIGRATED:
        database = Database(db_url)
    else:
        database = Database(db_url)
        script = request.getfixturevalue("_pg_migration_script")
        with database.engine.begin() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            driver.execute(script)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def sqlite_db(tmp_path: Path, _sqlite_template: Path) -> Iterator[Database]:
    database = Database(_copy_sqlite(_sqlite_template, tmp_path / "test.db"))
    try:
        yield database
    finally:
        database.close()


@pytest.fixture(scope="session")
def registry() -> Registry:
    return Registry.from_entry_points()


def backend_state(db: Database, pid: int) -> tuple[str, str] | None:
    """(state, wait_event) of a PostgreSQL backend, None once it is gone."""
    with db.engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT state, wait_event FROM pg_stat_activity WHERE pid = %s", (pid,)).first()
    return None if row is None else (row[0], row[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stored_id(signal: Signal) -> int:
    """A stored signal's id (the store gives it one; a signal not yet stored has none)."""
    assert signal.id is not None, "the signal was not stored"
    return signal.id


class LiveServer:
    """An ASGI app served by uvicorn in a thread on 127.0.0.1 (like httpx's test server)."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()  # a port given: the app's settings already name it (base_url)
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live_server() -> type[LiveServer]:
    return LiveServer


async def first_signals(db: Database, automation: str, *, within: float = 5.0, limit: int = 10) -> list[Signal]:
    """The automation's stored signals as soon as there are any (empty after ``within`` seconds):
    for tests that run an engine until its first signal commits."""
    deadline = time.monotonic() + within
    while True:
        found = db.read_sync(list_signals, automation=automation, limit=limit)
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.01)
