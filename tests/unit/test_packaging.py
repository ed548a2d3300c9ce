"""A wheel of the project works outside the checkout: the schemas and the audit queries travel
as package data.

Reported: only editable installs worked, because the codec read ``__file__/../../schemas``; a
``pip install .`` into another environment could not find the schemas.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _declared_packages() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(config["tool"]["setuptools"]["packages"])


def test_every_package_directory_is_declared() -> None:
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("ledger", "processors")
        for init in (ROOT / top).rglob("__init__.py")
    }
    missing = found - _declared_packages()
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"


def test_an_installed_wheel_finds_its_schemas_away_from_the_checkout(tmp_path: Path) -> None:
    wheels, target, elsewhere = tmp_path / "dist", tmp_path / "site", tmp_path / "cwd"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", str(ROOT), "--no-deps", "-w", str(wheels)], check=True, timeout=300
    )
    (wheel,) = wheels.glob("decision_ledger-*.whl")
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, timeout=300
    )
    probe = f"""
import sys
sys.path.insert(0, {str(target)!r})
import ledger.codec
from datetime import UTC, datetime
from ledger.contract import contract_dir
from ledger.core.events import DeadLetter
assert ledger.codec.__file__.startswith({str(target)!r}), ledger.codec.__file__
schemas = contract_dir("schemas")
assert str(schemas).startswith({str(target)!r}), schemas
codec = ledger.codec.default_codec()
letter = DeadLetter(event_id="e", occurred_at=datetime.now(UTC), actor="service:x",
                    source_topic="t", partition=0, offset=1, key=None, value=b"v", code="c",
                    reason="r")
assert codec.decode(codec.encode(letter)) == letter
queries = contract_dir("queries")
assert str(queries).startswith({str(target)!r}), queries
from ledger.audit.sql import named_queries, views_sql
assert "active_policies_at" in named_queries() and "policy_timeline" in views_sql()
from ledger.audit import rows  # the wheel carries the export's row decoder in C
assert rows.NATIVE and rows.__file__.startswith({str(target)!r}), rows.__file__
from ledger.core import chain  # and the canonical text writer in C
assert chain._native is not None and chain._native.__file__.startswith({str(target)!r})
import os  # and the marker that tells type checkers the package is typed (PEP 561)
assert os.path.isfile(os.path.join(os.path.dirname(ledger.codec.__file__), "py.typed"))
print(schemas)
"""
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=elsewhere, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ledger/schemas")
