"""A number written in YAML (a policy or its tests) is the number written: exact where a decimal
is expected, as JSON facts are; YAML's float where that float is the number written, so every
policy whose numbers a float held keeps its canonical form and content hash."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from ledger.core.events import Determination
from ledger.core.facts import parse_facts_json
from ledger.core.policy import parse_policy, parse_test_cases
from ledger.core.policytests import run_case
from ledger.errors import PolicyError

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "policies"

LIM = """policy: lim
governs: [pay.send]
owner: finance
facts:
  amount: {type: decimal, max: 999.99999999999999999}
  score: {type: float, optional: true, min: 0.1}
rules:
  - id: under-500
    when: amount < 500
    effect: allow
default: {effect: deny}
"""

# Every kind of number a policy holds, each one a float holds exactly: its hash was recorded
# (before YAML numbers were read exactly) and must not change.
NUMBERS = """policy: numbers
governs: [pay.send]
owner: finance
facts:
  amount: {type: decimal, min: 0.10, max: 5000.00}
  fee:    {type: decimal, min: -0.0, max: 1.5e+3}
  score:  {type: float, min: 0.1, max: 99.999}
  ratio:  {type: float, min: 1_000.5, max: 1.0e+10}
  count:  {type: int, min: 0, max: 10}
rules:
  - id: small
    when: amount < 500.5 && score > 0.25
    effect: allow
    constraints: {cap: 0.5, rate: 1.25e+2, exact: 100.10}
