"""What every decision copies from a policy is bounded where the policy is proposed (STYLE §16).

A red team's policy whose default ``reason`` was 261,000 characters validated; a 500-item
pre-evaluation against it built ~130 MB of answer (+250-270 MB of evaluator memory per request)
before answering every item ``trace_too_large``. A policy's name, its rules' ids, reasons and
constraints are copied into every decision (and every item of a pre-evaluation), so each is
held to a limit (``policy_id_chars``, ``policy_reason_chars``, ``policy_constraints_chars``);
a version recorded before those limits still loads and decides as it did.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from ledger.core import EMPTY_STATE, Rejection, decide
from ledger.core.events import Determination, ProposePolicyVersion
from ledger.core.limits import DEFAULT_LIMITS
from ledger.core.policy import parse_policy
from ledger.errors import PolicyError

T0 = datetime(2025, 1, 1, tzinfo=UTC)
RELAXED = replace(
    DEFAULT_LIMITS,
    policy_id_chars=DEFAULT_LIMITS.policy_document_bytes,
    policy_reason_chars=DEFAULT_LIMITS.policy_document_bytes,
    policy_constraints_chars=DEFAULT_LIMITS.policy_document_bytes,
)


def policy(
    *,
    name: str = "p",
    rule_id: str = "r",
    reason: str = "why",
    default_reason: str = "outside",
    constraint: str = "credit",
) -> str:
    return (
        f"policy: {name}\ngoverns: [p.act]\nowner: o\nfacts: {{n: int}}\nrules:\n"
        f"  - id: {rule_id}\n    when: n > 1\n    effect: allow\n"
        f"    reason: {reason}\n    constraints: {{method: {constraint}}}\n"
        f"default: {{effect: deny, reason: {default_reason}}}\n"
    )


def only_problem(document: str) -> tuple[str, int | None]:
    with pytest.raises(PolicyError) as info:
        parse_policy(document)
    (problem,) = info.value.problems
    return problem.message, problem.line


def test_a_default_reason_over_its_limit_is_one_problem_at_its_line() -> None:
    message, line = only_problem(policy(default_reason="x" * 261_000))
    assert message == (
        "a reason of 261,000 characters; at most 1,024 are accepted (limit "
        "policy_reason_chars): every decision copies it, so shorten it, and keep the detail in "
        "the rule's or the policy's description, which decisions do not copy"
    )
    assert line == 11
    assert parse_policy(policy(default_reason="x" * 1_024)).default.reason == "x" * 1_024


def test_a_rules_reason_over_its_limit_is_a_problem_of_that_rule() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(policy(reason="y" * 1_025))
    (problem,) = info.value.problems
    assert "limit policy_reason_chars" in problem.message and problem.rule == "r"
    assert problem.line == 9


def test_a_rule_id_and_the_policy_name_are_bounded() -> None:
    message, line = only_problem(policy(rule_id="r" * 129))
    assert message.startswith("a rule id of 129 characters; at most 128 are accepted (limit ")
    assert "policy_id_chars" in message and line == 6
    message, line = only_problem(policy(name="p" * 200))
    assert message.startswith("a policy name of 200 characters; at most 128") and line == 1
    assert parse_policy(policy(name="p" * 128, rule_id="r" * 128)).rules[0].id == "r" * 128


def test_a_rules_constraints_are_bounded_together() -> None:
    # The name (6) and the value: 1,018 characters is the most the value may have.
    assert parse_policy(policy(constraint="c" * 1_018)).rules[0].constraints
    message, line = only_problem(policy(constraint="c" * 1_019))
    assert message.startswith("the constraints total 1,025 characters (names and values)")
    assert "limit policy_constraints_chars" in message and line == 10
    listed = policy(constraint="[" + ", ".join(["abcdefghij"] * 110) + "]")
    assert "policy_constraints_chars" in only_problem(listed)[0]


def test_a_version_recorded_before_the_limits_still_loads_and_decides() -> None:
    from ledger.core.state import load_document

    long = policy(
        name="p" * 200, rule_id="r" * 200, reason="y" * 5_000, default_reason="x" * 200_000
    )
    stored = parse_policy(long, limits=RELAXED).canonical
    with pytest.raises(PolicyError):
        parse_policy(stored)  # as a new proposal: refused
    loaded = load_document(stored)
    assert loaded is not None
    outcome, _ = loaded.run({"n": 0}, {})
    assert outcome.determination is Determination.DENY and outcome.reasons == ("x" * 200_000,)


def test_a_proposal_over_the_limits_is_an_invalid_policy() -> None:
    command = ProposePolicyVersion(
        event_id="c1",
        occurred_at=T0,
        actor="human:admin",
        document=policy(default_reason="x" * 2_000),
        policy="p",
    )
    ids = iter(f"e{i}" for i in range(10))
    outcome = decide(EMPTY_STATE, command, now=T0, new_id=ids.__next__, admins={"human:admin"})
    assert isinstance(outcome, Rejection) and outcome.code == "invalid_policy"
    assert "limit policy_reason_chars" in outcome.message


@pytest.mark.parametrize("field", ["note", "reason"])
def test_a_commands_note_or_reason_over_command_text_chars_is_too_large(field: str) -> None:
    # A red team: 600 grants with 480,000-character notes, kept in every processor's state,
    # took an evaluator from 141 to 705 MB and every governance read to minutes.
    from ledger.core.events import IssueGrant, RevokeGrant

    limit = DEFAULT_LIMITS.command_text_chars
    if field == "note":
        command: object = IssueGrant(
            event_id="c1", occurred_at=T0, actor="human:admin", grant_id="g", principal="agent:a",
            actions=("x.y",), resource="r", note="n" * (limit + 1),
        )  # fmt: skip
    else:
        command = RevokeGrant(
            event_id="c1", occurred_at=T0, actor="human:admin", grant_id="g",
            reason="r" * (limit + 1),
        )  # fmt: skip
    refused = decide(EMPTY_STATE, command, now=T0, new_id=lambda: "e1")  # type: ignore[arg-type]
    assert isinstance(refused, Rejection) and refused.code == "too_large"
    assert refused.message == (
        f"its {field} is {limit + 1:,} characters; at most {limit:,} are accepted "
        "(command_text_chars): keep the detail elsewhere and name it here"
    )
    at_limit = IssueGrant(
        event_id="c2", occurred_at=T0, actor="human:admin", grant_id="g", principal="agent:a",
        actions=("x.y",), resource="r", note="n" * limit,
    )  # fmt: skip
    assert not isinstance(decide(EMPTY_STATE, at_limit, now=T0, new_id=lambda: "e2"), Rejection)
