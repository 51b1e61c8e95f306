"""`signalmint report render`: any past period into HTML and PDF, clear errors for anything else."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pypdf
import pytest
from typer.testing import CliRunner

from signalmint.cli import app
from signalmint.store import Database
from signalmint.store.migrate import migrate

from .conftest import CONFIG, seed_market

runner = CliRunner()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    migrate(db)
    seed_market(db)
    db.close()
    path = tmp_path / "signalmint.yaml"
    path.write_text(CONFIG.format(database=f"sqlite:///{tmp_path / 'r.db'}"))
    return path


def test_render_writes_html_email_and_pdf_of_a_past_week(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["report", "render", "-c", str(config), "--automation", "stocks", "--period", "2026-W48", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "10 signals" in result.output
    html = (out / "stocks-weekly-2026-W48.html").read_text()
    assert html.startswith("<!doctype html>") and "<style>" in html and "NVDA" in html and "<svg" in html
    email = (out / "stocks-weekly-2026-W48.email.html").read_text()
    assert "data:image/png;base64," in email and "<svg" not in email and "<style" not in email
    text = pypdf.PdfReader(out / "stocks-weekly-2026-W48.pdf").pages[0].extract_text()
    assert "NVDA" in text and "31.50" in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--automation", "nope", "--period", "2026-W48"], "no automation 'nope'"),
        (["--automation", "stocks", "--report", "daily", "--period", "2026-W48"], "has no report 'daily'"),
        (["--automation", "stocks", "--period", "2026-11"], "covers weeks: write e.g. 2026-W48"),
        (["--automation", "stocks", "--period", "2026-W60"], "not a valid period"),
        (["--automation", "stocks", "--period", "2999-W01"], "has not ended yet"),
        (["--automation", "stocks"], "give the period to render: --period 2026-W48"),
    ],
)
def test_render_explains_bad_arguments(config: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    result = runner.invoke(app, ["report", "render", "-c", str(config), "--out", str(tmp_path / "o"), *extra])
    assert result.exit_code == 1
    assert message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "o").exists()


def test_the_real_command_renders(config: Path, tmp_path: Path) -> None:
    """The installed entry point, in a process of its own."""
    out = tmp_path / "real"
    done = subprocess.run(
        [sys.executable, "-m", "signalmint.cli", "report", "render", "-c", str(config), "--automation", "stocks",
         "--period", "2026-W48", "--out", str(out)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"}, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (out / "stocks-weekly-2026-W48.pdf").read_bytes().startswith(b"%PDF")
