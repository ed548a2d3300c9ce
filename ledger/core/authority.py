"""Authority: principals, grants, roles — who may attempt which action on what (DESIGN §6.1).

Principals are ``kind:name`` strings (kinds: agent, tool, human, role, service). A grant gives a
principal or a role a set of action globs (``refund.*``) on a resource glob (``account:*``),
optionally under a CEL condition over the request's facts and context, within an optional validity
window ``valid_from <= now < valid_until``. Globs and conditions are compiled once, when the grant is
first read from the state (:class:`HeldGrants`), never per request.

When several grants apply, the one with the lowest ``grant_id`` is reported: deterministic, so a
replay names the same grant.

Grant conditions are bounded like policy conditions (:class:`~ledger.core.cel.Meter`): the
conditions tried for one request share one budget. A condition that spends it does not hold
(authority fails closed); :func:`authorize_request` says so, and the evaluator answers ``error``
/ ``evaluation_budget_exceeded`` rather than a plain denial. Trying the grants is charged to that
budget too, each grant the principal holds and each of its patterns (:func:`grants_units`), so
what one principal may hold is bounded by that same charge (:func:`holding_problem`,
``Limits.principal_grant_units``) when a grant is issued or a role assigned: else whoever may
add grants to it could push its every request over the budget.
"""

from __future__ import annotations

import functools
import inspect
import operator
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from ledger.core.builders import builder
from ledger.core.cel import (
    BudgetExceeded,
    CompiledCondition,
    Meter,
    compile_condition,
)
from ledger.core.events import COMMAND_PROCESSOR, GrantIssued
from ledger.core.globs import Globs, compile_globs, glob_matches, is_pattern, match_units
from ledger.core.globwork import GlobWork, MatchWork, fixed_start
from ledger.core.limits import DEFAULT_LIMITS, Limits
from ledger.core.pmap import BuiltOnRead
from ledger.core.text import clipped
from ledger.errors import PolicyError

if TYPE_CHECKING:
    from ledger.core.state import LedgerState

__all__ = [
    "PRINCIPAL_FORM",
    "PRINCIPAL_KINDS",
    "Grant",
    "grant_from_event",
    "HeldGrants",
    "compile_grant_condition",
    "admit_grant_condition",
    "valid_principal",
    "authorize",
    "unauthorized_reason",
    "capabilities",
    "effective_grants",
    "pattern_covers",
    "not_held",
    "unproven_cover",
    "first_not_held",
    "role_reach_problem",
    "RoleReach",
    "NotChecked",
    "NOT_CHECKED",
    "key_delegation_problem",
    "key_registrar",
    "replace_key",
    "Authorization",
    "authorize_request",
    "grants_units",
    "held_units",
    "holding_problem",
]

PRINCIPAL_KINDS: Final = ("agent", "tool", "human", "role", "service")
PRINCIPAL_FORM: Final = (
    f"kind:name with kind {', '.join(PRINCIPAL_KINDS)} and a name of ASCII letters, "
    "digits and _ . @ - / (starting with a letter or digit), e.g. human:alice"
)
"""The principal rule in words, for messages."""
_PRINCIPAL_RE: Final = re.compile(rf"(?:{'|'.join(PRINCIPAL_KINDS)}):[A-Za-z0-9][A-Za-z0-9_.@\-/]*")
_EMPTY: Final[Mapping[str, Any]] = {}


def _never() -> Globs:
    return compile_globs(())


def valid_principal(principal: str) -> bool:
    """Is ``principal`` a well-formed ``kind:name`` string (the whole of it: ``$`` would let
    a trailing newline through)?"""
    return isinstance(principal, str) and _PRINCIPAL_RE.fullmatch(principal) is not None


def compile_grant_condition(text: str) -> CompiledCondition:
    """Compile a grant condition (dynamic mode: identifiers are request facts of any type), as
    a grant recorded before is read (:func:`admit_grant_condition` holds a new one to more).

    Cached by text: many grants share a condition, and a state read whole builds every grant
    (parsing dominated replay). A compiled condition is immutable, so sharing it is safe.

    Raises :class:`~ledger.errors.PolicyError` when it does not compile.
    """
    admitted = _ADMITTED.get(text)
    return admitted if admitted is not None else _compile_recorded(text)


@functools.lru_cache(maxsize=4096)
def _compile_recorded(text: str) -> CompiledCondition:
    return compile_condition(text, facts=None)


_ADMITTED: Final[dict[str, CompiledCondition]] = {}
_ADMITTED_HELD: Final = 1_024


