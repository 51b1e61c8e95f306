"""`signalmint migrate` run by four processes at once (several hosts deploying together): all
succeed and leave one schema at head, on PostgreSQL (an advisory lock) and SQLite (a file lock)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from signalmint.store import Database
from signalmint.store.migrate import head_revision, migrate

pytestmark = pytest.mark.slow


def test_four_concurrent_migrations_all_succeed_with_one_schema(db_url: str, tmp_path: Path) -> None:
    config = tmp_path / "signalmint.yaml"
    config.write_text(f"database: {db_url}\n")
    command = [sys.executable, "-m", "signalmint.cli", "migrate", "-c", str(config)]
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ)
        for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0, 0], "\n".join(outputs)
    db = Database(db_url)
    try:
        assert db.current_revision() == head_revision()
        assert all("is at revision" in output for output in outputs)
        reference = Database(f"sqlite:///{tmp_path / 'reference.db'}")
        migrate(reference)
        assert set(db.table_names()) == set(reference.table_names())  # every table, once
        reference.close()
        with db.engine.connect() as conn:
            versions = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all()
        assert versions == [head_revision()]
    finally:
        db.close()
