"""The Alembic migrations build exactly the schema that store/tables.py describes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from signalmint.store import Database
from signalmint.store.database import schema_head
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


def test_the_head_read_without_alembic_is_alembics() -> None:
    """A process at head skips Alembic on the strength of ``schema_head``: it must name Alembic's head."""
    assert schema_head() is not None
    assert schema_head() == head_revision()


def test_at_head_only_once_migrated(db_url: str) -> None:
    database = Database(db_url)
    try:
        assert database.current_revision() is None and not database.at_head()
        migrate(database, "0005")
        assert database.current_revision() == "0005" and not database.at_head()
        migrate(database)
        assert database.current_revision() == head_revision() and database.at_head()
    finally:
        database.close()


def test_a_head_it_cannot_read_is_left_to_alembic(tmp_path: Path) -> None:
    """Two heads (a merge to come) or a file without the lines: ``None``, so Alembic decides."""
    (tmp_path / "0001_a.py").write_text('revision = "0001"\ndown_revision = None\n')
    (tmp_path / "0002_b.py").write_text('revision: str = "0002"\ndown_revision: str | None = "0001"\n')
    assert schema_head(tmp_path) == "0002"
    (tmp_path / "0003_c.py").write_text('revision = "0003"\ndown_revision = "0001"\n')
    assert schema_head(tmp_path) is None  # 0002 and 0003 both revise 0001
    (tmp_path / "0004_merge.py").write_text('revision = "0004"\ndown_revision = ("0002", "0003")\n')
    assert schema_head(tmp_path) == "0004"
    (tmp_path / "0005_odd.py").write_text("REVISION = compute()\n")
    assert schema_head(tmp_path) is None
