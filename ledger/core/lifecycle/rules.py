"""The entry point of the rules: :func:`decide` sends each command to its rule.

Lives here: :func:`decide`, and :func:`unfinished` (what an applied command did not write).
The rules themselves are in :mod:`.policy_rules` (policy versions) and :mod:`.grant_rules`
(grants, roles, actor keys); what authorizes a command is in :mod:`.commands`.

May import: the core's modules outside this package and, of this package, :mod:`.rejections`,
:mod:`.commands`, :mod:`.policy_rules` and :mod:`.grant_rules`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Final, assert_never

from ledger.core.authority import key_registrar
from ledger.core.events import (
    ApprovePolicyVersion,
    AssignRole,
    Command,
    GovernanceEvent,
    IssueGrant,
    PromotePolicyVersion,
    ProposePolicyVersion,
    RegisterActorKey,
    RetirePolicy,
    RevokeActorKey,
    RevokeGrant,
    RevokeRole,
    RollbackPolicy,
)
from ledger.core.lifecycle.commands import DEFAULT_ADMINS
from ledger.core.lifecycle.grant_rules import (
    _find_grant,
    _issue,
    _register_key,
    _revoke,
    _revoke_key,
    _role,
    _unfinished_revocation,
)
from ledger.core.lifecycle.policy_rules import _approve, _promote, _propose, _retire, _rollback
from ledger.core.lifecycle.rejections import Rejection, _reject, clipped
from ledger.core.limits import DEFAULT_LIMITS, Limits
from ledger.core.state import (
    POLICY,
    PRINCIPAL,
    LedgerState,
    authority_unread,
    every_unread,
)

__all__ = ["decide", "unfinished"]


def decide(
    state: LedgerState,
    command: Command,
    *,
    now: datetime,
    new_id: Callable[[], str],
    admins: frozenset[str] = DEFAULT_ADMINS,
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[GovernanceEvent, ...] | Rejection:
    """Validate ``command`` against ``state``: the events to append, or a :class:`Rejection`.

    ``now`` stamps the events and decides grant validity; ``new_id`` mints event ids; ``limits``
    bounds what is read (the policy document's size). Pure: the same state, command, ``now`` and
    ids give the same answer.
    """
    for name in ("note", "reason"):  # kept in every processor's state: bounded first
        text = getattr(command, name, None)
        if isinstance(text, str) and len(text) > limits.command_text_chars:
            return _reject(
                "too_large",
                f"its {name} is {len(text):,} characters; at most {limits.command_text_chars:,} "
                "are accepted (command_text_chars): keep the detail elsewhere and name it here",
            )
    lacking = _unreadable(state, command, admins) if state.unreadable else None
    if lacking is not None:
        return _reject(
            "governance_unreadable",
            f"the governance records of {lacking} include one this command processor cannot "
            "read (a newer release wrote it): it changes nothing on an earlier state (its "
            "events would be numbered anew, and dropped by the newer release); run that "
            "release's command processor (`ledger ps` names this one)",
        )
    match command:
        case ProposePolicyVersion():
            return _propose(state, command, now, new_id, admins, limits)
        case ApprovePolicyVersion():
            return _approve(state, command, now, new_id, admins)
        case PromotePolicyVersion():
            return _promote(state, command, now, new_id, admins)
        case RollbackPolicy():
            return _rollback(state, command, now, new_id, admins)
        case RetirePolicy():
            return _retire(state, command, now, new_id, admins)
        case IssueGrant():
            return _issue(state, command, now, new_id, admins, limits)
        case RevokeGrant():
            return _revoke(state, command, now, new_id, admins)
        case AssignRole() | RevokeRole():
            return _role(state, command, now, new_id, admins, limits)
        case RegisterActorKey():
            return _register_key(state, command, now, new_id, admins)
        case RevokeActorKey():
            return _revoke_key(state, command, now, new_id, admins)
        case _:
            assert_never(command)


def _unreadable(state: LedgerState, command: Command, admins: frozenset[str]) -> str:
    """What of ``command`` has a record ``state`` lacks (``LedgerState.unreadable``), in words:
    the actor's authority, the authority of whoever registered the key that signed it, its
    own policy or principal, else whatever the unread records are of. Every command is refused
    while any record is unread, not only those of its aggregate (three reviews): a command is
    checked against the whole log (what every policy governs, a role's grants and members,
    grant ids, keys and command ids used once), and the ids of the commands whose events those
    records hold cannot be known, so a command reusing one would be accepted where the newer
    release refuses it."""
    every = every_unread(state, PRINCIPAL)
    if authority_unread(state, command.actor):
        return every or f"{clipped(command.actor)}'s authority (its own or a role's it holds)"
    # A key a delegate registered acts no further than the delegate may (a review: its
    # authority was read on an earlier state).
    registrar = key_registrar(state, command.actor, command.key_id, admins)
    if registrar is not None and authority_unread(state, registrar):
        return every or (
            f"{clipped(registrar)}'s authority (it registered the key that signed the command)"
        )
    own = _aggregate(state, command)
    if own is not None and own in state.unreadable:
        kind, name = own
        return f"policy {clipped(name)}" if kind == POLICY else clipped(name)
    return every_unread(state, POLICY) or every or _ANOTHER


def _aggregate(state: LedgerState, command: Command) -> tuple[str, str] | None:
    """The aggregate ``command`` changes, ``(kind, name)`` (``None``: a grant revoked that is
    not in ``state``)."""
    match command:
        case (
            ProposePolicyVersion()
            | ApprovePolicyVersion()
            | PromotePolicyVersion()
            | RollbackPolicy()
            | RetirePolicy()
        ):
            return POLICY, command.policy or ""
        case IssueGrant() | AssignRole() | RegisterActorKey() | RevokeRole() | RevokeActorKey():
            return PRINCIPAL, command.principal
        case RevokeGrant():
            holder = _find_grant(state, command.grant_id)
            return None if holder is None else (PRINCIPAL, holder.principal)
        case _:
            assert_never(command)


_ANOTHER: Final = (
    "another policy or principal (a command is checked against the whole log: what every "
    "policy governs, a role's grants and members, grant ids, keys and command ids used once)"
)


def unfinished(
    state: LedgerState, command: Command, *, now: datetime, new_id: Callable[[], str]
) -> tuple[GovernanceEvent, ...] | Rejection:
    """The events ``command``, applied before, did not write (none, nearly always): each command
    produces one event, but revoking every key of an actor one per key, appended one by one,
    so a command processor stopped between them left the rest unwritten. ``cut_short`` when
    they can no longer be written as its own."""
    if isinstance(command, RevokeActorKey):
        return _unfinished_revocation(state, command, now, new_id)
    return ()
