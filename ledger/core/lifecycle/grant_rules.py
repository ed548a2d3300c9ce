"""The rules of the commands on a principal: grants, roles and actor keys.

Lives here: one function per command (``_issue``, ``_revoke`` for grants, ``_role`` for assigning
and revoking a role, ``_register_key``, ``_revoke_key``), each returning the events to append
(on ``ledger.grant-events``) or a :class:`.Rejection`, and ``_find_grant`` (the principal holding
a grant id). They are private: :func:`ledger.core.lifecycle.decide` (:mod:`.rules`) is the way in.
A grant id is never issued again, not even once its grant is revoked
(:func:`~ledger.core.state.grant_id_use`): decisions and audits name grants by it.

May import: the core's modules outside this package and, of this package, :mod:`.rejections`
and :mod:`.commands`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Final

from ledger.core.authority import (
    PRINCIPAL_FORM,
    NotChecked,
    admit_grant_condition,
    effective_grants,
    first_not_held,
    grant_from_event,
    holding_problem,
    key_delegation_problem,
    key_registrar,
    not_held,
    replace_key,
    role_reach_problem,
    unproven_cover,
    valid_principal,
)
from ledger.core.ed25519 import weak_key
from ledger.core.events import (
    ActorKeyRegistered,
    ActorKeyRevoked,
    AssignRole,
    GovernanceEvent,
    GrantIssued,
    GrantRevoked,
    IssueGrant,
    RegisterActorKey,
    RevokeActorKey,
    RevokeGrant,
    RevokeRole,
    RoleAssigned,
    RoleRevoked,
)
from ledger.core.globs import GlobPlace, glob_problems
from ledger.core.jsonform import format_timestamp
from ledger.core.lifecycle.commands import _allowed
from ledger.core.lifecycle.rejections import Rejection, _reject, _shown, clipped
from ledger.core.limits import Limits
from ledger.core.signing import PUBLIC_KEY_BYTES, key_id_of
from ledger.core.state import (
    ActorKey,
    LedgerState,
    PrincipalRecord,
    actor_key,
    grant_id_use,
    key_owner,
    role_members,
)
from ledger.errors import PolicyError

__all__: list[str] = []  # reached through decide (.rules)


def _find_grant(state: LedgerState, grant_id: str) -> PrincipalRecord | None:
    # Linear in the number of principals; commands are rare next to evaluations.
    for record in state.principals.values():
        if grant_id in record.grants:
            return record
    return None


def _issue(
    state: LedgerState,
    c: IssueGrant,
    now: datetime,
    new_id: Callable[[], str],
    admins: frozenset[str],
    limits: Limits,
) -> tuple[GovernanceEvent, ...] | Rejection:
    if not valid_principal(c.principal):
        return _reject(
            "invalid_principal",
            f"{_shown(c.principal)} is not a principal: use {PRINCIPAL_FORM}",
        )
    # Authorization (it reads the principal only) before anything else the sender supplied is
    # compiled or looked up: the condition, the grant id.
    denied = _allowed(state, c, now, admins)
    if denied:
        return denied
    if not c.grant_id or not c.grant_id.strip():
        return _reject("invalid_grant", "a grant needs a grant_id")
    if not c.actions or not all(isinstance(a, str) and a.strip() for a in c.actions):
        return _reject("invalid_grant", "a grant needs at least one action")
    listed = next((a for a in c.actions if "," in a or a != a.strip()), None)
    if listed is not None:
        # No action a policy governs holds either: a pattern that does is a list sent as one.
        return _reject(
            "invalid_grant",
            f"action pattern {_shown(listed)} holds a comma or surrounding spaces: give each "
            "pattern on its own (the CLI's --actions 'a,b' splits them)",
        )
    if not c.resource or not c.resource.strip():
        return _reject("invalid_grant", "a grant needs a resource pattern")
    if c.valid_from is not None and c.valid_until is not None and c.valid_from >= c.valid_until:
        return _reject("invalid_grant", "valid_from must be before valid_until")
    if c.valid_until is not None and c.valid_until <= now:
        return _reject(
            "invalid_grant",
            f"valid_until {c.valid_until.isoformat()} is past: the grant would give nothing; "
            "give a time to come (--until), or none for a grant until revoked",
        )
    if len(c.actions) > limits.grant_actions:
        return _reject(
            "invalid_grant",
            f"{len(c.actions):,} action patterns; at most {limits.grant_actions} (grant_actions)",
        )
    longest = limits.request_name_chars
    if len(c.resource) > longest or any(len(a) > longest for a in c.actions):
        return _reject(
            "invalid_grant",
            f"an action or resource pattern is longer than {longest:,} characters "
            "(request_name_chars)",
        )
    unfit = _unfit_patterns(c, limits)
    if unfit is not None:
        return _reject("invalid_grant", unfit)
    if c.condition:
        try:
            admit_grant_condition(c.condition)
        except PolicyError as exc:
            return _reject("invalid_condition", "; ".join(str(p) for p in exc.problems))
    used = grant_id_use(state, c.grant_id)
    if used is not None:
        _, revoked_at = used  # whose it is, only an actor who may revoke it is told (_revoke)
        was = "exists" if revoked_at is None else f"was revoked at {format_timestamp(revoked_at)}"
        return _reject(
            "duplicate_grant",
            f"grant {_shown(c.grant_id)} {was}; grant ids are never reused: issue it under a "
            "new id",
        )
    if c.actor not in admins:
        beyond = not_held(
            state,
            c.actor,
            tuple(c.actions),
            c.resource,
            condition=c.condition or None,
            valid_until=c.valid_until,
            now=now,
        )
        if isinstance(beyond, NotChecked):
            return _reject(
                "not_authorized",
                f"grant {_shown(c.grant_id)} {beyond.why}: split it into grants of fewer or "
                "shorter patterns, or ask an administrator",
            )
        if beyond is not None and (unproven := _unproven(state, c, beyond, now)) is not None:
            return unproven  # maybe held, but not provably: not the escalation refused below
        if beyond is not None:
            return _beyond_own(c.actor, f"{_shown(beyond)} on {_shown(c.resource)}")
    members = role_members(state, c.principal) if c.principal.startswith("role:") else {}
    if c.principal.startswith("role:"):  # whoever issues it: it reaches the role's members
        reach = role_reach_problem(
            state, c.grant_id, c.principal, members, tuple(c.actions),
            c.resource,
            condition=c.condition or None, valid_until=c.valid_until, now=now, admins=admins,
        )  # fmt: skip
        if reach is not None:
            return _reject("not_authorized", f"{reach.why}: {reach.fix}")
    record = state.principals.get(c.principal) or PrincipalRecord(principal=c.principal)
    issued = GrantIssued(
        event_id="",  # minted once accepted (below)
        occurred_at=now,
        actor=c.actor,
        command_id=c.event_id,
        principal=c.principal,
        sequence=record.sequence + 1,
        grant_id=c.grant_id,
        actions=tuple(c.actions),
        resource=c.resource,
        condition=c.condition or None,
        valid_from=c.valid_from,
        valid_until=c.valid_until,
        approved_by=c.approved_by,
        note=c.note,
    )
    # Every holder's requests are charged for trying it: the principal's, and a role's members'.
    costly = holding_problem(
        state, (c.principal, *members), (grant_from_event(issued),),
        f"grant {_shown(c.grant_id)}", now=now, limits=limits,
    )  # fmt: skip
    if costly is not None:
        return _reject("grants_too_costly", costly)
    return (replace(issued, event_id=new_id()),)


_UNFIT_NAMED: Final = 5
"""The unfit patterns of a grant named in its refusal at most; the rest are counted."""


def _unfit_patterns(c: IssueGrant, limits: Limits) -> str | None:
    """Every pattern of the grant that may not be written, each with all its problems
    (:func:`glob_problems`), or ``None``: one round trip of a signed command fixes them all.
    At most :data:`_UNFIT_NAMED` are named, the rest counted, within a rejection's bound."""
    places: list[tuple[GlobPlace, str]] = [("grant action", a) for a in c.actions]
    places.append(("grant resource", c.resource))
    unfit = []
    for place, pattern in places:
        problems = glob_problems(
            pattern,
            place=place,
            most_wildcards=limits.glob_wildcards,
            longest_glob=limits.glob_chars,
            longest_class_glob=limits.glob_class_chars,
        )
        if problems:
            unfit.append(f"{_shown(pattern, 60)}: {'; '.join(problems)}")
    if not unfit:
        return None
    more = len(unfit) - _UNFIT_NAMED
    return " | ".join(unfit[:_UNFIT_NAMED]) + (f" | and {more} more" if more > 0 else "")


