"""The core is pure: every module in ledger/core (sub-packages included) imports only the stdlib,
yaml, celpy/lark, re2 (CEL's regular expressions), cryptography (Ed25519 verification of signed
commands: pure computation, no key material is read or made), ledger.core and ledger.errors
(STYLE.md rule 1). Inside the ledger.core.policy, ledger.core.lifecycle and ledger.core.cel
packages, each module imports only the modules of its package before it (the package's docstring
draws the order), so no such package has an import loop."""

from __future__ import annotations

import ast
import pkgutil
import sys
from pathlib import Path

import pytest

import ledger.core

ROOT = Path(__file__).resolve().parents[3]
CORE = ROOT / "ledger" / "core"
CORE_MODULES = sorted(CORE.rglob("*.py"))
CORE_EXTENSIONS = sorted(CORE.rglob("*.pyx"))
"""Cython sources of compiled core modules (their Python imports are checked the same way;
``cimport`` lines reach C headers, CPython's and libc's, not Python modules)."""
ALLOWED_THIRD_PARTY = {"yaml", "celpy", "lark", "re2", "cryptography"}
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
    "gc",  # process-wide: paused in one module only (below), as a fold's cost, never a result
}
PAUSES_THE_COLLECTOR = "collector.py"

POLICY = "ledger.core.policy"
# Which modules of ledger.core.policy each of its modules may import (its __init__: any).
POLICY_LAYERS: dict[str, set[str]] = {
    "model": set(),
    "canonical": {"model"},
    "runner": {"model"},
    "validate": {"model", "canonical", "runner"},
    "lint": {"model"},
    "source": {"model", "lint", "validate"},
}
# Imports made inside a function, when the package is already loaded: (importer, imported).
# Policy.from_canonical delegates to the loader, which builds Policies.
POLICY_LAZY = {("model", "source")}

LIFECYCLE = "ledger.core.lifecycle"
# Which modules of ledger.core.lifecycle each of its modules may import (its __init__: any).
LIFECYCLE_LAYERS: dict[str, set[str]] = {
    "rejections": set(),
    "commands": {"rejections"},
    "policy_rules": {"rejections", "commands"},
    "grant_rules": {"rejections", "commands"},
    "rules": {"rejections", "commands", "policy_rules", "grant_rules"},
    "admission": {"rejections", "commands", "rules"},
    "answers": {"rejections", "commands"},
}

CEL = "ledger.core.cel"
# Which modules of ledger.core.cel each of its modules may import (its __init__: any).
CEL_LAYERS: dict[str, set[str]] = {
    "runtime": set(),
    "lexical": set(),
    "syntax": set(),
    "compiler": {"runtime", "lexical", "syntax"},
}

