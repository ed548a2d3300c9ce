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
    # Every module of the Kafka wing, found in the tree (a hand-kept list missed three).
    *sorted(
        f"ledger.kafka.{p.stem}"
        for p in (ROOT / "ledger" / "kafka").glob("*.py")
        if p.stem != "__init__"
    ),
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


def test_the_command_line_loads_no_pyarrow_until_a_command_needs_it() -> None:
    # A review of concurrent governance: an emergency rollback's CLI spent its first seconds
    # loading pyarrow and the audit readers (policy simulate's, replay --decision's, audit
    # verify's), which every command imported, needed or not.
    loaded = _loaded_by(["ledger.cli.app"])
    assert "ledger.cli.app" in loaded
    bad = sorted(m for m in loaded if m.startswith(("pyarrow", "ledger.audit.")))
    assert not bad, f"`ledger` loads {bad[:5]} before any command runs"


HANDLERS = [
    "processors.outputs",
    "processors.command_handler",
    "processors.request_handler",
    "processors.dead_letters",
    "processors.inflight",
]
"""The processors' record handlers, what they produce, and the in-flight markers they keep
(files, not Kafka): no Faust."""


def test_the_processors_handlers_load_no_faust() -> None:
    # A review: the handlers the README called free of I/O loaded Faust through the module of
    # shared plumbing (and CommandHandler lived in the Faust app's module).
    loaded = _loaded_by(HANDLERS)
    assert set(HANDLERS) <= loaded
    bad = sorted(m for m in loaded if m.startswith(("faust", "aiokafka", "mode")))
    assert not bad, f"the handlers load {bad[:5]}"


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


# --------------------------------------------------------------------------- the table of wings
# The README's table ("One rule shapes the code"), as data: each wing of the house, and the
# project's wings its modules may import directly (typing-only imports aside). Every module of
# `ledger/` and `processors/` must belong to one, so a new module is placed on purpose. The core
# itself is held to more by tests/unit/core/test_import_boundary.py.

LOW = {"ledger", "ledger.errors"}  # the package's version, the error tree: anyone's
KAFKA_CLIENTS = {  # the SDK and the processors: clients of the ledger over Kafka, one row each
    "ledger.codec",
    "ledger.core",
    "ledger.discovery",
    "ledger.ids",
    "ledger.kafka",
    "ledger.keys",
    "ledger.settings",
}
WINGS: dict[str, set[str]] = {
    "ledger.core": set(),
    "ledger.errors": set(),
    "ledger.ids": set(),
    "ledger.pids": set(),
    "ledger.contract": set(),
    "ledger.files": set(),
    "ledger.settings": {"ledger.core"},  # its defaults (the bootstrap administrators)
    "ledger.discovery": {"ledger.files", "ledger.settings"},
    "ledger.avro": {"ledger.core", "ledger._avrovm"},
    "ledger.codec": {"ledger.avro", "ledger.contract", "ledger.core"},
    "ledger.keys": {"ledger.core", "ledger.files"},
    "ledger.kafka": {
        "ledger.codec",
        "ledger.contract",
        "ledger.core",
        "ledger.files",
        "ledger.settings",
    },
    "ledger.client": KAFKA_CLIENTS,
    "ledger.enforce": {"ledger.client", "ledger.core"},
    "ledger.testing": {
        "ledger.client",
        "ledger.codec",
        "ledger.core",
        "ledger.ids",
        "ledger.kafka",
        "ledger.settings",
    },
    "ledger.audit": {
        "ledger._avrovm",
        "ledger.avro",
        "ledger.codec",
        "ledger.contract",
        "ledger.core",
        "ledger.files",
        "ledger.kafka",
        "ledger.pids",
        "ledger.settings",
    },
    "processors": KAFKA_CLIENTS | {"ledger.files", "ledger.pids"},  # folders; a pid's state
    "ledger.local": {
        "ledger.discovery",
        "ledger.files",
        "ledger.kafka",
        "ledger.keys",
        "ledger.pids",
        "ledger.settings",
        "processors.heartbeat",  # the contract between a processor and its supervisor
    },
    "ledger.cli": {"*"},  # parses, calls anything above, prints (checked for rules above)
}


def _wing(module: str) -> str | None:
    """The wing of the table ``module`` belongs to (the longest entry it starts with)."""
    found = [w for w in WINGS if module == w or module.startswith(w + ".")]
    return max(found, key=len) if found else None


def _runtime_imports(path: Path) -> list[tuple[str, int]]:
    """(module, line) of every import in ``path`` that runs: module-level or in a function,
    not under ``if TYPE_CHECKING:``; ``from X import name`` names X.name when that is a module
    of the project, else X."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and (node.module or node.level):
            base = node.module or ""
            if node.level:  # `from .x import y`: resolved against the importing package
                package = _module(path).split(".")
                if path.name != "__init__.py":
                    package = package[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub if _exists(sub) else base, node.lineno))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return [(m, line) for m, line in found if m.split(".")[0] in ("ledger", "processors")]


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


PROJECT_FILES = sorted(p for base in ("ledger", "processors") for p in (ROOT / base).rglob("*.py"))


@pytest.mark.parametrize("path", PROJECT_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_imports_only_what_its_wing_may(path: Path) -> None:
    module = _module(path)
    if module == "ledger":
        return  # the package itself: its version
    wing = _wing(module)
    assert wing is not None, f"{module} is in no wing of the table: place it (README, WINGS)"
    allowed = WINGS[wing]
    bad = []
    for target, line in _runtime_imports(path):
        theirs = _wing(target)
        if "*" in allowed or target in LOW or theirs == wing:
            continue
        if not ({target, theirs} & allowed or any(target.startswith(a + ".") for a in allowed)):
            bad.append(f"{path.relative_to(ROOT)}:{line} imports {target} ({theirs})")
    assert not bad, f"{wing} may import {sorted(allowed)}:\n" + "\n".join(bad)
