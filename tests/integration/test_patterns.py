"""The integration patterns of DESIGN §8 through the SDK: asynchronous with corrections,
batch pre-evaluation with staleness, and the asyncio client, against the running stack."""

from __future__ import annotations

import asyncio

import pytest
from harness import AGENT, GOOD_FACTS, LedgerStack, policy_doc

from ledger.client import AsyncLedgerClient
from ledger.core.events import (
    BatchDecisionRecorded,
    DecisionCorrected,
    DecisionRecorded,
    Determination,
)

pytestmark = pytest.mark.integration

SUSPENDED = {**GOOD_FACTS, "standing": "suspended"}


def test_async_default_is_corrected_only_when_the_decision_differs(
    shared_stack: LedgerStack, admin, agent, policy_name
):
    stack = shared_stack
    action = f"{policy_name}.issue"
    stack.deploy(admin, policy_doc(policy_name))
    stack.evaluate_settled(agent, action=action, principal=AGENT, resource="account:9")

    # Same resource, so the same partition: the second is decided after the first.
    agreeing = agent.submit_async(
        action=action, principal=AGENT, resource="account:9", facts=GOOD_FACTS, default="allow"
    )
    differing = agent.submit_async(
        action=action, principal=AGENT, resource="account:9", facts=SUSPENDED, default="allow"
    )

    correction = next(agent.corrections(timeout=15), None)
    assert correction is not None, stack.logs()
    # The agreeing request was decided before this correction was even computed, so a
    # correction for it would have been published first; allow a moment for stragglers anyway.
    late = list(agent.corrections(timeout=1))
    assert [c.request_id for c in (correction, *late)] == [differing.event_id]
    assert isinstance(correction, DecisionCorrected)
    assert correction.default is Determination.ALLOW
    assert correction.determination is Determination.DENY
    assert correction.reasons == ("Suspended accounts are not refunded",)
    assert dict(correction.constraints) == {}

    decisions = {
        d.request_id: d
        for d in stack.records(stack.topics.decisions)
        if isinstance(d, DecisionRecorded)
    }
    assert decisions[agreeing.event_id].determination is Determination.ALLOW
    assert decisions[differing.event_id].event_id == correction.decision_id
    recorded = [c.request_id for c in stack.records(stack.topics.corrections)]
    assert agreeing.event_id not in recorded
    assert recorded.count(differing.event_id) == 1


def test_a_correction_to_allow_with_constraints_carries_them(
    shared_stack: LedgerStack, admin, agent, policy_name
):
    """An agent that went ahead on ``allow`` learns, from the correction, what to honour."""
    stack = shared_stack
    action = f"{policy_name}.issue"
    stack.deploy(admin, policy_doc(policy_name))
    stack.evaluate_settled(agent, action=action, principal=AGENT, resource="account:11")

    request = agent.submit_async(
        action=action,
        principal=AGENT,
        resource="account:11",
        facts={**GOOD_FACTS, "amount": "600.00"},  # credit-only: under 750, not under 500
        default="allow",
    )
    correction = next(agent.corrections(timeout=15), None)
    assert correction is not None, stack.logs()
    assert correction.request_id == request.event_id
    assert correction.determination is Determination.ALLOW_WITH_CONSTRAINTS
    assert dict(correction.constraints) == {"refund_method": "credit"}
    recorded = [
        c for c in stack.records(stack.topics.corrections) if c.request_id == request.event_id
    ]
    assert [dict(c.constraints) for c in recorded] == [{"refund_method": "credit"}]


def test_async_default_deny_is_corrected_to_allow(
    shared_stack: LedgerStack, admin, agent, policy_name
):
    stack = shared_stack
    action = f"{policy_name}.issue"
    stack.deploy(admin, policy_doc(policy_name))
    stack.evaluate_settled(agent, action=action, principal=AGENT, resource="account:10")

    request = agent.submit_async(
        action=action, principal=AGENT, resource="account:10", facts=GOOD_FACTS, default="deny"
    )
    correction = next(agent.corrections(timeout=15), None)
    assert correction is not None, stack.logs()
    assert correction.request_id == request.event_id
    assert (correction.default, correction.determination) == (
        Determination.DENY,
        Determination.ALLOW,
    )


def test_preevaluation_answers_every_item_and_goes_stale_on_promotion(
    shared_stack: LedgerStack, admin, agent, policy_name
):
    stack = shared_stack
    action = f"{policy_name}.issue"
    stack.deploy(admin, policy_doc(policy_name))
    stack.evaluate_settled(agent, action=action, principal=AGENT, resource="account:1")

    items = [
        {"item_id": "small", "action": action, "resource": "account:1", "facts": GOOD_FACTS},
        {
            "item_id": "large",
            "action": action,
            "resource": "account:2",
            "facts": {**GOOD_FACTS, "amount": "600"},
        },
        {"item_id": "suspended", "action": action, "resource": "account:3", "facts": SUSPENDED},
        {"item_id": "email", "action": f"{policy_name}.email", "resource": "account:1"},
    ]
    answer = agent.preevaluate(AGENT, items)
    assert isinstance(answer, BatchDecisionRecorded)
    assert answer.principal == AGENT
    by_item = {d.item_id: d for d in answer.decisions}
    assert list(by_item) == ["small", "large", "suspended", "email"]
    assert by_item["small"].determination is Determination.ALLOW
    assert by_item["small"].rule == "auto-refund" and by_item["small"].policy_version == 1
    assert by_item["large"].determination is Determination.ALLOW_WITH_CONSTRAINTS
    assert dict(by_item["large"].constraints) == {"refund_method": "credit"}
    assert by_item["suspended"].determination is Determination.DENY
    assert by_item["suspended"].rule == "suspended"
    assert by_item["email"].determination is Determination.DENY
    assert by_item["email"].reason_code == "ungoverned_action"
    assert all(d.grant_id for d in answer.decisions)

    topics = stack.topics
    position = agent.governance_position()
    assert set(position) == {f"{topics.policy_events}/0", f"{topics.grant_events}/0"}
    assert dict(answer.governance_position) == position
    assert not agent.is_stale(answer, position)

    stack.deploy(admin, policy_doc(policy_name, auto_below=100))
    moved = agent.governance_position()
    assert moved[f"{topics.policy_events}/0"] > position[f"{topics.policy_events}/0"]
    assert agent.is_stale(answer, moved)

    stack.evaluate_settled(agent, action=action, principal=AGENT, resource="account:1")
    fresh = agent.preevaluate(AGENT, items[:1])
    assert not agent.is_stale(fresh, agent.governance_position())
    assert fresh.decisions[0].policy_version == 2


def test_asyncio_client_evaluates_and_submits(shared_stack: LedgerStack, admin, agent, policy_name):
    stack = shared_stack
    action = f"{policy_name}.issue"
    stack.deploy(admin, policy_doc(policy_name))
    stack.evaluate_settled(agent, action=action, principal=AGENT, resource="account:5")

    async def run() -> list[DecisionRecorded]:
        config = stack.config(AGENT, timeout=20)
        async with AsyncLedgerClient(config) as client:
            return await asyncio.gather(
                *(
                    client.evaluate(
                        action=action, principal=AGENT, resource=f"account:{n}", facts=GOOD_FACTS
                    )
                    for n in range(20)
                )
            )

    decisions = asyncio.run(run())
    assert [d.resource for d in decisions] == [f"account:{n}" for n in range(20)]
    assert {d.determination for d in decisions} == {Determination.ALLOW}
    assert {d.policy_version for d in decisions} == {1}
