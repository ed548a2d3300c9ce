"""Impact simulation (DESIGN §9): what would a candidate version have decided on past requests?

Pure: the caller supplies the candidate and the history (pairs of request and the decision that
was recorded for it); nothing is read from Kafka here. Authority and the input limits are not
re-evaluated — a request denied for ``no_authority``, or refused before any policy ran, would
still be — so only requests the candidate governs that got past them are re-decided.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ledger.core.disagreement import difference
from ledger.core.evaluate import TRACE_TOO_LARGE, decided_before_policy
from ledger.core.events import (
    DecisionRecorded,
    Determination,
    EvaluationRequested,
    Stage,
    Value,
)
from ledger.core.governing import governing_policy
from ledger.core.policy import Policy, PolicyOutcome
from ledger.core.state import LedgerState, PolicyRecord, PolicyVersion

__all__ = ["Change", "ImpactReport", "deployed_with", "simulate"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One request whose answer would change: its determination, or (in
    :attr:`ImpactReport.constraint_changes`) only its constraints."""

    request_id: str
    action: str
    resource: str
    old_determination: Determination
    new_determination: Determination
    old_rule: str | None
    new_rule: str | None
    old_version: int | None = None
    old_policy: str | None = None
    """The policy that decided it (another than the draft's when it outranks the draft)."""
    old_reason_code: str | None = None
    new_reason_code: str | None = None
    new_reasons: tuple[str, ...] = ()
    """Why the draft decides as it does (``invalid_facts: attachment_mb: missing ...``)."""
    principal: str = ""
    """Whom the request was about (an owner asks who would be affected)."""
    old_constraints: Mapping[str, Value] = field(default_factory=dict)
    new_constraints: Mapping[str, Value] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ImpactReport:
    """Counts and the list of changed determinations."""

    policy: str
    content_hash: str
    considered: int = 0
    evaluated: int = 0
    skipped: int = 0
    unchanged: int = 0
    changed: tuple[Change, ...] = ()
    """Requests whose determination would change."""
    rule_changes: int = 0
    constraint_changes: tuple[Change, ...] = ()
    """Of the :attr:`unchanged` determinations, the requests whose constraints would differ
    (:func:`~ledger.core.disagreement.difference`): a cap lowered under the same
    ``allow_with_constraints``."""
    transitions: dict[str, int] = field(default_factory=dict)
    """``"allow -> deny"`` → count, over changed determinations."""
    no_longer_governed: dict[str, int] = field(default_factory=dict)
    """Action → requests this policy decided that the draft does not govern: another policy
    that governs the action would decide them, else they are denied ``ungoverned_action``."""
    decided_elsewhere: dict[str, int] = field(default_factory=dict)
    """Policy → requests the draft governs that another policy decided: re-decided all the
    same, but the draft decides them only where it would take precedence."""
    taken_over: dict[str, int] | None = None
    """Of :attr:`decided_elsewhere`, per policy, the requests the draft would decide, deployed
    in the governance ``simulate`` was given (the rest stay with the policy that takes
    precedence); ``None`` without it."""


