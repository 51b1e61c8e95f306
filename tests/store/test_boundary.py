"""SQL lives in store/: no module outside it imports SQLAlchemy or the store's tables.

Read from the source (every import statement, those inside functions included), so a query
written anywhere else fails here with the file and line to move it from.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import signalmint

PACKAGE = Path(signalmint.__file__).parent


def _imports(path: Path, root: Path = PACKAGE.parent) -> Iterator[tuple[int, str]]:
    """(line, absolute name) of everything ``path`` imports (``root`` holds its top package)."""
    parts = path.relative_to(root).with_suffix("").parts
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = parts[: len(parts) - node.level] if node.level else ()
            module = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}" if node.level or node.module else alias.name


def _outside_store() -> Iterator[Path]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] != "store":
            yield path


def test_no_sqlalchemy_or_tables_outside_store() -> None:
    found = [
        f"{path.relative_to(PACKAGE)}:{line}: {module}"
        for path in _outside_store()
        for line, module in _imports(path)
        if module.split(".")[0] == "sqlalchemy" or module.startswith("signalmint.store.tables")
    ]
    assert found == [], "move these queries into signalmint/store/ behind named functions:\n" + "\n".join(found)


def test_delivery_does_not_import_billing() -> None:
    """Delivery sits below billing: credits it charges go through store/ledger."""
    found = [
        f"{path.relative_to(PACKAGE)}:{line}: {module}"
        for path in sorted((PACKAGE / "delivery").rglob("*.py"))
        for line, module in _imports(path)
        if module.startswith("signalmint.billing")
    ]
    assert found == []


def test_the_check_sees_relative_and_nested_imports(tmp_path: Path) -> None:
    module = tmp_path / "pkg" / "delivery" / "mod.py"
    module.parent.mkdir(parents=True)
    module.write_text("from ..store import tables\n\ndef f():\n    from sqlalchemy import select\n    import numpy\n")
    assert list(_imports(module, tmp_path)) == [(1, "pkg.store.tables"), (4, "sqlalchemy.select"), (5, "numpy")]