def _unproven(state: LedgerState, c: IssueGrant, beyond: str, now: datetime) -> Rejection | None:
    """The refusal of handing on ``beyond`` when a held glob with ``?`` or ``[…]`` may cover it
    but cannot be proven to (:func:`~ledger.core.authority.unproven_cover`), else ``None``."""
    held = unproven_cover(
        state, c.actor, beyond, c.resource, condition=c.condition or None,
        valid_until=c.valid_until, now=now,
    )  # fmt: skip
    if held is None:
        return None
    return _reject(
        "not_authorized",
        f"{clipped(c.actor)} may not hand on {_shown(beyond)} on {_shown(c.resource)}: it could "
        f"not be proven covered by their {_shown(held, 80)} (a glob with ? or [...] covers only "
        "names and itself): hand on exact names, or ask an administrator",
    )


def _beyond_own(actor: str, what: str) -> Rejection:
    return _reject(
        "not_authorized",
        f"{clipped(actor)} may not hand on {what}: only an administrator grants more than they "
        "hold; a delegate hands on what its own grants in force cover (no condition or the "
        "same, ending no earlier): ask an administrator",
    )


def _revoke(
    state: LedgerState,
    c: RevokeGrant,
    now: datetime,
    new_id: Callable[[], str],
    admins: frozenset[str],
) -> tuple[GovernanceEvent, ...] | Rejection:
    record = _find_grant(state, c.grant_id)
    # Authorized on the grant's principal; for a grant id that names none, on no principal
    # (only authority over every principal passes), so that whether an id exists is told
    # only to an actor who could have revoked it.
    denied = _allowed(
        state, c, now, admins, grant_principal=record.principal if record is not None else None
    )
    if denied:  # one message whether or not the id exists, naming no principal
        return _reject(
            "not_authorized",
            f"{clipped(c.actor)} may not revoke grant {_shown(c.grant_id)}: revoking takes "
            "ledger.grant.revoke on the grant's principal (principal:<p>), which an "
            "administrator issues",
        )
    if record is None:
        return _reject("unknown_grant", f"no grant {_shown(c.grant_id)} (never issued, or revoked)")
    return (
        GrantRevoked(
            event_id=new_id(),
            occurred_at=now,
            actor=c.actor,
            command_id=c.event_id,
            principal=record.principal,
            sequence=record.sequence + 1,
            grant_id=c.grant_id,
            reason=c.reason,
        ),
    )


