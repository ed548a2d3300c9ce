"""`ledger policy list`'s rows (:func:`ledger.cli.common.policy_rows`): whose policy it is."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from ledger.cli.common import policy_rows
from ledger.cli.lifecycle import owner_cell
from ledger.core.events import Stage
from ledger.core.state import LedgerState, PolicyRecord, PolicyVersion


def _version(number: int, stage: Stage, owner: str) -> PolicyVersion:
    return PolicyVersion(
        policy="refunds",
        version=number,
        stage=stage,
        content_hash=f"h{number}",
        document="",
        author="human:polly",
        proposed_at=datetime(2026, 12, 6, tzinfo=UTC),
        owner=owner,
        governs=("refund.issue",),
    )


def _state(record: PolicyRecord) -> LedgerState:
    empty = LedgerState()
    return LedgerState(policies=empty.policies.set("refunds", record))


def test_the_owner_shown_is_the_deciding_versions_not_a_newer_drafts() -> None:
    # A policy owner's walkthrough: anyone allowed to propose renamed who owns a live policy,
    # unapproved, by proposing a draft naming another owner.
    record = PolicyRecord(
        name="refunds",
        versions={
            1: _version(1, Stage.ACTIVE, "customer-success"),
            4: _version(4, Stage.DRAFT, "otto-personal"),
        },
        active=1,
        history=(1,),
    )
    (row,) = policy_rows(_state(record))
    assert row["owner"] == "customer-success" and row["latest_owner"] == "otto-personal"
    assert owner_cell(row) == "customer-success (v4 proposes otto-personal)"


def test_a_policy_with_nothing_deployed_is_its_newest_versions() -> None:
    record = PolicyRecord(
        name="refunds", versions={1: _version(1, Stage.DRAFT, "customer-success")}, history=()
    )
    (row,) = policy_rows(_state(record))
    assert row["owner"] == "customer-success" and owner_cell(row) == "customer-success"


def test_the_history_shows_the_owner_each_version_names() -> None:
    from ledger.cli.lifecycle import _details
    from ledger.core.events import PolicyVersionProposed

    proposed = PolicyVersionProposed(
        event_id="e4",
        occurred_at=datetime(2026, 12, 6, tzinfo=UTC),
        actor="human:otto",
        command_id="c4",
        policy="refunds",
        sequence=4,
        version=4,
        document="",
        content_hash="h4",
        owner="otto-personal",
        governs=("refund.issue",),
    )
    assert "owner=otto-personal" in _details(proposed)


def test_policy_get_refuses_a_version_whose_document_is_not_what_its_hash_says(
    monkeypatch: Any,
) -> None:
    # A red team recorded a permissive document under a strict one's hash: `policy get` showed
    # the signed hash above the other text.
    from click.testing import CliRunner

    from ledger.cli.app import cli
    from ledger.core.policy import parse_policy
    from ledger.core.policy.canonical import content_hash

    strict = parse_policy(
        "policy: refunds\ngoverns: [refund.issue]\nowner: o\ndefault: {effect: deny}\n"
    )
    permissive = parse_policy(strict.canonical.replace('"deny"', '"allow"'))
    genuine = replace(
        _version(1, Stage.ACTIVE, "o"), document=strict.canonical, content_hash=strict.content_hash
    )
    record = PolicyRecord(name="refunds", versions={1: genuine}, active=1, history=(1,))
    monkeypatch.setattr("ledger.cli.lifecycle.current_state", lambda _b: (_state(record), []))
    shown = CliRunner().invoke(cli, ["policy", "get", "refunds"])
    assert shown.exit_code == 0 and content_hash(strict.canonical) in shown.stdout
    altered = replace(genuine, document=permissive.canonical)
    record = PolicyRecord(name="refunds", versions={1: altered}, active=1, history=(1,))
    monkeypatch.setattr("ledger.cli.lifecycle.current_state", lambda _b: (_state(record), []))
    refused = CliRunner().invoke(cli, ["policy", "get", "refunds"])
    assert refused.exit_code == 11, refused.output
    assert "recorded document does not hash to its content hash" in refused.stderr
    shown = CliRunner().invoke(cli, ["policy", "show", "refunds"])  # marked, not as any other
    assert shown.exit_code == 0 and "ALTERED" in shown.stdout, shown.output
    shown = CliRunner().invoke(cli, ["policy", "show", "refunds", "--json"])
    assert json.loads(shown.stdout)["versions"][0]["altered"] is True
