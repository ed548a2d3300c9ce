"""compose/ for users with Docker (no Docker engine here, so nothing starts it): the files are
held to what the ledger needs of them, as an operator reading them checked by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import yaml

from ledger.settings import ROLES

COMPOSE = Path(__file__).resolve().parents[2] / "compose"


def services() -> dict[str, Any]:
    doc = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    return dict(doc["services"])


def test_the_broker_can_read_the_owner_only_credentials_make_secrets_writes() -> None:
    # The apache/kafka image runs as uid 1000; make-secrets.py writes the files 0600 for the
    # user who runs it, so on most hosts the broker could not read its own password.
    assert services()["kafka"]["user"] == "0:0"


def test_each_processor_runs_a_module_that_exists_with_its_own_role_and_a_home() -> None:
    for name in ("command-processor", "evaluator"):
        service = services()[name]
        module = service["entrypoint"][-1]
        assert service["entrypoint"][:2] == ["python", "-m"]
        assert importlib.util.find_spec(module) is not None, module
        role = name
        assert role in ROLES
        mounted = [v if isinstance(v, str) else v["target"] for v in service["volumes"]]
        assert any(m.endswith(f":/credentials/{role}.json:ro") for m in mounted), mounted
        env = service["environment"]
        assert env["LEDGER_READY_FILE"].startswith(env["LEDGER_HOME"] + "/")
