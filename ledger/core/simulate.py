"""Impact simulation (DESIGN §9): what would a candidate version have decided on past requests?

Pure: the caller supplies the candidate and the history (pairs of request and the decision that
was recorded for it); nothing is read from Kafka here. Authority and the input limits are not
re-evaluated — a request denied for ``no_authority``, or refused before any policy ran, would
still be — so only requests the candidate governs that got past them are re-decided.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from ledger.core.evaluate import TRACE_TOO_LARGE, decided_before_policy
from ledger.core.events import DecisionRecorded, Determination, EvaluationRequested
from ledger.core.policy import Policy

__all__ = ["Change", "ImpactReport", "simulate"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One request whose determination (or deciding rule) would change."""

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
    rule_changes: int = 0
    transitions: dict[str, int] = field(default_factory=dict)
    """``"allow -> deny"`` → count, over changed determinations."""
    no_longer_governed: dict[str, int] = field(default_factory=dict)
    """Action → requests this policy decided that the draft does not govern: another policy
    that governs the action would decide them, else they are denied ``ungoverned_action``."""
    decided_elsewhere: dict[str, int] = field(default_factory=dict)
    """Policy → requests the draft governs that another policy decided: re-decided all the
    same, but the draft decides them only where it would take precedence."""


def simulate(
    candidate: Policy,
    history: Iterable[tuple[EvaluationRequested, DecisionRecorded]],
) -> ImpactReport:
    """Re-decide every historic request the candidate governs and report what would change.

    Skipped: requests for actions the candidate does not govern; those decided before any
    policy ran (:func:`~ledger.core.evaluate.decided_before_policy`: ``no_authority``, or refused
    by the input limits or the grant conditions' budget); and those whose trace was too large to
    record (``trace_too_large``: the policy's own answer is not in it). ``rule_changes`` counts
    requests whose determination stays the same but that another rule would decide. A request
    this policy decided for an action the draft does not govern is skipped too, and counted in
    ``no_longer_governed``: the draft would hand it to another policy, or leave it ungoverned.
    """
    considered = evaluated = skipped = unchanged = rule_changes = 0
    changed: list[Change] = []
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
        outcome, _ = candidate.run(request.facts, request.context)
        if outcome.determination != old.determination:
            changed.append(
                Change(
                    request_id=request.event_id,
                    action=request.action,
                    resource=request.resource,
                    old_determination=old.determination,
                    new_determination=outcome.determination,
                    old_rule=old.rule,
                    new_rule=outcome.rule,
                    old_version=old.policy_version,
                    old_policy=old.policy,
                    old_reason_code=old.reason_code,
                    new_reason_code=outcome.reason_code,
                    new_reasons=outcome.reasons,
                )
            )
            transitions[f"{old.determination.value} -> {outcome.determination.value}"] += 1
        else:
            unchanged += 1
            if outcome.rule != old.rule:
                rule_changes += 1
    return ImpactReport(
        policy=candidate.name,
        content_hash=candidate.content_hash,
        considered=considered,
        evaluated=evaluated,
        skipped=skipped,
        unchanged=unchanged,
        changed=tuple(changed),
        rule_changes=rule_changes,
        transitions=dict(sorted(transitions.items())),
        no_longer_governed=dict(sorted(dropped.items())),
        decided_elsewhere=dict(sorted(elsewhere.items())),
    )
