"""The package's shape: the stage order and SQL only in store/ (import-linter contracts in
pyproject.toml), and no import of our own modules hidden inside a function.

An import inside a function is how a cycle or a backwards dependency hides from both Python and
import-linter's reader: the module loads, and the wrong arrow stays. So none are allowed, but
for the short list below, each with its reason.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "signalmint"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

#: (module file, the module it imports inside a function) -> why that is allowed.
ALLOWED: dict[tuple[str, str], str] = {
    # reportlab takes half a second to load: only an engine with reports configured pays for it.
    ("serve/process.py", "signalmint.reports.scheduler"): "reportlab's load time",
}
#: Modules whose function-level imports are all allowed.
ALLOWED_MODULES: dict[str, str] = {
    # `signalmint --help`, `init` and `check` answer without loading the web app, SQLAlchemy, the
    # engine or the demo: each command imports what it runs. cli.py is the top layer, so nothing
    # can import it back (the stage contract checks these imports too: grimp reads function bodies).
    "cli.py": "start-up time of the command line",
}


def lint_imports(pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )


def test_import_contracts_hold() -> None:
    """The stage order and SQL-only-in-store (pyproject's [tool.importlinter] contracts)."""
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("store/revenue.py", "from ..billing import analytics", "Stage order"),  # a lower stage importing a higher
        ("engine/runner.py", "from ..delivery import fanout", "Stage order"),
        ("delivery/render.py", "from ..web import filters", "Stage order"),
        ("access/entitlements.py", "import sqlalchemy", "SQL lives in store/"),
    ],
)
def test_import_contracts_catch_a_violation(tmp_path: Path, module: str, line: str, broken: str) -> None:
    """The contracts are not vacuous: one wrong import in a copy of the package breaks them."""
    copy = tmp_path / "signalmint"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "static"))
    target = copy / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    result = lint_imports(pythonpath=tmp_path)
    assert result.returncode != 0, result.stdout
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout, result.stdout


def function_imports(path: Path, root: Path = PACKAGE.parent) -> list[tuple[int, str]]:
    """(line, absolute module) of every import of a signalmint module inside a function of
    ``path`` (a file under ``root``, the folder holding the ``signalmint`` package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = list(path.relative_to(root).parts[:-1])  # the package the module (or __init__) is in
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, inside: bool) -> None:
        for child in ast.iter_child_nodes(node):
            deeper = inside or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if deeper and isinstance(child, ast.ImportFrom):
                base = package[: len(package) - child.level + 1] if child.level else []
                module = ".".join([*base, *([child.module] if child.module else [])])
                if module.split(".")[0] == "signalmint":
                    found.append((child.lineno, module))
            elif deeper and isinstance(child, ast.Import):
                found.extend((child.lineno, a.name) for a in child.names if a.name.split(".")[0] == "signalmint")
            visit(child, deeper)

    visit(tree, False)
    return found


def test_function_imports_sees_relative_and_absolute_imports(tmp_path: Path) -> None:
    sample = tmp_path / "signalmint" / "web" / "routes" / "sample.py"
    sample.parent.mkdir(parents=True)
    sample.write_text(
        "from . import top_level_is_fine\n"
        "def f():\n"
        "    from .dashboard import x\n"
        "    from ...store import y\n"
        "    import signalmint.engine\n"
        "    import numpy\n"
        "    return lambda: __import__('os')\n"
        "class C:\n"
        "    async def g(self):\n"
        "        if True:\n"
        "            from signalmint.billing import credits\n"
    )
    assert function_imports(sample, tmp_path) == [
        (3, "signalmint.web.routes.dashboard"),
        (4, "signalmint.store"),
        (5, "signalmint.engine"),
        (11, "signalmint.billing"),
    ]


def test_no_function_imports_our_own_modules() -> None:
    """Every import of a signalmint module sits at the top of its module, where the import-linter
    contracts and a reader see it, unless listed in ALLOWED with its reason."""
    hidden = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if name.startswith("store/migrations/") or name in ALLOWED_MODULES:
            continue
        hidden += [
            f"{name}:{line} imports {module} inside a function"
            for line, module in function_imports(path)
            if (name, module) not in ALLOWED
        ]
    assert not hidden, "\n".join(hidden)


def test_the_allow_list_is_still_needed() -> None:
    """An allowed import that is gone must leave the list too, so the list only shrinks."""
    for name, module in ALLOWED:
        assert module in {m for _, m in function_imports(PACKAGE / name)}, (name, module)
