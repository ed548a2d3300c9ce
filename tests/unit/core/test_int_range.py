"""Integers are 64-bit, as in CEL: a policy may not write one beyond that range (a red team:
``x < 99999999999999999999999999999`` and ``min: 0x7fffffffffffffffffff`` validated). Refused
where a policy is proposed; a version recorded before still loads and decides as it did, and
arithmetic beyond the range at run time is a fault, never a wrong answer."""

from __future__ import annotations

import pytest

from ledger.core.cel import ConditionFault, compile_condition
from ledger.core.events import Determination
from ledger.core.policy import parse_policy
from ledger.errors import PolicyError

HEAD = "policy: p\ngoverns: [p.act]\nowner: o\n"


def only_problem(document: str) -> tuple[str, int | None]:
    with pytest.raises(PolicyError) as info:
        parse_policy(document, filename="p.yaml")
    (problem,) = info.value.problems
    return str(problem), problem.line


def rule(when: str) -> str:
    return (
        HEAD + f"facts: {{x: int}}\nrules:\n  - id: r\n    when: {when}\n    effect: allow\n"
        "default: {effect: deny}\n"
    )


def test_an_int_literal_beyond_64_bits_is_a_validation_problem_at_its_line() -> None:
    message, line = only_problem(rule("x < 99999999999999999999999999999"))
    assert line == 7
    assert message == (
        "p.yaml:7, rule 'r', when: the integer 99999999999999999999999999999 is outside the "
        "64-bit range of CEL's int (-9223372036854775808 to 9223372036854775807): write a "
        "number within it, or a double (e.g. 1e29) to compare with a number beyond it (at "
        "column 5 of the condition)"
    )
    for beyond in (
        "x > -9223372036854775809",
        "x < 0x10000000000000000",
        "x < 18446744073709551616u",
    ):
        assert "outside the 64-bit range" in only_problem(rule(beyond))[0], beyond
    for edge in (
        "x > -9223372036854775808",
        "x < 9223372036854775807",
        "x < 0x7fffffffffffffff",
        "x < 18446744073709551615u",
        "x < 1e29",
    ):
        assert parse_policy(rule(edge)).rules[0].condition is not None, edge


def test_an_int_facts_bound_beyond_64_bits_is_a_validation_problem() -> None:
    for bound in ("9223372036854775808", "-9223372036854775809"):
        message, line = only_problem(
            HEAD + f"facts:\n  x: {{type: int, min: {bound}}}\ndefault: {{effect: deny}}\n"
        )
        assert "facts.x.min:" in message and line == 5, message
        assert "is outside the 64-bit range of an int fact" in message
    fine = HEAD + "facts:\n  x: {type: int, min: -9223372036854775808, max: 9223372036854775807}\n"
    assert parse_policy(fine + "default: {effect: deny}\n").facts["x"].maximum == 2**63 - 1


def test_a_version_recorded_before_the_check_still_loads_and_decides() -> None:
    from ledger.core.state import load_document

    document = (
        HEAD + "facts:\n  x: {type: int, max: 0x7fffffffffffffffffff}\nrules:\n"
        "  - {id: r, when: 'x < 99999999999999999999999999999', effect: allow}\n"
        "default: {effect: deny}\n"
    )
    with pytest.raises(PolicyError):
        parse_policy(document)
    stored = parse_policy(document, new_document=False).canonical
    loaded = load_document(stored)
    assert loaded is not None
    outcome, _ = loaded.run({"x": 5}, {})
    assert outcome.determination is Determination.ALLOW


def test_int_arithmetic_beyond_64_bits_is_a_fault_at_run_time() -> None:
    c = compile_condition("x * 2 > 0", facts={"x": "int"})
    with pytest.raises(ConditionFault, match="integer overflow"):
        c.evaluate({"x": 2**62}, {})