def admit_grant_condition(text: str) -> CompiledCondition:
    """Compile the condition of a grant being issued, its literals held to a new policy's
    rules (``new_grant``: a review found a ``\\q`` kept and a time finer than a microsecond cut
    in a new grant, which could then never apply). What passes reads the same either way, so
    the grant built when its event is folded takes this compiled form (one parse per grant
    command: a red team's 1,100 conditions were parsed again on every command)."""
    held = _ADMITTED.get(text)
    if held is not None:  # admitted before: the same text passes the same rules
        return held
    compiled = compile_condition(text, facts=None, new_grant=True)
    if len(_ADMITTED) >= _ADMITTED_HELD:
        _ADMITTED.pop(next(iter(_ADMITTED)))  # the oldest admitted: a bounded hand-over
    _ADMITTED[text] = compiled
    return compiled


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    """A grant as held in the state, with its globs and condition compiled."""

    grant_id: str
    principal: str
    actions: tuple[str, ...]
    resource: str
    granted_by: str
    issued_at: datetime
    condition: str | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    approved_by: str | None = None
    note: str | None = None
    action_re: Globs = field(default_factory=_never, repr=False, compare=False)
    resource_re: Globs = field(default_factory=_never, repr=False, compare=False)
    compiled: CompiledCondition | None = field(default=None, repr=False, compare=False)
    condition_broken: bool = field(default=False, repr=False, compare=False)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """A pickle (a governance snapshot) carries the grant's own fields, and loading it
        compiles its globs and condition again (a compiled condition holds functions, which do
        not pickle, and a glob compiled by other code must not come along)."""
        return (_compiled_grant, _own_fields(self))

    def in_force(self, now: datetime) -> bool:
        """Is ``now`` inside the validity window?"""
        if self.valid_from is not None and now < self.valid_from:
            return False
        return not (self.valid_until is not None and now >= self.valid_until)

    def covers(self, action: str, resource: str) -> bool:
        """Do the grant's action globs and resource pattern match?"""
        return self.action_re.matches(action) and self.resource_re.matches(resource)

    def _condition(
        self, facts: Mapping[str, Any], context: Mapping[str, Any], meter: Meter | None
    ) -> bool | Exception:
        """True when the condition holds (or there is none), False when it is false, or the
        fault that stopped it. A fault does not hold: authority fails closed."""
        if self.condition_broken:
            return False
        compiled = self.compiled
        if compiled is None:
            return True
        if meter is None and compiled.metered:
            meter = Meter(DEFAULT_LIMITS.evaluation_cost)
        try:
            return compiled.fn(facts, context, meter) is True
        except (KeyError, ArithmeticError, TypeError, ValueError, AttributeError) as exc:
            return exc
        except BudgetExceeded as exc:  # spent the request's budget: does not hold either
            return exc

    def condition_fault(
        self, facts: Mapping[str, Any], context: Mapping[str, Any], meter: Meter | None = None
    ) -> str | None:
        """``None`` when the condition holds (or there is none); otherwise why it does not."""
        return self.fault_of(self._condition(facts, context, meter))

    def fault_of(self, outcome: bool | Exception) -> str | None:
        """What :meth:`condition_fault` says of an outcome its condition already gave."""
        if outcome is True:
            return None
        when = f"grant {self.grant_id} holds only when `{self.condition}`"
        if self.condition_broken:
            return f"grant {self.grant_id}'s condition does not compile on this build: it never applies"
        if isinstance(outcome, KeyError):
            return f"{when}, and the request lacks {outcome}"
        if isinstance(outcome, BudgetExceeded):
            return f"{when}, and evaluating it stopped: {outcome}"
        if isinstance(outcome, Exception):
            # What stopped it, in the condition's words (a fuzzer: a division by zero was told
            # to send numbers as numbers, not strings).
            return f"{when}, which cannot be evaluated on these facts: {outcome}{_hint(outcome)}"
        return f"{when}, which is false for this request"

    def applies(
        self,
        action: str,
        resource: str,
        now: datetime,
        facts: Mapping[str, Any],
        context: Mapping[str, Any],
        meter: Meter | None = None,
    ) -> bool:
        """Does this grant cover ``action`` on ``resource`` at ``now`` for these facts?

        Hot path (every request): no messages are built here; :func:`unauthorized_reason` asks
        :meth:`condition_fault` for them on the deny path only. ``meter`` is the request's
        budget (default: a fresh one, made only if the condition is metered).
        """
        return (
            self.covers(action, resource)
            and self.in_force(now)
            and self._condition(facts, context, meter) is True
        )


def grant_from_event(event: GrantIssued) -> Grant:
    """Build the state's grant from its event, compiling globs and condition once."""
    return _compiled_grant(
        event.grant_id,
        event.principal,
        tuple(event.actions),
        event.resource,
        event.actor,  # granted_by
        event.occurred_at,  # issued_at
        event.condition,
        event.valid_from,
        event.valid_until,
        event.approved_by,
        event.note,
    )


_OWN_FIELDS: Final = (
    "grant_id",
    "principal",
    "actions",
    "resource",
    "granted_by",
    "issued_at",
    "condition",
    "valid_from",
    "valid_until",
    "approved_by",
    "note",
)
"""A grant's fields that are its own, not compiled from them: what it pickles as, in the order
:func:`_compiled_grant` takes them (checked below)."""
_own_fields: Final = operator.attrgetter(*_OWN_FIELDS)


def _compiled_grant(
    grant_id: str,
    principal: str,
    actions: tuple[str, ...],
    resource: str,
    granted_by: str,
    issued_at: datetime,
    condition: str | None,
    valid_from: datetime | None,
    valid_until: datetime | None,
    approved_by: str | None,
    note: str | None,
) -> Grant:
    """A grant from its own fields, its globs and condition compiled (also how a pickled grant
    is loaded: :meth:`Grant.__reduce__`)."""
    compiled: CompiledCondition | None = None
    broken = False
    if condition:
        try:
            compiled = compile_grant_condition(condition)
        except PolicyError:
            broken = True  # validated at issue time; if it still fails, the grant never applies
    # Positionally, in the order _build_grant names, straight into the slots (ledger.core.builders):
    # a replayed state read whole builds every grant it holds, hundreds of thousands of them.
    return _build_grant(
        grant_id,
        principal,
        actions,
        resource,
        granted_by,
        issued_at,
        condition,
        valid_from,
        valid_until,
        approved_by,
        note,
        compile_globs(actions),  # action_re
        compile_globs((resource,)),  # resource_re
        compiled,
        broken,  # condition_broken
    )


