"""Demo mode shows working sign-in links on the page, so it never serves beyond this machine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from signalmint.cli import app as cli
from signalmint.config import WebConfig, parse_settings
from signalmint.demo.seed import demo_settings
from signalmint.errors import ConfigError
from signalmint.registry import Registry
from signalmint.store import Database
from signalmint.web.app import create_app

from ..conftest import free_port
from .test_account_pages import csrf_of, make_app


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "demo.example.com", ""])
def test_the_app_refuses_demo_settings_on_a_reachable_host(sqlite_db: Database, host: str) -> None:
    with pytest.raises(ConfigError) as caught:
        create_app(demo_settings(sqlite_db.url, host=host), sqlite_db)
    message = str(caught.value)
    assert "demo mode shows working sign-in links" in message and "loopback" in message


def test_a_public_base_url_counts_as_reachable(sqlite_db: Database) -> None:
    with pytest.raises(ConfigError, match=re.escape("base_url is 'alerts.example.com'")):
        make_app(sqlite_db, demo=True, base_url="https://alerts.example.com")
    make_app(sqlite_db, demo=False, base_url="https://alerts.example.com")  # outside demo mode: fine


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_the_demo_tour_still_shows_the_operators_link_on_loopback(sqlite_db: Database, host: str) -> None:
    app = create_app(demo_settings(sqlite_db.url, host=host, admin_password="correct horse battery"), sqlite_db)
    with TestClient(app) as client:
        token = csrf_of(client.get("/admin/login").text)
        page = client.post("/admin/link", data={"email": "owner@demo.invalid", "csrf": token})
        assert re.search(r"/admin/auth\?token=", page.text)


def test_a_config_file_cannot_turn_on_demo_mode_for_everyone(registry: Registry) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings("demo: true\nweb:\n  host: 0.0.0.0\n", file="site.yaml", registry=registry)
    assert str(caught.value).startswith("site.yaml:1: demo: demo mode shows working sign-in links")
    assert parse_settings("demo: true\n", registry=registry).demo  # on 127.0.0.1 it is the tour
    assert not parse_settings("web:\n  host: 0.0.0.0\n", registry=registry).demo


def test_the_demo_command_refuses_a_public_host_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    args = ["demo", "--host", "0.0.0.0", "--port", str(free_port()), "--for", "0", "--db", str(db)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: demo mode shows working sign-in links (the operator's too)")
    assert "'0.0.0.0'" in lines[0] and "signalmint run" in lines[0]
    assert not db.exists()  # refused before anything was created


def test_loopback_settings_are_accepted_as_they_are(sqlite_db: Database) -> None:
    app = make_app(sqlite_db, demo=True, web=WebConfig(host="127.0.0.1"))
    assert app.state.ctx.settings.demo
