"""The house rules that keep the package readable by domain (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cohortctl"
DISPLAY = ("typer", "rich", "click")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_only_the_command_layer_imports_the_display_libraries() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "cli" or relative.name == "__main__.py":
            continue
        for name in _imports(path):
            top = name.split(".")[0]
            if top in DISPLAY and not (top == "click" and relative == Path("config.py")):
                offenders.append(f"{relative}: {name}")
            if name.startswith("cohortctl.cli"):
                offenders.append(f"{relative}: {name}")
    assert not offenders, offenders