if tuple(inspect.signature(_compiled_grant).parameters) != _OWN_FIELDS or set(_OWN_FIELDS) != {
    f.name for f in fields(Grant) if f.compare
}:
    raise TypeError("Grant's own fields, _OWN_FIELDS and _compiled_grant's parameters differ")


class HeldGrants(BuiltOnRead[str, Grant]):
    """A principal's grants in the state: each is held as the :class:`GrantIssued` event that
    issued it until it is first read, and built into its :class:`Grant` then, once
    (:class:`~ledger.core.pmap.BuiltOnRead`).

    A replay keeps hundreds of thousands of grants and most are never read by the question asked
    of it ("which grants did P hold at T?" reads one principal's); building them all when the
    replay ended was a third of its time.
    """

    __slots__ = ()
    RAW = GrantIssued

    def _build_value(self, raw: GrantIssued) -> Grant:
        return grant_from_event(raw)


_build_grant: Final = builder(
    Grant, (*_OWN_FIELDS, "action_re", "resource_re", "compiled", "condition_broken")
)


def effective_grants(state: LedgerState, principal: str) -> tuple[Grant, ...]:
    """The principal's own grants and those of every role it holds, by ascending grant id."""
    record = state.principals.get(principal)
    if record is None:
        return ()
    memo = state.memo
    key = ("grants", principal)
    cached = memo.get(key)
    if cached is not None:
        return cached  # type: ignore[no-any-return]  # the memo holds Any; this key only ever this function's result
    grants = list(record.grants.values())
    for role in record.roles:
        role_record = state.principals.get(role)
        if role_record is not None:
            grants.extend(role_record.grants.values())
    result = tuple(sorted(grants, key=lambda g: g.grant_id))
    memo[key] = result  # derived from this immutable state only, so caching it is safe
    return result


def next_window_edge(state: LedgerState, principal: str, now: datetime) -> datetime | None:
    """The first instant after ``now`` at which a grant of ``principal``, or of a role it
    holds, begins or ends its validity window (``None``: none ahead). What it may do changes
    then, and no governance event says so: a pre-evaluation's answer is stale from it (a red
    team: one allowed under a grant since ended read as fresh)."""
    edges = [
        edge
        for grant in effective_grants(state, principal)
        for edge in (grant.valid_from, grant.valid_until)
        if edge is not None and edge > now
    ]
    return min(edges, default=None)


class Authorization(NamedTuple):
    """What :func:`authorize_request` found."""

    grant: Grant | None
    over_budget: bool
    first: bool | Exception | None = None
    """The outcome of the first grant tried (False, or the fault that stopped its condition)
    when none held; ``None`` when no grant was tried or one held."""
    covering: Grant | None = None
    """When none held: the first grant whose patterns cover the request, in force or not
    (``None``: none does), so :func:`unauthorized_reason` need not match them all again."""
    tried_grant: Grant | None = None
    """When none held: the first covering grant in force (the one ``first`` is the outcome of)."""
    matching: bool = False
    """The budget ran out on trying the grants (:func:`grants_units`), before any was tried."""


def authorize_request(
    state: LedgerState,
    principal: str,
    action: str,
    resource: str,
    *,
    now: datetime,
    facts: Mapping[str, Any] = _EMPTY,
    context: Mapping[str, Any] = _EMPTY,
    limits: Limits = DEFAULT_LIMITS,
    meter: Meter | None = None,
    work: MatchWork | None = None,
    charge_matching: bool = True,
) -> Authorization:
    """:func:`authorize` for one request: ``(grant or None, budget exceeded, first outcome)``.

    Trying the principal's grants is charged first, whichever applies (:func:`grants_units`),
    to ``work`` (default: a fresh :class:`~ledger.core.globwork.MatchWork` on ``meter``): past
    its budget no grant is tried, and ``over_budget`` and ``matching`` say so. The grant
    conditions tried share that budget of ``limits.evaluation_cost`` units, made only when
    first needed, or ``meter`` when given (the items of a pre-evaluation share one). A
    condition that spends it does not hold; ``over_budget`` then tells the evaluator to answer
    ``error`` / ``evaluation_budget_exceeded`` rather than a plain denial. ``first`` is what
    the first grant tried gave, for :func:`unauthorized_reason` (which would otherwise run it
    again). ``charge_matching`` off: the cost model of decisions made before 2026-12-06, which
    charged only a grant whose own patterns' search passed ``_SEARCH_FREE`` (replay).
    """
    work = MatchWork(meter, limits.evaluation_cost) if work is None else work
    if charge_matching and not work.charge(grants_units(state, principal, action, resource)):
        return Authorization(None, True, matching=True)
    stopped = False  # one of this request's conditions ran out of budget (a shared meter may
    # be spent before this request: only what its own conditions needed counts)
    first: bool | Exception | None = None
    covering = tried = None  # for the denial's reason (unauthorized_reason)
    for grant in effective_grants(state, principal):
        if not charge_matching:
            searched = len(action) * grant.action_re.searched + len(resource) * (
                grant.resource_re.searched
            )
            if searched > _SEARCH_FREE:  # long patterns: matching them is work the budget counts
                spent = work.meter
                spent.left -= searched // _SEARCH_CHARS_PER_UNIT
                if spent.left < 0:
                    return Authorization(None, True, first)
        if not grant.covers(action, resource):
            continue
        covering = covering or grant
        if not grant.in_force(now):
            continue
        compiled = grant.compiled
        metered = compiled is not None and compiled.metered
        outcome = grant._condition(facts, context, work.meter if metered else work.metered)
        if outcome is True:
            return Authorization(grant, False)
        if first is None:
            first, tried = outcome, grant
        stopped = stopped or isinstance(outcome, BudgetExceeded)
    return Authorization(None, stopped, first, covering, tried)


