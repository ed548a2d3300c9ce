"""The core is pure: every module in ledger/core imports only the stdlib, yaml, celpy/lark, re2
(CEL's regular expressions), ledger.core and ledger.errors (STYLE.md rule 1)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[3] / "ledger" / "core"
ALLOWED_THIRD_PARTY = {"yaml", "celpy", "lark", "re2"}
ALLOWED_OWN = ("ledger.core", "ledger.errors")
# Standard-library modules that do I/O, read the clock or randomness: never in the core.
FORBIDDEN_STDLIB = {
    "os",
    "random",
    "secrets",
    "socket",
    "subprocess",
    "time",
    "pathlib",
    "io",
    "shutil",
    "tempfile",
    "threading",
    "asyncio",
}


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.append((f"ledger.core.{node.module or ''}", node.lineno))
            elif node.module:
                found.append((node.module, node.lineno))
    return found


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_module_imports_only_allowed_modules(path: Path) -> None:
    bad = []
    for name, line in _imports(path):
        top = name.split(".")[0]
        if name.startswith(ALLOWED_OWN) or top in ALLOWED_THIRD_PARTY or top == "__future__":
            continue
        if top in sys.stdlib_module_names and top not in FORBIDDEN_STDLIB:
            continue
        bad.append(f"{path.name}:{line} imports {name}")
    assert not bad, "\n".join(bad)


def test_core_has_modules() -> None:
    assert len(list(CORE.glob("*.py"))) >= 10
