"""The `signalmint` command: init, check, verify, and a real `signalmint demo` process."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, text
from typer.testing import CliRunner

from signalmint.cli import app
from signalmint.config import load_settings
from signalmint.records import Signal
from signalmint.registry import Registry
from signalmint.store import Database, append_signals
from signalmint.store.migrate import migrate

from . import processes
from .conftest import free_port

runner = CliRunner()
ALL_DEMO = {"us-stocks-volume", "synthetic-volume", "shop-price-drop", "news-keyword"}


def test_init_writes_a_config_that_check_accepts(tmp_path: Path) -> None:
    path = tmp_path / "signalmint.yaml"
    result = runner.invoke(app, ["init", str(path)])
    assert result.exit_code == 0, result.output
    assert path.read_text().startswith("# signalmint configuration")
    checked = runner.invoke(app, ["check", "-c", str(path)])
    assert checked.exit_code == 0, checked.output
    assert "us-stocks-volume" in checked.output and "synthetic-volume" in checked.output
    again = runner.invoke(app, ["init", str(path)])
    assert again.exit_code == 1 and "already exists" in again.output


def test_init_writes_a_whole_small_business(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plans free/premium/pro, billing in test mode and an admin: a paid service out of the box."""
    for name in ("SIGNALMINT_DATABASE", "SIGNALMINT_BASE_URL", "SIGNALMINT_ADMIN_EMAIL", "SIGNALMINT_ADMIN_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "signalmint.yaml"
    assert runner.invoke(app, ["init", str(path)]).exit_code == 0
    checked = runner.invoke(app, ["check", "-c", str(path)])
    assert checked.exit_code == 0, checked.output
    assert "plans:   free (Free), premium ($29/mo), pro ($99/mo, 7-day trial)" in checked.output
    assert "billing: local (test mode, no money moves)" in checked.output
    assert "admin:   owner@example.com (emailed link)" in checked.output
    settings = load_settings(path, registry=Registry.from_entry_points())
    by_id = {p.id: p for p in settings.plans}
    assert sorted(by_id) == ["free", "premium", "pro"]
    assert by_id["free"].price == 0 and by_id["free"].masked_fields and by_id["free"].delay.total_seconds() > 0
    assert by_id["premium"].price == 2900 and not by_id["premium"].masked_fields
    assert "api" in by_id["pro"].channels and by_id["pro"].api_quota == 10_000
    assert settings.billing.provider == "local" and settings.admin.email == "owner@example.com"
    assert settings.admin.password in (None, "")  # no default password: nobody guesses their way in
    monkeypatch.setenv("SIGNALMINT_ADMIN_PASSWORD", "a long enough secret")
    with_password = runner.invoke(app, ["check", "-c", str(path)])
    assert "admin:   owner@example.com (emailed link or password)" in with_password.output


def test_check_reports_file_line_key_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "automations:\n  - name: x\n    source: {kind: synthetic}\n    detector:\n      kind: volume_spike\n"
        "      ratio: lots\n"
    )
    result = runner.invoke(app, ["check", "-c", str(path)])
    assert result.exit_code == 1
    assert f"{path}:6: automations[0].detector.ratio" in result.output
    assert "hint: write a number" in result.output
    assert "Traceback" not in result.output


