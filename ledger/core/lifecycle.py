"""Governance of the governance: validate a command against the state, emit events or reject.

:func:`decide` is what the single-writer command processor runs per command. It either returns
the governance events to append (all of them, or none: nothing is half-applied) or a
:class:`Rejection` with a stable ``code``. It does not apply the events: the processor folds them
(with :func:`ledger.core.state.fold`) once they are written.

Rules (DESIGN §7):

- propose: the command names its policy, and the actor is authorized on that name *before* the
  document is read (nothing an unauthorized sender supplied is parsed); then the document must
  be within the size limit (``too_large``), validate, and name the same policy
  (``invalid_policy``); versions are 1, 2, 3 … per policy; an identical document to the latest
  version is ``already_applied``.
- approve: by a principal other than the author (``self_approval``); only drafts.
- promote: only approved versions (``not_approved``); to shadow, canary (``percent`` 1-99) or
  active. One active, at most one canary; promoting the canary to active clears the canary.
- rollback: needs a reason; re-activates the previous active version, or ``to_version``; clears
  any canary; needs no approval.
- retire: needs a reason; the policy's actions become ungoverned (denied).
- Every command is authorized by a grant: ``ledger.policy.<verb>`` on ``policy:<name>``,
  ``ledger.grant.issue|revoke`` on ``principal:<p>``, ``ledger.role.assign|revoke`` on the role
  (``role:<r>``), ``ledger.key.register|revoke`` on ``principal:<p>``. Members of ``admins`` may
  do everything (bootstrap).
- keys: a registered key's id is derived from the key (``invalid_key``); a key is registered to
  one actor, once; revoking needs a reason and names a key the actor holds (or all of them).

**Authentication** comes first: :func:`decide_signed` (what the command processor runs) rejects
an unsigned command (``unsigned_command``), a key that is not a registered, unrevoked key of the
command's actor (``unknown_actor_key``) and a signature that does not verify (``bad_signature``)
before anything else is looked at — authorization, and a proposal's document — and records the
proof on every event it accepts. :func:`decide` alone takes the actor's word (the in-memory
``ledger.testing.LocalLedger`` does, for tests of agents).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final, Literal, TypeAlias, assert_never

from ledger.core.authority import (
    PRINCIPAL_FORM,
    authorize,
    compile_grant_condition,
    valid_principal,
)
from ledger.core.events import (
    COMMAND_PROCESSOR,
    GRANT_EVENT_TYPES,
    ActorKeyRegistered,
    ActorKeyRevoked,
    ApprovePolicyVersion,
    AssignRole,
    Command,
    CommandAccepted,
    CommandRejected,
    CommandResult,
    GovernanceEvent,
    GrantIssued,
    GrantRevoked,
    IssueGrant,
    PolicyRetired,
    PolicyRolledBack,
    PolicyVersionApproved,
    PolicyVersionPromoted,
    PolicyVersionProposed,
    PromotePolicyVersion,
    ProposePolicyVersion,
    RegisterActorKey,
    RetirePolicy,
    RevokeActorKey,
    RevokeGrant,
    RevokeRole,
    RoleAssigned,
    RoleRevoked,
    RollbackPolicy,
    Stage,
)
from ledger.core.limits import DEFAULT_LIMITS, Limits
from ledger.core.policy import parse_policy
from ledger.core.signing import (
    ANCHOR_ACTOR,
    CLOCK_SKEW,
    COMMAND_VALID_FOR,
    PUBLIC_KEY_BYTES,
    key_id_of,
    signed_bytes,
    verify_signature,
    within_validity,
)
from ledger.core.state import (
    LedgerState,
    PolicyRecord,
    PrincipalRecord,
    actor_key,
    key_owner,
    overlapping_governs,
)
from ledger.errors import PolicyError

__all__ = [
    "Rejection",
    "clipped",
    "REJECTION_CODES",
    "DEFAULT_ADMINS",
    "decide",
    "decide_signed",
    "fresh",
    "COMMAND_VALID_FOR",
    "CLOCK_SKEW",
    "authenticate",
    "register_anchors",
    "command_aggregate",
    "command_action",
    "command_result",
    "already_applied",
    "named_proposal",
    "FirstAnswer",
    "decide_again",
    "AUTHENTICATION_CODES",
    "event_stream",
    "EventStream",
]

DEFAULT_ADMINS: Final = frozenset({"human:admin"})

REJECTION_CODES: Final[dict[str, str]] = {
    "not_authorized": "the actor holds no grant for this command",
    "invalid_policy": "the proposal names no policy, or its document does not validate or is for another policy",
    "too_large": "the proposed document, or an event the command would append, exceeds its size limit",
    "unknown_policy": "no policy of that name",
    "unknown_version": "the policy has no such version",
    "self_approval": "the author cannot approve their own version",
    "not_approved": "only approved versions can be promoted or rolled back to",
    "invalid_stage": "promotion target is not shadow, canary or active, or conflicts with the version's stage",
    "invalid_percent": "canary needs a percent from 1 to 99; other stages take none",
    "no_previous_version": "there is no earlier active version to roll back to",
    "no_active_version": "a canary needs an active version to share traffic with",
    "missing_reason": "rollback, retire and revoking a key need a reason",
    "already_applied": "the command would change nothing (already in that state)",
    "policy_retired": "the policy is retired",
    "invalid_principal": f"a principal must be {PRINCIPAL_FORM}",
    "invalid_role": "a role must be role:<name>",
    "invalid_grant": "the grant has no actions, an empty resource or an empty validity window",
    "invalid_condition": "the grant condition does not compile",
    "duplicate_grant": "a grant with this id exists",
    "unknown_grant": "no grant with this id",
    "not_member": "the principal does not hold that role",
    "unsigned_command": "the command carries no signature of its actor",
    "unknown_actor_key": "the signing key is not a registered, unrevoked key of the command's actor",
    "bad_signature": "the signature does not verify against the actor's key",
    "stale_command": "the command was signed too long ago (or too far ahead of the ledger's clock)",
    "invalid_key": "the key is not a 32-byte Ed25519 public key with its own id, or belongs to someone",
    "duplicate_command_id": "another command already used this command id: sign the command again (a new id)",
}
"""Every code :func:`decide` can return, with what it means."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejection:
    """A refused command: a value, not an exception. ``code`` is stable (see REJECTION_CODES)."""

    code: str
    message: str


