"""CEL's types at run time: a bool is not a number, and a mismatch is said as CEL says it.

A red team: with rules ``context.risk < 0.3``, ``context.level == 1`` and ``context.n + 1 == 2``,
a context of ``{"risk": false}``, ``{"level": true}`` or ``{"n": true}`` was allowed, since
Python's bool is an int. CEL has no overload between bool and a number: ordering or arithmetic
on them is a fault (``condition_error``), and equality is false, as for ``1 == "1"``. Faults
read ``no such overload: string >= double``, not Python's ``'>=' not supported between
instances of 'str' and 'float'``.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from golden_runner import ADMINS, T0, build_command, expand

from ledger.audit.reproduce import reproduce
from ledger.core import EMPTY_STATE, Rejection, decide, evaluate, fold
from ledger.core.cel import ConditionFault, compile_condition
from ledger.core.events import DecisionRecorded, Determination, EvaluationRequested
from ledger.core.history import HistoryEntry
from ledger.core.policy import parse_policy
from ledger.core.wordings import earlier_wording
from ledger.errors import PolicyError

FACTS = {"n": "int", "amount": "decimal", "ratio": "double", "flag": "bool", "name": "string"}


def ev(text: str, context: dict[str, Any], facts: dict[str, Any] | None = None) -> bool:
    return compile_condition(text, facts=FACTS).evaluate(facts or {}, context)


def fault(text: str, context: dict[str, Any], facts: dict[str, Any] | None = None) -> str:
    with pytest.raises(ConditionFault) as caught:
        ev(text, context, facts)
    return str(caught.value)


# ----------------------------------------------------------------------------- bool and numbers


@pytest.mark.parametrize(
    ("text", "context", "facts", "message"),
    [
        ("context.risk < 0.3", {"risk": False}, None, "no such overload: bool < double"),
        ("context.risk >= 1", {"risk": True}, None, "no such overload: bool >= int"),
        ("0.3 > context.risk", {"risk": False}, None, "no such overload: double > bool"),
        ("context.risk <= amount", {"risk": False}, {"amount": Decimal(1)}, "bool <= decimal"),
        ("n < context.risk", {"risk": True}, {"n": 5}, "no such overload: int < bool"),
        ("context.a < context.b", {"a": True, "b": 2}, None, "no such overload: bool < int"),
        ("context.n + 1 == 2", {"n": True}, None, "no such overload: bool + int"),
        ("1 + context.n == 2", {"n": True}, None, "no such overload: int + bool"),
        ("context.n - 1 == 0", {"n": True}, None, "no such overload: bool - int"),
        ("context.n * 2 == 2", {"n": True}, None, "no such overload: bool * …"),
        ("2 * context.n == 2", {"n": True}, None, "no such overload: int * bool"),
        ("context.n / 1 == 1", {"n": True}, None, "no such overload: bool / int"),
        ("context.n % 2 == 1", {"n": True}, None, "no such overload: bool % …"),
        ("context.n + 1.5 > 2", {"n": True}, None, "no such overload: bool + double"),
        ("context.n + amount > 0", {"n": True}, {"amount": Decimal(1)}, "bool + decimal"),
        ("-context.n == -1", {"n": True}, None, "no such overload: -bool"),
    ],
)
def test_a_bool_never_meets_a_number_in_ordering_or_arithmetic(
    text: str, context: dict[str, Any], facts: dict[str, Any] | None, message: str
) -> None:
    assert message in fault(text, context, facts)


@pytest.mark.parametrize(
    ("text", "context", "facts", "expected"),
    [
        ("context.level == 1", {"level": True}, None, False),
        ("context.level != 1", {"level": True}, None, True),
        ("context.level == 0", {"level": False}, None, False),
        ("1.0 == context.level", {"level": True}, None, False),
        ("context.level == true", {"level": 1}, None, False),
        ("context.level != true", {"level": 1}, None, True),
        ("context.level == true", {"level": True}, None, True),
        ("context.a == context.b", {"a": True, "b": 1}, None, False),
        ("context.a != context.b", {"a": True, "b": 1}, None, True),
        ("context.a == context.b", {"a": 1, "b": Decimal("1.0")}, None, True),
        ("flag == context.x", {"x": 1}, {"flag": True}, False),
        ("n == context.x", {"x": True}, {"n": 1}, False),
        ("amount == context.x", {"x": True}, {"amount": Decimal(1)}, False),
        ("ratio == context.x", {"x": True}, {"ratio": 1.0}, False),
        ("context.m in [1, 2]", {"m": True}, None, False),
        ("context.m in [1, 2]", {"m": 1}, None, True),
        ("context.m in [true]", {"m": 1}, None, False),
        ("context.m in [true]", {"m": True}, None, True),
        ("1 in [context.a, 5]", {"a": True}, None, False),
        ("true in [context.a]", {"a": 1}, None, False),
        ("true in [context.a]", {"a": True}, None, True),
        ("n in [context.a]", {"a": True}, {"n": 1}, False),
        ("n in [context.a]", {"a": 1}, {"n": 1}, True),
        # Inside lists and maps too (a review: Python's equality held [true] == [1]).
        ("context.a == [1]", {"a": [True]}, None, False),
        ("context.a == context.b", {"a": [True], "b": [1]}, None, False),
        ("context.a != context.b", {"a": [True], "b": [1]}, None, True),
        ("context.a == context.b", {"a": {"x": True}, "b": {"x": 1}}, None, False),
        ("context.a == context.b", {"a": {"x": [1, 2]}, "b": {"x": [1, 2.0]}}, None, True),
        ("context.a in context.b", {"a": [True], "b": [[1]]}, None, False),
        ("context.a in context.b", {"a": [True], "b": [[1], [True]]}, None, True),
        # Numbers of the three kinds still compare, order and add with each other.
        ("context.risk < 0.3", {"risk": 0}, None, True),
        ("context.risk < 0.3", {"risk": Decimal("0.29")}, None, True),
        ("context.n + 1 == 2", {"n": 1}, None, True),
        ("-context.n == -1.5", {"n": 1.5}, None, True),
        ("context.n * 2 == amount", {"n": 2}, {"amount": Decimal(4)}, True),
        # Bools order among themselves, as in CEL (false < true).
        ("context.a < context.b", {"a": False, "b": True}, None, True),
    ],
)
def test_equality_between_a_bool_and_a_number_is_false_as_between_other_kinds(
    text: str, context: dict[str, Any], facts: dict[str, Any] | None, expected: bool
) -> None:
    assert ev(text, context, facts) is expected


def test_grant_conditions_see_facts_as_cel_types_too() -> None:
    # Dynamic mode: every fact is a dyn, as a context value is.
    c = compile_condition("risk < 0.3 && level == 1", facts=None)
    assert c.evaluate({"risk": 0.1, "level": 1}, {}) is True
    with pytest.raises(ConditionFault, match="no such overload: bool < double"):
        c.evaluate({"risk": False, "level": 1}, {})
    assert compile_condition("level == 1", facts=None).evaluate({"level": True}, {}) is False


def test_the_red_teams_policy_errs_instead_of_allowing() -> None:
    policy = parse_policy(
        "policy: redteam\ngoverns: [x.do]\nowner: o\nfacts: {}\nrules:\n"
        "  - {id: risk, when: 'context.risk < 0.3', effect: allow}\n"
        "  - {id: level, when: 'context.level == 1', effect: allow}\n"
        "  - {id: arith, when: 'context.n + 1 == 2', effect: allow}\n"
        "default: {effect: deny}\n"
    )
    assert policy.run({}, {"risk": False})[0].determination is Determination.ERROR
    assert policy.run({}, {"risk": False})[0].reasons == (
        "condition of rule 'risk' failed: no such overload: bool < double",
    )
    # risk true faults first, as it would alone: the first rule that cannot be evaluated errs.
    assert policy.run({}, {"risk": True, "level": True})[0].rule == "risk"
    level = policy.run({}, {"level": True})[0]
    assert (level.determination, level.rule) == (Determination.DENY, None)
    arith = policy.run({}, {"n": True})[0]
    assert (arith.determination, arith.rule) == (Determination.ERROR, "arith")
    assert policy.run({}, {"risk": 0.1})[0].rule == "risk"
    assert policy.run({}, {"level": 1})[0].rule == "level"


def test_typed_facts_keep_bools_and_numbers_apart_before_any_condition_runs() -> None:
    # A bool fact compared with a number is a validation problem; a bool sent for a number
    # fact (or a number for a bool fact) is an invalid fact.
    with pytest.raises(PolicyError, match="cannot compare bool with int"):
        compile_condition("flag == 1", facts=FACTS)
    with pytest.raises(PolicyError, match="cannot order"):
        compile_condition("flag < 1", facts=FACTS)
    with pytest.raises(PolicyError, match="cannot apply"):
        compile_condition("flag + 1 == 2", facts=FACTS)
    policy = parse_policy(
        "policy: typed\ngoverns: [x.do]\nowner: o\n"
        "facts: {n: {type: int}, flag: {type: bool}}\n"
        "rules:\n  - {id: r, when: 'n == 1 && flag', effect: allow}\ndefault: {effect: deny}\n"
    )
    outcome = policy.run({"n": True, "flag": 1})[0]
    assert outcome.reason_code == "invalid_facts"
    assert any("n: expected an int" in r for r in outcome.reasons)
    assert any("flag: expected a bool" in r for r in outcome.reasons)


# ----------------------------------------------------------------------------- CEL's words


@pytest.mark.parametrize(
    ("text", "context", "message"),
    [
        ("context.s >= 1.5", {"s": "x"}, "no such overload: string >= double"),
        ("context.s < amount", {"s": "x"}, "no such overload: string < decimal"),
        ("context.s + 1 == 2", {"s": "x"}, "no such overload: string + int"),
        ("1 + context.s == 2", {"s": "x"}, "no such overload: int + string"),
        ("context.s - 1 == 2", {"s": "x"}, "no such overload: string - int"),
        ("context.s * 2 == 2", {"s": "x"}, "no such overload: string * …"),
        ("2 * context.s == 2", {"s": "x"}, "no such overload: int * string"),
        ("context.d + context.s == 2", {"d": Decimal(1), "s": "x"}, "decimal + string"),
        ("-context.s == 2", {"s": "x"}, "no such overload: -string"),
        ("context.l < context.m", {"l": ("a",), "m": ("b",)}, "no such overload: list < list"),
        ("context.z < 1", {"z": None}, "no such overload: null < int"),
        # A README check: "contains() is for text, not tuple", "expected a bool, got str".
        ('context.l.contains("a")', {"l": ("a",)}, "contains() is for text, not list"),
        ("context.s", {"s": "x"}, "expected a bool, got string"),
        ('context.m.contains("a")', {"m": {"a": 1}}, "contains() is for text, not map"),
        # A fuzzer: "'int' object has no attribute 'startswith'".
        ('context.n.startsWith("a")', {"n": 5}, "startsWith() is for text, not int"),
        ('context.n.endsWith("a")', {"n": 5}, "endsWith() is for text, not int"),
        ("'abc'.startsWith(context.n)", {"n": 5}, "startsWith() is for text, not int"),
        (
            "context.s.endsWith(context.l)",
            {"s": "x", "l": ("a",)},
            "endsWith() is for text, not list",
        ),
        ("context.m", {"m": {"a": 1}}, "expected a bool, got map"),
    ],
)
def test_a_type_mismatch_is_said_as_cel_says_it(
    text: str, context: dict[str, Any], message: str
) -> None:
    said = fault(text, context, {"amount": Decimal(1)})
    assert message in said
    assert "instances of" not in said and "operand type" not in said


# What Python said, before, for the mismatches the evaluator now words as CEL does: the same
# decision in other words, which replay takes for the one it gives now.
_PYTHON: list[tuple[str, Callable[[], Any]]] = [
    ("no such overload: string >= double", lambda: operator.ge("x", 1.5)),
    ("no such overload: decimal < string", lambda: operator.lt(Decimal(1), "x")),
    ("no such overload: null < int", lambda: operator.lt(None, 1)),
    ("no such overload: int + string", lambda: operator.add(1, "x")),
    ("no such overload: string + int", lambda: operator.add("x", 1)),
    ("no such overload: list + string", lambda: operator.add(("a",), "x")),
    ("no such overload: -string", lambda: operator.sub(0, "x")),
]


@pytest.mark.parametrize(("now", "then"), _PYTHON)
def test_a_fault_recorded_in_pythons_words_is_the_same_fault_to_replay(
    now: str, then: Callable[[], Any]
) -> None:
    with pytest.raises(TypeError) as caught:
        then()
    head = "condition of rule 'r' failed: "
    assert earlier_wording(head + now, head + str(caught.value)) is not None


@pytest.mark.parametrize(
    ("now", "then"),
    [
        ("no such overload: decimal + string", "cannot + Decimal and str"),
        ("no such overload: string * …", "expected a number, got str"),
        ("no such overload: int * string", "expected a number, got str"),
        ("no such overload: null % list", "expected a number, got tuple"),
        ("contains() is for text, not list", "contains() is for text, not tuple"),
        ("expected a bool, got string", "expected a bool, got str"),
        ("expected a bool, got decimal", "expected a bool, got Decimal"),
        # A review: a map was named `dict` (none reaches a condition from a request today).
        ("contains() is for text, not map", "contains() is for text, not dict"),
        ("expected a bool, got map", "expected a bool, got mappingproxy"),
        ("startsWith() is for text, not int", "'int' object has no attribute 'startswith'"),
        ("endsWith() is for text, not list", "'tuple' object has no attribute 'endswith'"),
        (
            "startsWith() is for text, not int",
            "startswith first arg must be str or a tuple of str, not int",
        ),
    ],
)
def test_a_fault_in_the_evaluators_own_earlier_words_is_the_same_fault(now: str, then: str) -> None:
    head = "condition of rule 'r' failed: "
    assert earlier_wording(head + now, head + then) is not None


@pytest.mark.parametrize(
    ("now", "recorded"),
    [
        # Another type, another operator, another rule: another decision.
        (
            "no such overload: string >= double",
            "'>=' not supported between instances of 'str' and 'int'",
        ),
        (
            "no such overload: string >= double",
            "'<' not supported between instances of 'str' and 'float'",
        ),
        ("no such overload: bool < double", "division by zero"),
        ("contains() is for text, not list", "contains() is for text, not str"),
        ("expected a bool, got string", "contains() is for text, not str"),
        ("startsWith() is for text, not int", "'int' object has no attribute 'endswith'"),
        ("startsWith() is for text, not int", "'str' object has no attribute 'startswith'"),
    ],
)
def test_a_fault_of_other_types_is_not_taken_for_the_same(now: str, recorded: str) -> None:
    head = "condition of rule 'r' failed: "
    assert earlier_wording(head + now, head + recorded) is None
    assert earlier_wording(head + now, "condition of rule 's' failed: " + recorded) is None


# ----------------------------------------------------------------------------- replay


def _history_and_request(
    when: str, context: dict[str, Any]
) -> tuple[list[Any], EvaluationRequested, DecisionRecorded]:
    """A policy with one rule ``when``, deployed, granted; a request with ``context``; its
    decision, made now."""
    document = (
        "policy: p\ngoverns: [x.do]\nowner: o\nfacts: {}\n"
        f"rules:\n  - {{id: r, when: '{when}', effect: allow}}\ndefault: {{effect: deny}}\n"
    )
    steps = expand(
        [
            {"propose": {"by": "human:alice", "document": document}},
            {"approve": {"by": "human:bob", "policy": "p", "version": 1}},
            {"promote": {"by": "human:bob", "policy": "p", "version": 1, "to": "active"}},
            {
                "grant": {
                    "by": "human:admin",
                    "id": "g1",
                    "to": "agent:a",
                    "actions": ["*"],
                    "resource": "*",
                }
            },
        ]
    )
    ids = (f"evt-{i}" for i in itertools.count())
    state, history = EMPTY_STATE, []
    for n, spec in enumerate(steps):
        command = build_command(spec, n)
        outcome = decide(state, command, now=T0, new_id=lambda: next(ids), admins=ADMINS)
        assert not isinstance(outcome, Rejection), outcome
        for event in outcome:
            history.append(HistoryEntry(position_key="g", offset=len(history), event=event))
            state = fold(state, event)
    request = EvaluationRequested(
        event_id="req-1",
        occurred_at=T0,
        actor="agent:a",
        action="x.do",
        principal="agent:a",
        resource="r:1",
        context=context,
    )
    decision = evaluate(state, request, now=T0, evaluator_id="e")
    return history, request, replace(decision, governance_position={"g": len(history) - 1})


def test_replay_takes_a_mismatch_recorded_in_pythons_words_for_the_same_decision() -> None:
    history, request, decision = _history_and_request("context.s >= 1.5", {"s": "x"})
    assert decision.reasons == ("condition of rule 'r' failed: no such overload: string >= double",)
    recorded = replace(
        decision,
        reasons=(
            "condition of rule 'r' failed: '>=' not supported between instances of 'str' and "
            "'float'",
        ),
    )
    result = reproduce(recorded, request, history)
    assert result.reproduces, result.differences
    assert "in Python's words" in (result.note or "")


def test_replay_says_a_bool_once_taken_for_a_number_no_longer_reproduces() -> None:
    history, request, decision = _history_and_request("context.risk < 0.3", {"risk": False})
    assert decision.determination is Determination.ERROR
    recorded = replace(  # what the evaluator decided before
        decision, determination=Determination.ALLOW, reason_code="rule_matched", reasons=()
    )
    result = reproduce(recorded, request, history)
    assert not result.reproduces
    assert [d.field for d in result.differences][:1] == ["determination"]


# ------------------------------------------------------------- a decimal context and a literal


@pytest.mark.parametrize(
    ("text", "risk", "expected"),
    [
        ("context.risk >= 0.8", Decimal("0.8"), True),  # was False: 0.8 is not the double 0.8
        ("context.risk >= 0.8", 0.8, True),  # the SDK's float, as before
        ("context.risk >= 0.8", Decimal("0.79"), False),
        ("context.risk == 0.1", Decimal("0.1"), True),
        ("context.risk != 0.1", Decimal("0.1"), False),
        ("0.8 <= context.risk", Decimal("0.8"), True),
        ("context.risk > -0.5", Decimal("-0.5"), False),
        ("context.risk >= -0.5", Decimal("-0.5"), True),
        ("context.risk < 1e-1", Decimal("0.09"), True),
        ("context.risk == 0.8", 1, False),
    ],
)
def test_a_decimal_in_the_context_meets_a_double_literal_by_its_written_digits(
    text: str, risk: Any, expected: bool
) -> None:
    # A policy owner's fix found: `ledger policy eval --context '{"risk": 0.8}'` (JSON numbers
    # with a fraction are exact decimals) skipped a deny rule `context.risk >= 0.8` that the
    # SDK's float 0.8 matched; a decimal fact was already compared so (amount == 0.1).
    assert ev(text, {"risk": risk}) is expected


def test_a_bool_in_the_context_still_meets_no_double_literal() -> None:
    assert "no such overload: bool >= double" in fault("context.risk >= 0.8", {"risk": True})
    assert ev("context.risk == 0.8", {"risk": True}) is False


@pytest.mark.parametrize(
    ("x", "expected"),
    [(Decimal("0.1"), True), (0.1, True), (Decimal("0.2"), True), (Decimal("0.3"), False),
     (1, False), (True, False), ("0.1", False)],
)  # fmt: skip
def test_a_decimal_in_the_context_is_found_in_a_literal_list_of_doubles(
    x: Any, expected: bool
) -> None:
    # A review: `context.x in [0.1, 0.2]` missed the exact 0.1 `ledger evaluate --context` sends.
    assert ev("context.x in [0.1, 0.2]", {"x": x}) is expected


@pytest.mark.parametrize(
    ("text", "x", "expected"),
    [
        ("context.x * 2.0 == 3.0", Decimal("1.5"), True),  # was no such overload: decimal * double
        ("2.0 * context.x == 3.0", Decimal("1.5"), True),
        ("context.x + 0.1 == 0.3", Decimal("0.2"), True),  # exact: the double's sum is not
        ("context.x + 0.1 == 0.3", 0.2, False),  # the SDK's float, as before (0.30000000000000004)
        ("0.1 + context.x == 0.3", Decimal("0.2"), True),
        ("context.x - 0.5 == 1.0", Decimal("1.5"), True),
        ("10.0 / context.x == 4.0", Decimal("2.5"), True),
        ("context.x / 0.5 == 3.0", Decimal("1.5"), True),
        ("context.x % 2.0 == -1.0", Decimal("-7.0"), True),  # a decimal's remainder truncates
        ("context.x % 2.0 == 1.0", -7.0, True),  # a double's floors, as before
        ("context.x * 1.1 < 1000.0", Decimal("42.10"), True),
        ("context.x * 2.0 == 3.0", 1, False),  # an int meets the double, as before
    ],
)
def test_a_decimal_in_the_context_takes_a_double_literal_in_arithmetic_by_its_digits(
    text: str, x: Any, expected: bool
) -> None:
    # A README check: `context.x * 2.0` was `no such overload: decimal * double` for the
    # Decimal the README tells agents to send money as (and for the exact number `ledger
    # evaluate --context` sends), though the README says the three kinds combine.
    assert ev(text, {"x": x}) is expected


def test_a_decimal_and_a_double_from_the_request_still_do_not_combine() -> None:
    # As a typed decimal and a typed double do not (a validation problem): which digits a
    # float stands for is the sender's to say, by sending a Decimal.
    both = {"x": Decimal("1.5"), "y": 2.0}
    assert "no such overload: decimal * double" in fault("context.x * context.y == 3.0", both)
    assert "no such overload: bool * …" in fault("context.x * 2.0 == 3.0", {"x": True})
    assert "no such overload: string + double" in fault("context.x + 1.0 == 1.0", {"x": "1"})


def test_replay_runs_a_decimal_with_a_double_literal_as_the_release_before() -> None:
    from ledger.core.cel import rules_before

    with rules_before("decimal_literals"):
        assert "no such overload: decimal * double" in fault(
            "context.x * 2.0 == 3.0", {"x": Decimal("1.5")}
        )
        assert ev("context.x * 2.0 == 3.0", {"x": 1.5}) is True
        with rules_before("list_costs"):  # an earlier release's rules: this one's too
            assert "no such overload: decimal + double" in fault(
                "context.x + 1.0 == 1.0", {"x": Decimal("0")}
            )
        with rules_before("decimal_literals"):
            pass
        assert "no such overload" in fault("context.x * 2.0 == 3.0", {"x": Decimal("1.5")})
    assert ev("context.x * 2.0 == 3.0", {"x": Decimal("1.5")}) is True


def test_a_decimal_of_one_digit_and_a_vast_exponent_is_said_to_be_out_of_range() -> None:
    # A red team: {"amount": "1E-999999999999999999"} was "more than 34 significant digits"; it
    # has one. What rounding to decimal128 changes in it is the exponent.
    c = compile_condition("amount * 2 < 1", facts={"amount": "decimal"})
    with pytest.raises(ConditionFault) as caught:
        c.evaluate({"amount": Decimal("1E-999999999999999999")}, {})
    assert str(caught.value) == (
        "'amount * 2 < 1': a decimal operand's exponent is out of range (arithmetic works at decimal128 "
        "precision: 34 significant digits, exponent from -999,999 to 999,999)"
    )
    # Within the exponent range, many digits are still many digits; trailing zeros are none.
    for many in ("1" * 40, "1" * 40 + "E-999900"):
        with pytest.raises(ConditionFault, match="more than 34 significant digits"):
            c.evaluate({"amount": Decimal(many)}, {})
    assert c.evaluate({"amount": Decimal("1" + "0" * 40)}, {}) is False
    with pytest.raises(ConditionFault, match="exponent is out of range"):
        c.evaluate({"amount": Decimal("1E-1000040")}, {})  # beyond the smallest subnormal


def test_replay_takes_an_out_of_range_exponent_recorded_as_too_many_digits() -> None:
    history, request, decision = _history_and_request(
        "context.a * 2 < 1", {"a": Decimal("1E-999999999999999999")}
    )
    head = "condition of rule 'r' failed: "
    assert decision.reasons[0].startswith(head + "a decimal operand's exponent is out of range")
    earlier = "a decimal operand has more than 34 significant digits (arithmetic works at decimal128 precision)"
    recorded = replace(decision, reasons=(head + earlier,))
    result = reproduce(recorded, request, history)
    assert result.reproduces, result.differences
    assert "exponent out of range" in (result.note or "")
    # Only that wording: another reason recorded for it is a difference.
    other = replace(decision, reasons=(head + "decimal division by zero",))
    assert not reproduce(other, request, history).reproduces