_SEARCH_FREE: Final = 65_536
"""Before 2026-12-06: characters of name times characters of glob that one grant's patterns
were matched for free (each grant on its own: 3,000 grants each under it were all free)."""
_SEARCH_CHARS_PER_UNIT: Final = 256
"""Such characters per unit of the evaluation budget, then (as :func:`match_units` now)."""
_GRANT_UNITS: Final = 4
"""Each grant a request's principal holds, besides matching its patterns: the walk's step, its
two matches' calls and its window (measured ~0.35 µs each over 3,000 ordinary grants)."""


@dataclass(frozen=True, slots=True)
class _Sums:
    """What trying some grants costs, before the names are known (:func:`grants_units`): the
    grants, their globs tried one by one, and the characters of their action and resource
    globs searched."""

    held: int
    tried: int
    on_action: int
    on_resource: int

    def plus(self, other: _Sums) -> _Sums:
        return _Sums(
            self.held + other.held,
            self.tried + other.tried,
            self.on_action + other.on_action,
            self.on_resource + other.on_resource,
        )

    def units(self, action_chars: int, resource_chars: int) -> int:
        """Trying the grants on names of these lengths, in units of the evaluation budget."""
        return (
            self.held * _GRANT_UNITS
            + match_units(self.tried, self.on_action, action_chars)
            + match_units(0, self.on_resource, resource_chars)
        )


def _sums(grants: Iterable[Grant]) -> _Sums:
    held = tried = on_action = on_resource = 0
    for g in grants:
        held += 1
        tried += g.action_re.tried + g.resource_re.tried
        on_action += g.action_re.searched
        on_resource += g.resource_re.searched
    return _Sums(held, tried, on_action, on_resource)


_NONE: Final = _Sums(0, 0, 0, 0)


def _held_sums(state: LedgerState, principal: str) -> _Sums:
    """:func:`_sums` of ``principal``'s grants (:func:`effective_grants`: its own and those of
    every role it holds), remembered per state for a principal that holds any. Added up from
    its own grants and each role's sums, remembered once per role: a grant to a role of 10,000
    members checked each member's whole list of grants, 1.6-16 s of the command processor per
    grant (a review)."""
    key = ("grant units", principal)
    sums = state.memo.get(key)
    if sums is None:
        record = state.principals.get(principal)
        if record is None:  # holds nothing. Names that hold nothing are anyone's to send, and
            return _NONE  # were remembered without end (a review: 62 MB)
        sums = _sums(record.grants.values())
        for role in record.roles:
            if role in state.principals:
                sums = sums.plus(_role_sums(state, role))
        if sums.held:  # a holder: bounded by the state
            state.memo[key] = sums
    return sums


def _role_sums(state: LedgerState, role: str) -> _Sums:
    """:func:`_sums` of the grants ``role`` itself holds, remembered per state."""
    key = ("role grant units", role)
    sums = state.memo.get(key)
    if sums is None:
        sums = state.memo[key] = _sums(state.principals[role].grants.values())
    return sums


def grants_units(state: LedgerState, principal: str, action: str, resource: str) -> int:
    """What trying ``principal``'s grants (:func:`effective_grants`) on ``action`` and
    ``resource`` may cost, in units of the evaluation budget: each grant held, and matching the
    names against all their patterns (:func:`~ledger.core.globs.match_units`). All of them,
    whichever applies first: the charge is the same whatever the order, and holding many grants
    costs each request of their holder (a red team's 3,000 grants of 128 small patterns made
    each of its requests cost 70-147 ms, none of it charged). The sums are remembered per
    state, so the charge costs a request the same with 3 grants or 3,000."""
    return _held_sums(state, principal).units(len(action), len(resource))


def held_units(
    state: LedgerState,
    principal: str,
    *,
    adding: Iterable[Grant] = (),
    limits: Limits = DEFAULT_LIMITS,
) -> int:
    """The most :func:`grants_units` charges a request of ``principal`` (one whose action and
    resource are ``limits.request_name_chars`` long) once it also holds ``adding``: what
    ``limits.principal_grant_units`` bounds."""
    longest = limits.request_name_chars
    return _held_sums(state, principal).plus(_sums(adding)).units(longest, longest)


def holding_problem(
    state: LedgerState,
    principals: Iterable[str],
    adding: tuple[Grant, ...],
    what: str,
    *,
    now: datetime,
    limits: Limits = DEFAULT_LIMITS,
) -> str | None:
    """Why ``what`` (``grant 'g'``, ``assigning role:r``), which gives each of ``principals``
    the grants ``adding``, would take one of them past ``limits.principal_grant_units``, else
    ``None``. Each request of a principal is charged for trying all it holds
    (:func:`grants_units`), so whoever may add grants to it, or to a role it holds, could
    otherwise push its every request over the evaluation budget: a lockout. Ended grants count,
    as the charge counts them, until they are revoked."""
    if not adding:  # nothing added: whoever is past the limit already (a history recorded
        return None  # before it) was not taken there by this (a review: an empty role refused)
    most = limits.principal_grant_units
    over = [p for p in principals if held_units(state, p, adding=adding, limits=limits) > most]
    if not over:
        return None
    first, *more = sorted(over)
    units = held_units(state, first, adding=adding, limits=limits)
    held = effective_grants(state, first)
    own = state.principals.get(first)
    via_roles = len(held) - (len(own.grants) if own is not None else 0)
    ended = sum(1 for g in held if g.valid_until is not None and g.valid_until <= now)
    also = f" (and {len(more)} more holder{'s' * (len(more) > 1)})" if more else ""
    p = clipped(first)
    return (
        f"{what} would make trying {p}'s grants cost each of its requests up to {units:,} "
        f"units{also}, over principal_grant_units ({most:,}): {p} holds {len(held):,} grants "
        f"({via_roles:,} through roles, {ended:,} ended) and would gain {len(adding):,}; revoke "
        f"its ended or unneeded grants (ledger grant list --principal {p}), merge patterns into "
        "fewer and shorter ones, or give it fewer"
    )


