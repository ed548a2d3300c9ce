"""A grant whose condition does not compile on this build never applies (authority fails closed).

Conditions are validated when a grant is issued, but a ledger is replayed by later builds: a
``GrantIssued`` already in the log whose condition this build cannot compile is held as
``condition_broken`` and must never authorize anything.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from ledger.core import EMPTY_STATE, LedgerState, Rejection, decide, evaluate, fold
from ledger.core.authority import compile_grant_condition
from ledger.core.events import (
    ApprovePolicyVersion,
    Command,
    Determination,
    EvaluationRequested,
    GrantIssued,
    PromotePolicyVersion,
    ProposePolicyVersion,
    RetirePolicy,
    Stage,
)
from ledger.errors import PolicyError

REFUND = (Path(__file__).resolve().parents[3] / "examples" / "policies" / "refund.yaml").read_text()
T0 = datetime(2025, 1, 1, tzinfo=UTC)
ADMINS = frozenset({"human:alice", "human:bob"})
BOT = "agent:refund-bot"
BROKEN = "amount >"  # does not compile: IssueGrant rejects it as invalid_condition
GOOD_FACTS = {
    "tenure_days": 120,
    "amount": Decimal("120.50"),
    "prior_refunds_12m": 0,
    "standing": "good",
}


def deployed() -> LedgerState:
    """A state with refund v1 active (proposed by alice, approved and promoted by bob)."""
    ids = (f"e{i}" for i in itertools.count())
    commands: list[Command] = [
        ProposePolicyVersion(
            event_id="c1", occurred_at=T0, actor="human:alice", document=REFUND, policy="refund"
        ),
        ApprovePolicyVersion(
            event_id="c2", occurred_at=T0, actor="human:bob", policy="refund", version=1
        ),
        PromotePolicyVersion(
            event_id="c3",
            occurred_at=T0,
            actor="human:bob",
            policy="refund",
            version=1,
            stage=Stage.ACTIVE,
        ),
    ]
    state = EMPTY_STATE
    for command in commands:
        outcome = decide(state, command, now=T0, new_id=lambda: next(ids), admins=ADMINS)
        assert not isinstance(outcome, Rejection), outcome
        for event in outcome:
            state = fold(state, event)
    return state


def with_grant(state: LedgerState, condition: str | None) -> LedgerState:
    """``state`` with a GrantIssued folded in directly (as a replay reads it from the log)."""
    return fold(
        state,
        GrantIssued(
            event_id="e-grant",
            occurred_at=T0,
            actor="human:admin",
            command_id="c-grant",
            principal=BOT,
            sequence=1,
            grant_id="g1",
            actions=("refund.issue",),
            resource="account:*",
            condition=condition,
        ),
    )


def request() -> EvaluationRequested:
    return EvaluationRequested(
        event_id="req-1",
        occurred_at=T0,
        actor=BOT,
        action="refund.issue",
        principal=BOT,
        resource="account:5",
        facts=GOOD_FACTS,
    )


def test_the_condition_does_not_compile() -> None:
    with pytest.raises(PolicyError):
        compile_grant_condition(BROKEN)


def test_a_grant_whose_condition_does_not_compile_never_applies() -> None:
    state = with_grant(deployed(), BROKEN)
    grant = state.principals[BOT].grants["g1"]
    assert grant.condition_broken and grant.compiled is None

    decision = evaluate(state, request(), now=T0, evaluator_id="test")

    assert decision.determination == Determination.DENY
    assert decision.reason_code == "no_authority"
    assert decision.grant_id is None
    assert any("g1's condition does not compile on this build" in r for r in decision.reasons), (
        decision.reasons
    )


def test_the_same_grant_without_the_condition_allows_the_request() -> None:
    # The control: only the broken condition stands between the bot and an allow.
    decision = evaluate(with_grant(deployed(), None), request(), now=T0, evaluator_id="test")

    assert decision.determination == Determination.ALLOW
    assert decision.reason_code == "rule_matched"
    assert decision.grant_id == "g1"


def carol_may_retire(condition: str | None) -> LedgerState:
    """refund deployed, and human:carol (no admin) granted ledger.policy.retire on it."""
    return fold(
        deployed(),
        GrantIssued(
            event_id="e-grant",
            occurred_at=T0,
            actor="human:admin",
            command_id="c-grant",
            principal="human:carol",
            sequence=1,
            grant_id="g-carol",
            actions=("ledger.policy.retire",),
            resource="policy:refund",
            condition=condition,
        ),
    )


RETIRE = RetirePolicy(
    event_id="c-retire", occurred_at=T0, actor="human:carol", policy="refund", reason="gone"
)


def test_a_broken_condition_on_a_governance_grant_does_not_authorize_a_command() -> None:
    # The command path (decide) consults the same grants: a broken one authorizes nothing.
    outcome = decide(
        carol_may_retire(BROKEN), RETIRE, now=T0, new_id=lambda: "e-retire", admins=ADMINS
    )

    assert isinstance(outcome, Rejection)
    assert outcome.code == "not_authorized"


def test_the_same_governance_grant_without_the_condition_authorizes_the_command() -> None:
    outcome = decide(
        carol_may_retire(None), RETIRE, now=T0, new_id=lambda: "e-retire", admins=ADMINS
    )

    assert not isinstance(outcome, Rejection), outcome
    assert [type(e).__name__ for e in outcome] == ["PolicyRetired"]
