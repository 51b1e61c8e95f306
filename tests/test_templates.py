"""`signalmint init --template NAME` writes a complete business that `signalmint check` accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from signalmint.cli import app
from signalmint.templates import templates

runner = CliRunner()

NAMES = [t.name for t in templates()]


def test_both_templates_ship_with_a_description() -> None:
    assert {"crypto-volume", "us-stocks-volume"} <= set(NAMES)
    result = runner.invoke(app, ["init", "--list-templates"])
    assert result.exit_code == 0, result.output
    for t in templates():
        assert t.name in result.output
        assert t.description and not t.description.startswith("#")
        assert t.description.split()[0] in result.output


@pytest.mark.parametrize("name", NAMES)
def test_a_template_passes_check(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIGNALMINT_DATABASE", raising=False)
    path = tmp_path / "signalmint.yaml"
    result = runner.invoke(app, ["init", str(path), "--template", name])
    assert result.exit_code == 0, result.output
    checked = runner.invoke(app, ["check", "-c", str(path)])
    assert checked.exit_code == 0, checked.output
    assert name in checked.output


@pytest.mark.parametrize("name", NAMES)
def test_a_template_is_a_whole_business(name: str) -> None:
    config = yaml.safe_load(next(t.text for t in templates() if t.name == name))
    assert [p["id"] for p in config["plans"]] == ["free", "premium", "pro"]
    assert config["plans"][0].get("price", 0) == 0 and config["plans"][1]["price"] > 0
    assert config["billing"]["provider"] == "local"  # test mode: no money moves
    assert config["admin"]["email"]
    (automation,) = config["automations"]
    assert automation["name"] == name and automation["detector"]["kind"] == "volume_spike"


def test_the_templates_source_options() -> None:
    by_name = {t.name: yaml.safe_load(t.text)["automations"][0]["source"] for t in templates()}
    assert by_name["crypto-volume"] == {
        "kind": "ccxt",
        "exchange": "binance",
        "timeframe": "1m",
        "symbols": {"top": 50, "quote": "USDT"},
    }
    assert by_name["us-stocks-volume"]["kind"] == "alpaca"
    assert "APCA" not in str(by_name["us-stocks-volume"])  # keys stay in the environment


def test_an_unknown_template_names_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "signalmint.yaml"
    result = runner.invoke(app, ["init", str(path), "--template", "nope"])
    assert result.exit_code == 1
    assert "no template named 'nope'" in result.output and "us-stocks-volume" in result.output
    assert not path.exists()