def authorize(
    state: LedgerState,
    principal: str,
    action: str,
    resource: str,
    *,
    now: datetime,
    facts: Mapping[str, Any] = _EMPTY,
    context: Mapping[str, Any] = _EMPTY,
) -> Grant | None:
    """The grant (lowest id) that lets ``principal`` do ``action`` on ``resource`` now, or None.

    Grant conditions are bounded as in :func:`authorize_request`; one that spends the budget
    does not hold (fail closed). Trying the grants is charged as it was when the governance
    history was written and checked (``charge_matching`` off): commands, and the verification
    of signed ones, must answer what they answered then.
    """
    return authorize_request(
        state,
        principal,
        action,
        resource,
        now=now,
        facts=facts,
        context=context,
        charge_matching=False,
    )[0]


def unauthorized_reason(
    state: LedgerState,
    principal: str,
    action: str,
    resource: str,
    *,
    now: datetime,
    facts: Mapping[str, Any] = _EMPTY,
    context: Mapping[str, Any] = _EMPTY,
    found: Authorization | None = None,
) -> str:
    """Why :func:`authorize` found no grant, naming the closest grant when there is one.

    Only computed on the deny path. ``found`` is what :func:`authorize_request` found for this
    request: given, neither the grants' patterns are matched nor the first one's condition run
    again (a second run, uncounted, would double a denial's work).
    """
    if found is None:
        covering = [g for g in effective_grants(state, principal) if g.covers(action, resource)]
        in_force = next((g for g in covering if g.in_force(now)), None)
        found = Authorization(None, False, None, covering[0] if covering else None, in_force)
    g = found.covering
    if g is None:
        return f"{principal} holds no grant for {action} on {resource}"
    first = found.tried_grant
    if first is None:
        window = f"valid from {_when(g.valid_from)} until {_when(g.valid_until)}"
        return f"{principal}'s grant {g.grant_id} for {action} on {resource} is not in force now ({window})"
    tried = found.first
    fault = first.fault_of(tried) if tried is not None else first.condition_fault(facts, context)
    return fault or f"{principal}'s grant {first.grant_id} applies now"  # not reached on a denial


TAKEOVER_ACTION: Final = "ledger.policy.promote"
"""What an actor must hold on another policy to deploy a version that takes over actions it
decides (:func:`takeover_problem`): what deploying that policy's own versions takes."""


def takeover_problem(
    state: LedgerState,
    actor: str,
    deploying: str,
    taken: Mapping[str, tuple[str, str]],
    complete: bool,
    *,
    now: datetime,
) -> str | None:
    """Why ``actor`` may not deploy ``deploying`` (a version of a policy, ``refund v3``) that
    takes over the actions of the policies in ``taken`` (other policy → (its pattern, ours):
    :func:`~ledger.core.governing.takeovers`), or None. Authority over one policy must not decide
    another's actions (a policy owner's walkthrough: a grant on ``policy:a-evil`` alone let a
    version governing ``payments.refund`` by its exact name decide what ``payrefund`` decided),
    so it takes :data:`TAKEOVER_ACTION` on each policy taken over too. Administrators are not
    asked (the caller checks)."""
    for other, (theirs, mine) in sorted(taken.items()):
        if authorize(state, actor, TAKEOVER_ACTION, f"policy:{other}", now=now) is None:
            shared = (  # the name, where one of the two is (a policy owner's walkthrough:
                "what both match"  # `report.*` was named for the `report.export` taken)
                if is_pattern(theirs) and is_pattern(mine)
                else theirs
                if not is_pattern(theirs)
                else mine
            )
            return (
                f"{deploying} would decide {shared}, which policy {other} decides now "
                f"({mine} ~ {other}'s {theirs}: an exact name decides before a glob, then the "
                f"longer glob, then the lower policy name): taking actions over from another "
                f"policy also takes {TAKEOVER_ACTION} on policy:{other}, held by who deploys "
                f"{other} (an administrator issues it), or an administrator deploys it; or "
                f"leave {mine} out of governs"
            )
    if not complete:
        return (
            f"could not check in time which other policies' actions {deploying} would take "
            "over (too many governs patterns to compare): an administrator deploys it"
        )
    return None


def _when(t: datetime | None) -> str:
    return t.isoformat() if t is not None else "always"


def capabilities(state: LedgerState, principal: str, *, now: datetime) -> tuple[Grant, ...]:
    """Every grant in force for ``principal`` at ``now`` (own and via roles), by grant id."""
    return tuple(g for g in effective_grants(state, principal) if g.in_force(now))


def pattern_covers(wide: str, narrow: str) -> bool:
    """Does every name the glob ``narrow`` matches also match the glob ``wide``? For a name,
    exactly; for two globs a sound test that may say no of a glob that does cover (``a?`` of
    ``a[bc]``): they are equal, or ``wide`` holds no ``?`` or ``[`` and matches the text of
    ``narrow`` with its ``?`` and classes made ``*`` (each ``*`` then lies inside a ``*`` of
    ``wide``, which takes any expansion of it)."""
    return _covers(wide, narrow, _as_stars(narrow) if is_pattern(narrow) else None)