def test_check_warns_when_fees_eat_a_price_point(tmp_path: Path) -> None:
    path = tmp_path / "cheap.yaml"
    path.write_text("plans:\n  - id: tiny\n    price: 100\n  - id: fine\n    price: 2900\n")
    result = runner.invoke(app, ["check", "-c", str(path)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "warning: plan tiny ($1/mo): fees of $0.33 take 33.0%" in text and "prepaid credits" in text
    assert "plan fine" not in text


def test_check_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", "-c", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1 and "no such file" in result.output and "signalmint init" in result.output


def test_verify_passes_then_catches_an_edit(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    db = Database(f"sqlite:///{path}")
    migrate(db)
    for i in range(3):
        signal = Signal("a", f"K{i}", datetime(2024, 1, 1, i, tzinfo=UTC), "volume_spike", 5.0, {"ratio": 5.0})
        db.write_sync(append_signals, "a", [signal], datetime.now(UTC))
    ok = runner.invoke(app, ["verify", "--db", str(path)])
    assert ok.exit_code == 0 and "3 signals, chain intact" in ok.output

    def edit(conn: Connection) -> None:
        conn.execute(text("DROP TRIGGER signals_no_update"))
        conn.execute(text("UPDATE signals SET payload = '{\"ratio\": 50.0}' WHERE seq = 2"))

    db.write_sync(edit)
    db.close()
    broken = runner.invoke(app, ["verify", "--db", str(path)])
    assert broken.exit_code == 1
    assert "broken at signal #2" in broken.output


def test_verify_reads_only_and_fails_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    result = runner.invoke(app, ["verify", "--db", str(missing)])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: no database at {missing}"
    assert not missing.exists() and list(tmp_path.iterdir()) == []  # nothing created
    (tmp_path / "junk.db").write_text("not a database")
    (tmp_path / "empty.db").touch()
    for name, says in (("junk.db", "file is not a database"), ("empty.db", "is not a signalmint database")):
        result = runner.invoke(app, ["verify", "--db", str(tmp_path / name)])
        assert result.exit_code == 1 and says in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert (tmp_path / "empty.db").stat().st_size == 0  # still untouched: not migrated, not put in WAL mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db", "junk.db"]


@pytest.mark.slow
def test_demo_process_serves_signals_from_every_automation(tmp_path: Path) -> None:
    """Both markets, the local shop and the local news feed: each gives signals within 35 s (speed 8).

    The process starts from the test zygote (tests/processes.py); the command as typed
    (`python -m signalmint.cli`) is the worker-role test's below, and the browser test's demo."""
    port = free_port()
    db = tmp_path / "demo.db"
    keys_file = tmp_path / "keys.json"
    demo = ["demo", "--port", str(port), "--for", "40", "--db", str(db), "--speed", "8", "--keys-file", str(keys_file)]
    proc = processes.start(demo, output=tmp_path / "demo.log")
    seen: set[str] = set()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            deadline = time.monotonic() + 35
            while time.monotonic() < deadline and seen != ALL_DEMO:
                time.sleep(0.2)
                if not keys_file.exists():
                    continue
                accounts = {a["role"]: a["api_key"] for a in json.loads(keys_file.read_text())["accounts"]}
                pro = {"Authorization": f"Bearer {accounts['pro']}"}  # live signals are real time for pro only
                try:
                    items = http.get("/api/v1/signals", params={"limit": 200}, headers=pro).json()["items"]
                except httpx.TransportError:
                    continue
                seen |= {item["automation"] for item in items}
            assert seen == ALL_DEMO
            public = http.get("/api/v1/signals", params={"limit": 500}).json()["items"]
            assert all(item["automation"] == "us-stocks-volume" for item in public)  # live ones are 15 min late
            day_ago = datetime.now(UTC) - timedelta(hours=24)  # the demo's free plan: reveal_after 24h
            for item in public:  # masked as the free plan is, until the mask expires
                assert (item["score"] is None) == (datetime.fromisoformat(item["time"]) > day_ago), item
            free = {"Authorization": f"Bearer {accounts['free']}"}
            assert {i["key"] for i in http.get("/api/v1/signals", headers=free).json()["items"]} <= {
                "AAPL",
                "MSFT",
                "SYN001",
            }
            assert http.get("/").status_code == 200
            admin = {"Authorization": f"Bearer {accounts['admin']}"}
            mrr_before = _mrr(http, admin)
            subscribe_in_test_mode(http, "visitor@example.com", "premium")
            # at once: the visitor's plan is premium, real time (the live automation's fresh signals)
            assert "Premium plan" in http.get("/dashboard").text
            deadline = time.monotonic() + 10
            fresh: list[Any] = []
            while time.monotonic() < deadline and not fresh:
                items = http.get("/api/v1/signals", params={"automation": "synthetic-volume"}).json()["items"]
                fresh = [i for i in items if i["score"] is not None]
                time.sleep(0.2)
            assert fresh, "a premium subscriber sees the live automation unmasked, in real time"
            assert _mrr(http, admin) == mrr_before + 2900  # and the operator's MRR moved
            assert "signalmint_signals_total" in http.get("/metrics").text
            health = http.get("/healthz").json()
            assert {a["name"] for a in health["automations"]} == ALL_DEMO
        proc.send_signal(2)  # SIGINT: a clean shutdown
        output, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    assert f"http://127.0.0.1:{port}" in output
    assert "checkpoint saved" in output


def _mrr(http: httpx.Client, admin: dict[str, str]) -> int:
    body = http.get("/api/v1/admin/revenue", params={"months": 1}, headers=admin).json()
    return int(next(r for r in body["period"]["total"] if r["currency"] == "usd")["mrr"])


def subscribe_in_test_mode(http: httpx.Client, email: str, plan: str) -> None:
    """A visitor signs up (demo mode shows the link), then pays for ``plan`` on the test-mode checkout."""
    csrf = re.compile(r'name="csrf" value="([^"]+)"')
    page = http.get("/signup", params={"plan": "free"})
    answer = http.post("/signup", data={"email": email, "plan": "free", "csrf": csrf.findall(page.text)[0]})
    link = re.search(r'href="https?://[^/"]+(/confirm\?token=[^"]+)"', answer.text)
    assert link is not None, answer.text
    assert http.get(link.group(1).replace("&amp;", "&")).status_code == 303  # signed in
    billing = http.get("/dashboard/billing")
    started = http.post("/billing/subscribe", data={"plan": plan, "csrf": csrf.findall(billing.text)[0]})
    checkout = started.headers["location"]
    page = http.get(checkout)
    assert "TEST MODE" in page.text
    paid = http.post(checkout, data={"action": "pay", "csrf": csrf.findall(page.text)[0]})
    assert paid.status_code == 303 and "Thank you" in http.get(paid.headers["location"], follow_redirects=True).text


def test_a_worker_role_process_serves_no_web_port(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "signalmint.yaml"
    config.write_text(f"database: sqlite:///{tmp_path / 'w.db'}\nweb: {{port: {port}}}\n")
    command = [sys.executable, "-m", "signalmint.cli", "run", "-c", str(config), "--role", "worker", "--for", "2"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while proc.poll() is None:  # for its whole life
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            time.sleep(0.2)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "delivery worker" in output and "is running at" not in output
