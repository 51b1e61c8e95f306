"""The deployment files in deploy/: the compose file, the systemd units and the config they share.

The compose file is parsed as YAML and checked for what README's "Deployment" promises (PostgreSQL,
a one-shot migration the roles wait for, web, engine and worker from one image with replicas), and
by ``docker compose config`` when Docker's compose plugin is installed (nothing is pulled). The
config every role reads validates against the real plugin registry, and every unit runs the role
its name says.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from signalmint.config import parse_settings
from signalmint.registry import Registry

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ROLES = ("web", "engine", "worker")
ENV = {
    "SIGNALMINT_DATABASE": "postgresql+psycopg://signalmint:pw@postgres:5432/signalmint",
    "SIGNALMINT_SECRET": "a-deploy-test-secret-0123456789abcdef",
    "POSTGRES_PASSWORD": "pw",
}


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return compose


def test_compose_runs_each_role_from_one_image_after_the_migration() -> None:
    services = _compose()["services"]
    assert {"postgres", "migrate", *ROLES} <= set(services)
    assert services["migrate"]["command"][0] == "migrate"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    images = {services[name]["image"] for name in ("migrate", *ROLES)}
    assert len(images) == 1, images
    for role in ROLES:
        command = services[role]["command"]
        assert command[:1] == ["run"] and command[-2:] == ["--role", role], command
        assert services[role]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert "/etc/signalmint/signalmint.yaml" in command
        assert services[role]["environment"]["SIGNALMINT_SECRET"].startswith("${SIGNALMINT_SECRET:?")
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert services["web"]["deploy"]["replicas"] >= 2


def test_compose_passes_docker_compose_config() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("Docker's compose plugin is not installed (`docker compose version` fails)")
    done = subprocess.run(
        [docker, "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        env={**ENV, "PATH": "/usr/bin:/bin:/usr/local/bin"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_the_shared_config_is_valid(registry: Registry) -> None:
    settings = parse_settings(
        (DEPLOY / "signalmint.yaml").read_text(), file="deploy/signalmint.yaml", registry=registry, env=ENV
    )
    assert settings.database.startswith("postgresql+psycopg://")
    assert settings.web.host == "0.0.0.0"
    assert settings.automations


@pytest.mark.parametrize(
    ("unit", "role"),
    [
        ("signalmint-web.service", "web"),
        ("signalmint-engine.service", "engine"),
        ("signalmint-worker@.service", "worker"),
    ],
)
def test_each_systemd_unit_runs_its_role(unit: str, role: str) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / "systemd" / unit).read_text())
    service = parser["Service"]
    assert service["ExecStart"].split() == [
        "/opt/signalmint/.venv/bin/signalmint", "run", "-c", "/etc/signalmint/signalmint.yaml", "--role", role,
    ]  # fmt: skip
    assert service["EnvironmentFile"] == "/etc/signalmint/env"
    assert service["Restart"] == "always"
    assert service["User"] == "signalmint"
    assert parser["Install"]["WantedBy"] == "multi-user.target"
