"""The web layer's shape: route modules share the web core, never one another, and never the engine.

Read from the source with :mod:`ast` (imports inside functions count too), so a new import
that breaks the rule fails here before anyone has to untangle a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[2] / "src" / "signalmint" / "web"
ROUTES = WEB / "routes"
ROUTE_MODULES = frozenset(p.stem for p in ROUTES.glob("*.py") if p.stem != "__init__")


def imported(path: Path) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports, as an absolute dotted name, with its line."""
    package = ["signalmint", *path.relative_to(WEB.parent).with_suffix("").parts[:-1]]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            yield node.lineno, module
            for alias in node.names:  # ``from . import dashboard`` imports a module by name
                yield node.lineno, f"{module}.{alias.name}"


def test_the_import_reader_resolves_relative_imports() -> None:
    found = {module for _line, module in imported(ROUTES / "dashboard.py")}
    assert found >= {"signalmint.web.core.deps", "signalmint.store.accounts", "signalmint.web.params.Id", "fastapi"}


@pytest.mark.parametrize("name", sorted(ROUTE_MODULES))
def test_a_route_module_imports_no_other_route_module(name: str) -> None:
    siblings = {f"signalmint.web.routes.{other}" for other in ROUTE_MODULES}
    path = ROUTES / f"{name}.py"
    bad = [
        f"{path.name}:{line} imports {module}"
        for line, module in imported(path)
        if module in siblings or any(module.startswith(f"{s}.") for s in siblings)
    ]
    assert not bad, "route modules share code through signalmint.web.core (or another web module): " + "; ".join(bad)


def test_every_route_module_is_served() -> None:
    """The router assembly in web/app.py is the one place that names route modules."""
    from signalmint.web import app

    served = {module.__name__.rsplit(".", 1)[-1] for module in app.ROUTES}
    assert served == ROUTE_MODULES


def test_web_does_not_import_the_engine() -> None:
    """The app is handed a running pipeline (``create_app(engine=...)``) and uses it through
    :class:`signalmint.web.context.Pipeline`; it never imports the engine's runner or the fan-out
    (the engine package's plain parts, the hub, metrics and outcomes, sit below the web anyway)."""
    bad = [
        f"{path.relative_to(WEB)}:{line} imports {module}"
        for path in sorted(WEB.rglob("*.py"))
        for line, module in imported(path)
        if module in ("signalmint.engine", "signalmint.engine.Engine")
        or module.startswith(("signalmint.engine.runner", "signalmint.delivery.fanout"))
    ]
    assert not bad, "; ".join(bad)
    touching = [str(p.relative_to(WEB)) for p in sorted(WEB.rglob("*.py")) if ".fanout" in p.read_text()]
    assert not touching, f"web code reaches into the fan-out: {touching}"