def clipped(text: str, limit: int = 200) -> str:
    """``text`` for a message, shortened when a sender made it huge (the one way a rejection,
    or a processor's answer, cuts what the sender wrote)."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _shown(text: str, limit: int = 200) -> str:
    """``text`` quoted for a message, shortened when a sender made it huge."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}… ({len(text)} characters)"


REJECTION_CHARS: Final = 1_000
"""A rejection's message at most: the processor remembers rejections for minutes, and one that
quoted a sender's megabyte of text at full length was a way to fill its memory."""


def named_proposal(command: ProposePolicyVersion) -> ProposePolicyVersion:
    """``command`` naming its policy, taken from its document when it names none (raises
    :class:`~ledger.errors.PolicyError` if the document does not validate): the processor
    authorizes a proposal on that name before it reads the document, so senders fill it in."""
    if command.policy is not None:
        return command
    return replace(command, policy=parse_policy(command.document).name)


def _reject(code: str, message: str) -> Rejection:
    assert code in REJECTION_CODES, code
    return Rejection(code=code, message=clipped(message, REJECTION_CHARS))


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
        return None
    return _reject(
        "not_authorized",
        f"{clipped(command.actor)} may not {action} on {clipped(resource)}: that takes a grant of "
        f"{action} on it (held directly or through a role), which an administrator issues",
    )


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
            return _role(state, command, now, new_id, admins)
        case RegisterActorKey():
            return _register_key(state, command, now, new_id, admins)
        case RevokeActorKey():
            return _revoke_key(state, command, now, new_id, admins)
        case _:
            assert_never(command)


