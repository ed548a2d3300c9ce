"""Offline policy tests (``ledger policy test``): run a policy's cases, like ``opa test``.

A case states facts (and optionally context, principal, action, resource) and what it expects:
the determination, and optionally the deciding rule (``null`` = the default decided), the
constraints and the reason code. The principal is assumed authorized: these tests are about the
policy, not about grants. An ``action`` the policy does not govern is expected to be ``deny`` /
``ungoverned_action``, as the evaluator would answer, and the case must say
``reason_code: ungoverned_action`` (a misspelt action otherwise passed as a denial).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ledger.core.evaluate import REASON_CODES, size_problem
from ledger.core.events import Determination
from ledger.core.globs import is_pattern
from ledger.core.jsonform import to_json_value
from ledger.core.policy import Policy, PolicyOutcome, PolicyTestCase
from ledger.core.policy.model import REASON_DEFAULT, decided_by

__all__ = [
    "CaseResult",
    "misspelt_facts",
    "offline_outcome",
    "run_case",
    "run_policy_tests",
    "unreached_rules",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class CaseResult:
    """The verdict on one case; ``failures`` says what differed (empty when passed), and
    ``notes`` what helps a failing case's author read them (which rule answered, the reasons,
    a fact probably misspelt): never a difference of their own."""

    policy: str
    case: str
    passed: bool
    outcome: PolicyOutcome
    failures: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    file: str | None = None
    line: int | None = None


_MEANT: Final = {
    "no_rule_matched": "default_applied",
    "no_match": "default_applied",
    "no_rule": "default_applied",
    "default": "default_applied",
    "unauthorized": "no_authority",
    "not_authorized": "no_authority",
    "ungoverned": "ungoverned_action",
}
"""What an author who writes these means (the closest spelling can mean the opposite:
``no_rule_matched`` is nearest ``rule_matched``, a policy owner's walkthrough found)."""


def offline_outcome(policy: Policy, case: PolicyTestCase) -> PolicyOutcome:
    """What the evaluator would say for the case, with authority assumed: its sizes first
    (``error`` / ``request_too_large`` or ``invalid_facts``, as the evaluator's step 0), then
    whether the policy governs the action, then the policy."""
    unsized = size_problem(
        case.principal or "", case.action or "", case.resource, case.facts, case.context
    )
    if unsized is not None:
        code, reasons = unsized
        return PolicyOutcome(determination=Determination.ERROR, reason_code=code, reasons=reasons)
    if case.action is not None and not policy.governs_action(case.action):
        return PolicyOutcome(
            determination=Determination.DENY,
            reason_code="ungoverned_action",
            reasons=(f"{policy.name} does not govern {case.action}",),
        )
    outcome, _ = policy.run(case.facts, case.context)
    return outcome


def misspelt_facts(policy: Policy, facts: Mapping[str, object]) -> list[str]:
    """Facts the policy does not declare, with the declared name each is probably meant to be
    (a policy owner's walkthrough: `tenure_day` failed the case with "unknown fact" and no
    hint, where a condition's typo gets one). At most three, each name cut to 64 characters
    before it is compared: difflib is quadratic in a name's length."""
    hints = []
    for name in sorted(set(facts) - set(policy.facts))[:3]:
        cut = str(name)[:64]
        close = difflib.get_close_matches(cut, list(policy.facts), n=1)
        if close:
            shown = repr(cut) + ("..." if len(str(name)) > 64 else "")
            hints.append(
                f"fact {shown} is not declared by {policy.name}: did you mean {close[0]!r}?"
            )
    return hints


def _json(value: Any) -> str:
    """Constraints as the author wrote them (JSON, like YAML's flow style), not as Python."""
    return json.dumps(to_json_value(value), ensure_ascii=False)


def run_case(policy: Policy, case: PolicyTestCase) -> CaseResult:
    """Run one case."""
    outcome = offline_outcome(policy, case)
    failures = []
    if outcome.determination != case.expect_determination:
        failures.append(
            f"determination: expected {case.expect_determination.value}, got {outcome.determination.value}"
        )
    if case.check_rule and outcome.rule != case.expect_rule:
        exp = decided_by(case.expect_rule, REASON_DEFAULT)  # rule: null means the default
        failures.append(
            f"rule: expected {exp}{_no_such_rule(policy, case.expect_rule)}, "
            f"got {decided_by(outcome.rule, outcome.reason_code)}"
        )
    if case.expect_constraints is not None and dict(outcome.constraints) != dict(
        case.expect_constraints
    ):
        failures.append(
            f"constraints: expected {_json(case.expect_constraints)}, got {_json(outcome.constraints)}"
        )
    if case.expect_reason_code is not None and outcome.reason_code != case.expect_reason_code:
        known = case.expect_reason_code in REASON_CODES
        meant = _MEANT.get(str(case.expect_reason_code).lower())
        close = (
            [meant]
            if meant
            else difflib.get_close_matches(str(case.expect_reason_code), REASON_CODES, n=1)
        )
        hint = (
            ""
            if known
            else " (no decision carries it" + (f": did you mean {close[0]}?)" if close else ")")
        )
        failures.append(
            f"reason_code: expected {case.expect_reason_code}{hint}, got {outcome.reason_code}"
        )
    if (
        case.action is not None
        and outcome.reason_code == "ungoverned_action"
        and case.expect_reason_code is None
    ):
        # A policy owner's walkthrough: `action: refund.isue` expecting deny passed, the typo
        # unseen; a case about an action the policy does not govern must say so.
        failures.append(
            f"action: {policy.name} does not govern {case.action}{_meant_action(policy, case.action)}:"
            " its rules never decide it; if that is what this case tests, expect "
            "reason_code: ungoverned_action"
        )
    actionless = case.action is None and policy.governs and all(map(is_pattern, policy.governs))
    if actionless:
        # As `policy eval` refuses it: the case says nothing of which action it stands for.
        failures.append(
            f"action: {policy.name} governs only patterns ({', '.join(policy.governs)}): give "
            "the case the action it is about"
        )
    notes = []
    if failures and not actionless and not any(f.startswith("rule: ") for f in failures):
        # Which rule answered is what a failing case's author looks at first; a case without
        # its action is no decision the ledger would make, so no rule is named for it.
        notes.append(f"decided by: {decided_by(outcome.rule, outcome.reason_code)}")
    if failures and outcome.reasons and not actionless:  # no decision: no reasons either
        notes.append("reasons: " + "; ".join(outcome.reasons))
    if failures:
        notes.extend(misspelt_facts(policy, case.facts))
    return CaseResult(
        policy=policy.name,
        case=case.name,
        passed=not failures,
        outcome=outcome,
        failures=tuple(failures),
        notes=tuple(notes),
        file=case.file,
        line=case.line,
    )


def _meant_action(policy: Policy, action: str) -> str:
    """`` (did you mean refund.issue?)`` when ``action`` is close to an entry of the policy's
    ``governs``; empty otherwise."""
    close = difflib.get_close_matches(action[:128], list(policy.governs), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _no_such_rule(policy: Policy, rule: str | None) -> str:
    """`` (refunds has no rule auto_refund: did you mean auto-refund?)`` when a case expects a
    rule the policy does not have (a policy owner's walkthrough: a misspelt id was only
    "expected auto_refund, got auto-refund"); empty otherwise."""
    ids = [r.id for r in policy.rules]
    if rule is None or rule in ids:
        return ""
    hint = missing_rule_hint(str(rule), ids)
    mark = ";" if hint.startswith("its rules") else ":"
    return f" ({policy.name} has no rule {rule}{mark} {hint})"


def missing_rule_hint(rule: str, ids: Sequence[str]) -> str:
    """What a case expecting ``rule``, which the policy's rules ``ids`` lack, probably meant:
    the default (``rule: default``: a policy owner's walkthrough), a close id, else the ids."""
    if rule.lower() in ("default", "none", "null", "~"):
        return "to expect the default, write rule: null"
    close = difflib.get_close_matches(rule[:128], list(ids), n=1)
    if close:
        return f"did you mean {close[0]}?"
    shown = ", ".join(ids[:10]) + (", …" if len(ids) > 10 else "")
    return f"its rules: {shown or 'none'}"


def unreached_rules(policy: Policy, results: Iterable[CaseResult]) -> tuple[str, ...]:
    """The ids of ``policy``'s rules that decided none of ``results`` (its cases' outcomes), in
    the policy's order: a rule no case reaches is a rule no test holds to what it should do
    (the README asks for a case that reaches each rule; nothing said which did not)."""
    reached = {r.outcome.rule for r in results}
    return tuple(rule.id for rule in policy.rules if rule.id not in reached)


def run_policy_tests(
    policy: Policy, cases: Iterable[PolicyTestCase] | None = None
) -> tuple[CaseResult, ...]:
    """Run ``cases`` (default: the policy's own ``tests:`` block) in order."""
    return tuple(run_case(policy, case) for case in (policy.tests if cases is None else cases))
