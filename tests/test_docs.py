"""README.md documents every setting, plugin option, CLI command and API route.

Like datasette's test_docs: adding a setting without documenting it fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from signalmint.cli import app as cli_app
from signalmint.config import (
    AdminConfig,
    AutomationConfig,
    BillingConfig,
    BusinessReportConfig,
    CreditsConfig,
    DeliveryConfig,
    DetectorConfig,
    EmailConfig,
    EngineConfig,
    FeeModel,
    OperatorConfig,
    OutcomesConfig,
    PlanConfig,
    Settings,
    StripeConfig,
    TelegramConfig,
    TipsConfig,
    WebConfig,
)
from signalmint.config.reports import AudienceConfig, ContentsConfig, ReportConfig
from signalmint.registry import Registry

README = (Path(__file__).parent.parent / "README.md").read_text()
DOCUMENTED = set(re.findall(r"^\| `([a-z_]+)`(?: \([a-z]+\))? \|", README, flags=re.MULTILINE))


def fields(model: type[BaseModel]) -> list[str]:
    return sorted(model.model_fields)


@pytest.mark.parametrize(
    "model",
    [
        Settings,
        WebConfig,
        AutomationConfig,
        DetectorConfig,
        PlanConfig,
        AdminConfig,
        BusinessReportConfig,
        EmailConfig,
        TelegramConfig,
        DeliveryConfig,
        EngineConfig,
        BillingConfig,
        StripeConfig,
        FeeModel,
        CreditsConfig,
        TipsConfig,
        OperatorConfig,
        OutcomesConfig,
        ReportConfig,
        ContentsConfig,
        AudienceConfig,
    ],
    ids=lambda m: m.__name__,
)
def test_every_setting_is_documented(model: type[BaseModel]) -> None:
    missing = [name for name in fields(model) if name not in DOCUMENTED]
    assert not missing, f"add a README table row for {missing}"


def test_every_plugin_and_option_is_documented() -> None:
    registry = Registry.from_entry_points()
    for what in ("source", "detector"):
        for kind in registry.kinds(what):
            assert f"`kind: {kind}`" in README, f"the {what} {kind!r} has no README section"
            options = fields(registry.get(what, kind).Options)
            missing = [name for name in options if name not in DOCUMENTED]
            assert not missing, f"{what} {kind}: document options {missing}"


def test_every_cli_command_is_documented() -> None:
    for command in cli_app.registered_commands:
        assert command.name or command.callback, "a command has a name or a function"
        name = command.name or getattr(command.callback, "__name__", "")
        assert f"`signalmint {name}" in README, f"document `signalmint {name}` in README"


def test_every_api_route_is_documented() -> None:
    from signalmint.web.routes import (
        admin_api,
        api,
        api_outcomes,
        email_events,
        endpoints,
        feeds,
        ingest,
        me,
        ops,
        telegram,
        unsubscribe,
    )

    for module in (
        api,
        api_outcomes,
        me,
        endpoints,
        unsubscribe,
        feeds,
        telegram,
        email_events,
        admin_api,
        ops,
        ingest,
    ):
        for route in module.router.routes:
            path = getattr(route, "path", "")
            for method in getattr(route, "methods", ()):
                assert f"`{method} {path}" in README, f"document {method} {path} in README's API table"


def test_readme_names_the_two_commands_and_ci_runs_the_test_one() -> None:
    assert "uv run signalmint demo" in README and "uv run pytest" in README
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert ci.rstrip().splitlines()[-1] == "uv run pytest"
