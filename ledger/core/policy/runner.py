"""The compiled decision function: what :meth:`Policy.run` costs per request.

Lives here: :func:`make_runner`, which turns a validated policy's facts, rules and default into
one closure — facts checked and coerced, rules tried in order under one evaluation budget
(``limits.evaluation_cost``, a :class:`~ledger.core.cel.Meter` per run, only for policies with
metered conditions), every rule's outcome built once.

May import: the stdlib, :mod:`ledger.core.cel`, :mod:`ledger.core.events`,
:mod:`ledger.core.facts`, :mod:`ledger.core.limits` and :mod:`ledger.core.policy.model`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ledger.core.cel import BudgetExceeded, Meter
from ledger.core.events import Determination, Value
from ledger.core.facts import FactsChecker, FactSpec, build_checker, context_problems
from ledger.core.limits import Limits
from ledger.core.policy.model import (
    REASON_BUDGET_EXCEEDED,
    REASON_CONDITION_ERROR,
    REASON_DEFAULT,
    REASON_INVALID_FACTS,
    REASON_RULE_MATCHED,
    DefaultDecision,
    Effect,
    PolicyOutcome,
    Rule,
    Runner,
)

__all__ = ["make_runner"]


def _determination(effect: Effect, constraints: Mapping[str, Value]) -> Determination:
    if effect is Effect.DENY:
        return Determination.DENY
    return Determination.ALLOW_WITH_CONSTRAINTS if constraints else Determination.ALLOW


def _always(f: Mapping[str, Any], c: Mapping[str, Any], m: Meter | None) -> bool:
    return True


def make_runner(
    facts: Mapping[str, FactSpec],
    rules: tuple[Rule, ...],
    default: DefaultDecision,
    limits: Limits,
) -> Runner:
    """Compile a validated policy's decision function (a :data:`~.model.Runner`)."""
    check: FactsChecker = build_checker(facts, limits=limits)
    # One meter per run, and only for a policy with metered conditions: the others pay nothing.
    metered = any(rule.condition is not None and rule.condition.metered for rule in rules)
    budget = limits.evaluation_cost
    # Every rule's outcome is a constant: build it once, hand the same object out per request.
    plan = tuple(
        (
            rule.condition.fn if rule.condition is not None else _always,
            PolicyOutcome(
                determination=_determination(rule.effect, rule.constraints),
                reason_code=REASON_RULE_MATCHED,
                rule=rule.id,
                constraints=rule.constraints,
                reasons=(rule.reason,) if rule.reason else (),
            ),
        )
        for rule in rules
    )
    fallback = PolicyOutcome(
        determination=_determination(default.effect, default.constraints),
        reason_code=REASON_DEFAULT,
        rule=None,
        constraints=default.constraints,
        reasons=(default.reason,) if default.reason else (),
    )

    def run(
        raw: Mapping[str, Any], context: Mapping[str, Any], shared: Meter | None = None
    ) -> tuple[PolicyOutcome, Mapping[str, Value]]:
        coerced, bad = check(raw)
        if context and not bad and shared is None:  # shared: a batch's, checked once for all
            bad = context_problems(context, limits)
        if bad:
            return PolicyOutcome(
                determination=Determination.ERROR, reason_code=REASON_INVALID_FACTS, reasons=bad
            ), raw
        meter = (shared if shared is not None else Meter(budget)) if metered else None
        for fn, outcome in plan:
            try:
                if fn(coerced, context, meter):
                    return outcome, coerced
            except KeyError:
                continue  # needs an absent fact: the rule does not match (see ledger.core.cel)
            except BudgetExceeded as exc:
                # Never an allow, never a later rule: the request asked for more work than any
                # one request may have.
                return (
                    PolicyOutcome(
                        determination=Determination.ERROR,
                        reason_code=REASON_BUDGET_EXCEEDED,
                        rule=outcome.rule,
                        reasons=(f"evaluation stopped in rule {outcome.rule!r}: {exc}",),
                    ),
                    coerced,
                )
            except (ArithmeticError, TypeError, ValueError, AttributeError) as exc:
                # A fault on present values: record an error rather than skip to a later rule,
                # which could allow what this rule would have denied.
                return (
                    PolicyOutcome(
                        determination=Determination.ERROR,
                        reason_code=REASON_CONDITION_ERROR,
                        rule=outcome.rule,
                        reasons=(f"condition of rule {outcome.rule!r} failed: {exc}",),
                    ),
                    coerced,
                )
        return fallback, coerced

    return run
