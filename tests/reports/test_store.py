"""Rendering once per period: the PDF's text, idempotent storing, and kill -9 at chosen points.

Real SQLite and PostgreSQL (SIGNALMINT_TEST_PG). The crash tests run the scheduler's step in a
process of its own with a fault-injection hook: at the chosen point it tells the test (a marker
file) and waits; the test sends it SIGKILL there, restarts a step, and counts what is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import pypdf
import pytest
from sqlalchemy import func, select

from signalmint.config import load_settings
from signalmint.records import Report
from signalmint.registry import Registry
from signalmint.reports.scheduler import ReportScheduler, reports_due
from signalmint.store import Database
from signalmint.store.migrate import migrate
from signalmint.store.reports import find_report, list_reports, period_keys, store_report
from signalmint.store.tables import reports

from .. import processes
from .conftest import CONFIG, report_settings, seed_market

NOW = datetime(2026, 11, 30, 9, tzinfo=UTC)  # catch_up 2: W47 and W48 are due


def _count(db: Database) -> dict[str, int]:
    def read(conn: Any) -> dict[str, int]:
        rows = conn.execute(select(reports.c.period_key, func.count()).group_by(reports.c.period_key))
        return {str(k): int(n) for k, n in rows}

    return db.read_sync(read)


def test_the_pdf_text_holds_the_top_signals(db: Database) -> None:
    seed_market(db)
    scheduler = ReportScheduler(report_settings(db.url), db, clock=lambda: NOW)
    stored = {r.period_key: r for r in asyncio.run(scheduler.step())}
    w48 = stored["2026-W48"]
    text = " ".join(page.extract_text() for page in pypdf.PdfReader(BytesIO(w48.pdf)).pages)
    for key, score in (("NVDA", "31.50"), ("TSLA", "27.25"), ("AAPL", "19.75")):
        assert key in text and score in text
    assert "99.00" not in text and "98.00" not in text  # the signals outside the week are not in it
    assert "Top movers" in text and "Track record" in text and "2026-W48" in text
    assert [(s.key, s.score) for s in w48.top] == [("NVDA", 31.5), ("TSLA", 27.25), ("AAPL", 19.75)]
    assert w48.signal_count == 10
    assert "31.50" in w48.html and "<svg" in w48.html
    assert (
        "data:image/png;base64," in w48.email_html and "/automations/stocks/reports/weekly/2026-W48" in w48.email_html
    )


def test_a_period_is_rendered_once_however_often_the_step_runs(db: Database) -> None:
    seed_market(db)
    settings = report_settings(db.url)
    first = ReportScheduler(settings, db, clock=lambda: NOW)
    assert [r.period_key for r in asyncio.run(first.step())] == ["2026-W47", "2026-W48"]
    again = ReportScheduler(settings, db, clock=lambda: NOW + timedelta(hours=3))  # a restart
    assert asyncio.run(again.step()) == [] and again.rendered == 0
    assert db.read_sync(reports_due, settings, NOW) == []
    week_later = ReportScheduler(settings, db, clock=lambda: NOW + timedelta(days=7))
    assert [r.period_key for r in asyncio.run(week_later.step())] == ["2026-W49"]
    assert _count(db) == {"2026-W47": 1, "2026-W48": 1, "2026-W49": 1}
    assert db.read_sync(period_keys, "stocks", "weekly") == {"2026-W47", "2026-W48", "2026-W49"}


def test_two_renderings_of_one_period_keep_the_first(db: Database) -> None:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    report = Report(0, "stocks", "weekly", "T", "2026-W48", at - timedelta(days=8), at - timedelta(days=1), at,
                    pdf=b"%PDF-first", html="<p>first</p>")  # fmt: skip
    kept, ours = db.write_sync(store_report, report)
    assert ours and kept.pdf == b"%PDF-first" and kept.id > 0
    second = Report(0, "stocks", "weekly", "T", "2026-W48", report.period_start, report.period_end, at,
                    pdf=b"%PDF-second", html="<p>second</p>")  # fmt: skip
    kept2, ours2 = db.write_sync(store_report, second)
    assert not ours2 and kept2.id == kept.id and kept2.pdf == b"%PDF-first"
    listed = db.read_sync(list_reports, "stocks")
    assert [r.period_key for r in listed] == ["2026-W48"] and listed[0].pdf == b"" and listed[0].pdf_size == 10
    found = db.read_sync(find_report, "stocks", "weekly", "2026-W48")
    assert found is not None and found.html == "<p>first</p>"


def step_until_killed(config: str, point: str, marker: str) -> None:
    """The child process (tests/processes.py): one report step that, at ``point`` of 2026-W48,
    says so in ``marker`` and waits to be killed."""
    settings = load_settings(config, registry=Registry.from_entry_points())
    db = Database(settings.database)

    def hook(at: str, automation: str, report: str, key: str) -> None:
        if at == point and key == "2026-W48":
            Path(marker).write_text(at)
            time.sleep(600)  # the test kills us here

    scheduler = ReportScheduler(settings, db, clock=lambda: datetime(2026, 11, 30, 9, tzinfo=UTC), hook=hook)
    asyncio.run(scheduler.step())


@pytest.mark.slow
@pytest.mark.parametrize("point", ["due", "rendering", "rendered", "stored"])
def test_kill_9_anywhere_in_a_step_leaves_exactly_one_report_per_period(
    db: Database, tmp_path: Path, point: str
) -> None:
    seed_market(db)
    config = tmp_path / "signalmint.yaml"
    config.write_text(CONFIG.format(database=db.url))
    marker = tmp_path / "at"
    child = processes.call(step_until_killed, str(config), point, str(marker))
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, "the step ended before reaching the point"
            assert time.monotonic() < deadline, "the step never reached the point"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    before = _count(db)
    assert before.get("2026-W47") == 1  # rendered and stored before the kill
    assert before.get("2026-W48") == (1 if point == "stored" else None)
    restarted = ReportScheduler(report_settings(db.url), db, clock=lambda: NOW + timedelta(minutes=5))
    asyncio.run(restarted.step())
    assert _count(db) == {"2026-W47": 1, "2026-W48": 1}
    assert restarted.rendered == (0 if point == "stored" else 1)  # a stored period is never rendered again
    w48 = db.read_sync(find_report, "stocks", "weekly", "2026-W48")
    assert w48 is not None and w48.pdf.startswith(b"%PDF") and "NVDA" in w48.html


@pytest.mark.slow
def test_the_engine_role_renders_due_reports(tmp_path: Path) -> None:
    """`serve` with the engine role runs the report step: a report every minute shows up."""
    from signalmint.serve.process import RoleCode, serve
    from signalmint.serve.wiring import wire_engine

    url = f"sqlite:///{tmp_path / 'e.db'}"
    db = Database(url)
    migrate(db)
    extra = """      - name: minutely
        schedule: "* * * * *"
        period: run
        catch_up: 1
"""
    settings = report_settings(url, extra)

    async def until_rendered() -> list[Any]:
        """Serve until the report is stored (at most 60 s), then stop serving."""
        serving = asyncio.create_task(
            serve(settings, db, Registry.from_entry_points(), RoleCode(engine=wire_engine), run_for=60.0)
        )
        try:
            while not (found := await db.read(list_reports, "stocks", name="minutely")) and not serving.done():
                await asyncio.sleep(0.05)
            return found
        finally:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving

    try:
        found = asyncio.run(until_rendered())
    finally:
        db.close()
    assert len(found) == 1 and found[0].period_end <= datetime.now(UTC)
