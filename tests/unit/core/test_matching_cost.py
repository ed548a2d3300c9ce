"""Matching a request's names against its principal's grants and the policies' ``governs`` is
charged to its evaluation budget (a red team, 2026-12-06): a principal holding 3,000 grants of
128 small patterns made each of its requests cost 70-147 ms, uncharged (each grant was under the
per-grant threshold), and a 500-item pre-evaluation of it 69 s; 500 fresh actions matched
against 40 policies of 256 ``governs`` globs took 2.4 s, uncharged.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ledger.core import evaluate, evaluate_batch
from ledger.core.authority import authorize, grants_units
from ledger.core.events import (
    BatchEvaluationRequested,
    BatchItem,
    Determination,
    EvaluationRequested,
    GrantIssued,
)
from ledger.core.globwork import MATCH_FREE
from ledger.core.governing import governs_units
from ledger.core.limits import Limits
from ledger.core.state import LedgerState, replay

T0 = datetime(2025, 1, 1, tzinfo=UTC)
OVER = "evaluation_budget_exceeded"


def _holding(grants: list[tuple[tuple[str, ...], str]], principal: str = "agent:a") -> LedgerState:
    return replay(
        [
            GrantIssued(
                event_id=f"e{n}",
                occurred_at=T0,
                actor="human:admin",
                command_id=f"c{n}",
                principal=principal,
                sequence=n + 1,
                grant_id=f"g{n:05}",
                actions=actions,
                resource=resource,
            )
            for n, (actions, resource) in enumerate(grants)
        ]
    )


def _small_patterns(grants: int) -> LedgerState:
    """The red team's principal: ``grants`` grants of 128 small patterns each, on ``*``."""
    return _holding([(tuple(f"*k{i}q{j}*" for j in range(128)), "*") for i in range(grants)])


def _asked(action: str = "p.act", resource: str = "x") -> EvaluationRequested:
    return EvaluationRequested(
        event_id="r1",
        occurred_at=T0,
        actor="agent:a",
        action=action,
        principal="agent:a",
        resource=resource,
    )


def _batch(*items: tuple[str, str]) -> BatchEvaluationRequested:
    return BatchEvaluationRequested(
        event_id="b1",
        occurred_at=T0,
        actor="agent:a",
        principal="agent:a",
        items=tuple(
            BatchItem(item_id=str(n), action=action, resource=resource)
            for n, (action, resource) in enumerate(items)
        ),
    )


def test_many_small_grants_spend_the_budget_before_any_is_tried() -> None:
    state = _small_patterns(3_000)
    decision = evaluate(state, _asked(), now=T0, evaluator_id="t")
    assert (decision.determination, decision.reason_code) == (Determination.ERROR, OVER)
    assert decision.grant_id is None
    [reason] = decision.reasons
    assert reason.startswith("authority: trying the 3,000 grants agent:a holds")
    assert "hold fewer grants, with fewer patterns" in reason
    # Summed over the grants, not free per grant: each is far under what one request may.
    assert grants_units(state, "agent:a", "p.act", "x") > 1_000_000
    assert grants_units(_small_patterns(1), "agent:a", "p.act", "x") < 1_000
    # Commands are authorized as their history was checked: trying the grants is not charged.
    assert authorize(state, "agent:a", "p.act", "x", now=T0) is None


def test_a_pre_evaluations_items_share_one_budget_for_matching_too() -> None:
    state = _small_patterns(100)  # ~40,000 units an item: 24 items fit in 1,000,000
    answer = evaluate_batch(state, _batch(*[("p.act", "x")] * 60), now=T0, evaluator_id="t")
    codes = [d.reason_code for d in answer.decisions]
    assert codes[0] == "no_authority" and codes[-1] == OVER
    fitted = codes.index(OVER)
    assert 10 < fitted < 40 and set(codes[fitted:]) == {OVER}
    # The item is told the items before it spent the shared budget, and what to do.
    assert "items before this one spent" in answer.decisions[-1].reasons[0]
    alone = evaluate(state, _asked(), now=T0, evaluator_id="t")
    assert alone.reason_code == "no_authority"


def test_an_ordinary_principal_is_never_charged() -> None:
    # Tens of grants of a few short patterns stay under the free allowance, so no request of
    # theirs (nor a 500-item pre-evaluation's items) touches the budget.
    state = _holding([((f"svc{i}.read", f"svc{i}.write.*"), f"account:{i}*") for i in range(40)])
    assert grants_units(state, "agent:a", "svc39.read", "account:39-x") < MATCH_FREE
    asked = _batch(*[("svc39.read", "account:39-x")] * 500)
    tight = Limits(evaluation_cost=1)  # any charge at all would spend it
    answer = evaluate_batch(state, asked, now=T0, evaluator_id="t", limits=tight)
    assert {d.reason_code for d in answer.decisions} == {"ungoverned_action"}
    assert {d.grant_id for d in answer.decisions} == {"g00039"}


def _governing(policies: int, globs: int):  # type: ignore[no-untyped-def]
    from ledger.testing import LocalLedger

    led = LocalLedger()
    for p in range(policies):
        governs = ", ".join(f'"*.p{p}g{g}*"' for g in range(globs))
        led.deploy(
            f"policy: p{p}\ngoverns: [{governs}]\nowner: o\nfacts: {{}}\n"
            "rules: []\ndefault: {effect: allow}\n"
        )
    led.deploy(
        "policy: named\ngoverns: [pay.refund]\nowner: o\nfacts: {}\n"
        "rules: []\ndefault: {effect: allow}\n"
    )
    led.grant("agent:a", "*", "*")
    return led


def test_finding_the_governing_policy_of_fresh_actions_is_charged_once_per_action() -> None:
    led = _governing(4, 64)
    fresh = ["a." + f"{n:04}" + "x" * 1_000 for n in range(40)]
    assert governs_units(led.state, fresh[0], "r") > MATCH_FREE  # 256 globs, a 1 KB action
    limits = Limits(evaluation_cost=200_000)
    answer = evaluate_batch(
        led.state, _batch(*[(a, "r") for a in fresh]), now=T0, evaluator_id="t", limits=limits
    )
    codes = [d.reason_code for d in answer.decisions]
    assert codes[0] == "ungoverned_action" and codes[-1] == OVER
    assert "finding which policy governs this action needs more" in answer.decisions[-1].reasons[0]
    # One action asked 40 times is looked up, and charged, once.
    same = evaluate_batch(
        led.state, _batch(*[(fresh[0], "r")] * 40), now=T0, evaluator_id="t", limits=limits
    )
    assert {d.reason_code for d in same.decisions} == {"ungoverned_action"}
    # A name a policy governs exactly is looked up: nothing to charge.
    assert governs_units(led.state, "pay.refund", "r") == 0


def test_names_that_hold_nothing_are_not_remembered() -> None:
    # A review: the sums were remembered for any principal named, and anyone holding the agent
    # credential names fresh ones: 50,000 requests grew an evaluator's memo by 62 MB.
    state = _holding([(("p.*",), "*")])
    before = len(state.memo)
    for n in range(100):
        assert grants_units(state, f"agent:stranger-{n}", "p.act", "x") < 10
    assert len(state.memo) == before
    assert grants_units(state, "agent:a", "p.act", "x") > 0
    assert ("grant units", "agent:a") in state.memo
