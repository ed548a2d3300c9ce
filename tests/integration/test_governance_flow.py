"""Governance end to end on the real broker: lifecycle, rejections, canary, shadow, denials.

Every test drives the running command processor with commands and the running evaluator with
requests, through the SDK, and checks what the ledger recorded. Tests share one stack and keep
apart by each owning a policy (its own name and governed action).
"""

from __future__ import annotations

from concurrent.futures import wait

import pytest
from harness import ADMIN, AGENT, ALICE, BOB, GOOD_FACTS, LedgerStack, policy_doc

from ledger.core import REASON_CODES, REJECTION_CODES, bucket, parse_policy
from ledger.core.events import (
    Determination,
    PromotePolicyVersion,
    ProposePolicyVersion,
    RollbackPolicy,
    Stage,
)
from ledger.errors import CommandRejectedError
from ledger.ids import new_id, utcnow

pytestmark = pytest.mark.integration

# 300 is under v1's auto-refund threshold (500) and over v2's (200): v1 allows it outright,
# v2 lets the credit-only rule decide (allow_with_constraints, refund as store credit).
FACTS_300 = {**GOOD_FACTS, "amount": "300"}


def test_lifecycle_propose_approve_promote_evaluate_and_rollback(
    shared_stack: LedgerStack, admin, agent, policy_name
):
    stack = shared_stack
    action = f"{policy_name}.issue"
    v1_doc, v2_doc = policy_doc(policy_name), policy_doc(policy_name, auto_below=200)
    ask = {"action": action, "principal": AGENT, "resource": "account:42", "facts": FACTS_300}

    proposed = stack.propose(admin, v1_doc, by=ALICE)
    assert (proposed.version, proposed.aggregate) == (1, policy_name)
    approved = stack.approve(admin, policy_name, 1, by=BOB)
    assert approved.command_type == "ApprovePolicyVersion"
    stack.promote(admin, policy_name, 1, Stage.ACTIVE)

    first = stack.evaluate_settled(agent, **ask)
    assert first.determination is Determination.ALLOW
    assert (first.policy, first.policy_version, first.stage) == (policy_name, 1, Stage.ACTIVE)
    assert first.rule == "auto-refund" and first.reason_code == "rule_matched"
    assert first.content_hash == parse_policy(v1_doc).content_hash
    assert first.grant_id and first.grant_id.startswith("g-")
    assert first.request_id and first.governance_position

    assert stack.deploy(admin, v2_doc) == 2
    second = stack.evaluate_settled(agent, **ask)
    assert (second.policy_version, second.stage) == (2, Stage.ACTIVE)
    assert second.content_hash == parse_policy(v2_doc).content_hash != first.content_hash
    assert second.determination is Determination.ALLOW_WITH_CONSTRAINTS
    assert second.rule == "credit-only"
    assert dict(second.constraints) == {"refund_method": "credit"}

    rolled = admin.submit_command(
        RollbackPolicy(
            event_id=new_id(),
            occurred_at=utcnow(),
            actor=ADMIN,
            policy=policy_name,
            reason="v2 sends too many refunds to store credit",
        )
    )
    assert rolled.command_type == "RollbackPolicy"
    third = stack.evaluate_settled(agent, **ask)
    assert (third.policy_version, third.stage, third.rule) == (1, Stage.ACTIVE, "auto-refund")
    assert third.content_hash == first.content_hash
    assert third.determination is Determination.ALLOW


def test_lifecycle_rejections_carry_stable_codes(shared_stack: LedgerStack, admin, policy_name):
    stack = shared_stack
    proposed = stack.propose(admin, policy_doc(policy_name), by=ALICE)
    assert proposed.version == 1

    with pytest.raises(CommandRejectedError) as own:
        stack.approve(admin, policy_name, 1, by=ALICE)
    assert own.value.code == "self_approval"

    with pytest.raises(CommandRejectedError) as unapproved:
        stack.promote(admin, policy_name, 1, Stage.ACTIVE)
    assert unapproved.value.code == "not_approved"
    with pytest.raises(CommandRejectedError) as canary:
        stack.promote(admin, policy_name, 1, Stage.CANARY, percent=10)
    assert canary.value.code == "not_approved"

    with pytest.raises(CommandRejectedError) as stranger:
        stack.submit(
            admin,
            ProposePolicyVersion(
                event_id=new_id(),
                occurred_at=utcnow(),
                actor="human:mallory",
                document=policy_doc(policy_name, auto_below=100),
            ),
        )
    assert stranger.value.code == "not_authorized"
    with pytest.raises(CommandRejectedError) as stranger_approves:
        stack.approve(admin, policy_name, 1, by="human:mallory")
    assert stranger_approves.value.code == "not_authorized"
    stack.approve(admin, policy_name, 1, by=BOB)
    with pytest.raises(CommandRejectedError) as bad_percent:
        admin.submit_command(
            PromotePolicyVersion(
                event_id=new_id(),
                occurred_at=utcnow(),
                actor=ADMIN,
                policy=policy_name,
                version=1,
                stage=Stage.CANARY,
                percent=0,
            )
        )
    assert bad_percent.value.code == "invalid_percent"

    codes = {own.value.code, unapproved.value.code, stranger.value.code, bad_percent.value.code}
    assert codes <= set(REJECTION_CODES)
    # Nothing was half-applied: the version is approved (by bob) but still not deciding.
    stack.promote(admin, policy_name, 1, Stage.ACTIVE)


