"""The Alembic migrations build exactly the schema that store/tables.py describes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from signalmint.store import Database
from signalmint.store.migrate import head_revision, migrate
from signalmint.store.tables import metadata


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """An empty database migrated by Alembic here (elsewhere tests get copies of a migrated template)."""
    database = Database(db_url)
    assert database.table_names() == []
    migrate(database)
    try:
        yield database
    finally:
        database.close()


def test_migrations_match_the_table_definitions(db: Database) -> None:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        differences = compare_metadata(context, metadata)
    # alembic's own version table is not in our metadata; everything else must agree
    differences = [d for d in differences if "alembic_version" not in repr(d)]
    assert differences == []


def test_migrating_twice_changes_nothing(db: Database) -> None:
    before = db.table_names()
    migrate(db)
    assert db.table_names() == before
    assert db.current_revision() == head_revision()
