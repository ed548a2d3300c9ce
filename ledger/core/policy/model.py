"""The policy model: what a loaded policy *is*, and the reason codes its outcomes carry.

Lives here: :class:`Effect`, :class:`Rule`, :class:`DefaultDecision`, :class:`PolicyTestCase`,
:class:`PolicyOutcome`, :class:`Policy` (frozen values), the ``REASON_*`` codes a policy's own
outcomes use, and :data:`Runner`, the shape of a compiled decision function.

May import: the stdlib and the core's value modules (:mod:`ledger.core.events`,
:mod:`ledger.core.cel`, :mod:`ledger.core.facts`, :mod:`ledger.core.limits`; globs for types only) — nothing else of
:mod:`ledger.core.policy` at module level, so every other module of the package can import this
one. :meth:`Policy.from_canonical` is the one exception, and only when called: it delegates to
:func:`ledger.core.policy.source.parse_canonical`, imported inside the method.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from ledger.core.cel import CompiledCondition, Meter
from ledger.core.events import Determination, Value
from ledger.core.facts import FactSpec
from ledger.core.limits import DEFAULT_LIMITS, Limits

if TYPE_CHECKING:
    from ledger.core.globs import Globs

__all__ = [
    "Effect",
    "Rule",
    "DefaultDecision",
    "PolicyTestCase",
    "PolicyOutcome",
    "Policy",
    "Runner",
    "EMPTY",
    "REASON_RULE_MATCHED",
    "REASON_DEFAULT",
    "REASON_INVALID_FACTS",
    "REASON_CONDITION_ERROR",
    "REASON_BUDGET_EXCEEDED",
    "decided_by",
]

REASON_RULE_MATCHED: Final = "rule_matched"
REASON_DEFAULT: Final = "default_applied"
REASON_INVALID_FACTS: Final = "invalid_facts"
REASON_CONDITION_ERROR: Final = "condition_error"
REASON_BUDGET_EXCEEDED: Final = "evaluation_budget_exceeded"


def decided_by(rule: str | None, reason_code: str | None) -> str:
    """What decided, as every report names it: the rule; ``null (default)`` for the policy's
    default (``rule: null`` in a test case's expectation); else ``no rule (REASON)``: an
    error, or an answer given before any policy ran."""
    if rule is not None:
        return rule
    if reason_code == REASON_DEFAULT:
        return "null (default)"
    return f"no rule ({reason_code or 'none'})"


EMPTY: Final[Mapping[str, Value]] = MappingProxyType({})


class Effect(enum.StrEnum):
    """The closed set of rule effects."""

    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One ordered rule; ``when=None`` matches every request."""

    id: str
    effect: Effect
    when: str | None = None
    constraints: Mapping[str, Value] = field(default_factory=lambda: EMPTY)
    reason: str | None = None
    condition: CompiledCondition | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class DefaultDecision:
    """What decides when no rule matches."""

    effect: Effect
    reason: str | None = None
    constraints: Mapping[str, Value] = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyTestCase:
    """One offline test: facts in, expected determination (and rule/constraints) out.

    ``check_rule`` is false when the case does not say which rule decides; ``expect_rule=None``
    with ``check_rule`` means "the default decided".
    """

    name: str
    facts: Mapping[str, Value]
    expect_determination: Determination
    context: Mapping[str, Value] = field(default_factory=lambda: EMPTY)
    principal: str | None = None
    action: str | None = None
    resource: str | None = None
    check_rule: bool = False
    expect_rule: str | None = None
    expect_constraints: Mapping[str, Value] | None = None
    expect_reason_code: str | None = None
    file: str | None = None  # where the case is written (the policy or its .tests.yaml)
    line: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyOutcome:
    """What one policy version says about one request's facts (no authority, no trace)."""

    determination: Determination
    reason_code: str
    rule: str | None = None
    constraints: Mapping[str, Value] = field(default_factory=lambda: EMPTY)
    reasons: tuple[str, ...] = ()


#: A compiled decision function: (facts, context, shared meter or None) -> (outcome, facts as
#: evaluated). Built by :func:`ledger.core.policy.runner.make_runner`; never raises.
Runner = Callable[
    [Mapping[str, Any], Mapping[str, Any], "Meter | None"],
    "tuple[PolicyOutcome, Mapping[str, Value]]",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """A validated policy document with its compiled rules.

    Equality compares the canonical form only (the compiled parts are derived from it).
    """

    name: str
    governs: tuple[str, ...]
    owner: str
    description: str | None
    facts: Mapping[str, FactSpec]
    rules: tuple[Rule, ...]
    default: DefaultDecision
    tests: tuple[PolicyTestCase, ...] = field(default=(), compare=False)
    canonical: str = ""
    content_hash: str = ""
    source_file: str | None = field(default=None, compare=False)
    _runner: Runner | None = field(default=None, repr=False, compare=False)
    _governs_re: Globs | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_canonical(
        cls, document: str, *, filename: str | None = None, limits: Limits = DEFAULT_LIMITS
    ) -> Policy:
        """Load the canonical JSON text (``PolicyVersionProposed.document``).

        Bounded like YAML input: ``policy_document_bytes``, and nesting ``yaml_depth`` (measured
        before parsing); duplicate keys are refused.
        """
        # Imported here, not at the top: the loader builds Policies, so it imports this module.
        # Importing any module of the package runs its __init__, which has loaded both.
        from ledger.core.policy.source import parse_canonical

        return parse_canonical(document, filename=filename, limits=limits)

    def governs_action(self, action: str) -> bool:
        """Does this policy govern ``action`` (exactly or by one of its globs)?"""
        assert self._governs_re is not None
        return self._governs_re.matches(action)

    def run(
        self,
        facts: Mapping[str, Any],
        context: Mapping[str, Any] = EMPTY,
        meter: Meter | None = None,
    ) -> tuple[PolicyOutcome, Mapping[str, Value]]:
        """Validate ``facts`` and apply the rules: (outcome, facts as evaluated). Never raises.

        The rules' work is charged to ``meter`` when given (the items of a pre-evaluation share
        one), else to a budget of this run's own. With ``meter``, the caller has checked the
        context's bounds once for all its runs (:func:`~ledger.core.evaluate.evaluate_batch`)."""
        assert self._runner is not None
        return self._runner(facts, context, meter)
