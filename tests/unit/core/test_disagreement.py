"""When two answers differ (ledger.core.disagreement), and impact simulation of a draft that changes
constraints alone (a policy owner's walkthrough: a cap lowered from 500.00 to 400.00 under the
same allow_with_constraints simulated as "0 determinations would change" and nothing else)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from ledger.core.disagreement import difference, differing_constraints, same_constraints
from ledger.core.events import DecisionRecorded, Determination, EvaluationRequested
from ledger.core.policy import parse_policy
from ledger.core.simulate import simulate

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
AWC = Determination.ALLOW_WITH_CONSTRAINTS


def test_constraints_are_compared_as_values_in_any_order() -> None:
    assert same_constraints({"cap": Decimal("500.0")}, {"cap": Decimal("500.00")})
    assert same_constraints({"cap": 500}, {"cap": 500.0})
    assert same_constraints({"a": "x", "b": ("p", "q")}, {"b": ("p", "q"), "a": "x"})
    assert not same_constraints({"cap": "500.00"}, {"cap": "400.00"})
    assert not same_constraints({"cap": Decimal("500")}, {"cap": Decimal("400")})
    assert not same_constraints({"on": True}, {"on": 1})  # a bool is never a number
    assert not same_constraints({"on": False}, {"on": 0})
    assert not same_constraints({"cap": 1}, {"cap": 1, "method": "credit"})
    assert not same_constraints({"cap": None}, {})
    assert same_constraints({}, {})
    # A review: a tuple and a list of the same items differed here, and not in SQL.
    assert same_constraints({"redact": ("email",)}, {"redact": ["email"]})
    assert not same_constraints({"redact": ("email",)}, {"redact": ["email", "name"]})


def test_two_answers_differ_by_determination_first_then_constraints() -> None:
    d = Determination
    assert difference(d.ALLOW, {}, d.DENY, {}) == "determination"
    assert difference(AWC, {"cap": "500.00"}, d.ALLOW, {}) == "determination"
    assert difference(AWC, {"cap": "500.00"}, AWC, {"cap": "400.00"}) == "constraints"
    assert difference(AWC, {"cap": Decimal("500.0")}, AWC, {"cap": Decimal("500.00")}) is None
    assert difference(d.ALLOW, {}, d.ALLOW, {}) is None
    assert differing_constraints(
        {"cap": "500.00", "method": "credit", "gone": 1}, {"method": "credit", "cap": "400.00"}
    ) == (("cap", "500.00", "400.00"), ("gone", 1, None))


def _policy(cap: str) -> str:
    return (
        "policy: refunds\ngoverns: [refund.issue]\nowner: cs\n"
        "facts:\n  amount: {type: int, min: 0}\n"
        "rules:\n"
        "  - id: credit-capped\n    when: amount < 1000\n    effect: allow\n"
        f'    constraints: {{max_refund: "{cap}", method: credit}}\n'
        "default: {effect: deny}\n"
    )


def _pair(n: int, amount: int, recorded: str) -> tuple[EvaluationRequested, DecisionRecorded]:
    request = EvaluationRequested(
        event_id=f"r{n}", occurred_at=T0, actor="agent:a", action="refund.issue",
        principal="agent:a", resource=f"account:{n}", facts={"amount": amount},
    )  # fmt: skip
    if amount < 1000:
        determination, rule = AWC, "credit-capped"
        constraints = {"max_refund": recorded, "method": "credit"}
    else:
        determination, rule, constraints = Determination.DENY, None, {}
    decided = DecisionRecorded(
        event_id=f"d{n}", occurred_at=T0, actor="service:evaluator", request_id=f"r{n}",
        requested_at=T0, action="refund.issue", principal="agent:a", resource=f"account:{n}",
        determination=determination, rule=rule, constraints=constraints,
        reason_code="rule_matched" if rule else "default", policy="refunds", policy_version=1,
        grant_id="g1",
    )  # fmt: skip
    return request, decided


def test_simulating_a_draft_that_lowers_a_cap_lists_the_requests_it_caps_otherwise() -> None:
    history = [_pair(1, 100, "500.00"), _pair(2, 200, "500.00"), _pair(3, 5000, "500.00")]
    history.append(_pair(4, 300, "400.00"))  # decided under the same cap already
    report = simulate(parse_policy(_policy("400.00")), history)
    assert report.changed == () and report.unchanged == 4 and report.rule_changes == 0
    assert [c.request_id for c in report.constraint_changes] == ["r1", "r2"]
    change = report.constraint_changes[0]
    assert (change.old_determination, change.new_determination) == (AWC, AWC)
    assert dict(change.old_constraints) == {"max_refund": "500.00", "method": "credit"}
    assert dict(change.new_constraints) == {"max_refund": "400.00", "method": "credit"}
    # The same cap, the same answers: nothing is listed.
    same = simulate(parse_policy(_policy("500.00")), history[:3])
    assert same.constraint_changes == () and same.changed == ()
