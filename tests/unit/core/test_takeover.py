"""Deploying a version that takes over actions another policy decides takes authority over that
policy too (a policy owner's walkthrough: grants on ``policy:a-evil`` alone let a-evil's version
governing ``payments.refund`` by its exact name decide what ``payrefund`` decided, and deny
became allow), and ``actor verify`` holds recorded history to the same rule."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ledger.core.events import (
    ApprovePolicyVersion,
    PolicyVersionPromoted,
    PromotePolicyVersion,
    ProposePolicyVersion,
    Stage,
)
from ledger.core.governing import takeovers
from ledger.errors import CommandRejectedError
from ledger.ids import new_id, utcnow
from ledger.testing import ADMIN, REVIEWER, LocalLedger

ROOT = Path(__file__).resolve().parents[3]
REFUND = (ROOT / "examples" / "policies" / "refund.yaml").read_text()
CAROL, DAVE = "human:carol", "human:dave"


def document(policy: str, governs: str) -> str:
    doc = REFUND.replace("policy: refund", f"policy: {policy}", 1)
    return doc.replace("governs: [refund.issue]", f'governs: ["{governs}"]', 1)


@pytest.fixture
def led() -> LocalLedger:
    """payrefund (governing payments.refund) active, deployed by the administrators; carol may
    propose a-evil, dave approve and promote it, and nothing more."""
    led = LocalLedger()
    led.deploy(document("payrefund", "payments.refund"))
    led.grant(CAROL, "ledger.policy.propose", "policy:a-evil")
    led.grant(DAVE, ("ledger.policy.approve", "ledger.policy.promote"), "policy:a-evil")
    return led


def stamp(actor: str) -> dict[str, object]:
    return {"event_id": new_id(), "occurred_at": utcnow(), "actor": actor}


def propose_and_approve(led: LocalLedger, governs: str) -> int:
    done = led.submit_command(
        ProposePolicyVersion(**stamp(CAROL), document=document("a-evil", governs))
    )
    assert done.version is not None
    led.submit_command(ApprovePolicyVersion(**stamp(DAVE), policy="a-evil", version=done.version))
    return done.version


def promote(
    led: LocalLedger, version: int, stage: Stage, percent: int | None = None, by: str = DAVE
) -> None:
    led.submit_command(
        PromotePolicyVersion(
            **stamp(by), policy="a-evil", version=version, stage=stage, percent=percent
        )
    )


@pytest.mark.parametrize("governs", ["payments.refund", "payments.ref*", "payments.refun?"])
def test_deploying_a_version_that_takes_another_policys_action_needs_authority_over_it(
    led: LocalLedger, governs: str
) -> None:
    led.deploy(document("payglob", "payments.*"))  # a glob a-evil's longer glob carves from too
    promote(led, propose_and_approve(led, "other.thing"), Stage.ACTIVE)  # takes nothing
    version = propose_and_approve(led, governs)
    for stage, percent in ((Stage.ACTIVE, None), (Stage.CANARY, 10)):
        with pytest.raises(CommandRejectedError) as refused:
            promote(led, version, stage, percent)
        assert refused.value.code == "not_authorized"
        assert "which policy pay" in str(refused.value)
        assert "ledger.policy.promote on policy:pay" in str(refused.value)
    promote(led, version, Stage.SHADOW)  # a shadow decides nothing: nothing is taken over
    assert led.state.policies["a-evil"].active == 1


def test_with_authority_over_the_policy_taken_over_or_as_administrator_it_is_deployed(
    led: LocalLedger,
) -> None:
    version = propose_and_approve(led, "payments.refund")
    led.grant(DAVE, "ledger.policy.promote", "policy:payrefund")
    promote(led, version, Stage.ACTIVE)
    assert led.state.policies["a-evil"].active == version

    other = LocalLedger()
    other.deploy(document("payrefund", "payments.refund"))
    other.deploy(document("a-evil", "payments.refund"))  # administrators: as before
    assert other.state.policies["a-evil"].active == 1


def test_a_version_that_takes_nothing_over_needs_nothing_more(led: LocalLedger) -> None:
    # A glob that an exact name beats takes nothing; nor do actions nobody else decides.
    for governs in ("payments.*", "payments.chargeback"):
        promote(led, propose_and_approve(led, governs), Stage.ACTIVE)
    # A pattern a-evil already decides is not taken from anyone by deploying it again.
    assert takeovers(led.state, "a-evil", ["payments.chargeback"]) == ({}, True)


def test_a_glob_that_shares_no_action_with_anothers_takes_nothing_over(led: LocalLedger) -> None:
    # A policy owner's walkthrough: crm.*.write was refused as taking crm.*.read over (their
    # fixed beginnings agree, and nothing else does), and the note named a policy that shares
    # nothing with it. Only an action both match is shared.
    led.deploy(document("crmread", "crm.*.read"))
    proposed = led.submit_command(
        ProposePolicyVersion(**stamp(CAROL), document=document("a-evil", "crm.*.write"))
    )
    assert "crmread" not in proposed.message and "may also be governed" not in proposed.message
    assert proposed.version is not None
    led.submit_command(
        ApprovePolicyVersion(**stamp(DAVE), policy="a-evil", version=proposed.version)
    )
    promote(led, proposed.version, Stage.ACTIVE)  # dave holds promote on a-evil alone
    assert led.state.policies["a-evil"].active == proposed.version
    assert takeovers(led.state, "zz", ["crm.*.write", "*.write", "crm.?.writ?"]) == ({}, True)


def test_a_glob_that_shares_an_action_with_a_shorter_one_takes_it_over(led: LocalLedger) -> None:
    # *.read and crm.* share crm.x.read, which the longer glob decides: though their fixed
    # beginnings tell nothing (one is empty), the takeover is found.
    led.deploy(document("crmall", "crm.*"))
    version = propose_and_approve(led, "*.read")
    with pytest.raises(CommandRejectedError) as refused:
        promote(led, version, Stage.ACTIVE)
    assert refused.value.code == "not_authorized"
    assert "which policy crmall decides now (*.read ~ crmall's crm.*" in str(refused.value)
    assert takeovers(led.state, "zz", ["*.read"]) == ({"crmall": ("crm.*", "*.read")}, True)
    # Longer than crm.*, and no action matches both (the fourth character is - or .).
    assert takeovers(led.state, "zz", ["?rm-?*"]) == ({}, True)


def test_a_rollback_that_would_take_an_action_over_needs_authority_over_it_too(
    led: LocalLedger,
) -> None:
    # a-evil v1 decided payments.chargeback; v2 left it, and payrefund v2 took it since. A
    # rollback of a-evil to v1 by its owner would take it back from payrefund.
    led.grant(DAVE, "ledger.policy.rollback", "policy:a-evil")
    first = propose_and_approve(led, "payments.chargeback")
    promote(led, first, Stage.ACTIVE)
    promote(led, propose_and_approve(led, "payments.other"), Stage.ACTIVE)
    led.deploy(document("payrefund", "payments.chargeback"))
    with pytest.raises(CommandRejectedError) as refused:
        led.rollback("a-evil", reason="v2 is wrong", to_version=first, by=DAVE)
    assert refused.value.code == "not_authorized" and "policy payrefund" in str(refused.value)
    led.rollback("a-evil", reason="v2 is wrong", to_version=first)  # an administrator may


def test_actor_verify_finds_a_takeover_the_processor_accepted_under_earlier_rules(
    led: LocalLedger,
) -> None:
    # Recorded before this rule: dave's promotion of a-evil, taking payments.refund over.
    from ledger.core.signing import _unauthorized

    version = propose_and_approve(led, "payments.refund")
    admins = frozenset({ADMIN, REVIEWER})
    before = led.state
    promote(led, version, Stage.ACTIVE, by=ADMIN)
    promoted = led.events[-1]
    assert isinstance(promoted, PolicyVersionPromoted)
    assert _unauthorized(before, promoted, admins) is None  # an administrator's: proven
    as_dave = replace(promoted, actor=DAVE)
    problem = _unauthorized(before, as_dave, admins) or ""
    assert "a-evil v1 would decide payments.refund, which policy payrefund decides now" in problem
    assert problem.endswith("the command processor should have refused it")
    shadow = replace(as_dave, stage=Stage.SHADOW)
    assert _unauthorized(before, shadow, admins) is None


def _governing(policies: dict[str, list[str]]) -> Any:
    """A state whose deployed policies decide these entries (all that takeovers reads)."""
    return SimpleNamespace(
        policies={
            name: SimpleNamespace(retired=False, governs=lambda g=tuple(governs): (frozenset(g),))
            for name, governs in policies.items()
        }
    )


def test_a_big_ledger_of_exact_names_is_looked_at_in_full() -> None:
    # A review: 2,000 policies of 10 exact names ran the budget out (each pair charged), and
    # every deployment by a non-administrator was refused "an administrator deploys it".
    policies = {f"team{i:04d}": [f"team{i:04d}.task{j}" for j in range(10)] for i in range(2000)}
    policies["zz-pay"] = ["pay.refund", "pay.*"]
    state = _governing(policies)
    ours = [f"mine.task{j}" for j in range(100)]
    assert takeovers(state, "mine", ours) == ({}, True)
    # And what is taken is still found: an exact name from a glob, and an equal name from a
    # policy whose name sorts after ours.
    taken, complete = takeovers(state, "mine", [*ours, "pay.payout", "team1999.task3"])
    assert complete and taken == {
        "zz-pay": ("pay.*", "pay.payout"),
        "team1999": ("team1999.task3", "team1999.task3"),
    }
    assert takeovers(state, "zzz", ["team0001.task1"]) == ({}, True)  # theirs: lower name


def test_a_key_a_delegate_registered_takes_nothing_over_beyond_that_delegate(
    led: LocalLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A review: carol registered dave's key under the earlier rules; dave may promote
    # payrefund, carol may not; signed with dave's key, carol took payments.refund over. A key
    # a delegate registered acts no further than the delegate, here too, and verify says so.
    import ledger.core.lifecycle.policy_rules as policy_rules
    import ledger.core.signing as signing

    def registered_by_carol(state: object, actor: str, key_id: str | None, admins: object) -> Any:
        return CAROL if key_id == "k-dave" else None

    led.grant(DAVE, "ledger.policy.promote", "policy:payrefund")
    led.grant(CAROL, "ledger.policy.promote", "policy:a-evil")  # a-evil's: not payrefund's
    version = propose_and_approve(led, "payments.refund")
    before = led.state
    monkeypatch.setattr(policy_rules, "key_registrar", registered_by_carol)
    monkeypatch.setattr(signing, "key_registrar", registered_by_carol)
    command = PromotePolicyVersion(
        **stamp(DAVE), policy="a-evil", version=version, stage=Stage.ACTIVE, key_id="k-dave"
    )
    with pytest.raises(CommandRejectedError) as refused:
        led.submit_command(command)
    assert refused.value.code == "not_authorized"
    assert str(refused.value).startswith(f"{DAVE} signed with a key {CAROL} registered, and")
    assert "which policy payrefund decides now" in str(refused.value)
    promote(led, version, Stage.ACTIVE)  # dave's own key: he may
    promoted = replace(led.events[-1], command_key_id="k-dave")
    from ledger.core.signing import _unauthorized

    problem = _unauthorized(before, promoted, frozenset({ADMIN, REVIEWER})) or ""
    assert f"signed with a key {CAROL} registered" in problem and "payrefund" in problem


def test_a_refused_takeover_names_the_action_taken_not_the_glob_it_was_taken_from() -> None:
    # A policy owner's walkthrough: "would decide report.*, which policy reports decides now"
    # when only report.export, which the version names exactly, was taken from report.*.
    led = LocalLedger()
    led.deploy(document("reports", "payments.*"))
    led.grant(CAROL, "ledger.policy.propose", "policy:a-evil")
    led.grant(DAVE, ("ledger.policy.approve", "ledger.policy.promote"), "policy:a-evil")
    version = propose_and_approve(led, "payments.export")
    with pytest.raises(CommandRejectedError) as refused:
        promote(led, version, Stage.ACTIVE)
    assert "a-evil v1 would decide payments.export, which policy reports decides now" in str(
        refused.value
    )
