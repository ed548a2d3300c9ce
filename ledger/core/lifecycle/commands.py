"""What a command addresses and what authorizes it.

Lives here: :func:`command_aggregate` (a command's aggregate: its key on ``ledger.commands``),
:func:`command_action` (the action and resource it is authorized as), ``_allowed`` (the grant
check every rule makes, with :data:`DEFAULT_ADMINS` allowed everything) and
:func:`named_proposal` (a proposal naming its policy, for senders).

May import: the core's modules outside this package and, of this package, :mod:`.rejections`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Final, assert_never

from ledger.core.authority import authorize, key_registrar, replace_key
from ledger.core.events import (
    ApprovePolicyVersion,
    AssignRole,
    Command,
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
from ledger.core.lifecycle.rejections import Rejection, _reject, clipped
from ledger.core.policy import parse_policy
from ledger.core.state import LedgerState

__all__ = [
    "DEFAULT_ADMINS",
    "named_proposal",
    "command_aggregate",
    "command_action",
]


DEFAULT_ADMINS: Final = frozenset({"human:admin"})


def named_proposal(command: ProposePolicyVersion) -> ProposePolicyVersion:
    """``command`` naming its policy, taken from its document when it names none (raises
    :class:`~ledger.errors.PolicyError` if the document does not validate): the processor
    authorizes a proposal on that name before it reads the document, so senders fill it in."""
    if command.policy is not None:
        return command
    return replace(command, policy=parse_policy(command.document).name)


def command_aggregate(command: Command) -> str:
    """The aggregate a command addresses — its Kafka key on ``ledger.commands``.

    Policy commands: the policy name (for a proposal, the name the command carries: the document
    is never parsed here; a proposal without one yields ``""`` and is rejected anyway). Grant and
    role commands: the principal; RevokeGrant: its grant id (the principal is only known from the
    state).
    """
    match command:
        case ProposePolicyVersion():
            return command.policy or ""
        case ApprovePolicyVersion() | PromotePolicyVersion() | RollbackPolicy() | RetirePolicy():
            return command.policy
        case IssueGrant() | AssignRole() | RevokeRole() | RegisterActorKey() | RevokeActorKey():
            return command.principal
        case RevokeGrant():
            return command.grant_id
        case _:
            assert_never(command)


def command_action(command: Command, *, grant_principal: str | None = None) -> tuple[str, str]:
    """(action, resource) a command is authorized as (a proposal: on the name it carries)."""
    match command:
        case ProposePolicyVersion():
            return "ledger.policy.propose", f"policy:{command.policy or ''}"
        case ApprovePolicyVersion():
            return "ledger.policy.approve", f"policy:{command.policy}"
        case PromotePolicyVersion():
            return "ledger.policy.promote", f"policy:{command.policy}"
        case RollbackPolicy():
            return "ledger.policy.rollback", f"policy:{command.policy}"
        case RetirePolicy():
            return "ledger.policy.retire", f"policy:{command.policy}"
        case IssueGrant():
            return "ledger.grant.issue", f"principal:{command.principal}"
        case RevokeGrant():
            return "ledger.grant.revoke", f"principal:{grant_principal or ''}"
        case AssignRole():
            return "ledger.role.assign", command.role
        case RevokeRole():
            return "ledger.role.revoke", command.role
        case RegisterActorKey():
            return "ledger.key.register", f"principal:{command.principal}"
        case RevokeActorKey():
            return "ledger.key.revoke", f"principal:{command.principal}"
        case _:
            assert_never(command)


def _allowed(
    state: LedgerState, command: Command, now: datetime, admins: frozenset[str], **kw: str | None
) -> Rejection | None:
    if command.actor in admins:
        return None
    action, resource = command_action(command, **kw)
    if authorize(state, command.actor, action, resource, now=now) is not None:
        registrar = key_registrar(state, command.actor, command.key_id, admins)
        if registrar is None or authorize(state, registrar, action, resource, now=now):
            return None
        return _reject(
            "not_authorized",
            f"{clipped(command.actor)} signed with a key {clipped(registrar)} registered, and "
            f"{clipped(registrar)} may not {action} on {clipped(resource)}: a key a delegate "
            "registered acts no further than the delegate may; " + replace_key(command.actor),
        )
    return _reject(
        "not_authorized",
        f"{clipped(command.actor)} may not {action} on {clipped(resource)}: that takes a grant of "
        f"{action} on it (held directly or through a role), which an administrator issues",
    )