def authenticate(state: LedgerState, command: Command) -> Rejection | None:
    """``None`` when ``command`` is signed by a registered, unrevoked key of its actor, else
    the :class:`Rejection` (``unsigned_command``, ``unknown_actor_key``, ``bad_signature``).

    Looks at nothing but the signature, the key registry and the signed bytes: no document is
    parsed, no authority is consulted."""
    what = f"{type(command).__name__} by {clipped(command.actor)}"
    if command.key_id is None or command.signature is None:
        return _reject(
            "unsigned_command",
            f"{what} is not signed: every governance command must be signed with its actor's "
            "key (`--by ACTOR` signs with ACTOR's key from the key store)",
        )
    key = actor_key(state, command.actor, command.key_id)
    if key is None:
        owner = key_owner(state, command.key_id)
        whose = f" (it is {clipped(owner)}'s)" if owner is not None else ""
        return _reject(
            "unknown_actor_key",
            f"{what}: key {_shown(command.key_id, 80)} is not a registered key of "
            f"{clipped(command.actor)}{whose}",
        )
    if not key.active:
        return _reject(
            "unknown_actor_key",
            f"{what}: key {command.key_id} of {clipped(command.actor)} was revoked by "
            f"{key.revoked_by} ({clipped(key.revoke_reason or '')})",
        )
    if not verify_signature(key.public_key, command.signature, signed_bytes(command)):
        return _reject(
            "bad_signature",
            f"{what}: the signature does not verify with key {command.key_id} (the command was "
            "altered after it was signed, or signed with another key)",
        )
    return None


def fresh(command: Command, now: datetime) -> Rejection | None:
    """``None`` when ``command`` was signed within :data:`COMMAND_VALID_FOR` before ``now``
    (and at most :data:`CLOCK_SKEW` after it), else the ``stale_command`` :class:`Rejection`."""
    if within_validity(command.occurred_at, now):
        return None
    return _reject(
        "stale_command",
        f"{type(command).__name__} by {clipped(command.actor)} was signed at "
        f"{command.occurred_at.isoformat()}, outside the {COMMAND_VALID_FOR.seconds // 60} "
        "minutes a signed command is valid for: sign it again (a check of the signer's clock "
        "may be due)",
    )


