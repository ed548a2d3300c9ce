"""Evaluation: one request in, one decision trace out (DESIGN §6). Never raises for bad input.

Order of the questions, each failing closed:

0. **Size** — names within their limits (else ``error`` / ``request_too_large``) and no decimal
   fact or context value longer than ``Limits.fact_decimal_digits`` (else ``error`` /
   ``invalid_facts``): grant conditions read the facts as sent. **Form** — a ``requested_by``
   that is a ``kind:name`` principal, as the SDK's ``ClientConfig.actor`` must be (else
   ``error`` / ``invalid_request``).
1. **Authority** — a grant of the principal (or of a role it holds) covers the action on the
   resource now? If not: ``deny`` / ``no_authority``.
2. **Policy** — a deployed policy governs the action? If not: ``deny`` / ``ungoverned_action``.
3. **Version** — the canary decides when ``bucket(key) < percent`` (key: the resource, else the
   request id), the active version otherwise (the canary decides everything if nothing is active).
   A version decides only the actions its own ``governs`` names: where a policy's canary and
   active versions govern different actions, steps 2 and 3 are one question, asked of the
   version that decides the request's bucket (``governing_policy`` with the key), and an action
   only the other one governs is ``ungoverned_action`` for this request (or another policy's).
4. **Facts** — valid for the deciding version (declared, typed, within the size limits)? If
   not: ``error`` / ``invalid_facts``, with one reason per fact.
5. **Rules** — the first matching rule decides, else the default: ``deny`` for a deny effect,
   ``allow_with_constraints`` for an allow with constraints, else ``allow``.

Shadow versions and the non-deciding one of active/canary are evaluated as well and recorded in
``shadow_results``; they never change the determination. One whose ``governs`` leaves the action
out is recorded as ``deny`` ("version N does not govern ACTION"), its rules not run.

Work is bounded (``Limits.evaluation_cost``, see :mod:`ledger.core.cel`): trying the principal's
grants, finding the governing policy (:class:`~ledger.core.globwork.MatchWork`) and the grant
conditions of one request share one budget, and each policy version run has its own. Spending it
gives ``error`` / ``evaluation_budget_exceeded`` — never a hang, never an allow.

The decision id is a UUIDv5 of the request id, so a re-delivered request yields the same decision
id (idempotent downstream). ``latency_us`` is left at 0: measuring time is the adapter's job.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, Final

from ledger.core.authority import (
    PRINCIPAL_FORM,
    authorize_request,
    effective_grants,
    next_window_edge,
    unauthorized_reason,
    valid_principal,
)
from ledger.core.cel import Meter
from ledger.core.events import (
    EVALUATOR,
    BatchDecisionRecorded,
    BatchEvaluationRequested,
    BatchItem,
    BatchItemDecision,
    DecisionCorrected,
    DecisionRecorded,
    Determination,
    EvaluationRequested,
    Mode,
    ShadowResult,
    Stage,
    Value,
)
from ledger.core.facts import (
    context_problems,
    decimal_problems,
)
from ledger.core.globwork import MatchWork
from ledger.core.governing import governed_by, governing_policy, governs_units
from ledger.core.limits import (
    DEFAULT_LIMITS,
    Limits,
    id_refusal,
    name_problem,
    recorded_id,
    recorded_name,
)
from ledger.core.policy import PolicyOutcome
from ledger.core.state import (
    POLICY,
    PRINCIPAL,
    LedgerState,
    PolicyRecord,
    any_unread,
    authority_unread,
    bucket,
)
from ledger.core.text import clipped

__all__ = [
    "REASON_CODES",
    "DECISION_NAMESPACE",
    "bucket",
    "decision_id",
    "asker_problem",
    "asker_of",
    "INVALID_REQUEST",
    "evaluate",
    "evaluate_batch",
    "request_problem",
    "size_problem",
    "decided_before_policy",
    "unanswerable",
    "items_refused",
    "item_request",
    "correction_for",
    "TRACE_TOO_LARGE",
    "GOVERNANCE_UNREADABLE",
    "unread_by",
]

TRACE_TOO_LARGE: Final = "trace_too_large"
"""``reason_code`` of an ``error`` decision whose full trace would not fit a Kafka record."""
INVALID_REQUEST: Final = "invalid_request"
"""``reason_code`` of an ``error`` decision to a request whose ``requested_by`` is not a
principal (:func:`asker_problem`)."""

GOVERNANCE_UNREADABLE: Final = "governance_unreadable"
"""``reason_code`` of an ``error`` decision an evaluator gave because the governance records
of the request's principal (or a role it holds), or of any policy (which policy governs an
action is chosen across them all), include one it cannot read: a newer release wrote it
(``LedgerState.unreadable``)."""

REASON_CODES: Final[dict[str, str]] = {
    "no_authority": "deny: no grant of the principal or its roles covers the action on the resource now",
    "ungoverned_action": "deny: no deployed policy governs the action",
    "rule_matched": "a rule decided (allow, deny or allow_with_constraints)",
    "default_applied": "no rule matched; the policy's default decided",
    "invalid_facts": "error: facts missing, unknown, ill-typed or out of range",
    "condition_error": "error: a rule's condition failed on the given values (e.g. division by zero)",
    "policy_unavailable": "error: the deciding version's stored document does not load",
    TRACE_TOO_LARGE: "error: the full decision trace would not fit a Kafka record; facts, "
    "context, constraints and shadow results are left out, the request's size and SHA-256 are "
    "in the reason",
    "evaluation_budget_exceeded": "error: the conditions needed more work than one request may "
    "spend (list macros, string and regex work on large facts); never an allow",
    "request_too_large": "error: the request's names or pre-evaluation items exceed the input "
    "limits; nothing was evaluated",
    INVALID_REQUEST: "error: the request's requested_by is not a kind:name principal (the "
    "SDK sends its ClientConfig.actor, which must be one); nothing was evaluated",
    GOVERNANCE_UNREADABLE: "error: a governance record of the principal's authority (or of a "
    "role it holds), or of any policy, is one this evaluator cannot read (a newer release "
    "wrote it): it does not decide on an earlier state",
}
"""Every ``reason_code`` a decision can carry, with its meaning."""

DECISION_NAMESPACE: Final = bytes.fromhex("6c6564676572646563697369f16e0001")
"""The UUIDv5 namespace of decision ids (fixed forever: changing it changes every decision id)."""

_EMPTY: Final[Mapping[str, Value]] = {}
_ERROR: Final = Determination.ERROR


def _uuid5(name: str, namespace: bytes = DECISION_NAMESPACE) -> str:
    # uuid.uuid5 without the UUID object: the same bytes, a third of the cost on the hot path.
    digest = bytearray(
        hashlib.sha1(namespace + name.encode("utf-8", "surrogatepass")).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _is_uuid7(text: str) -> bool:
    return (
        len(text) == 36
        and text[14] == "7"
        and text[8] == text[13] == text[18] == text[23] == "-"
        and text[19] in "89abAB"
    )


def decision_id(request_id: str) -> str:
    """The decision id of a request, derived from the request id alone, so a request decided
    twice (a crash between produce and commit) gets the same id.

    For a UUIDv7 request id (the SDK's): a UUIDv8 whose first 48 bits are the request id's
    millisecond timestamp and whose other 74 bits come from SHA-1(DECISION_NAMESPACE + request
    id) — time-ordered like the request, so an export's min/max statistics prune a lookup by
    decision id to the row groups of its instant. For any other request id: UUIDv5
    (DECISION_NAMESPACE, request id).
    """
    if not _is_uuid7(request_id):
        return _uuid5(request_id)
    digest = hashlib.sha1(
        DECISION_NAMESPACE + request_id.encode("utf-8", "surrogatepass")
    ).hexdigest()
    v = (int(digest[18], 16) & 0x3) | 0x8  # RFC 9562 variant 10xx
    return (
        f"{request_id[:8]}-{request_id[9:13]}-8{digest[:3]}-{v:x}{digest[3:6]}-{digest[6:18]}"
    ).lower()


_UNAVAILABLE: Final = PolicyOutcome(
    determination=Determination.ERROR,
    reason_code="policy_unavailable",
    reasons=("the deciding policy version's stored document does not load",),
)


def _run_version(
    record: PolicyRecord,
    version: int,
    facts: Mapping[str, Any],
    context: Mapping[str, Any],
    meter: Meter | None = None,
) -> tuple[PolicyOutcome, Mapping[str, Value], str | None]:
    pv = record.versions[version]
    compiled = pv.compiled  # compiled on the first read (see PolicyVersion.compiled)
    if compiled is None:
        return _UNAVAILABLE, facts, pv.content_hash
    outcome, evaluated = compiled.run(facts, context, meter)
    return outcome, evaluated, pv.content_hash


def _shadows(
    record: PolicyRecord,
    deciding: int | None,
    action: str,
    facts: Mapping[str, Any],
    context: Mapping[str, Any],
) -> tuple[ShadowResult, ...]:
    """What each other deployed version would answer. A version whose ``governs`` leaves the
    action out would not decide it if it were promoted: it is recorded as ``deny`` and why, its
    rules not run (a comparison of rules that would never run would mislead the owner)."""
    out = []
    for v in record.deployed():
        if v == deciding:
            continue
        if governed_by(None, record, v, action):
            outcome, _, _ = _run_version(record, v, facts, context)
            determination, rule = outcome.determination, outcome.rule
            constraints, reasons = outcome.constraints, outcome.reasons
        else:
            determination, rule, constraints = Determination.DENY, None, _EMPTY
            reasons = (f"version {v} does not govern {action}",)
        stage = (
            Stage.ACTIVE
            if v == record.active
            else Stage.CANARY
            if v == record.canary
            else Stage.SHADOW
        )
        out.append(
            ShadowResult(
                policy=record.name,
                version=v,
                stage=stage,
                determination=determination,
                rule=rule,
                constraints=constraints,
                reasons=reasons,
            )
        )
    return tuple(out)


def _choose(
    state: LedgerState, record: PolicyRecord, action: str, key: str
) -> tuple[int | None, Stage | None, int | None]:
    """(deciding version, its stage, bucket if a canary exists). No version decides an action
    its own ``governs`` leaves out (``governing_policy`` found the policy by another version's):
    the request is then ungoverned, the policy only observes it."""
    b = bucket(key) if record.canary is not None else None
    version = record.decides_for(b or 0)
    if version is None or not governed_by(state, record, version, action):
        return None, None, b
    return version, Stage.CANARY if version == record.canary else Stage.ACTIVE, b


def _ungoverned(state: LedgerState, record: PolicyRecord | None, action: str, b: int | None) -> str:
    """Why no version decides ``action``: none governs it; or, in a canary's share, the
    canary does not govern what the active version does (a canary that dropped it). Every
    other case keeps the reason of the releases before, so their decisions reproduce."""
    decider = None if record is None else record.decides_for(b or 0)
    if (
        record is None
        or decider is None
        or decider != record.canary
        or record.active is None
        or not governed_by(state, record, record.active, action)
    ):
        return f"no active policy governs {action}"
    return (
        f"{record.name} v{decider} (canary, {record.canary_percent}% of requests) decides this "
        f"request's share and does not govern {action}"
    )


def evaluate(
    state: LedgerState,
    request: EvaluationRequested,
    *,
    now: datetime,
    evaluator_id: str,
    actor: str = EVALUATOR,
    limits: Limits = DEFAULT_LIMITS,
    meter: Meter | None = None,
    work: MatchWork | None = None,
    shadows: bool = True,
    check_asker: bool = True,
    charge_matching: bool = True,
) -> DecisionRecorded:
    """Decide ``request`` against ``state`` at ``now``: always a :class:`DecisionRecorded`.

    ``limits.evaluation_cost`` bounds the grant conditions' work; each policy version's budget
    was fixed when it was loaded. With ``meter``, all of it is charged to that one budget
    instead (:func:`evaluate_batch` shares one among its items); without ``shadows``, the
    non-deciding versions are not run. Matching the request's names against its principal's
    grants and the policies' ``governs`` is charged to the grant conditions' budget
    (:class:`~ledger.core.globwork.MatchWork`: ``work``, shared by a pre-evaluation's items),
    unless ``charge_matching`` is off: replay re-decides so a decision made before that was
    charged (2026-12-06), as it was decided then.

    A request whose names exceed ``limits`` (:func:`request_problem`) is answered ``error`` /
    ``request_too_large`` before anything is looked up: names key the evaluator's caches. One
    whose ``requested_by`` is not a principal (:func:`asker_problem`) is answered ``error`` /
    ``invalid_request``, unless ``check_asker`` is off: replay re-decides so a decision
    recorded before that check (2026-12-06), as it was decided then.
    """
    facts = request.facts if isinstance(request.facts, Mapping) else _EMPTY
    context = request.context if isinstance(request.context, Mapping) else _EMPTY
    principal, action, resource = request.principal, request.action, request.resource
    request_id = request.event_id
    requested_by = asker_of(request, limits)
    writer = (now, actor, evaluator_id, requested_by)
    # A pre-evaluation's context was checked once, for all its items (evaluate_batch).
    unsized = size_problem(
        principal,
        action,
        resource,
        facts,
        context if meter is None else _EMPTY,
        limits,
        actor=request.actor,
        requested_by=request.requested_by,
    )
    if unsized is not None:
        code, reasons = unsized
        if code == "request_too_large":  # nothing evaluated: the facts are not in the answer
            return _before_policy(state, request, writer, _ERROR, code, reasons[0], limits=limits)
        return _before_policy(
            state, request, writer, _ERROR, code, reasons, facts, context, limits=limits
        )
    if check_asker and request.requested_by is not None:
        malformed = asker_problem(request.requested_by)
        if malformed is not None:  # nothing evaluated: the facts are not in the answer
            return _before_policy(
                state, request, writer, _ERROR, INVALID_REQUEST, malformed, limits=limits
            )
    if state.unreadable and authority_unread(state, principal):
        # (A record of no readable key is named so too: it may be of this principal's.)
        whose = f"{principal}'s authority (its own or a role's it holds)"
        return _unreadable(
            state, request, writer, _unreadable_reason(whose), facts, context, limits
        )
    work = MatchWork(meter, limits.evaluation_cost) if work is None else work
    found = authorize_request(
        state,
        principal,
        action,
        resource,
        now=now,
        facts=facts,
        context=context,
        limits=limits,
        meter=meter,
        work=work,
        charge_matching=charge_matching,
    )
    grant = found.grant
    if found.over_budget:
        reason = (
            _grants_too_costly(state, principal, limits)
            if found.matching
            else f"authority: evaluating grant conditions stopped: {_budget(limits)}"
        )
        return _before_policy(
            state,
            request,
            writer,
            _ERROR,
            "evaluation_budget_exceeded",
            reason,
            facts,
            context,
            limits=limits,
        )
    if grant is None:
        reason = unauthorized_reason(
            state, principal, action, resource, now=now, facts=facts, context=context, found=found
        )
        return _before_policy(
            state,
            request,
            writer,
            Determination.DENY,
            "no_authority",
            reason,
            facts,
            context,
            limits=limits,
        )
    key = resource or request_id  # the canary bucket's
    if charge_matching and not work.charge_lookup(action, governs_units(state, action, key)):
        return _before_policy(
            state,
            request,
            writer,
            _ERROR,
            "evaluation_budget_exceeded",
            _governs_too_costly(limits),
            facts,
            context,
            limits=limits,
        )
    record = governing_policy(state, action, key)
    if state.unreadable and record is not None and any_unread(state, POLICY):
        # Not only this policy's: a record of another may deploy a version that takes the
        # action, or widen what one governs (a review: the action's own policy was checked,
        # and an unread deployment of a stricter one went unseen).
        reason = (
            "a governance record of a policy is one this evaluator cannot read (a newer release "
            "wrote it): which policy governs the action, with which version and rules, may have "
            "changed with it; it does not decide on an earlier state; run that release's "
            "evaluators (`ledger ps` names this one, its log the records)"
        )
        at = (record.name, grant.grant_id)
        return _unreadable(state, request, writer, reason, facts, context, limits, at)
    version, stage, b = (
        (None, None, None) if record is None else _choose(state, record, action, key)
    )
    if record is None or version is None:
        return DecisionRecorded(
            event_id=decision_id(request_id),
            occurred_at=now,
            actor=actor,
            request_id=request_id,
            requested_at=request.occurred_at,
            requested_by=requested_by,
            action=action,
            principal=principal,
            resource=resource,
            determination=Determination.DENY,
            reasons=(_ungoverned(state, record, action, b),),
            reason_code="ungoverned_action",
            policy=record.name if record is not None else None,
            grant_id=grant.grant_id,
            facts=facts,
            context=context,
            shadow_results=_shadows(record, None, action, facts, context)
            if record is not None and shadows
            else (),
            bucket=b,
            mode=request.mode,
            default=request.default,
            evaluator_id=evaluator_id,
            governance_position=state.position,
        )
    outcome, evaluated, content_hash = _run_version(record, version, facts, context, meter)
    return DecisionRecorded(
        event_id=decision_id(request_id),
        occurred_at=now,
        actor=actor,
        request_id=request_id,
        requested_at=request.occurred_at,
        requested_by=requested_by,
        action=action,
        principal=principal,
        resource=resource,
        determination=outcome.determination,
        constraints=outcome.constraints,
        reasons=outcome.reasons,
        reason_code=outcome.reason_code,
        policy=record.name,
        policy_version=version,
        content_hash=content_hash,
        stage=stage,
        rule=outcome.rule,
        grant_id=grant.grant_id,
        facts=evaluated,
        context=context,
        shadow_results=_shadows(record, version, action, facts, context)
        if shadows and (record.shadows or b is not None)
        else (),
        bucket=b,
        mode=request.mode,
        default=request.default,
        evaluator_id=evaluator_id,
        governance_position=state.position,
    )


def _unreadable(
    state: LedgerState,
    request: EvaluationRequested,
    writer: tuple[datetime, str, str, str],
    reason: str,
    facts: Mapping[str, Any],
    context: Mapping[str, Any],
    limits: Limits,
    found: tuple[str, str] | None = None,
) -> DecisionRecorded:
    """``error`` / ``governance_unreadable``, for ``reason`` (see :func:`_before_policy`)."""
    return _before_policy(
        state,
        request,
        writer,
        _ERROR,
        GOVERNANCE_UNREADABLE,
        reason,
        facts,
        context,
        limits=limits,
        found=found,
    )


def _unreadable_reason(whose: str) -> str:
    return (
        f"the governance records of {whose} include one this evaluator cannot read (a newer "
        "release wrote it): it does not decide on an earlier state; run that release's "
        "evaluators (`ledger ps` names this one)"
    )


def unread_by(decision: DecisionRecorded | BatchDecisionRecorded) -> frozenset[tuple[str, str]]:
    """The aggregates ``decision`` (or a pre-evaluation's items) was answered
    ``governance_unreadable`` for, as ``LedgerState.unreadable`` names them: the policy it
    names (some policy's record was lacking: marking the one that governed answers so again),
    else its principal (whose authority, or a role's, lacked a record: marking the principal
    answers so again). Reproduction re-decides with them (:func:`with_unreadable`)."""
    answers = decision.decisions if isinstance(decision, BatchDecisionRecorded) else (decision,)
    return frozenset(
        (POLICY, d.policy) if d.policy is not None else (PRINCIPAL, decision.principal)
        for d in answers
        if d.reason_code == GOVERNANCE_UNREADABLE
    )


@functools.lru_cache(maxsize=1_024)  # a few enforcement points ask, again and again
def asker_problem(requested_by: str) -> str | None:
    """Why ``requested_by`` is not who may ask (``the request's requested_by 'refund bot' is not
    a principal: use kind:name …``), else ``None``. The README has it as the enforcement
    point's configured actor, the SDK's ``ClientConfig.actor``, which must be a ``kind:name``
    principal: a record whose asker is no principal was built by hand, and its decision would
    credit a name no grant, key or audit query can match (``human:admin\\u202e…``). The
    evaluator answers it ``error`` / ``invalid_request``; the SDK refuses to send it."""
    if valid_principal(requested_by):
        return None
    return (
        f"the request's requested_by {clipped(repr(requested_by), 80)} is not a principal: use "
        f"{PRINCIPAL_FORM}"
    )


def asker_of(request: EvaluationRequested, limits: Limits = DEFAULT_LIMITS) -> str:
    """Who asked: the enforcement point's actor, as it states it (``requested_by``, else the
    request's ``actor``); one over ``request_name_chars`` (a request answered
    ``request_too_large``) cut to it, so no sender makes a decision as large as its request."""
    asker = request.requested_by or request.actor
    return asker if len(asker) <= limits.request_name_chars else recorded_name(asker, limits)


def _before_policy(
    state: LedgerState,
    request: EvaluationRequested,
    writer: tuple[datetime, str, str, str],
    determination: Determination,
    reason_code: str,
    reason: str | tuple[str, ...],
    facts: Mapping[str, Any] = _EMPTY,
    context: Mapping[str, Any] = _EMPTY,
    *,
    limits: Limits,
    found: tuple[str, str] | None = None,
) -> DecisionRecorded:
    """An answer given before any policy ran (names over their limits, the grant conditions'
    budget spent, no grant): no policy, version or grant in it; ``found``, the policy that
    governs and the grant that authorized, when the answer was given at the policy step
    (``governance_unreadable``: no rule ran). ``writer`` is (now, actor, evaluator id, who
    asked as the decision records it); a name over ``limits`` is recorded cut
    (:func:`~ledger.core.limits.recorded_name`)."""
    now, actor, evaluator_id, requested_by = writer
    policy, grant_id = found if found is not None else (None, None)
    return DecisionRecorded(
        event_id=decision_id(request.event_id),
        occurred_at=now,
        actor=actor,
        request_id=request.event_id,
        requested_at=request.occurred_at,
        requested_by=requested_by,
        action=recorded_name(request.action, limits),
        principal=recorded_name(request.principal, limits),
        resource=recorded_name(request.resource, limits),
        determination=determination,
        reasons=reason if isinstance(reason, tuple) else (reason,),
        reason_code=reason_code,
        policy=policy,
        grant_id=grant_id,
        facts=facts,
        context=context,
        mode=request.mode,
        default=request.default,
        evaluator_id=evaluator_id,
        governance_position=state.position,
    )


def decided_before_policy(decision: DecisionRecorded) -> bool:
    """Whether ``decision`` was given before any policy ran: names over their limits, a decimal
    too long, the grant conditions' budget spent, or no grant (what :func:`_before_policy`
    answers). Only such a decision carries no grant: every later step found one."""
    return decision.grant_id is None


def _grants_too_costly(state: LedgerState, principal: str, limits: Limits) -> str:
    held = len(effective_grants(state, principal))
    return (
        f"authority: trying the {held:,} grants {clipped(principal)} holds (with their roles') "
        f"on this request needs more than the evaluation budget of {limits.evaluation_cost:,} "
        "work units (each grant held, and each of its patterns, is charged on every request): "
        "hold fewer grants, with fewer patterns"
    )


def _governs_too_costly(limits: Limits) -> str:
    return (
        "policy: finding which policy governs this action needs more than the evaluation "
        f"budget of {limits.evaluation_cost:,} work units (matching it against every deployed "
        "policy's governs globs): ask with a shorter action name, or deploy fewer governs globs"
    )


def _budget(limits: Limits) -> str:
    return (
        f"the conditions needed more than the evaluation budget of {limits.evaluation_cost:,} "
        "work units (list macros, string and regular-expression work on these facts)"
    )


def _names_problem(
    principal: str,
    action: str,
    resource: str | None,
    limits: Limits,
    *,
    actor: str = "",
    requested_by: str | None = None,
) -> str | None:
    longest = limits.request_name_chars
    if (
        len(principal) <= longest
        and len(action) <= longest
        and len(resource or "") <= longest
        and len(actor) <= longest
        and len(requested_by or "") <= longest
    ):
        return None
    for name, value in (
        ("principal", principal),
        ("action", action),
        ("resource", resource),
        ("actor", actor),
        ("requested_by", requested_by),
    ):
        problem = name_problem(name, value, limits)
        if problem is not None:
            return problem
    return None


def size_problem(
    principal: str,
    action: str,
    resource: str | None,
    facts: Mapping[str, Any],
    context: Mapping[str, Any],
    limits: Limits = DEFAULT_LIMITS,
    *,
    actor: str = "",
    requested_by: str | None = None,
) -> tuple[str, tuple[str, ...]] | None:
    """Step 0, the sizes checked before anything is looked up: ``("request_too_large",
    (why,))`` for a name over ``request_name_chars`` (names key the evaluator's caches; who
    asked, ``actor`` and ``requested_by``, is copied into the decision), then
    ``("invalid_facts", (why, …))`` for a decimal fact or context value longer than
    ``fact_decimal_digits`` (grant conditions see the facts as sent, and comparing two decimals
    costs time with their digits where the budget counts one); ``None`` when within both.
    :func:`evaluate` answers by it, and so do offline policy tests and ``policy eval``."""
    problem = _names_problem(
        principal, action, resource, limits, actor=actor, requested_by=requested_by
    )
    if problem is not None:
        return "request_too_large", (problem,)
    long = decimal_problems(facts, limits) if facts else ()
    if context:
        long += decimal_problems(context, limits, "context.")
    return ("invalid_facts", long) if long else None


def request_problem(
    request: EvaluationRequested | BatchEvaluationRequested, limits: Limits = DEFAULT_LIMITS
) -> str | None:
    """Why ``request`` is outside the input limits (ids, names, pre-evaluation items), or
    ``None``. What :func:`unanswerable` names the evaluator dead-letters unread; :func:`evaluate`
    and :func:`evaluate_batch` answer anything else here ``error`` / ``request_too_large``."""
    refused = unanswerable(request, limits)
    if refused is not None:
        return refused[1]
    if isinstance(request, EvaluationRequested):
        return _names_problem(
            request.principal,
            request.action,
            request.resource,
            limits,
            actor=request.actor,
            requested_by=request.requested_by,
        )
    return _batch_problem(request, limits)


def unanswerable(
    request: EvaluationRequested | BatchEvaluationRequested, limits: Limits = DEFAULT_LIMITS
) -> tuple[str, str] | None:
    """``(dead-letter code, reason)`` for a request the evaluator must neither answer nor
    remember, checked before either; ``None`` for any other. An id over ``request_id_chars``
    (``id_too_long``: answered ids are remembered for a million requests); an empty or
    whitespace-only id (``id_empty``: its answer would be keyed by nothing a client could tell
    from another's), both by :func:`~ledger.core.limits.id_refusal`; a pre-evaluation over
    ``batch_items`` (``too_many_items``: an answer of that many errors may not fit a record)."""
    refused = id_refusal(request.event_id, "request", limits)
    if refused is not None:
        return refused
    if isinstance(request, BatchEvaluationRequested):
        many = _too_many_items(request, limits)
        if many is not None:
            return "too_many_items", many
    return None


def _too_many_items(request: BatchEvaluationRequested, limits: Limits) -> str | None:
    if len(request.items) <= limits.batch_items:
        return None
    return (
        f"{len(request.items):,} items in one pre-evaluation, more than "
        f"{limits.batch_items:,} (batch_items)"
    )


def _batch_problem(request: BatchEvaluationRequested, limits: Limits) -> str | None:
    many = _too_many_items(request, limits)
    if many is not None:
        return many
    long_actor = name_problem("actor", request.actor, limits)
    if long_actor is not None:
        return long_actor
    for item in request.items:
        if len(item.item_id) > limits.request_id_chars:
            return f"an item id is longer than {limits.request_id_chars:,} characters"
        problem = _names_problem(request.principal, item.action, item.resource, limits)
        if problem is not None:  # which item: every item is answered with this reason
            return f"item {clipped(repr(item.item_id), 80)}: {problem}; no item was evaluated"
    return None


def item_request(request: BatchEvaluationRequested, item: BatchItem) -> EvaluationRequested:
    """One item of a pre-evaluation as the single request it is decided as: id
    ``<request id>/<item id>`` (the canary's key when the item names no resource), the batch's
    principal, actor, time and context, the item's action, resource and facts."""
    return EvaluationRequested(
        event_id=f"{request.event_id}/{item.item_id}",
        occurred_at=request.occurred_at,
        actor=request.actor,
        action=item.action,
        principal=request.principal,
        resource=item.resource,
        facts=item.facts,
        context=request.context,
    )


def evaluate_batch(
    state: LedgerState,
    request: BatchEvaluationRequested,
    *,
    now: datetime,
    evaluator_id: str,
    actor: str = EVALUATOR,
    limits: Limits = DEFAULT_LIMITS,
    charge_matching: bool = True,
) -> BatchDecisionRecorded:
    """Pre-evaluation (DESIGN §8.2): every item decided at one governance position.

    Each item is evaluated exactly as :func:`evaluate` would (its canary key is its resource, else
    ``<request id>/<item id>``), except that the items share one evaluation budget
    (``limits.evaluation_cost``): one record costs at most what one request may, however many
    items it holds (matching included; ``charge_matching`` as in :func:`evaluate`). Shadow
    results are not part of a batch answer, so they are not run. A
    request over the limits on items or names (:func:`request_problem`) is answered with
    every item ``error`` / ``request_too_large``, one whose context is over its bounds with
    every item ``error`` / ``invalid_facts``.
    """
    problem = _batch_problem(request, limits)
    if problem is None:
        # The context's bounds are checked once here, not once per item: with the shared
        # meter, the policy runs below leave it to this call.
        context = request.context if isinstance(request.context, Mapping) else _EMPTY
        bad = context_problems(context, limits) if context else ()
        if bad:
            return _every_item(
                state, request, now, evaluator_id, actor, "invalid_facts", bad, limits
            )
    else:
        return _every_item(
            state, request, now, evaluator_id, actor, "request_too_large", (problem,), limits
        )
    meter = Meter(limits.evaluation_cost)
    work = MatchWork(meter, limits.evaluation_cost)  # the items' matching, on the same budget
    decisions = []
    for item in request.items:
        single = item_request(request, item)
        spent = meter.limit - meter.left  # by the items before this one
        work.next_item()
        d = evaluate(
            state,
            single,
            now=now,
            evaluator_id=evaluator_id,
            actor=actor,
            limits=limits,
            meter=meter,
            work=work,
            shadows=False,
            charge_matching=charge_matching,
        )
        decisions.append(
            BatchItemDecision(
                item_id=item.item_id,
                action=item.action,
                resource=item.resource,
                determination=d.determination,
                constraints=d.constraints,
                reasons=_shared_budget(d, spent, limits),
                reason_code=d.reason_code,
                policy=d.policy,
                policy_version=d.policy_version,
                rule=d.rule,
                grant_id=d.grant_id,
            )
        )
    return _batch_answer(state, request, now, evaluator_id, actor, tuple(decisions))


def _shared_budget(d: DecisionRecorded, spent: int, limits: Limits) -> tuple[str, ...]:
    """An item's reasons; when it ran out of the budget its pre-evaluation's items share after
    earlier items had spent some of it, saying so and what to do (an agent engineer's
    walkthrough: a trivial item after costly ones was told its own conditions needed more)."""
    if d.reason_code != "evaluation_budget_exceeded" or spent <= 0 or not d.reasons:
        return d.reasons
    shared = (
        f" (this pre-evaluation's items share that budget, and the items before this one spent "
        f"{min(spent, limits.evaluation_cost):,} units of it: ask for this item alone or in a "
        "smaller pre-evaluation)"
    )
    return (d.reasons[0] + shared, *d.reasons[1:])


def _every_item(
    state: LedgerState,
    request: BatchEvaluationRequested,
    now: datetime,
    evaluator_id: str,
    actor: str,
    reason_code: str,
    reasons: tuple[str, ...],
    limits: Limits,
) -> BatchDecisionRecorded:
    """The answer to a pre-evaluation refused as a whole: every item ``error``, nothing run;
    its principal and items' ids and names recorded cut when over ``limits``
    (:func:`~ledger.core.limits.recorded_name`)."""
    refused = items_refused(request.items, reason_code, reasons, limits)
    named = replace(request, principal=recorded_name(request.principal, limits))
    return _batch_answer(state, named, now, evaluator_id, actor, refused)


def items_refused(
    items: Iterable[BatchItem | BatchItemDecision],
    reason_code: str,
    reasons: tuple[str, ...] = (),
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[BatchItemDecision, ...]:
    """Every item (or earlier answer to it) answered ``error`` with ``reason_code``: a
    pre-evaluation refused whole here, or an answer the evaluator must shrink to fit a record.
    An item id, action or resource over ``limits`` is recorded cut
    (:func:`~ledger.core.limits.recorded_name`, :func:`~ledger.core.limits.recorded_id`)."""
    return tuple(
        BatchItemDecision(
            item_id=recorded_id(item.item_id, limits),
            action=recorded_name(item.action, limits),
            resource=None if item.resource is None else recorded_name(item.resource, limits),
            determination=_ERROR,
            reasons=reasons,
            reason_code=reason_code,
        )
        for item in items
    )


def _batch_answer(
    state: LedgerState,
    request: BatchEvaluationRequested,
    now: datetime,
    evaluator_id: str,
    actor: str,
    decisions: tuple[BatchItemDecision, ...],
) -> BatchDecisionRecorded:
    return BatchDecisionRecorded(
        event_id=decision_id(request.event_id),
        occurred_at=now,
        actor=actor,
        request_id=request.event_id,
        principal=request.principal,
        decisions=decisions,
        governance_position=state.position,
        evaluator_id=evaluator_id,
        stale_after=next_window_edge(state, request.principal, now),
    )


def correction_for(decision: DecisionRecorded) -> DecisionCorrected | None:
    """Async pattern (DESIGN §8.3): the correction to publish, if the caller's default was wrong.

    ``None`` for sync requests, requests without a default, and decisions that agree with the
    default. The correction's id is derived from the decision id (re-delivery safe); its time,
    reasons and constraints are the decision's.
    """
    if decision.mode is not Mode.ASYNC or decision.default is None:
        return None
    if decision.determination == decision.default:
        return None
    return DecisionCorrected(
        event_id=_uuid5("correction:" + decision.event_id),
        occurred_at=decision.occurred_at,
        actor=decision.actor,
        request_id=decision.request_id,
        decision_id=decision.event_id,
        default=decision.default,
        determination=decision.determination,
        reasons=decision.reasons,
        constraints=decision.constraints,
    )
