"""`signalmint migrate` run by four processes at once (several hosts deploying together): all
succeed and leave one schema at head, on PostgreSQL (an advisory lock) and SQLite (a file lock)."""

from __future__ import annotations

from pathlib import Path

import pytest

from signalmint.store import Database
from signalmint.store.migrate import head_revision

from .. import processes
from ..conftest import _copy_sqlite

pytestmark = pytest.mark.slow


def test_four_concurrent_migrations_all_succeed_with_one_schema(
    db_url: str, tmp_path: Path, _sqlite_template: Path
) -> None:
    config = tmp_path / "signalmint.yaml"
    config.write_text(f"database: {db_url}\n")
    logs = [tmp_path / f"migrate{i}.log" for i in range(4)]  # forked within milliseconds of one another
    procs = [processes.start(["migrate", "-c", str(config)], output=log) for log in logs]
    codes = [proc.wait(timeout=120) for proc in procs]
    outputs = [log.read_text() for log in logs]
    assert codes == [0, 0, 0, 0], "\n".join(outputs)
    db = Database(db_url)
    try:
        assert db.current_revision() == head_revision()
        # the console wraps its lines at 80 columns, and a long URL moves the breaks around
        assert all("is at revision" in " ".join(output.split()) for output in outputs), outputs
        reference = Database(_copy_sqlite(_sqlite_template, tmp_path / "reference.db"))  # Alembic's, this session
        assert set(db.table_names()) == set(reference.table_names())  # every table, once
        reference.close()
        with db.engine.connect() as conn:
            versions = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all()
        assert versions == [head_revision()]
    finally:
        db.close()
