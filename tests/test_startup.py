"""A process loads the code of what it runs and no more (issue 11: start-up time).

Each case runs the real command line in a fresh interpreter on a database already at head, lets
it start and stop (``--for 0``), then lists the modules it imported: a delivery worker never
loads the engine, the web app or Alembic, an engine never the web app nor the worker, and
neither loads a payment SDK or the dependencies of sources the config does not use.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from signalmint.store import Database
from signalmint.store.migrate import migrate

# Runs the CLI as `python -m signalmint.cli ARGS` does, then writes the modules it imported.
PROBE = """
import json, runpy, sys
out, args = sys.argv[1], sys.argv[2:]
sys.argv = ["signalmint", *args]
try:
    runpy.run_module("signalmint.cli", run_name="__main__")
except SystemExit as exc:
    if exc.code:
        raise
with open(out, "w") as f:
    json.dump(sorted(sys.modules), f)
"""

CONFIG = """
database: sqlite:///{db}
web: {{host: 127.0.0.1, port: 0}}
automations:
  - name: synthetic-volume
    source: {{kind: synthetic, symbols: 3, seed: 7, interval: 60}}
    detector: {{kind: volume_spike, window: 30}}
"""

WEB = {"fastapi", "uvicorn", "signalmint.web.app", "signalmint.serve.web"}
ENGINE = {"signalmint.engine.runner", "signalmint.serve.wiring"}  # (a config loads its source classes to validate)
WORKER = {"signalmint.delivery.runner", "signalmint.delivery.worker"}
NEVER_AT_HEAD = {"alembic", "signalmint.store.migrate"}  # the database is at head: nothing to migrate
UNUSED = {
    "stripe",  # billing is local; only the web app takes payments anyway
    "signalmint.billing.stripe_provider",
    "polars",  # the file sources' dependency; this config reads none
    "signalmint.sources.file",
    "signalmint.sources.fetch",
    "aiohttp",  # the network sources' fetcher
    "signalmint.demo.mailcatcher",
    "reportlab",  # no reports configured
}
PSYCOPG = {"psycopg"}  # SQLite: an engine listens to nothing (a worker's wake-up imports it still)


def imported(tmp_path: Path, *args: str) -> set[str]:
    db = tmp_path / "s.db"
    if not db.exists():
        database = Database(f"sqlite:///{db}")
        migrate(database)
        database.close()
    config = tmp_path / "signalmint.yaml"
    config.write_text(CONFIG.format(db=db))
    out = tmp_path / "modules.json"
    command = [sys.executable, "-c", PROBE, str(out), *args, "-c", str(config)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return set(json.loads(out.read_text()))


@pytest.mark.parametrize(
    ("role", "loads", "never"),
    [
        ("worker", WORKER, WEB | ENGINE | NEVER_AT_HEAD | UNUSED),
        ("engine", ENGINE, WEB | WORKER | NEVER_AT_HEAD | UNUSED | PSYCOPG),
        ("web", WEB, ENGINE | NEVER_AT_HEAD | {"polars", "signalmint.sources.file", "reportlab"}),
    ],
)
def test_a_role_imports_its_own_code_only(tmp_path: Path, role: str, loads: set[str], never: set[str]) -> None:
    modules = imported(tmp_path, "run", "--role", role, "--for", "0")
    assert loads <= modules, loads - modules
    assert not modules & never, sorted(modules & never)


def test_check_loads_no_role_and_no_database(tmp_path: Path) -> None:
    never = WEB | ENGINE | WORKER | NEVER_AT_HEAD | UNUSED | PSYCOPG | {"sqlalchemy"}
    modules = imported(tmp_path, "check")
    assert not modules & never, sorted(modules & never)
