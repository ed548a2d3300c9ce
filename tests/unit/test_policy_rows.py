"""`ledger policy list`'s rows (:func:`ledger.cli.common.policy_rows`): whose policy it is."""

from __future__ import annotations

from datetime import UTC, datetime

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