def _covers(wide: str, narrow: str, widened: str | None, work: GlobWork | None = None) -> bool:
    """:func:`pattern_covers`, given ``widened``: :func:`_as_stars` of ``narrow`` when it is a
    glob (worked out once per pattern by a caller comparing it with many), else ``None``. The
    match is charged to ``work`` when given; past its budget the answer is false (not proven),
    and the caller sees ``work.spent``."""
    if wide == narrow:
        return True
    if not narrow.startswith(fixed_start(wide)):
        return False  # what wide matches begins with it, and so does each glob it covers
    if widened is not None and ("?" in wide or "[" in wide or "?" in widened or "[" in widened):
        return False
    text = narrow if widened is None else widened  # widened covers at least what narrow does
    return (work is None or work.match(wide, text)) and glob_matches(wide, text)


def _as_stars(glob: str) -> str:
    """``glob`` with each ``?`` and each complete ``[…]`` class made a ``*`` (``refund.?`` →
    ``refund.*``, ``account:[0-9]*`` → ``account:**``): a glob matching every name ``glob``
    does, for :func:`pattern_covers`. A ``[`` without its ``]`` is a literal, as
    :func:`fnmatch.translate` reads it, and stays. Linear: a ``[`` past the last ``]`` is known
    unclosed without a scan (scanning to the end from each took 56 ms on 1,022 of them)."""
    out: list[str] = []
    last = glob.rfind("]")
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        i += 1
        if c == "?":
            out.append("*")
        elif c == "[":
            j = i
            if j < n and glob[j] == "!":
                j += 1
            if j < n and glob[j] == "]":
                j += 1
            if j > last:
                out.append(c)  # no closing ]: a literal [
            else:
                out.append("*")
                i = glob.index("]", j) + 1
        else:
            out.append(c)
    return "".join(out)


def first_not_held(
    state: LedgerState, issuer: str, grants: Iterable[Grant], *, now: datetime
) -> tuple[str | NotChecked, Grant] | None:
    """The first of ``grants`` (one not ended at ``now``) with an action ``issuer`` may not hand
    on (:func:`not_held`), and that action (or :data:`NOT_CHECKED`); ``None`` when ``issuer``
    holds them all. For what hands on several grants at once: assigning a role hands on the
    role's, all checked within one budget."""
    work = GlobWork(_DELEGATION_WORK)
    for grant in grants:
        if grant.valid_until is not None and grant.valid_until <= now:
            continue  # ended: it gives nothing
        beyond = not_held(
            state,
            issuer,
            grant.actions,
            grant.resource,
            condition=grant.condition,
            valid_until=grant.valid_until,
            now=now,
            work=work,
        )
        if beyond is not None:
            return beyond, grant
    return None


def _same_condition(held: Grant, given: str | None, form: str | None) -> bool:
    """Does the held grant's condition mean the same as ``given`` (whose form is ``form``), as
    far as their form shows? Equal text, or the same form whatever the layout (``urgent==true``
    and ``(urgent == true)``): sound, and blind to deeper equivalences. Not the order of
    ``&&``'s operands: when the evaluation budget runs out part-way, which side is evaluated
    first can change the outcome. The held form was worked out when the grant was compiled,
    once: a process-wide cache of forms missed every time past 1,024 held conditions, and each
    grant command parsed them all again (10.9 s, a red team)."""
    if given is None:
        return False
    if held.condition == given:
        return True
    mine = held.compiled.form if held.compiled is not None else None
    return mine is not None and mine == form


def _condition_form(text: str | None) -> str | None:
    """The form of a condition handed on, or ``None`` (no condition, or not one that compiles:
    only equal text is the same). Compiled once per command (:func:`compile_grant_condition`
    caches it, and a grant command has just compiled it to validate it)."""
    if not text:
        return None
    try:
        return compile_grant_condition(text).form
    except PolicyError:
        return None


def key_registrar(
    state: LedgerState, actor: str, key_id: str | None, admins: frozenset[str]
) -> str | None:
    """Who registered the key ``key_id`` that signed ``actor``'s command, when it was a delegate
    (not ``actor`` itself, an administrator, the command processor recording a trust anchor, or
    a principal with a trust anchor: an administrator then, whose registrations keep their
    power once it is no longer configured); else ``None``. A key a delegate registered acts no further than the delegate may, and is the
    delegate's for the rule that nobody approves their own version: whoever registers a key may
    hold its private half, and grants the principal gains later must not reach them."""
    record = state.principals.get(actor) if key_id is not None else None
    key = record.key(key_id) if record is not None else None
    # A key the principal registered itself is as good as the key that signed that
    # registration: one registered, before delegates were refused it, with a key a delegate
    # registered stays the delegate's (a review: else that second key approved the delegate's
    # own version). ActorKey.origin follows that chain as the keys are folded.
    origin = key.origin if key is not None else None
    if origin is None or origin in (actor, COMMAND_PROCESSOR) or origin in admins:
        return None
    registrar = state.principals.get(origin)
    if registrar is not None and any(
        k.registered_by == COMMAND_PROCESSOR and k.registered_with is None for k in registrar.keys
    ):  # a bootstrap administrator's (a trust anchor), if no longer configured; not a key the
        # processor's principal "registered" with a command key (a review: planted, it freed
        # agent:low's registrations from their bound)
        return None
    return origin


def replace_key(principal: str) -> str:
    """How ``principal``'s key that a delegate registered is replaced by one that is its own
    (registering the same key again is refused: it is already registered, with its limits)."""
    p = clipped(principal)
    return (
        f"{p} makes a new pair (`ledger actor keygen {p}`), an administrator registers it "
        f"(`ledger actor add {p} --public-key FILE --by ADMIN`) and revokes the old one "
        f"(`ledger actor revoke {p} --key ID --by ADMIN`)"
    )


