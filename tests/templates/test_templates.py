"""`signalmint init --template NAME` writes a complete business that `signalmint check` accepts."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from signalmint.cli import app
from signalmint.templates import templates

runner = CliRunner()

NAMES = [t.name for t in templates()]

NICHES = {  # template -> (source kind, detector kind)
    "crypto-volume": ("ccxt", "volume_spike"),
    "us-stocks-volume": ("alpaca", "volume_spike"),
    "shop-price-drop": ("web_page", "price_drop"),
    "back-in-stock": ("web_page", "restock"),
    "rss-keyword": ("rss", "new_item"),
    "github-trending": ("http_json", "pct_move"),
    "seo-rank-change": ("http_json", "pct_move"),
    "whale-transfers": ("evm", "threshold"),
    "gas-spike": ("evm", "anomaly"),
    "webhook-metric": ("push", "anomaly"),
}


def _required_env(text: str) -> dict[str, str]:
    """A stand-in value for each ``${VAR}`` without a default the template needs (an operator's secrets)."""
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())  # comments name optional ones
    names = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", code))
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    return {n: secret if n.endswith("_SECRET") else "test-token" for n in names}


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
    for var, value in _required_env(next(t.text for t in templates() if t.name == name)).items():
        monkeypatch.setenv(var, value)
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
    assert automation["name"] == name
    assert (automation["source"]["kind"], automation["detector"]["kind"]) == NICHES[name]
    assert automation["title"] and automation["description"]  # the copy of its landing page


def test_every_niche_has_its_template() -> None:
    assert set(NAMES) == set(NICHES)


def test_secrets_stay_in_the_environment() -> None:
    by_name = {t.name: t.text for t in templates()}
    assert "${GITHUB_TOKEN}" in by_name["github-trending"]
    assert "${SERP_API_KEY}" in by_name["seo-rank-change"]
    assert "secret: ${WEBHOOK_METRIC_SECRET}" in by_name["webhook-metric"]
    assert _required_env(by_name["shop-price-drop"]) == {}  # a public page needs no key


def test_a_template_needing_a_secret_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    path = tmp_path / "signalmint.yaml"
    assert runner.invoke(app, ["init", str(path), "--template", "github-trending"]).exit_code == 0
    checked = runner.invoke(app, ["check", "-c", str(path)])
    assert checked.exit_code == 1 and "GITHUB_TOKEN is not set" in checked.output


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
    assert by_name["whale-transfers"]["blocks"] is False
    assert set(by_name["whale-transfers"]["tokens"]) == {"USDC", "USDT"}
    assert by_name["rss-keyword"]["urls"] and by_name["shop-price-drop"]["urls"]


def test_an_unknown_template_names_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "signalmint.yaml"
    result = runner.invoke(app, ["init", str(path), "--template", "nope"])
    assert result.exit_code == 1
    assert "no template named 'nope'" in result.output and "us-stocks-volume" in result.output
    assert not path.exists()
