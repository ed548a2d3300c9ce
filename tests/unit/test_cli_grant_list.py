"""`ledger grant list` through click's CliRunner, on a state the in-memory ledger built (the
broker's part, reading the history, is tested in tests/integration/test_cli_governance.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

import ledger.cli.grants as grants_cli
from ledger.cli.app import cli
from ledger.testing import ADMIN, LocalLedger


@pytest.fixture
def listed(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Runs `ledger grant list ARGS` on a ledger where an administrator assigned human:bob to
    role:ops and human:dave (a delegate) assigned himself to role:rm and bob to role:rm."""
    led = LocalLedger()
    led.grant("human:dave", ("ledger.role.assign", "ops.read"), "*", grant_id="g-dave")
    led.grant("role:ops", "ops.read", "*", grant_id="g-ops")
    led.assign_role("human:bob", "role:ops")
    led.assign_role("human:dave", "role:rm", by="human:dave")
    led.assign_role("human:bob", "role:rm", by="human:dave")
    monkeypatch.setattr(grants_cli, "current_state", lambda bootstrap: (led.state, []))

    def run(*args: str) -> str:
        result = CliRunner().invoke(cli, ["grant", "list", *args], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        return result.stdout

    return run


def test_grant_list_json_says_who_assigned_each_role_membership(listed: Any) -> None:
    out = json.loads(listed("--json"))
    assert out["memberships"] == [
        {"principal": "human:bob", "role": "role:ops", "assigned_by": ADMIN},
        {"principal": "human:bob", "role": "role:rm", "assigned_by": "human:dave"},
        {"principal": "human:dave", "role": "role:rm", "assigned_by": "human:dave"},
    ]
    # What scripts read already stays as it was.
    assert out["roles"] == {"human:bob": ["role:ops", "role:rm"], "human:dave": ["role:rm"]}
    assert sorted(g["grant_id"] for g in out["grants"]) == ["g-dave", "g-ops"]
    mine = json.loads(listed("--principal", "human:dave", "--json"))
    assert mine["memberships"] == [
        {"principal": "human:dave", "role": "role:rm", "assigned_by": "human:dave"}
    ]


def _cells(out: str) -> list[str]:
    """Each line of a table's text as its cells' words, one space apart."""
    return [" ".join(line.replace("│", " ").replace("┃", " ").split()) for line in out.splitlines()]


def test_grant_list_shows_who_assigned_each_role_membership(listed: Any) -> None:
    out = listed()
    lines = _cells(out)
    assert "principal role assigned by" in lines, out
    assert "human:bob role:ops human:admin" in lines, out
    assert "human:bob role:rm human:dave" in lines, out
    assert "human:dave role:rm human:dave" in lines, out
    only = _cells(listed("--principal", "human:bob"))
    assert "human:bob role:rm human:dave" in only and not any("human:dave role" in x for x in only)


def test_grant_list_help_describes_the_memberships_it_shows() -> None:
    result = CliRunner().invoke(cli, ["grant", "list", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "Each membership says who assigned it" in text
    assert '"memberships" (principal, role, assigned_by)' in text


def test_replay_at_says_who_assigned_each_role_membership_then(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `grant list` said who assigned each membership, but `replay --at` (the same question at
    # an instant in the past) gave only "roles": an auditor could not tell at T whose grants
    # bounded a delegate's assignment.
    import ledger.cli.replay as replay_cli

    led = LocalLedger()
    led.grant("human:dave", ("ledger.role.assign", "ops.read"), "*", grant_id="g-dave")
    led.assign_role("human:bob", "role:ops")
    led.assign_role("human:bob", "role:rm", by="human:dave")
    monkeypatch.setattr(replay_cli, "load_settings", lambda bootstrap: SimpleNamespace(topics=None))
    monkeypatch.setattr(replay_cli, "connection", lambda settings, role: (None, None))
    monkeypatch.setattr(replay_cli, "load_history", lambda *a, **k: [])
    monkeypatch.setattr(replay_cli, "state_at", lambda history, instant: led.state)

    def run(*args: str) -> str:
        result = CliRunner().invoke(cli, ["replay", *args], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        return result.stdout

    out = json.loads(run("--json"))
    assert out["memberships"] == [
        {"principal": "human:bob", "role": "role:ops", "assigned_by": ADMIN},
        {"principal": "human:bob", "role": "role:rm", "assigned_by": "human:dave"},
    ]
    assert out["roles"] == {"human:bob": ["role:ops", "role:rm"]}
    lines = _cells(run())
    assert "human:bob role:rm human:dave" in lines and "human:bob role:ops human:admin" in lines
    assert "role memberships" in lines