def key_delegation_problem(
    state: LedgerState,
    actor: str,
    principal: str,
    *,
    registering: bool,
    now: datetime,
    admins: frozenset[str],
    protected: frozenset[str] | None = None,
    signed_with: str | None = None,
) -> str | None:
    """Why ``actor``, holding ``ledger.key.register`` (or ``.revoke``) on ``principal``, may
    still not register (revoke) a key of it, signing with its key ``signed_with``; ``None``
    when it may.

    Registering a key for another principal is an administrator's act, never a delegate's:
    whoever registers a key may hold its private half and act as the principal with every
    grant it holds or gains later, sign its approvals, and register further keys in its name
    (red teams found each of those ways to approve one's own version, or to hand on more than
    one holds, through a delegate's key). A principal registers more keys of its own with the
    grant on itself. The keys of the command processor's principal are its trust anchors'
    business only, and an administrator's keys are revoked by administrators alone (else
    ``ledger.key.revoke`` on ``principal:human:*`` locked them out). ``protected``: whose keys
    only administrators revoke, when not ``admins`` (``actor verify``: the configured ones, not
    a former administrator whose trust anchor stays in the history)."""
    if registering and principal == COMMAND_PROCESSOR:
        return (
            f"{COMMAND_PROCESSOR} is the command processor's own principal: its keys are the "
            "trust anchors it records itself, never registered by a command"
        )
    if actor in admins:  # whatever key it signs with, as everywhere else (a review)
        return None
    if registering and key_registrar(state, actor, signed_with, admins) is not None:
        return (
            f"{clipped(actor)} signed with a key a delegate registered, which registers no "
            "further keys (else the delegate's key would pass for the principal's own): "
            + replace_key(actor)
        )
    if actor == principal:  # its own keys: nothing handed on
        return None
    if registering:
        return (
            f"{clipped(actor)} may not register a key for {clipped(principal)}: only an "
            "administrator registers a key for another principal (whoever registers one may "
            f"hold its private half and act as {clipped(principal)}); {clipped(principal)} "
            "makes its pair and an administrator registers the public half"
        )
    if principal in (admins if protected is None else protected):
        return (
            f"{clipped(actor)} may not revoke a key of the administrator {clipped(principal)}: "
            "only an administrator does"
        )
    return None


def not_held(
    state: LedgerState,
    issuer: str,
    actions: tuple[str, ...],
    resource: str,
    *,
    condition: str | None,
    valid_until: datetime | None,
    now: datetime,
    work: GlobWork | None = None,
) -> str | NotChecked | None:
    """The first of ``actions`` on ``resource`` that ``issuer`` may not hand on, or ``None``;
    :data:`NOT_CHECKED` when comparing patterns went past ``work`` (default: a fresh budget of
    :data:`_DELEGATION_WORK`) before that was known.

    Nobody but an administrator hands on more than they hold (Kubernetes RBAC's rule against
    escalation): each action must be covered, with the resource, by one of the issuer's own
    grants in force now (held directly or through a role) that has no condition or the same
    one, and that ends no earlier than what is handed on. Otherwise a delegate trusted with one
    principal's grants could give it, and through it themselves, anything — ``ledger.*``
    included, and the approval of their own policy versions."""
    work = GlobWork(_DELEGATION_WORK) if work is None else work
    wides = _held_actions(
        state, issuer, resource, condition=condition, valid_until=valid_until, now=now, work=work
    )
    for action in actions:
        widened = _as_stars(action) if is_pattern(action) else None  # once, not per held pattern
        if not _covered(action, widened, wides, work):
            return NOT_CHECKED if work.spent else action
    return None  # each action proven covered (a grant the budget cut off was not needed)


def unproven_cover(
    state: LedgerState,
    issuer: str,
    action: str,
    resource: str,
    *,
    condition: str | None,
    valid_until: datetime | None,
    now: datetime,
) -> str | None:
    """Of the issuer's action patterns that would do for ``resource`` (:func:`not_held`), one
    holding ``?`` or ``[…]`` that may cover the glob ``action`` (its fixed start begins it),
    though :func:`pattern_covers` cannot prove it; else ``None``. Only for the refusal's words:
    not proven is not escalation, and what is handed on is refused all the same."""
    if not is_pattern(action):
        return None  # a name is matched exactly: not held is not held
    wides = _held_actions(
        state, issuer, resource, condition=condition, valid_until=valid_until, now=now,
        work=GlobWork(_DELEGATION_WORK),
    )  # fmt: skip
    return next(
        (w for w in wides if ("?" in w or "[" in w) and action.startswith(fixed_start(w))), None
    )


def _held_actions(
    state: LedgerState,
    issuer: str,
    resource: str,
    *,
    condition: str | None,
    valid_until: datetime | None,
    now: datetime,
    work: GlobWork,
) -> tuple[str, ...]:
    """The action patterns of the issuer's grants that could cover what is handed on with
    ``resource``: in force now, no condition or the same one, ending no earlier, and covering
    the resource (:func:`not_held`'s rule), each once."""
    widened = _as_stars(resource) if is_pattern(resource) else None
    form = _condition_form(condition)  # once, not per held grant
    named, patterned = _holdings(state, issuer)
    held = [
        g
        for g in (*named.get(resource, ()), *patterned)
        if g.in_force(now)
        and (g.condition is None or _same_condition(g, condition, form))
        and (g.valid_until is None or (valid_until is not None and valid_until <= g.valid_until))
        and work.pairs(1)
        and _covers(g.resource, resource, widened, work)
    ]
    return tuple(dict.fromkeys(wide for g in held for wide in g.actions))


