"""Report definitions in the YAML: errors name the file, the line and the key."""

from __future__ import annotations

import pytest

from signalmint.errors import ConfigError

from .conftest import report_settings


def test_a_valid_definition_loads() -> None:
    settings = report_settings("sqlite:///x.db")
    (spec,) = settings.automation("stocks").reports
    assert (spec.name, spec.period, spec.audience.plans, spec.audience.price) == (
        "weekly",
        "week",
        ["premium", "pro"],
        300,
    )
    assert spec.contents.top_signals == 3 and spec.contents.charts


@pytest.mark.parametrize(
    ("old", "new", "line", "key", "message"),
    [
        ('schedule: "0 8 * * MON"', 'schedule: "8am mondays"', 15, "reports[0].schedule", "five-field cron"),
        ("timezone: UTC", "timezone: Europe/Atlantis", 16, "reports[0].timezone", "IANA time zone"),
        ("period: week", "period: fortnight", 17, "reports[0].period", "'day', 'week', 'month' or 'run'"),
        ("plans: [premium, pro]", "plans: [premium, gold]", 19, "audience.plans", "unknown plan(s) ['gold']"),
        ("top_signals: 3", "top_signal: 3", 18, "contents.top_signal", "Extra inputs"),
        ("price: 300", "price: -5", 19, "audience.price", "greater than or equal to 1"),
    ],
)
def test_mistakes_point_at_their_line_and_key(old: str, new: str, line: int, key: str, message: str) -> None:
    from .conftest import CONFIG

    text = CONFIG.format(database="sqlite:///x.db")
    assert old in text
    from signalmint.config import parse_settings
    from signalmint.registry import Registry

    with pytest.raises(ConfigError) as caught:
        parse_settings(text.replace(old, new), file="shop.yaml", registry=Registry.from_entry_points())
    error = caught.value
    assert message in str(error) and key in str(error)
    changed = text.replace(old, new).splitlines()
    assert line == next(n for n, row in enumerate(changed, 1) if new in row)
    assert f"shop.yaml:{line}:" in str(error)


def test_two_reports_of_one_automation_need_different_names() -> None:
    extra = """      - name: weekly
        schedule: "0 9 * * MON"
"""
    with pytest.raises(ConfigError, match="two reports share a name"):
        report_settings("sqlite:///x.db", extra)