def simulate(
    candidate: Policy,
    history: Iterable[tuple[EvaluationRequested, DecisionRecorded]],
    *,
    governance: Callable[[], LedgerState] | None = None,
) -> ImpactReport:
    """Re-decide every historic request the candidate governs and report what would change.

    Skipped: requests for actions the candidate does not govern; those decided before any
    policy ran (:func:`~ledger.core.evaluate.decided_before_policy`: ``no_authority``, or refused
    by the input limits or the grant conditions' budget); and those whose trace was too large to
    record (``trace_too_large``: the policy's own answer is not in it). ``rule_changes`` counts
    requests whose determination stays the same but that another rule would decide;
    ``constraint_changes`` lists those whose determination stays the same but whose constraints
    would differ (:func:`~ledger.core.disagreement.difference`). A request
    this policy decided for an action the draft does not govern is skipped too, and counted in
    ``no_longer_governed``: the draft would hand it to another policy, or leave it ungoverned.

    ``governance`` (read only once a request another policy decided is met) gives the state the
    draft would be deployed in: each such request is then counted in ``taken_over`` when the
    draft, as its policy's only deciding version there, would govern its action
    (:func:`deployed_with`).
    """
    deployed: LedgerState | None = None
    taken: Counter[str] | None = Counter() if governance is not None else None
    considered = evaluated = skipped = unchanged = rule_changes = 0
    changed: list[Change] = []
    constrained: list[Change] = []
    transitions: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    elsewhere: Counter[str] = Counter()
    for request, old in history:
        considered += 1
        if decided_before_policy(old) or old.reason_code == TRACE_TOO_LARGE:
            skipped += 1
            continue
        if not candidate.governs_action(request.action):
            skipped += 1
            if old.policy == candidate.name and old.policy_version is not None:  # it decided
                dropped[request.action] += 1
            continue
        evaluated += 1
        if old.policy not in (None, candidate.name) and old.policy_version is not None:
            elsewhere[str(old.policy)] += 1  # it decided (one that only observed did not)
            if governance is not None and taken is not None:
                if deployed is None:
                    deployed = deployed_with(governance(), candidate)
                winner = governing_policy(deployed, request.action)
                if winner is not None and winner.name == candidate.name:
                    taken[str(old.policy)] += 1
        outcome, _ = candidate.run(request.facts, request.context)
        differs = difference(
            old.determination, old.constraints, outcome.determination, outcome.constraints
        )
        if differs == "determination":
            changed.append(_change(request, old, outcome))
            transitions[f"{old.determination.value} -> {outcome.determination.value}"] += 1
        else:
            unchanged += 1
            if outcome.rule != old.rule:
                rule_changes += 1
            if differs == "constraints":
                constrained.append(_change(request, old, outcome))
    return ImpactReport(
        policy=candidate.name,
        content_hash=candidate.content_hash,
        considered=considered,
        evaluated=evaluated,
        skipped=skipped,
        unchanged=unchanged,
        changed=tuple(changed),
        rule_changes=rule_changes,
        constraint_changes=tuple(constrained),
        transitions=dict(sorted(transitions.items())),
        no_longer_governed=dict(sorted(dropped.items())),
        decided_elsewhere=dict(sorted(elsewhere.items())),
        taken_over=None if taken is None else {p: taken[p] for p in sorted(elsewhere)},
    )


def _change(request: EvaluationRequested, old: DecisionRecorded, new: PolicyOutcome) -> Change:
    return Change(
        request_id=old.request_id,  # an item of a pre-evaluation as readers name it: REQUEST#ITEM
        action=request.action,
        resource=request.resource,
        principal=request.principal,
        old_determination=old.determination,
        new_determination=new.determination,
        old_rule=old.rule,
        new_rule=new.rule,
        old_version=old.policy_version,
        old_policy=old.policy,
        old_reason_code=old.reason_code,
        new_reason_code=new.reason_code,
        new_reasons=new.reasons,
        old_constraints=old.constraints,
        new_constraints=new.constraints,
    )


def deployed_with(state: LedgerState, candidate: Policy) -> LedgerState:
    """``state`` with ``candidate`` as the only deployed (active) version of its policy: which
    policy governs an action there is what :func:`governing_policy` says, by the one rule the
    evaluator follows (nothing here ranks ``governs`` entries a second way)."""
    version = PolicyVersion(
        policy=candidate.name,
        version=0,
        stage=Stage.ACTIVE,
        content_hash=candidate.content_hash,
        document=candidate.canonical,
        author="",
        proposed_at=datetime.fromtimestamp(0, UTC),
        owner=candidate.owner,
        governs=tuple(candidate.governs),
    )
    record = PolicyRecord(name=candidate.name, versions={0: version}, active=0, history=(0,))
    return LedgerState(
        policies=state.policies.set(candidate.name, record),
        principals=state.principals,
        position=state.position,
    )