class RoleReach(NamedTuple):
    """:func:`role_reach_problem`'s answer: what is wrong (``why``) and what to do (``fix``)."""

    why: str
    fix: str


def role_reach_problem(
    state: LedgerState,
    grant_id: str,
    role: str,
    members: Mapping[str, str],
    actions: tuple[str, ...],
    resource: str,
    *,
    condition: str | None,
    valid_until: datetime | None,
    now: datetime,
    admins: frozenset[str],
) -> RoleReach | None:
    """Why a grant ``grant_id`` of ``actions`` on ``resource`` may not be issued to ``role``,
    whose ``members`` were each assigned by the principal it maps them to
    (:func:`~ledger.core.state.role_members`), whoever issues it; ``None`` when it may.

    A role's members hold every grant the role gains later. A delegate assigning a role is
    checked against the role's grants *then* (:func:`first_not_held`), so one who assigned
    itself an empty role would otherwise gain whatever an administrator later issues to it,
    without the administrator seeing whom it reaches (a red team's release managers). So each
    member a non-administrator assigned (:attr:`~ledger.core.state.PrincipalRecord.role_assigned_by`)
    must be one its assigner could hand the new grant to (:func:`not_held`); members an
    administrator assigned are never checked. Assigners are checked once each, all within one
    budget."""
    chosen: dict[str, list[str]] = {}  # a delegate -> the members it assigned
    for member, by in members.items():
        if by not in admins:
            chosen.setdefault(by, []).append(member)
    work = GlobWork(_DELEGATION_WORK)
    for assigner in sorted(chosen):
        beyond = not_held(
            state,
            assigner,
            actions,
            resource,
            condition=condition,
            valid_until=valid_until,
            now=now,
            work=work,
        )
        if beyond is None:
            continue
        member, *more = sorted(chosen[assigner])
        by, to = clipped(assigner), clipped(member)
        lacks = (
            f"whether {by} holds it could not be checked within the delegation check's budget "
            "(too many or too long patterns)"
            if isinstance(beyond, NotChecked)
            else f"{by} does not hold {clipped(beyond)!r} on {clipped(resource)!r}"
        )
        also = (
            f" (and {len(more)} more member{'s' * (len(more) > 1)} {by} assigned)" if more else ""
        )
        return RoleReach(
            why=(
                f"grant {clipped(grant_id)!r} to {clipped(role)} would reach {to}{also}, whom "
                f"{by} (not an administrator) assigned to it, and {lacks}"
            ),
            fix=(
                f"revoke that membership (ledger role revoke {to} {clipped(role)} --by ADMIN) "
                "and assign it again as an administrator, or issue the grant to another role"
            ),
        )
    return None


def _holdings(
    state: LedgerState, issuer: str
) -> tuple[Mapping[str, tuple[Grant, ...]], tuple[Grant, ...]]:
    """The issuer's grants (:func:`effective_grants`) by resource: those on one named resource,
    which cover that resource only, and those on a resource pattern. Remembered per state: a
    role assignment checks each of the role's grants against them (a reviewer's delegate
    holding 801 grants, assigning a role of 800, compared every pair and ran out of budget)."""
    key = ("holdings", issuer)
    cached = state.memo.get(key)
    if cached is None:
        named: dict[str, list[Grant]] = {}
        patterned: list[Grant] = []
        for g in effective_grants(state, issuer):
            if is_pattern(g.resource):
                patterned.append(g)
            else:
                named.setdefault(g.resource, []).append(g)
        cached = state.memo[key] = ({k: tuple(v) for k, v in named.items()}, tuple(patterned))
    return cached


def _covered(action: str, widened: str | None, wides: tuple[str, ...], work: GlobWork) -> bool:
    """Does one of the held patterns ``wides`` cover ``action`` (:func:`_covers`)? False also
    when ``work`` ran out first."""
    if not work.pairs(len(wides)):
        return False
    for wide in wides:
        if _covers(wide, action, widened, work):
            return True
        if work.spent:
            return False
    return False


_DELEGATION_WORK: Final = 300_000_000
"""What one delegation check may spend comparing the patterns handed on with those held
(:class:`~ledger.core.globwork.GlobWork`, ~0.3 s of the single command processor): a red team's
grant of long names, checked against 255 crafted held globs, took 38 s. Ordinary grants (a few
hundred short patterns) use a few percent of it. Past it nothing is proven, so the command is
refused (:class:`NotChecked`), never accepted."""


@dataclass(frozen=True, slots=True)
class NotChecked:
    """:func:`not_held`'s answer when comparing patterns went past its budget before every
    action was found covered: not proven, so what was to be handed on is refused."""

    why: str = (
        "could not be checked against the issuer's own grants within the delegation check's "
        "budget (too many or too long patterns)"
    )


NOT_CHECKED: Final = NotChecked()


def _hint(fault: Exception) -> str:
    """What to send instead, for a grant condition's type mismatch: numbers, not text; one
    kind of number where a Decimal met a float (a README check: an agent that sent money as
    Decimal, as the README says, was told to send Decimal); nothing for another fault."""
    _, found, overload = str(fault).partition("no such overload: ")
    types = set(overload.split()[::2]) if found else set()
    if "string" in types:
        return " (send numbers as numbers or Decimal, not strings)"
    if {"decimal", "double"} <= types:
        return " (a Decimal and a float do not combine in arithmetic: send both as Decimal)"
    return ""