default: {effect: allow, constraints: {cap: 0.3}}
"""


@pytest.mark.parametrize(
    ("source", "recorded"),
    [
        (
            (EXAMPLES / "refund.yaml").read_text(),
            "sha256:24e004da405a19491117f41c85f9a81a5da4e8b053ab4724597fff7cdd365d7c",
        ),
        (
            (EXAMPLES / "refund-v2.yaml").read_text(),
            "sha256:36785e55f223f4dfdf5e93706ee6417f58cce18d9a9626ef062ac9c15c9ae4d8",
        ),
        (NUMBERS, "sha256:c6b30a6c3ed93aa52e92ec8c38da59996958f12c3207a892355e967244caa801"),
    ],
    ids=["refund", "refund-v2", "numbers"],
)
def test_policies_already_recorded_keep_their_content_hash(source: str, recorded: str) -> None:
    # Read as a recorded version is: NUMBERS' `1_000.5` is refused in a new document since.
    assert parse_policy(source, new_document=False).content_hash == recorded


def test_numbers_a_float_holds_are_read_and_stored_as_before() -> None:
    p = parse_policy(NUMBERS, new_document=False)
    assert (p.facts["amount"].minimum, p.facts["amount"].maximum) == (
        Decimal("0.1"),
        Decimal("5000.0"),
    )
    assert p.facts["fee"].maximum == Decimal("1500.0")
    assert type(p.facts["score"].minimum) is float and p.facts["ratio"].minimum == 1000.5
    assert p.rules[0].constraints == {"cap": 0.5, "exact": 100.1, "rate": 125.0}
    assert all(type(v) is float for v in p.rules[0].constraints.values())


def test_a_test_cases_decimal_keeps_its_written_digits_as_json_facts_do() -> None:
    policy = parse_policy(LIM)
    _, (case,) = parse_test_cases(
        "cases:\n  - name: just under\n    facts: {amount: 499.99999999999999999}\n"
        "    expect: {determination: allow}\n"
    )
    assert case.facts["amount"] == Decimal("499.99999999999999999")
    assert run_case(policy, case).passed
    # The same fact sent as JSON (policy eval --facts, the request path) decides the same.
    sent = parse_facts_json('{"amount": 499.99999999999999999}', what="--facts")
    assert policy.run(sent)[0].determination is Determination.ALLOW


def test_a_decimal_bound_keeps_its_written_digits() -> None:
    policy = parse_policy(LIM)
    assert policy.facts["amount"].maximum == Decimal("999.99999999999999999")
    assert '"max":"999.99999999999999999"' in policy.canonical
    over = policy.run({"amount": Decimal("999.999999999999999999999")})[0]
    assert over.determination is Determination.ERROR
    assert over.reasons == (
        "amount: 999.999999999999999999999 is above the maximum 999.99999999999999999",
    )
    assert policy.run({"amount": Decimal("999.99999999999999999")})[0].determination is (
        Determination.DENY
    )


def test_float_facts_and_the_context_still_get_floats() -> None:
    policy = parse_policy(
        LIM.replace("default: {effect: deny}", "default: {effect: allow}").replace(
            "    when: amount < 500\n    effect: allow",
            "    when: score < 0.5 || context.risk >= 0.8\n    effect: deny",
        )
    )
    _, cases = parse_test_cases(
        "- name: float\n  facts: {amount: 1, score: 0.30000000000000000001}\n"
        "  expect: {determination: deny}\n"
        "- name: context as the SDK sends it\n  facts: {amount: 1, score: 0.9}\n"
        "  context: {risk: 0.8}\n  expect: {determination: deny}\n"
    )
    assert cases[0].facts["score"] == Decimal("0.30000000000000000001")  # exact, as written
    assert type(cases[1].context["risk"]) is float and type(cases[1].facts["score"]) is float
    assert [run_case(policy, c).passed for c in cases] == [True, True]


def test_a_constraint_a_float_cannot_hold_is_a_problem_saying_to_quote_it() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(
            LIM.replace(
                "effect: allow", "effect: allow\n    constraints: {cap: 499.99999999999999999}"
            )
        )
    (problem,) = info.value.problems
    assert problem.rule == "under-500" and problem.line == 11
    assert problem.message == (
        "constraint 'cap': a number with a fraction reaches the agent as a binary float, which "
        "cannot hold number 499.99999999999999999 (it would be 500.0): "
        'write it as text, cap: "499.99999999999999999", for the tool to read exactly'
    )


@pytest.mark.parametrize("cap", [2**63, -(2**63) - 1, 10**20])
def test_a_constraint_integer_no_decision_can_record_is_a_problem(cap: int) -> None:
    # A red team: it validated, and every request it decided was dead-lettered unanswered.
    with pytest.raises(PolicyError) as info:
        parse_policy(
            LIM.replace("effect: allow", f"effect: allow\n    constraints: {{cap: {cap}}}")
        )
    (problem,) = info.value.problems
    assert problem.message == (
        f"constraint 'cap': the integer {cap} is beyond what a decision records (from -2^63 to "
        "2^63-1): write it as text, quoted"
    )
    for fits in (2**63 - 1, -(2**63)):
        parse_policy(
            LIM.replace("effect: allow", f"effect: allow\n    constraints: {{cap: {fits}}}")
        )


@pytest.mark.parametrize(
    ("number", "message"),
    [
        ("1.0e+99999999999999999999", "has an exponent no exact decimal can hold"),
        ("0." + "1" * 5000, "has 5,002 characters; at most 4,300 are accepted in a number"),
    ],
)
def test_a_number_no_decimal_holds_is_one_line_where_written(number: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(LIM.replace("999.99999999999999999", number), filename="lim.yaml")
    (problem,) = info.value.problems
    assert message in problem.message and problem.line == 5


def test_a_document_recorded_before_can_be_read_as_it_was_then() -> None:
    # A signed proposal's YAML is parsed again to check the recorded event's content hash
    # (signing._signed_policy): one recorded before numbers were read exactly has the hash of
    # YAML's floats.
    lossy = LIM.replace(
        "effect: allow", "effect: allow\n    constraints: {cap: 0.30000000000000000001}"
    )
    then = parse_policy(lossy, new_document=False, numbers_as_floats=True)
    as_stored = parse_policy(
        LIM.replace("999.99999999999999999", '"1000.0"').replace(
            "effect: allow", "effect: allow\n    constraints: {cap: 0.3}"
        )
    )
    assert then.content_hash == as_stored.content_hash
    assert parse_policy(lossy, new_document=False).content_hash != then.content_hash
    long = "0." + "1" * 5000  # refused when read exactly, a float then
    assert parse_policy(LIM.replace("999.99999999999999999", long), numbers_as_floats=True)


@pytest.mark.parametrize(
    "bound", ["1.0e+5000", "1.0e+10000000", "1.00000000000000000001e+30", "12345678901234567.0"]
)
def test_an_int_bound_with_a_fraction_or_a_huge_exponent_is_refused_at_once(bound: str) -> None:
    # A review: exact YAML numbers made `max: 1.0e+10000000` an int() of ten million digits
    # (minutes, in the single command processor) and `1.0e+5000` a traceback; before, YAML's
    # float made both "must be an integer", as now, at once.
    doc = (
        "policy: p\ngoverns: [p.do]\nowner: me\n"
        f"facts:\n  n: {{type: int, max: {bound}}}\nrules: []\ndefault: {{effect: allow}}\n"
    )
    with pytest.raises(PolicyError, match="must be an integer for an int fact"):
        parse_policy(doc)


def test_a_problem_quoting_a_hostile_value_is_shown_shortened() -> None:
    # A red team: a 250,000-character rule id or tag made `policy validate` print a 250 KB line.
    from ledger.errors import PolicyProblem

    shown = str(PolicyProblem(message="bad " + "x" * 300_000, rule="r" * 300_000, line=3))
    assert len(shown) < 1_400
    assert "(300,004 characters)" in shown and "(300,000 characters)" in shown
