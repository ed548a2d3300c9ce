"""CEL's commutative ``||``/``&&`` over absent facts and faults; faults in plain words.

Evaluated left to right with short-circuit, the first read of an absent optional fact made the
whole condition false: ``reason_code == "fraud" || amount > 400`` did not match amount 450 while
``amount > 400 || reason_code == "fraud"`` did, so a deny rule could be skipped for a later allow
(fail open). CEL specifies commutative logical operators: a decisive side wins over an error on
the other. Decimal faults read ``[<class 'decimal.DivisionByZero'>]``; they read in words now.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from ledger.core.cel import BudgetExceeded, ConditionFault, Meter, compile_condition
from ledger.core.events import Determination
from ledger.core.policy import parse_policy

FACTS = {
    "amount": "decimal",
    "n": "int",
    "z": "int",
    "reason_code": "string",
    "note": "string",
    "tags": "list<string>",
}
OPTIONAL = frozenset({"reason_code", "note"})


def ev(text: str, facts: dict[str, Any], context: dict[str, Any] | None = None, **kw: Any) -> bool:
    return compile_condition(text, facts=FACTS, **kw).evaluate(facts, context or {})


def both_orders(left: str, op: str, right: str) -> tuple[str, str]:
    return f"{left} {op} {right}", f"{right} {op} {left}"


# ----------------------------------------------------------------------------- absence


@pytest.mark.parametrize("optional", [None, OPTIONAL])
@pytest.mark.parametrize(
    ("texts", "facts", "expected"),
    [
        # A true side decides ||, whatever the other.
        (both_orders('reason_code == "fraud"', "||", "amount > 400"), {"amount": 450}, True),
        (both_orders('context.channel == "web"', "||", "amount > 400"), {"amount": 450}, True),
        # A false side decides &&: its negation then holds.
        (
            ('!(reason_code == "x" && amount > 400)', '!(amount > 400 && reason_code == "x")'),
            {"amount": 300},
            True,
        ),
        # Neither side decides: absence, which is not true.
        (both_orders('reason_code == "fraud"', "||", "amount > 400"), {"amount": 300}, False),
        (both_orders('reason_code == "fraud"', "&&", "amount > 400"), {"amount": 450}, False),
        (both_orders('reason_code == "fraud"', "||", 'note == "x"'), {}, False),
    ],
)
def test_or_and_are_commutative_over_absent_facts(
    texts: tuple[str, str],
    facts: dict[str, Any],
    expected: bool,
    optional: frozenset[str] | None,
) -> None:
    facts = {k: Decimal(v) for k, v in facts.items()}
    for text in texts:
        assert ev(text, facts, optional=optional) is expected, text


def test_a_deny_rule_is_not_skipped_for_a_later_allow_whichever_order_it_is_written_in() -> None:
    # The reproduction: the refund policy with a deny rule before the allow rules.
    for when in both_orders('reason_code == "fraud"', "||", "amount > 400"):
        policy = parse_policy(
            "policy: refund\ngoverns: [refund.issue]\nowner: o\n"
            "facts:\n  amount: {type: decimal}\n  tenure_days: {type: int}\n"
            "  reason_code: {type: string, optional: true}\n"
            f"rules:\n  - id: fraud\n    when: '{when}'\n    effect: deny\n"
            "  - id: auto\n    when: tenure_days > 90 && amount < 500\n    effect: allow\n"
            "default: {effect: deny}\n"
        )
        outcome, _ = policy.run({"amount": "450", "tenure_days": 100})
        assert (outcome.determination, outcome.rule) == (Determination.DENY, "fraud"), when
        # Present and decisive, or present and not: as before.
        assert policy.run({"amount": "10", "tenure_days": 100, "reason_code": "fraud"})[0].rule == (
            "fraud"
        )
        assert policy.run({"amount": "10", "tenure_days": 100})[0].rule == "auto"


def test_macros_absorb_errors_as_or_and_and_do() -> None:
    text = 'tags.exists(t, t == reason_code || t == "vip")'
    assert ev(text, {"tags": ("a", "vip")}) is True
    assert ev(text, {"tags": ("a", "b")}) is False  # absent, undecided: does not hold
    mixed = {"xs": ("a", 10)}
    assert ev("context.xs.exists(x, x > 5)", {}, mixed) is True
    assert ev("context.xs.all(x, x > 50)", {}, mixed) is False
    with pytest.raises(ConditionFault):
        ev("context.xs.all(x, x > 5)", {}, mixed)  # "a" > 5 faults, 10 > 5 decides nothing


def test_grant_conditions_are_commutative_too() -> None:
    for text in both_orders('reason_code == "fraud"', "||", "amount > 400"):
        c = compile_condition(text, facts=None)
        assert c.evaluate({"amount": Decimal(450)}, {}) is True


# ----------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("left", "op", "right", "expected"),
    [
        ("n / z > 1", "||", "n > 0", True),
        ("n / z > 1", "&&", "n < 0", False),
        ("amount / z > 1", "||", "n > 0", True),  # decimal division by zero
        ("context.a > 5", "||", "n > 0", True),  # "text" > 5: a dyn of the wrong type
    ],
)
def test_a_decisive_side_absorbs_a_fault(left: str, op: str, right: str, expected: bool) -> None:
    facts = {"n": 1, "z": 0, "amount": Decimal(1)}
    for text in both_orders(left, op, right):
        assert ev(text, facts, {"a": "text"}) is expected, text


@pytest.mark.parametrize(
    "text",
    [
        *both_orders("n / z > 1", "||", "n < 0"),
        *both_orders("n / z > 1", "&&", "n > 0"),
        # A fault and an absence: the fault is reported, whichever side it is on.
        *both_orders("n / z > 1", "||", 'reason_code == "x"'),
        *both_orders("n / z > 1", "&&", 'reason_code == "x"'),
    ],
)
def test_an_undecided_fault_is_still_a_fault(text: str) -> None:
    with pytest.raises(ConditionFault, match="division or modulo by zero"):
        ev(text, {"n": 1, "z": 0})


def test_an_undecided_fault_is_an_error_decision_not_a_skipped_rule() -> None:
    policy = parse_policy(
        "policy: p\ngoverns: [p.act]\nowner: o\n"
        "facts: {n: {type: int}, z: {type: int}, note: {type: string, optional: true}}\n"
        "rules:\n  - id: r\n    when: 'note == \"x\" || n / z > 1'\n    effect: deny\n"
        "default: {effect: allow}\n"
    )
    outcome, _ = policy.run({"n": 1, "z": 0})
    assert (outcome.determination, outcome.reason_code) == (Determination.ERROR, "condition_error")
    assert outcome.reasons == ("condition of rule 'r' failed: integer division or modulo by zero",)


def test_the_budget_is_never_absorbed() -> None:
    spender = "tags.exists(x, tags.exists(y, x == y + 'z'))"
    facts = {"tags": tuple(str(i) for i in range(1000)), "n": 1}
    for text in (f"{spender} || n > 0", f'reason_code == "x" || {spender} || n > 0'):
        c = compile_condition(text, facts=FACTS)
        with pytest.raises(BudgetExceeded):
            c.evaluate(facts, {}, meter=Meter(10_000))
    # A decisive side met first still decides without spending anything.
    assert compile_condition(f"n > 0 || {spender}", facts=FACTS).evaluate(
        facts, {}, meter=Meter(10_000)
    )


# ----------------------------------------------------------------------------- the hot path


def test_only_a_condition_whose_left_side_can_raise_gets_the_commutative_form() -> None:
    required: frozenset[str] = frozenset()  # every fact checked present before conditions run
    plain = [
        ("amount > 400 || n > 1", required),
        ("n > 1 && amount < 500 && n < 3", required),
        ('amount > 400 || reason_code == "fraud"', OPTIONAL),  # only the last side can raise
        ("n / z > 1", required),  # no || or && to absorb anything
    ]
    for text, optional in plain:
        c = compile_condition(text, facts=FACTS, optional=optional)
        assert c.python.startswith("lambda f, c, m: "), text
        assert "_or(" not in c.python and "_and(" not in c.python
    for text in ('reason_code == "fraud" || amount > 400', "n / z > 1 || n > 0"):
        c = compile_condition(text, facts=FACTS, optional=OPTIONAL)
        assert c.python.startswith("def _cel(f, c, m):\n    try:\n        return ("), text
        assert not c.metered  # still no meter: fn(f, c, None) works on either path
        assert c.fn({"amount": Decimal(450), "n": 1, "z": 0}, {}, None) is True


# ----------------------------------------------------------------------------- faults in words


def _division_policy(op: str) -> Any:
    return parse_policy(
        "policy: p\ngoverns: [p.act]\nowner: o\n"
        "facts: {d: {type: decimal}, e: {type: decimal}}\n"
        f"rules:\n  - id: r\n    when: 'd {op} e > 0'\n    effect: deny\n"
        "default: {effect: allow}\n"
    )


@pytest.mark.parametrize(
    ("op", "d", "e", "reason"),
    [
        ("/", "1", "0", "decimal division by zero"),
        ("/", "0", "0", "decimal division by zero (0 / 0 is undefined)"),
        ("%", "1", "0", "decimal modulo by zero"),
        (
            "%",
            "1e40",
            "3",
            "decimal modulo: the integer quotient has more than 34 digits (decimal128 precision)",
        ),
        (
            "*",
            "9e999990",
            "9e999990",
            "decimal overflow: the result is beyond the decimal range (34 significant digits, "
            "exponent at most 999,999)",
        ),
    ],
)
def test_decimal_faults_are_reported_in_words(op: str, d: str, e: str, reason: str) -> None:
    outcome, _ = _division_policy(op).run({"d": d, "e": e})
    assert outcome.determination is Determination.ERROR
    assert outcome.reasons == (f"condition of rule 'r' failed: {reason}",)
    assert "<class" not in outcome.reasons[0]


def test_decimal_faults_on_context_values_are_in_words_too() -> None:
    c = compile_condition("context.a / context.b > 0", facts={})
    with pytest.raises(ConditionFault, match=r"decimal division by zero$"):
        c.evaluate({}, {"a": Decimal(1), "b": Decimal(0)})


# ----------------------------------------------------------------------------- integers


@pytest.mark.parametrize(
    ("text", "facts"),
    [
        ("n * n > 0", {"n": 2**62}),
        ("n + 1 > 0", {"n": 2**63 - 1}),
        ("-n > 0", {"n": -(2**63)}),
        ("n / z > 0", {"n": -(2**63), "z": -1}),
        ("n > 0 && n - 1 > 0", {"n": 10**4000}),  # an int fact beyond the range
        ("amount < n", {"amount": Decimal(1), "n": 10**4000}),
        ("amount + n > 0", {"amount": Decimal(1), "n": 10**4000}),
    ],
)
def test_integers_are_64_bit_as_in_cel(text: str, facts: dict[str, Any]) -> None:
    with pytest.raises(ConditionFault, match="integer overflow"):
        ev(text, {"z": 1, **facts})


def test_integer_arithmetic_within_the_range_is_unchanged() -> None:
    assert ev("n * 2 - 1 == 2 * n - 1 && n / 2 == 3 && n % 4 == 3", {"n": 7})
    assert ev("-n == -7 && amount < n && amount + n == 8.5", {"n": 7, "amount": Decimal("1.5")})
    assert ev("n * n > 0", {"n": 2**31})


# ----------------------------------------------------------------------------- a review's finds


def test_a_dyn_branch_of_a_conditional_must_still_be_a_bool() -> None:
    # The ?: took the other branch's type (bool), so a context value "no" passed for a match.
    condition = compile_condition("n > 0 ? context.flag : false", facts=FACTS)
    assert condition.evaluate({"n": 1}, {"flag": True}) is True
    with pytest.raises(ConditionFault):
        condition.evaluate({"n": 1}, {"flag": "no"})


@pytest.mark.parametrize(
    ("text", "value", "expected"),
    [
        ("n / 30 == 3", 100, True),  # truncating, as typed ints (was true division: 3.33…)
        ("n % 3 == -1", -7, True),  # CEL's remainder (Python's % floors: 2)
        ("-n == 5", -5, True),
    ],
)
def test_integer_arithmetic_on_dyn_values_is_cels(text: str, value: int, expected: bool) -> None:
    # Grant conditions (dynamic mode) and context values: every fact is dyn.
    assert compile_condition(text, facts=None).evaluate({"n": value}, {}) is expected


def test_negating_the_smallest_dyn_integer_is_an_overflow() -> None:
    with pytest.raises(ConditionFault, match="overflow"):
        compile_condition("-n > 0", facts=None).evaluate({"n": -(2**63)}, {})


def test_negating_a_decimal_is_exact_in_the_fixed_context() -> None:
    # Python's unary minus rounded to the thread's context (28 digits), not the fixed 34.
    amount = Decimal("1.000000000000000000000000000000001")
    assert ev("-amount == -1.000000000000000000000000000000001", {"amount": amount})
    assert ev("-amount < 0 || amount > 0", {"amount": Decimal("1e1000000")})