def test_canary_decides_its_share_of_resources_by_stable_bucket(
    shared_stack: LedgerStack, admin, agent, policy_name
):
    stack = shared_stack
    action = f"{policy_name}.issue"
    stack.deploy(admin, policy_doc(policy_name))
    stack.deploy(admin, policy_doc(policy_name, auto_below=200), stage=Stage.CANARY, percent=30)
    stack.evaluate_settled(
        agent, action=action, principal=AGENT, resource="account:warm-up", facts=FACTS_300
    )

    resources = [f"account:{n}" for n in range(300)]
    futures = {
        resource: agent.send_request(
            agent.request(action=action, principal=AGENT, resource=resource, facts=FACTS_300)
        )
        for resource in resources
    }
    _, not_done = wait(futures.values(), timeout=60)
    assert not not_done, f"{len(not_done)} of 300 requests unanswered\n{stack.logs()}"

    by_v2 = 0
    for resource, future in futures.items():
        decision = future.result()
        expected = 2 if bucket(resource) < 30 else 1
        assert decision.bucket == bucket(resource), resource
        assert decision.policy_version == expected, (resource, decision.bucket)
        assert decision.stage is (Stage.CANARY if expected == 2 else Stage.ACTIVE)
        # The other of active/canary is evaluated too, and recorded.
        (other,) = decision.shadow_results
        assert other.version == 3 - expected
        by_v2 += expected == 2
    assert 0.20 <= by_v2 / 300 <= 0.40, by_v2


def test_shadow_version_is_recorded_but_never_enforced(
    shared_stack: LedgerStack, admin, agent, policy_name
):
    stack = shared_stack
    action = f"{policy_name}.issue"
    stack.deploy(admin, policy_doc(policy_name))
    # Shadow needs no approval: a draft can be watched against live traffic before review.
    shadow = stack.propose(admin, policy_doc(policy_name, auto_below=200), by=ALICE)
    assert shadow.version == 2
    stack.promote(admin, policy_name, 2, Stage.SHADOW)

    decision = stack.evaluate_settled(
        agent, action=action, principal=AGENT, resource="account:7", facts=FACTS_300
    )
    assert (decision.policy_version, decision.stage) == (1, Stage.ACTIVE)
    assert decision.determination is Determination.ALLOW and decision.rule == "auto-refund"
    assert not decision.constraints
    (result,) = decision.shadow_results
    assert (result.policy, result.version, result.stage) == (policy_name, 2, Stage.SHADOW)
    assert result.determination is Determination.ALLOW_WITH_CONSTRAINTS
    assert result.rule == "credit-only"
    assert dict(result.constraints) == {"refund_method": "credit"}


def test_denials_and_errors_carry_precise_reasons(
    shared_stack: LedgerStack, admin, agent, policy_name
):
    stack = shared_stack
    action = f"{policy_name}.issue"
    stack.deploy(admin, policy_doc(policy_name))

    stranger = stack.evaluate_settled(
        agent, action=action, principal="agent:stranger", resource="account:1", facts=GOOD_FACTS
    )
    assert stranger.determination is Determination.DENY
    assert stranger.reason_code == "no_authority"
    assert stranger.grant_id is None and stranger.policy_version is None

    ungoverned = agent.evaluate(
        action=f"{policy_name}.email", principal=AGENT, resource="account:1", facts={}
    )
    assert ungoverned.determination is Determination.DENY
    assert ungoverned.reason_code == "ungoverned_action"
    assert ungoverned.grant_id  # authorized, but nothing governs the action

    bad = agent.evaluate(
        action=action,
        principal=AGENT,
        resource="account:1",
        facts={"tenure_days": -3, "amount": "lots", "standing": "royal", "vip": True},
    )
    assert bad.determination is Determination.ERROR
    assert bad.reason_code == "invalid_facts"
    assert (bad.policy, bad.policy_version) == (policy_name, 1)
    reasons = {r.split(":", 1)[0]: r for r in bad.reasons}
    assert set(reasons) == {"tenure_days", "amount", "prior_refunds_12m", "standing", "vip"}
    assert reasons["prior_refunds_12m"] == "prior_refunds_12m: missing required fact"
    assert reasons["vip"] == "vip: unknown fact (not declared by the policy)"
    assert "-3" in reasons["tenure_days"] and "0" in reasons["tenure_days"]
    assert "'lots'" in reasons["amount"] or "lots" in reasons["amount"]
    assert "good, watch, delinquent, suspended" in reasons["standing"]

    for decision in (stranger, ungoverned, bad):
        assert decision.reason_code in REASON_CODES