# Each layered package: (its layers, its lazy imports).
LAYERED: dict[str, tuple[dict[str, set[str]], set[tuple[str, str]]]] = {
    POLICY: (POLICY_LAYERS, POLICY_LAZY),
    LIFECYCLE: (LIFECYCLE_LAYERS, set()),
    CEL: (CEL_LAYERS, set()),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _pyx_imports(path: Path) -> list[tuple[str, int]]:
    """The Python modules a Cython source imports (``import X``, ``from X import``)."""
    found = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split()
        if len(words) >= 2 and words[0] in ("import", "from") and "cimport" not in words:
            found.append((words[1].rstrip(","), number))
    return found


def _imports(path: Path, *, module_level: bool | None = None) -> list[tuple[str, int]]:
    """Every module ``path`` imports, relative imports resolved: ``(name, line)``.

    ``module_level`` True: only those run at import time; False: only those inside a function.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    module = _module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    functions = [
        n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]
    inside = {id(n) for f in functions for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        if module_level is not None and (id(node) in inside) == module_level:
            continue
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                found.append(
                    (".".join([*base, *([node.module] if node.module else [])]), node.lineno)
                )
            elif node.module:
                found.append((node.module, node.lineno))
    return found


@pytest.mark.parametrize(
    "path", CORE_MODULES + CORE_EXTENSIONS, ids=lambda p: str(p.relative_to(CORE))
)
def test_core_module_imports_only_allowed_modules(path: Path) -> None:
    bad = []
    for name, line in _imports(path) if path.suffix == ".py" else _pyx_imports(path):
        top = name.split(".")[0]
        if name.startswith(ALLOWED_OWN) or top in ALLOWED_THIRD_PARTY or top == "__future__":
            continue
        if top in sys.stdlib_module_names and top not in FORBIDDEN_STDLIB:
            continue
        if top == "gc" and path.name == PAUSES_THE_COLLECTOR:  # an architecture review
            continue
        bad.append(f"{path.relative_to(CORE)}:{line} imports {name}")
    assert not bad, "\n".join(bad)


def test_core_has_modules() -> None:
    """The boundary test sees every module Python can import from ledger.core, sub-packages too."""
    importable = {m.name for m in pkgutil.walk_packages(ledger.core.__path__, "ledger.core.")}
    checked = {_module_name(p) for p in CORE_MODULES + CORE_EXTENSIONS}
    assert importable | {"ledger.core"} == checked
    assert len(checked) >= 10
    assert any(name.count(".") > 2 for name in checked), "no sub-package found: check the glob"


@pytest.mark.parametrize("package", sorted(LAYERED))
def test_package_modules_are_all_layered(package: str) -> None:
    layers, _ = LAYERED[package]
    modules = {p.stem for p in (CORE / package.split(".")[2]).glob("*.py")} - {"__init__"}
    assert modules == set(layers)


@pytest.mark.parametrize(
    ("package", "module"),
    [(package, module) for package in sorted(LAYERED) for module in sorted(LAYERED[package][0])],
)
def test_package_module_imports_only_earlier_modules(package: str, module: str) -> None:
    layers, lazy = LAYERED[package]
    path = CORE / package.split(".")[2] / f"{module}.py"
    bad = []
    for name, line in _imports(path, module_level=True):
        if name == package:
            bad.append(f"{module}.py:{line} imports the package itself")
        elif name.startswith(package + "."):
            imported = name.split(".")[3]
            if imported not in layers[module]:
                bad.append(f"{module}.py:{line} imports .{imported} at module level")
    for name, line in _imports(path, module_level=False):
        if name.startswith(package + "."):
            imported = name.split(".")[3]
            if imported not in layers[module] and (module, imported) not in lazy:
                bad.append(f"{module}.py:{line} imports .{imported} in a function")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", sorted(LAYERED))
def test_package_layers_have_no_loop(package: str) -> None:
    layers, _ = LAYERED[package]
    done: set[str] = set()
    for _ in layers:
        ready = {m for m, deps in layers.items() if m not in done and deps <= done}
        done |= ready
    assert done == set(layers)


# Calls that do I/O, read the clock or make randomness without importing a forbidden module:
# builtins (``open``, ``input``, ``print``), the clock through ``datetime``, random ids through
# ``uuid``, and logging (the adapters log; the core returns what happened).
FORBIDDEN_CALLS = {"open", "input", "print", "breakpoint"}
FORBIDDEN_ATTRIBUTES = {"now", "utcnow", "today", "uuid1", "uuid4", "getLogger", "urandom"}
FORBIDDEN_MODULES_ANYWHERE = {"logging"}  # uuid is allowed: uuid5 is pure (uuid4 is not)


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_calls_no_clock_files_randomness_or_logging(path: Path) -> None:
    # A review: a probe module calling open(), uuid4(), datetime.now() and logging passed the
    # import check, which only looks at what is imported.
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            called = node.func
            if isinstance(called, ast.Name) and called.id in FORBIDDEN_CALLS:
                found.append(f"{called.id}() at line {node.lineno}")
            elif isinstance(called, ast.Attribute) and called.attr in FORBIDDEN_ATTRIBUTES:
                found.append(f".{called.attr}() at line {node.lineno}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            found.extend(
                f"import {n} at line {node.lineno}"
                for n in names
                if n.split(".")[0] in FORBIDDEN_MODULES_ANYWHERE
            )
    assert not found, f"{path.relative_to(ROOT)}: {found}"
