from __future__ import annotations

from datetime import timedelta
from importlib import resources
from pathlib import Path

import pytest

from signalmint.config import Settings, load_settings, parse_duration, parse_settings
from signalmint.errors import ConfigError
from signalmint.registry import Registry

GOOD = """\
database: sqlite:///x.db
automations:
  - name: demo
    source:
      kind: synthetic
      symbols: 20
    detector:
      kind: volume_spike
      window: 20
      cooldown: 15m
"""


def parse(text: str, registry: Registry, env: dict[str, str] | None = None) -> Settings:
    return parse_settings(text, file="cfg.yaml", registry=registry, env=env or {})


def error_of(text: str, registry: Registry, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, registry, env)
    return info.value


def test_valid_config_parses(registry: Registry) -> None:
    settings = parse(GOOD, registry)
    automation = settings.automation("demo")
    assert automation.source.kind == "synthetic"
    assert automation.source.options == {"symbols": 20}
    assert automation.detector.options == {"window": 20}
    assert automation.detector.cooldown == timedelta(minutes=15)
    assert settings.web.port == 8000


def test_example_config_passes_check(registry: Registry) -> None:
    text = resources.files("signalmint").joinpath("example.yaml").read_text()
    settings = parse(text, registry, env={})
    assert [a.name for a in settings.automations] == ["us-stocks-volume", "synthetic-volume"]
    assert settings.database == "sqlite:///signalmint.db"


def test_wrong_type_names_file_line_key_and_hint(registry: Registry) -> None:
    error = error_of(GOOD.replace("window: 20", "window: twenty"), registry)
    assert error.file == "cfg.yaml"
    assert error.line == 9
    assert error.key == "automations[0].detector.window"
    assert "twenty" in str(error)
    assert error.hint and "number" in error.hint


def test_typo_in_plugin_option_suggests_the_right_key(registry: Registry) -> None:
    error = error_of(GOOD.replace("window: 20", "windw: 20"), registry)
    assert error.line == 9
    assert error.key == "automations[0].detector.windw"
    assert error.hint == "did you mean `window`?"


def test_typo_in_top_level_key(registry: Registry) -> None:
    error = error_of("databse: sqlite:///x.db\n", registry)
    assert error.line == 1
    assert error.key == "databse"
    assert error.hint == "did you mean `database`?"


def test_unknown_plugin_kind_lists_installed_ones(registry: Registry) -> None:
    error = error_of(GOOD.replace("kind: synthetic", "kind: synthetc"), registry)
    assert error.line == 5
    assert error.key == "automations[0].source.kind"
    assert error.hint is not None and "synthetic" in error.hint and "bokeh_stocks" in error.hint


def test_missing_required_key(registry: Registry) -> None:
    text = "automations:\n  - name: demo\n    source:\n      kind: synthetic\n"
    error = error_of(text, registry)
    assert error.key == "automations[0].detector"
    assert error.line == 2
    assert error.hint == "add `detector: ...`"


def test_out_of_range_value(registry: Registry) -> None:
    error = error_of(GOOD.replace("window: 20", "window: 1"), registry)
    assert error.key == "automations[0].detector.window"
    assert "greater than or equal" in error.message


def test_bad_duration(registry: Registry) -> None:
    error = error_of(GOOD.replace("cooldown: 15m", "cooldown: soon"), registry)
    assert error.line == 10
    assert "duration" in error.message


def test_duplicate_automation_names(registry: Registry) -> None:
    twice = GOOD + GOOD.split("automations:\n", 1)[1]
    error = error_of(twice, registry)
    assert "unique" in error.message


def test_invalid_yaml_points_at_the_line(registry: Registry) -> None:
    error = error_of("web:\n  port: 80\n bad: [\n", registry)
    assert error.line is not None and error.line >= 3
    assert "YAML" in error.message


def test_env_interpolation(registry: Registry) -> None:
    text = "database: ${DB_URL}\nweb:\n  port: ${PORT:-9000}\n"
    settings = parse(text, registry, env={"DB_URL": "sqlite:///env.db"})
    assert settings.database == "sqlite:///env.db"
    assert settings.web.port == 9000


def test_missing_env_var_is_reported_with_its_line(registry: Registry) -> None:
    error = error_of("web:\n  title: x\ndatabase: ${NOPE_NOT_SET}\n", registry)
    assert error.line == 3
    assert error.key == "database"
    assert "NOPE_NOT_SET" in error.message


def test_missing_file(tmp_path: Path, registry: Registry) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "nope.yaml", registry=registry)
    assert "no such file" in str(info.value)


def test_bad_automation_name(registry: Registry) -> None:
    error = error_of(GOOD.replace("name: demo", "name: Demo Feed"), registry)
    assert error.key == "automations[0].name"
    assert error.hint and "lowercase" in error.hint


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("15m", 900), ("2h", 7200), ("7d", 604800), ("1w", 604800), (12, 12)]
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


def test_negative_duration_refused() -> None:
    with pytest.raises(ValueError):
        parse_duration(-1)


def test_the_stripe_provider_needs_its_keys(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("billing:\n  provider: stripe\n  stripe:\n    secret_key: sk_test_x\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, registry=registry)
    assert "billing" in str(caught.value) and "stripe.webhook_secret" in str(caught.value)