def decide_signed(
    state: LedgerState,
    command: Command,
    *,
    now: datetime,
    new_id: Callable[[], str],
    admins: frozenset[str] = DEFAULT_ADMINS,
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[GovernanceEvent, ...] | Rejection:
    """:func:`authenticate`, then :func:`fresh` (so a captured command cannot be replayed once
    its validity has passed), then :func:`decide`; every event accepted records the command's
    proof (its key id, signature and signed bytes), so who asked for it can be verified
    offline (:func:`ledger.core.signing.verify_history`)."""
    denied = authenticate(state, command) or fresh(command, now)
    if denied is not None:
        return denied
    outcome = decide(state, command, now=now, new_id=new_id, admins=admins, limits=limits)
    if isinstance(outcome, Rejection):
        return outcome
    signed = signed_bytes(command).decode("utf-8")
    return tuple(
        replace(
            event,
            command_key_id=command.key_id,
            command_signature=command.signature,
            signed_command=signed,
        )
        for event in outcome
    )


AUTHENTICATION_CODES: Final = frozenset(
    {"unsigned_command", "unknown_actor_key", "bad_signature", "stale_command"}
)
"""The rejections of a command that was never authenticated as its actor's (see
:func:`decide_signed`): nothing about them is remembered against the command's id."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FirstAnswer:
    """What the ledger answered a command id the first time it decided it.

    Accepted: ``event_ids`` (the events it produced) and ``signature`` (the one recorded on them;
    None for events written before commands were signed). Rejected: ``rejection`` (an
    authenticated command's; the command processor remembers these for as long as a command is
    valid, :data:`COMMAND_VALID_FOR` plus :data:`CLOCK_SKEW`)."""

    event_ids: tuple[str, ...] = ()
    signature: bytes | None = None
    rejection: Rejection | None = None


def decide_again(
    state: LedgerState, command: Command, first: FirstAnswer
) -> tuple[str, ...] | Rejection:
    """A command whose id was decided before is not decided again: the same command delivered
    again (a crash before its offset was committed, a client's retry, a captured copy) gets its
    first answer — the ids of the events it produced (answer ``already applied``), or the same
    rejection, so a rejected command cannot be replayed once the state would let it through.

    A different command under that id — its signature is not the one recorded, or is but does not
    verify over this command's content (a copy altered after signing, its signature kept) — is
    authenticated like any command, and if genuine rejected as ``duplicate_command_id``: nobody
    is told that a forged command was "already applied". A copy of a rejected command is
    authenticated too: one whose signature does not verify over its content gets that
    authentication's answer, not the first command's rejection (which the log would otherwise
    attribute to the forged copy). A remembered rejection keeps no signature (it is read back
    from the command results after a restart), so a different, genuinely signed command that
    reuses a rejected command's id gets that rejection rather than ``duplicate_command_id``:
    either way it is not applied, and it needs an id of its own."""
    if first.rejection is not None:
        if _signed_as_sent(state, command):
            return first.rejection
        return authenticate(state, command) or first.rejection
    if (
        first.signature is not None
        and command.signature == first.signature
        and _signed_as_sent(state, command)
    ):
        return first.event_ids  # the same command again (its key may have been revoked since)
    denied = authenticate(state, command)
    if denied is not None:
        return denied
    if first.signature is None:  # applied before signatures were recorded: an authentic repeat
        return first.event_ids
    return _reject(
        "duplicate_command_id",
        f"command id {_shown(command.event_id, 80)} was already used by another command: a "
        "command needs an id of its own (sign it again)",
    )


def _signed_as_sent(state: LedgerState, command: Command) -> bool:
    """Does ``command``'s signature verify over its own content with its actor's key ``key_id``
    (revoked or not: a genuine copy of a command applied before its key was revoked is still
    that command)?"""
    if command.key_id is None or command.signature is None:
        return False
    key = actor_key(state, command.actor, command.key_id)
    return key is not None and verify_signature(
        key.public_key, command.signature, signed_bytes(command)
    )


def register_anchors(
    state: LedgerState,
    anchors: Mapping[str, bytes],
    *,
    now: datetime,
    new_id: Callable[[], str],
) -> tuple[ActorKeyRegistered, ...]:
    """The ``ActorKeyRegistered`` events that record the trust anchors (actor → raw public
    key: the bootstrap administrators' keys from the command processor's configuration) not yet
    in the ledger. Written by ``service:command-processor``, with no command; a key id the ledger
    already knows (registered or revoked, for anyone) is left alone."""
    out: list[ActorKeyRegistered] = []
    sequences: dict[str, int] = {}
    for principal in sorted(anchors):
        public_key = bytes(anchors[principal])
        key_id = key_id_of(public_key)
        if len(public_key) != PUBLIC_KEY_BYTES or key_owner(state, key_id) is not None:
            continue
        record = state.principals.get(principal)
        sequence = sequences.get(principal, record.sequence if record is not None else 0) + 1
        sequences[principal] = sequence
        event_id = new_id()
        out.append(
            ActorKeyRegistered(
                event_id=event_id,
                occurred_at=now,
                actor=ANCHOR_ACTOR,
                command_id=event_id,
                principal=principal,
                sequence=sequence,
                actor_key_id=key_id,
                public_key=public_key,
                note="trust anchor: a bootstrap administrator's key from the configuration",
            )
        )
    return tuple(out)


def _record(state: LedgerState, name: str) -> PolicyRecord | Rejection:
    record = state.policies.get(name)
    if record is None or not record.versions:
        return _reject("unknown_policy", f"no policy named {_shown(name)}")
    return record


def _propose(
    state: LedgerState,
    c: ProposePolicyVersion,
    now: datetime,
    new_id: Callable[[], str],
    admins: frozenset[str],
    limits: Limits,
) -> tuple[GovernanceEvent, ...] | Rejection:
    # Who may propose is settled on the name the command carries, before a byte of the document
    # is read: anyone who can reach the commands topic can send a document, and parsing one (an
    # alias bomb, say) is the expensive, risky step.
    if c.policy is None or not c.policy.strip():
        return _reject(
            "invalid_policy",
            "a proposal must name its policy (ProposePolicyVersion.policy): it is authorized on "
            "that name before the document is read; send it with a current ledger client",
        )
    denied = _allowed(state, c, now, admins)
    if denied:
        return denied
    size = len(c.document.encode("utf-8", "surrogatepass"))
    if size > limits.policy_document_bytes:
        return _reject(
            "too_large",
            f"the policy document is {size} bytes, over the limit of "
            f"{limits.policy_document_bytes} bytes",
        )
    try:
        policy = parse_policy(c.document, limits=limits)
    except PolicyError as exc:
        problems = list(exc.problems)
        stopped = bool(problems) and problems[-1].message.startswith("stopped after")
        if stopped:  # the validator's own marker: it counted no further
            problems.pop()
        shown = "; ".join(str(p) for p in problems[:20])
        if len(problems) == 1:
            return _reject("invalid_policy", shown)
        count = f"over {len(problems)}" if stopped else f"{len(problems)}"
        first = "the first 20" if len(problems) > 20 else "all"
        # The count first: a long list is cut at the end, and the count must survive it.
        return _reject("invalid_policy", f"{count} problems ({first} here): {shown}")
    if policy.name != c.policy:
        return _reject(
            "invalid_policy",
            f"the document is policy {policy.name!r} but the command proposes it for "
            f"{_shown(c.policy)}",
        )
    record = state.policies.get(policy.name) or PolicyRecord(name=policy.name)
    if record.retired:
        return _reject(
            "policy_retired", f"{policy.name} is retired; roll it back to revive it first"
        )
    if record.versions:
        latest = record.versions[record.latest]
        if latest.content_hash == policy.content_hash:
            return _reject(
                "already_applied", f"identical to {policy.name} version {latest.version}"
            )
    return (
        PolicyVersionProposed(
            event_id=new_id(),
            occurred_at=now,
            actor=c.actor,
            command_id=c.event_id,
            policy=policy.name,
            sequence=record.sequence + 1,
            version=record.latest + 1,
            document=policy.canonical,
            content_hash=policy.content_hash,
            owner=policy.owner,
            governs=policy.governs,
            note=c.note,
        ),
    )


def _approve(
    state: LedgerState,
    c: ApprovePolicyVersion,
    now: datetime,
    new_id: Callable[[], str],
    admins: frozenset[str],
) -> tuple[GovernanceEvent, ...] | Rejection:
    record = _record(state, c.policy)
    if isinstance(record, Rejection):
        return record
    if record.retired:
        return _reject("policy_retired", f"{c.policy} is retired; roll it back to revive it first")
    version = record.versions.get(c.version)
    if version is None:
        return _reject("unknown_version", f"{c.policy} has no version {c.version}")
    if version.approved_by is not None:
        return _reject(
            "already_applied", f"{c.policy} v{c.version} was approved by {version.approved_by}"
        )
    if c.actor == version.author:
        return _reject(
            "self_approval",
            f"{c.actor} proposed {c.policy} v{c.version} and cannot approve it: another person "
            "holding ledger.policy.approve does",
        )
    denied = _allowed(state, c, now, admins)
    if denied:
        return denied
    return (
        PolicyVersionApproved(
            event_id=new_id(),
            occurred_at=now,
            actor=c.actor,
            command_id=c.event_id,
            policy=c.policy,
            sequence=record.sequence + 1,
            version=c.version,
            note=c.note,
        ),
    )


def _promote(
    state: LedgerState,
    c: PromotePolicyVersion,
    now: datetime,
    new_id: Callable[[], str],
    admins: frozenset[str],
) -> tuple[GovernanceEvent, ...] | Rejection:
    record = _record(state, c.policy)
    if isinstance(record, Rejection):
        return record
    if record.retired:
        return _reject("policy_retired", f"{c.policy} is retired; roll it back to revive it first")
    version = record.versions.get(c.version)
    if version is None:
        return _reject("unknown_version", f"{c.policy} has no version {c.version}")
    if c.stage not in (Stage.SHADOW, Stage.CANARY, Stage.ACTIVE):
        return _reject(
            "invalid_stage", f"cannot promote to {c.stage.value}; use shadow, canary or active"
        )
    if c.stage is Stage.CANARY:
        if c.percent is None or not 1 <= c.percent <= 99:
            return _reject("invalid_percent", f"canary percent must be 1 to 99, got {c.percent}")
    elif c.percent is not None:
        return _reject(
            "invalid_percent", f"only canary takes a percent (got {c.percent} for {c.stage.value})"
        )
    # Shadow never enforces anything, so a draft may be observed there before review (DESIGN §7);
    # canary and active decide real requests and need the second pair of eyes.
    if version.approved_by is None and c.stage is not Stage.SHADOW:
        return _reject(
            "not_approved",
            f"{c.policy} v{c.version} is not approved: someone other than its author approves it "
            "first (or promote it to shadow, which needs no approval)",
        )
    if c.stage is Stage.ACTIVE and record.active == c.version:
        return _reject("already_applied", f"{c.policy} v{c.version} is already active")
    if c.stage is Stage.CANARY:
        if record.active is None:
            # A canary splits traffic with the active version; with none, it would decide all.
            return _reject(
                "no_active_version",
                f"{c.policy} has no active version for a canary to share traffic with: promote "
                f"v{c.version} to shadow to observe it, or to active",
            )
        if record.active == c.version:
            return _reject(
                "invalid_stage", f"{c.policy} v{c.version} is active; it cannot also be the canary"
            )
        if record.canary == c.version and record.canary_percent == c.percent:
            return _reject(
                "already_applied", f"{c.policy} v{c.version} is already canary at {c.percent}%"
            )
    if c.stage is Stage.SHADOW:
        if c.version in record.shadows:
            return _reject("already_applied", f"{c.policy} v{c.version} is already in shadow")
        if record.active == c.version:
            return _reject(
                "invalid_stage",
                f"{c.policy} v{c.version} is active; roll back or promote another first",
            )
    denied = _allowed(state, c, now, admins)
    if denied:
        return denied
    return (
        PolicyVersionPromoted(
            event_id=new_id(),
            occurred_at=now,
            actor=c.actor,
            command_id=c.event_id,
            policy=c.policy,
            sequence=record.sequence + 1,
            version=c.version,
            stage=c.stage,
            percent=c.percent,
            previous_version=record.previous_for(c.stage, c.version),
        ),
    )


def _rollback(
    state: LedgerState,
    c: RollbackPolicy,
    now: datetime,
    new_id: Callable[[], str],
    admins: frozenset[str],
) -> tuple[GovernanceEvent, ...] | Rejection:
    record = _record(state, c.policy)
    if isinstance(record, Rejection):
        return record
    if not c.reason or not c.reason.strip():
        return _reject("missing_reason", "a rollback needs a reason")
    if c.to_version is not None:
        target = record.versions.get(c.to_version)
        if target is None:
            return _reject("unknown_version", f"{c.policy} has no version {c.to_version}")
        if target.approved_by is None:
            return _reject("not_approved", f"{c.policy} v{c.to_version} was never approved")
        if record.active == c.to_version and record.canary is None:
            return _reject("already_applied", f"{c.policy} v{c.to_version} is already active")
        to = c.to_version  # the active one itself while a canary runs: the canary goes
    else:
        previous = record.rollback_target()
        if previous is None:
            return _reject("no_previous_version", f"{c.policy} has no earlier active version")
        to = previous
    denied = _allowed(state, c, now, admins)
    if denied:
        return denied
    return (
        PolicyRolledBack(
            event_id=new_id(),
            occurred_at=now,
            actor=c.actor,
            command_id=c.event_id,
            policy=c.policy,
            sequence=record.sequence + 1,
            from_version=record.active,
            to_version=to,
            reason=c.reason,
        ),
    )


def _retire(
    state: LedgerState,
    c: RetirePolicy,
    now: datetime,
    new_id: Callable[[], str],
    admins: frozenset[str],
) -> tuple[GovernanceEvent, ...] | Rejection:
    record = _record(state, c.policy)
    if isinstance(record, Rejection):
        return record
    if not c.reason or not c.reason.strip():
        return _reject("missing_reason", "retiring a policy needs a reason")
    if record.retired:
        return _reject("already_applied", f"{c.policy} is already retired")
    denied = _allowed(state, c, now, admins)
    if denied:
        return denied
    return (
        PolicyRetired(
            event_id=new_id(),
            occurred_at=now,
            actor=c.actor,
            command_id=c.event_id,
            policy=c.policy,
            sequence=record.sequence + 1,
            reason=c.reason,
        ),
    )


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
    if not c.resource or not c.resource.strip():
        return _reject("invalid_grant", "a grant needs a resource pattern")
    if c.valid_from is not None and c.valid_until is not None and c.valid_from >= c.valid_until:
        return _reject("invalid_grant", "valid_from must be before valid_until")
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
    if c.condition:
        try:
            compile_grant_condition(c.condition)
        except PolicyError as exc:
            return _reject("invalid_condition", "; ".join(str(p) for p in exc.problems))
    if _find_grant(state, c.grant_id) is not None:
        return _reject("duplicate_grant", f"grant {_shown(c.grant_id)} exists")
    record = state.principals.get(c.principal) or PrincipalRecord(principal=c.principal)
    return (
        GrantIssued(
            event_id=new_id(),
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
        ),
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
    if denied:
        return denied
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
) -> tuple[GovernanceEvent, ...] | Rejection:
    if not valid_principal(c.principal) or c.principal.startswith("role:"):
        return _reject(
            "invalid_principal", f"{_shown(c.principal)} is not a non-role kind:name principal"
        )
    if not valid_principal(c.role) or not c.role.startswith("role:"):
        return _reject("invalid_role", f"{_shown(c.role)} is not role:<name>")
    record = state.principals.get(c.principal) or PrincipalRecord(principal=c.principal)
    if isinstance(c, AssignRole) and c.role in record.roles:
        return _reject("already_applied", f"{c.principal} already holds {c.role}")
    if isinstance(c, RevokeRole) and c.role not in record.roles:
        return _reject("not_member", f"{c.principal} does not hold {c.role}")
    denied = _allowed(state, c, now, admins)
    if denied:
        return denied
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
    public_key = bytes(c.public_key)
    if len(public_key) != PUBLIC_KEY_BYTES:
        return _reject(
            "invalid_key", f"an Ed25519 public key has 32 bytes, this one {len(public_key)}"
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
            return _reject("already_applied", f"{c.actor_key_id} is already a key of {owner}")
        return _reject(
            "invalid_key",
            f"{c.actor_key_id} was registered to {owner} before"
            + (
                " and revoked: a revoked key is never registered again"
                if key and not key.active
                else ""
            ),
        )
    denied = _allowed(state, c, now, admins)
    if denied:
        return denied
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


def _revoke_key(
    state: LedgerState,
    c: RevokeActorKey,
    now: datetime,
    new_id: Callable[[], str],
    admins: frozenset[str],
) -> tuple[GovernanceEvent, ...] | Rejection:
    if not c.reason or not c.reason.strip():
        return _reject("missing_reason", "revoking a key needs a reason")
    record = state.principals.get(c.principal)
    active = [k for k in (record.keys if record is not None else ()) if k.active]
    if c.actor_key_id is not None:
        active = [k for k in active if k.key_id == c.actor_key_id]
    if not active:
        which = f"key {_shown(c.actor_key_id, 80)}" if c.actor_key_id else "an active key"
        return _reject("unknown_actor_key", f"{clipped(c.principal)} has no {which}")
    denied = _allowed(state, c, now, admins)
    if denied:
        return denied
    assert record is not None
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
        for n, key in enumerate(active, start=1)
    )


def command_result(
    command: Command,
    outcome: tuple[GovernanceEvent, ...] | Rejection,
    *,
    event_id: str,
    now: datetime,
    actor: str = COMMAND_PROCESSOR,
    state: LedgerState | None = None,
) -> CommandResult:
    """The CommandAccepted/CommandRejected to publish for ``command``'s outcome.

    With ``state`` (what the command was decided against), an accepted command's message also
    notes any other deployed policy that may govern the same actions (:func:`overlap_note`), at
    proposal and when a version is deployed to decide, and what a promotion or a rollback takes
    out of service (:func:`_notes`)."""
    aggregate = command_aggregate(command)
    if isinstance(outcome, Rejection):
        return CommandRejected(
            event_id=event_id,
            occurred_at=now,
            actor=actor,
            command_id=command.event_id,
            command_type=type(command).__name__,
            aggregate=aggregate,
            code=outcome.code,
            reason=outcome.message,
        )
    # The version the command created (propose) or made active again (rollback).
    version = next(
        (
            e.version if isinstance(e, PolicyVersionProposed) else e.to_version
            for e in outcome
            if isinstance(e, PolicyVersionProposed | PolicyRolledBack)
        ),
        None,
    )
    if outcome and isinstance(outcome[0], GrantRevoked):
        aggregate = outcome[0].principal
    return CommandAccepted(
        event_id=event_id,
        occurred_at=now,
        actor=actor,
        command_id=command.event_id,
        command_type=type(command).__name__,
        aggregate=aggregate,
        event_ids=tuple(e.event_id for e in outcome),
        version=version,
        message="; ".join(
            [", ".join(type(e).__name__ for e in outcome)]
            + [note for e in outcome if state is not None for note in _notes(state, e)]
        ),
    )


def _notes(state: LedgerState, event: GovernanceEvent) -> list[str]:
    """What an accepted command's answer should tell its sender beyond the events' names
    (``state``: before the event): another policy that may govern the same actions, at
    proposal and again when a version is deployed to decide (canary, active), which is when
    it takes actions over; and the version a promotion or a rollback takes out of service."""
    if isinstance(event, PolicyVersionProposed):
        return [n for n in [overlap_note(state, event.policy, event.governs)] if n]
    record = state.policies.get(getattr(event, "policy", ""))
    if record is None:
        return []
    notes: list[str] = []
    if isinstance(event, PolicyVersionPromoted):
        version = record.versions.get(event.version)
        if event.stage in (Stage.CANARY, Stage.ACTIVE) and version is not None:
            notes += [n for n in [overlap_note(state, event.policy, version.governs)] if n]
        if event.previous_version is not None:
            was = (
                f"the canary ({record.canary_percent}%)"
                if event.stage is Stage.CANARY
                else event.stage.value
            )
            notes.append(f"v{event.previous_version} was {was}: it is superseded")
    elif isinstance(event, PolicyRolledBack):
        if record.canary is not None and record.canary != event.to_version:
            notes.append(f"the canary v{record.canary} ({record.canary_percent}%) ends")
        if record.active is not None and record.active != event.to_version:
            notes.append(f"v{record.active} is superseded")
    return notes


def overlap_note(state: LedgerState, policy: str, governs: Iterable[str]) -> str | None:
    """Where another deployed policy may govern the same actions as ``governs``, say so, and
    how the ledger chooses (not an error: teams may mean it, a glob beside an exact name)."""
    found = overlapping_governs(state, policy, governs)
    if not found:
        return None
    shown = ", ".join(f"{mine} ~ {other}'s {theirs}" for other, theirs, mine in found[:3])
    more = " and more" if len(found) > 3 else ""
    return (
        f"note: actions may also be governed by another policy ({shown}{more}); where both are "
        "deployed an exact name decides before a glob, then the longest glob, then the lower "
        "policy name"
    )


EventStream: TypeAlias = Literal["policy", "grant"]


def event_stream(event: GovernanceEvent) -> EventStream:
    """Which governance stream (topic) ``event`` belongs to: policy events, or grant events."""
    return "grant" if isinstance(event, GRANT_EVENT_TYPES) else "policy"


def already_applied(
    command: Command,
    event_ids: tuple[str, ...],
    *,
    event_id: str,
    now: datetime,
    actor: str = COMMAND_PROCESSOR,
) -> CommandAccepted:
    """The answer to a command delivered again after it was applied (its events were written
    before a crash let it come back): accepted, naming the events it produced, nothing new."""
    return CommandAccepted(
        event_id=event_id,
        occurred_at=now,
        actor=actor,
        command_id=command.event_id,
        command_type=type(command).__name__,
        aggregate=command_aggregate(command),
        event_ids=event_ids,
        message="already applied",
    )