def _role(
    state: LedgerState,
    c: AssignRole | RevokeRole,
    now: datetime,
    new_id: Callable[[], str],
    admins: frozenset[str],
    limits: Limits,
) -> tuple[GovernanceEvent, ...] | Rejection:
    held = state.principals.get(c.principal)
    # A membership the ledger holds may always be revoked, whatever its form: one an earlier
    # release accepted ("agent:x\n", before the form held for the whole text) still authorizes,
    # and refusing its revocation left it in force for good (a review).
    recorded = isinstance(c, RevokeRole) and held is not None and c.role in held.roles
    if not recorded and (not valid_principal(c.principal) or c.principal.startswith("role:")):
        return _reject(
            "invalid_principal", f"{_shown(c.principal)} is not a non-role kind:name principal"
        )
    if not recorded and (not valid_principal(c.role) or not c.role.startswith("role:")):
        return _reject("invalid_role", f"{_shown(c.role)} is not role:<name>")
    record = held or PrincipalRecord(principal=c.principal)
    if isinstance(c, AssignRole) and c.role in record.roles:
        return _reject("already_applied", f"{c.principal} already holds {c.role}")
    if isinstance(c, RevokeRole) and c.role not in record.roles:
        return _reject("not_member", f"{c.principal} does not hold {c.role}")
    denied = _allowed(state, c, now, admins)
    if denied:
        return denied
    if isinstance(c, AssignRole) and c.actor not in admins:
        # A role's members hold its grants: assigning it hands them on.
        unheld = first_not_held(state, c.actor, effective_grants(state, c.role), now=now)
        if unheld is not None:
            beyond, grant = unheld
            if isinstance(beyond, NotChecked):
                return _reject(
                    "not_authorized",
                    f"assigning {_shown(c.role)}: its grants {beyond.why}: ask an administrator",
                )
            return _beyond_own(
                c.actor,
                f"{_shown(beyond)} on {_shown(grant.resource)} "
                f"(grant {_shown(grant.grant_id)} of {c.role})",
            )
    if isinstance(c, AssignRole):  # its requests are charged for trying the role's grants too
        costly = holding_problem(
            state, (c.principal,), effective_grants(state, c.role), f"assigning {c.role}",
            now=now, limits=limits,
        )  # fmt: skip
        if costly is not None:
            return _reject("grants_too_costly", costly)
    event_type = RoleAssigned if isinstance(c, AssignRole) else RoleRevoked
    return (
        event_type(
            event_id=new_id(),
            occurred_at=now,
            actor=c.actor,
            command_id=c.event_id,
            principal=c.principal,
            sequence=record.sequence + 1,
            role=c.role,
        ),
    )


