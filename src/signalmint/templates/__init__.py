"""Config templates for ``signalmint init --template NAME``: YAML files shipped in this package.

Each ``NAME.yaml`` here is a complete business (automation, plans, test-mode
billing, admin) that passes ``signalmint check``; its first line, a comment,
is the one-line description ``signalmint init --list-templates`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from ..errors import ConfigError

__all__ = ["Template", "get_template", "templates"]


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    description: str
    text: str


def templates() -> list[Template]:
    """Every bundled template, by name."""
    found = []
    for entry in resources.files(__name__).iterdir():
        if entry.name.endswith(".yaml"):
            text = entry.read_text(encoding="utf-8")
            first = text.splitlines()[0] if text else ""
            found.append(Template(entry.name.removesuffix(".yaml"), first.lstrip("# ").strip(), text))
    return sorted(found, key=lambda t: t.name)


def get_template(name: str) -> Template:
    """The template called ``name``; a :class:`ConfigError` naming the others if there is none."""
    known = templates()
    for t in known:
        if t.name == name:
            return t
    raise ConfigError(
        f"no template named {name!r}", hint=f"use one of: {', '.join(t.name for t in known)} (see --list-templates)"
    )
