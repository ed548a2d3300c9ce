"""The layers of the house, enforced (STYLE §14): who may import whom.

- the SDK, the enforcement points, the in-memory test transport, the Kafka wing and the
  processors never import the local development launcher (``ledger.local``) or the CLI, neither
  directly nor through anything they import;
- the Kafka wing does not import the processors (they build on it, not the other way round);
- the CLI holds no rule: it parses, calls the SDK / core / adapters, and prints. It imports no
  private name of the project and does no matching of its own (globs are the core's).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

RUNTIME = [
    "ledger.client",
    "ledger.enforce",
    "ledger.testing",
    "ledger.codec",
    "ledger.discovery",
    "ledger.settings",
    "ledger.keys",
    "ledger.files",
    "ledger.kafka.clients",
    "ledger.kafka.acls",
    "ledger.kafka.reading",
    "ledger.kafka.topics",
    "ledger.kafka.governance",
    "ledger.kafka.dedup",
    "processors.evaluator",
    "processors.command_processor",
    "processors.run",
]


def _loaded_by(modules: list[str]) -> set[str]:
    """Every module that importing ``modules`` loads, in a fresh interpreter."""
    existing = [m for m in modules if _exists(m)]
    code = (
        "import importlib, sys\n"
        f"for m in {existing!r}: importlib.import_module(m)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def _exists(module: str) -> bool:
    path = ROOT / Path(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def test_runtime_code_never_loads_the_launcher_or_the_cli() -> None:
    loaded = _loaded_by(RUNTIME)
    bad = sorted(m for m in loaded if m.split(".")[:2] in (["ledger", "local"], ["ledger", "cli"]))
    assert not bad, f"runtime code loads {bad}"


def test_the_kafka_wing_does_not_load_the_processors() -> None:
    loaded = _loaded_by([m for m in RUNTIME if m.startswith("ledger.kafka")])
    bad = sorted(m for m in loaded if m.startswith(("processors", "faust")))
    assert not bad, f"ledger.kafka loads {bad}"


def _imports(path: Path) -> list[tuple[str, str, int]]:
    """(module, name, line) for every ``from X import name`` and ``import X`` in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.extend((node.module, alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend((alias.name, "", node.lineno) for alias in node.names)
    return found


CLI_FILES = sorted((ROOT / "ledger" / "cli").glob("*.py"))


@pytest.mark.parametrize("path", CLI_FILES, ids=lambda p: p.name)
def test_the_cli_imports_no_private_name_and_matches_nothing_itself(path: Path) -> None:
    bad = []
    for module, name, line in _imports(path):
        private = name.startswith("_") and not name.startswith("__")
        if module.startswith(("ledger", "processors")) and private:
            bad.append(f"{path.name}:{line} imports private {module}.{name}")
        if module in ("fnmatch", "re"):
            bad.append(f"{path.name}:{line} imports {module}: matching is a rule of the core")
    assert not bad, "\n".join(bad)


def test_the_local_stack_does_not_load_the_cli() -> None:
    loaded = _loaded_by(
        [
            "ledger.local.broker",
            "ledger.local.credentials",
            "ledger.local.processes",
            "ledger.local.stack",
        ]
    )
    bad = sorted(m for m in loaded if m.startswith("ledger.cli"))
    assert not bad, f"ledger.local loads {bad}"