def _register_key(
    state: LedgerState,
    c: RegisterActorKey,
    now: datetime,
    new_id: Callable[[], str],
    admins: frozenset[str],
) -> tuple[GovernanceEvent, ...] | Rejection:
    if not valid_principal(c.principal) or c.principal.startswith("role:"):
        return _reject(
            "invalid_principal", f"{_shown(c.principal)} is not a non-role kind:name principal"
        )
    # Authorization (it reads the principal only) before the key is looked up: whose key it
    # already is is told only to an actor who may register keys of this principal. A key for
    # another principal is an administrator's to register, grant or none: said first (a README
    # check: told to get a grant, then refused with one).
    denied = _key_of_other(state, c, now, admins) or _allowed(state, c, now, admins)
    if denied:
        return denied
    public_key = bytes(c.public_key)
    if len(public_key) != PUBLIC_KEY_BYTES:
        return _reject(
            "invalid_key", f"an Ed25519 public key has 32 bytes, this one {len(public_key)}"
        )
    weak = weak_key(public_key)
    if weak is not None:  # a red team registered the identity point, then signed as its owner
        return _reject(
            "invalid_key",
            f"this key cannot be used: {weak}; make the key with `ledger actor keygen`",
        )
    if c.actor_key_id != key_id_of(public_key):
        return _reject(
            "invalid_key",
            f"the key id {_shown(c.actor_key_id, 80)} is not the id of that key "
            f"({key_id_of(public_key)})",
        )
    owner = key_owner(state, c.actor_key_id)
    if owner is not None:
        key = actor_key(state, owner, c.actor_key_id)
        if owner == c.principal and key is not None and key.active:
            by = key.registered_by
            limited = by not in (owner, c.actor) and key_registrar(state, owner, key.key_id, admins)
            return _reject(
                "already_applied",
                f"{c.actor_key_id} is already a key of {owner}"
                + (
                    f", registered by {by}, whose limits it keeps: to replace it, "
                    + replace_key(owner)
                    if limited
                    else ""
                ),
            )
        return _reject(
            "invalid_key",
            f"{c.actor_key_id} was registered to {owner} before"
            + (
                " and revoked: a revoked key is never registered again"
                if key and not key.active
                else ""
            ),
        )
    record = state.principals.get(c.principal) or PrincipalRecord(principal=c.principal)
    return (
        ActorKeyRegistered(
            event_id=new_id(),
            occurred_at=now,
            actor=c.actor,
            command_id=c.event_id,
            principal=c.principal,
            sequence=record.sequence + 1,
            actor_key_id=c.actor_key_id,
            public_key=public_key,
            note=c.note,
        ),
    )


def _key_of_other(
    state: LedgerState,
    c: RegisterActorKey | RevokeActorKey,
    now: datetime,
    admins: frozenset[str],
) -> Rejection | None:
    """Why a delegate may not register or revoke this key (:func:`key_delegation_problem`)."""
    problem = key_delegation_problem(
        state, c.actor, c.principal, registering=isinstance(c, RegisterActorKey), now=now,
        admins=admins, signed_with=c.key_id,
    )  # fmt: skip
    return None if problem is None else _reject("not_authorized", problem)


def _revoke_key(
    state: LedgerState,
    c: RevokeActorKey,
    now: datetime,
    new_id: Callable[[], str],
    admins: frozenset[str],
) -> tuple[GovernanceEvent, ...] | Rejection:
    if not c.reason or not c.reason.strip():
        return _reject("missing_reason", "revoking a key needs a reason")
    # Authorization first, the rule that decides before the missing grant (as for a
    # registration), and whose keys exist is told only to an actor who may revoke them (a
    # review: anyone could probe a principal's key ids).
    denied = _key_of_other(state, c, now, admins) or _allowed(state, c, now, admins)
    if denied:
        return denied
    record = state.principals.get(c.principal)
    active = [k for k in (record.keys if record is not None else ()) if k.active]
    if c.actor_key_id is not None:
        active = [k for k in active if k.key_id == c.actor_key_id]
    if not active:
        which = f"key {_shown(c.actor_key_id, 80)}" if c.actor_key_id else "active key"
        return _reject("unknown_actor_key", f"{clipped(c.principal)} has no {which}")
    assert record is not None
    return _revocations(record, c, active, now, new_id)


def _revocations(
    record: PrincipalRecord,
    c: RevokeActorKey,
    keys: list[ActorKey],
    now: datetime,
    new_id: Callable[[], str],
) -> tuple[GovernanceEvent, ...]:
    """One ``ActorKeyRevoked`` per key, next in ``record``'s history one after another."""
    return tuple(
        ActorKeyRevoked(
            event_id=new_id(),
            occurred_at=now,
            actor=c.actor,
            command_id=c.event_id,
            principal=c.principal,
            sequence=record.sequence + n,
            actor_key_id=key.key_id,
            reason=c.reason,
        )
        for n, key in enumerate(keys, start=1)
    )


def _unfinished_revocation(
    state: LedgerState, c: RevokeActorKey, now: datetime, new_id: Callable[[], str]
) -> tuple[GovernanceEvent, ...] | Rejection:
    """The revocations an applied revocation of every key of ``c.principal`` did not write: the
    command processor appends its events one by one, and one stopped between them (killed,
    the broker gone) left the rest of the keys active, while the command, delivered again,
    was answered "already applied" from its first events (a review).

    Its own events are those naming its command id; the keys it left are those still active
    that were registered before its first event in the principal's history (by sequence, not
    by the clock, which may step): a key registered after it, a copy of the command sent again
    leaves alone. They are written next in that history only if nothing else was written there
    since its last event, so they stay one command's consecutive events (``actor verify``);
    else the :class:`Rejection` names the keys still active, to revoke again."""
    record = state.principals.get(c.principal)
    if c.actor_key_id is not None or record is None:
        return ()
    own = [
        k.revocation.sequence
        for k in record.keys
        if k.revocation is not None and k.revocation.command_id == c.event_id
    ]
    if not own:
        return ()
    left = [
        k
        for k in record.keys
        if k.active and k.registration is not None and k.registration.sequence < min(own)
    ]
    if not left:
        return ()
    if record.sequence != max(own):
        return _reject(
            "cut_short",
            f"it was cut short (the command processor stopped between its events), and "
            f"{clipped(c.principal)} has changed since: it still holds "
            f"{', '.join(k.key_id for k in left)}; revoke them again",
        )
    return _revocations(record, c, left, now, new_id)
