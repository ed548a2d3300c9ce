"""Signed governance commands: what a signature covers, key ids, and verification (pure).

Kafka does not tell a consumer who produced a record, so a command's ``actor`` is only a claim
until its signature is checked against a key the ledger registered for that actor (DESIGN §14).

**The signed bytes** of a command are the canonical JSON (:func:`ledger.core.jsonform.canonical_json`:
UTF-8, keys sorted, no whitespace) of::

    {"domain": "decision-ledger/command/v1",
     "type": "<the command's type, e.g. IssueGrant>",
     "command": {<every field of the command except key_id and signature>}}

(a field added to a command type later, :data:`SIGNED_WHEN_SET`, only when it is set).

The domain and type keep a signature from being replayed as anything else. A verifier needs
these bytes (every accepted governance event carries them as ``signed_command``), the signature
(``command_signature``) and the actor's public key (an ``ActorKeyRegistered`` event): Ed25519
(RFC 8032) over exactly those bytes. **Key ids** are ``ed25519:`` and the first 32 hex digits of
the SHA-256 of the raw 32-byte public key.

:func:`verify_history` checks a whole governance history offline (a third party can do the
same from an export, with any Ed25519 implementation). Signing itself needs a private key and
lives outside the core (:mod:`ledger.keys`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, assert_never

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.core.authority import (
    NotChecked,
    authorize,
    effective_grants,
    first_not_held,
    key_delegation_problem,
    key_registrar,
    not_held,
    role_reach_problem,
    takeover_problem,
)
from ledger.core.ed25519 import weak_key
from ledger.core.events import (
    COMMAND_PROCESSOR,
    GRANT_EVENT_TYPES,
    ActorKeyRegistered,
    ActorKeyRevoked,
    Command,
    GovernanceEvent,
    GrantIssued,
    GrantRevoked,
    PolicyRetired,
    PolicyRolledBack,
    PolicyVersionApproved,
    PolicyVersionPromoted,
    PolicyVersionProposed,
    RoleAssigned,
    RoleRevoked,
    Stage,
)
from ledger.core.governing import takeovers
from ledger.core.jsonform import canonical_json, to_json_value
from ledger.core.policy import Policy, parse_policy
from ledger.core.policy.canonical import content_hash
from ledger.core.state import (
    EMPTY_STATE,
    RECORDED_LIMITS,
    ActorKey,
    LedgerState,
    PolicyRecord,
    PolicyVersion,
    PrincipalRecord,
    actor_key,
    aggregate_of,
    aggregate_record,
    fold,
    replay,
    role_members,
)
from ledger.errors import PolicyError

__all__ = [
    "DOMAIN",
    "UNSIGNED_FIELDS",
    "SIGNED_WHEN_SET",
    "PUBLIC_KEY_BYTES",
    "ANCHOR_ACTOR",
    "signed_bytes",
    "key_id_of",
    "verify_signature",
    "Verdict",
    "verify_event",
    "registration_problem",
    "KEY_CHAIN_LINKS",
    "verify_history",
    "Witnesses",
    "witnesses_from",
    "RECEIVED_SLACK",
    "COMMAND_VALID_FOR",
    "CLOCK_SKEW",
    "within_validity",
    "event_action",
]

DOMAIN: Final = "decision-ledger/command/v1"
UNSIGNED_FIELDS: Final = frozenset({"key_id", "signature"})
"""The fields a signature does not cover: the signature itself, and which key made it."""
SIGNED_WHEN_SET: Final = frozenset(
    {
        ("PromotePolicyVersion", "note"),
        ("PromotePolicyVersion", "previous_version"),
        ("RollbackPolicy", "from_version"),
    }
)
"""Fields added to a command after signing began: covered when set, left out of the signed
bytes when empty, so a command signed by a client from before the field existed still
verifies. An event's value for one is compared with the signed command's even when the
command left it out (then it must be empty too)."""
PUBLIC_KEY_BYTES: Final = 32
ANCHOR_ACTOR: Final = COMMAND_PROCESSOR
"""Who records the trust anchors (the bootstrap administrators' keys, from configuration)."""

COMMAND_VALID_FOR: Final = timedelta(minutes=10)
"""How long after it was signed (its ``occurred_at``, covered by the signature) a command is
accepted: a captured command, even one that was rejected, cannot be replayed later, when the
state it would change has moved on."""

CLOCK_SKEW: Final = timedelta(minutes=2)
"""How far ahead of the command processor's clock a signer's clock may be."""


def within_validity(signed_at: datetime, at: datetime) -> bool:
    """Was a command signed at ``signed_at`` valid at ``at``: signed at most
    :data:`COMMAND_VALID_FOR` before, and at most :data:`CLOCK_SKEW` after? The one window the
    command processor admits a command in, and proving it later checks again."""
    try:
        return at - COMMAND_VALID_FOR <= signed_at <= at + CLOCK_SKEW
    except OverflowError:  # a forged time at the edge of what a datetime holds (a review)
        return False


_PRODUCES: Final[dict[str, tuple[type, ...]]] = {
    "ProposePolicyVersion": (PolicyVersionProposed,),
    "ApprovePolicyVersion": (PolicyVersionApproved,),
    "PromotePolicyVersion": (PolicyVersionPromoted,),
    "RollbackPolicy": (PolicyRolledBack,),
    "RetirePolicy": (PolicyRetired,),
    "IssueGrant": (GrantIssued,),
    "RevokeGrant": (GrantRevoked,),
    "AssignRole": (RoleAssigned,),
    "RevokeRole": (RoleRevoked,),
    "RegisterActorKey": (ActorKeyRegistered,),
    "RevokeActorKey": (ActorKeyRevoked,),
}
"""Which event types each command type produces (a signed proposal is no proof of a grant)."""


def signed_bytes(command: Command) -> bytes:
    """The bytes ``command``'s signature covers (see the module docstring)."""
    kind = type(command).__name__
    body = {
        f.name: getattr(command, f.name)
        for f in dataclasses.fields(command)
        if f.name not in UNSIGNED_FIELDS
        and not ((kind, f.name) in SIGNED_WHEN_SET and getattr(command, f.name) is None)
    }
    return canonical_json({"domain": DOMAIN, "type": kind, "command": body})


def key_id_of(public_key: bytes) -> str:
    """The id of a raw Ed25519 public key: ``ed25519:`` + 32 hex digits of its SHA-256."""
    return "ed25519:" + hashlib.sha256(public_key).hexdigest()[:32]


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Is ``signature`` an Ed25519 signature of ``message`` by ``public_key``? Malformed keys
    and signatures are simply not valid."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != 64:
        return False
    if weak_key(bytes(public_key)) is not None:  # a small-order key: anyone's signature holds
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """What :func:`verify_event` found for one governance event.

    ``ok`` with ``anchor`` True: a trust anchor the command processor registered from its
    configuration (no command; trusted as the configuration is). ``problem`` says what is wrong;
    with ``authority`` True it is only that the actor, whose signature holds, lacked the
    authority today's rules require (:func:`_unauthorized`): a processor that skipped a check,
    or an event accepted under the rules of an earlier release.
    """

    event_id: str
    event_type: str
    actor: str
    key_id: str | None
    ok: bool
    anchor: bool = False
    problem: str | None = None
    authority: bool = False


def verify_event(state: LedgerState, event: GovernanceEvent) -> Verdict:
    """Check ``event``'s command proof against the keys registered in ``state``: signed by a
    key of its actor that was registered at the event's time and not yet revoked, over a command
    of that actor, with that id, of a type that produces this event.

    ``state`` may be the state after the whole history: keys carry when they were registered
    and revoked, so the order events are checked in does not matter."""
    kind = type(event).__name__

    def verdict(ok: bool, problem: str | None = None, *, anchor: bool = False) -> Verdict:
        return Verdict(
            event_id=event.event_id,
            event_type=kind,
            actor=event.actor,
            key_id=event.command_key_id,
            ok=ok,
            anchor=anchor,
            problem=problem,
        )

    proof = (event.command_key_id, event.command_signature, event.signed_command)
    if all(part is None for part in proof):
        if isinstance(event, ActorKeyRegistered) and event.actor == ANCHOR_ACTOR:
            return verdict(True, anchor=True)
        return verdict(False, "no command signature recorded")
    if any(part is None for part in proof):
        return verdict(False, "an incomplete command signature is recorded")
    key_id, signature, text = (
        str(event.command_key_id),
        bytes(event.command_signature or b""),
        str(event.signed_command),
    )
    try:
        signed: Any = json.loads(text)
        command: Mapping[str, Any] = signed["command"]
        command_type = str(signed["type"])
        if signed["domain"] != DOMAIN or not isinstance(command, Mapping):
            raise ValueError("not a signed command")
    except (ValueError, KeyError, TypeError):
        return verdict(False, "the recorded signed command is not a signed command document")
    if command.get("actor") != event.actor:
        return verdict(False, f"the signed command's actor is {command.get('actor')!r}")
    if command.get("event_id") != event.command_id:
        return verdict(False, "the signed command is not the command that produced this event")
    if not isinstance(event, _PRODUCES.get(command_type, ())):
        return verdict(False, f"a {command_type} command does not produce a {kind}")
    differs = _differs(command, event)
    if differs:
        return verdict(False, differs)
    key = actor_key(state, event.actor, key_id)
    if key is None or key.registered_at > event.occurred_at:
        return verdict(False, f"{key_id} was not a registered key of {event.actor}")
    if key.revoked_at is not None and key.revoked_at < event.occurred_at:
        return verdict(False, f"{key_id} of {event.actor} was revoked before this event")
    weak = weak_key(bytes(key.public_key))
    if weak is not None:  # anyone could have made its "signature" (a review)
        return verdict(False, f"{key_id} of {event.actor} cannot sign: {weak}")
    if not verify_signature(key.public_key, signature, text.encode("utf-8")):
        return verdict(False, "the signature does not verify")
    if isinstance(event, ActorKeyRegistered) and weak_key(bytes(event.public_key)) is not None:
        # Proven, but of a key that proves nothing: registered before such keys were refused.
        return verdict(
            False,
            f"it registers {event.actor_key_id} for {event.principal}, a key that cannot sign: "
            f"{weak_key(bytes(event.public_key))}",
        )
    return verdict(True)


_NOT_COMPARED: Final = frozenset({"event_id", "occurred_at", "actor", "document"})
_FILLED_IN: Final = frozenset(
    {
        ("ActorKeyRevoked", "actor_key_id"),
        ("PolicyRolledBack", "to_version"),
        ("PolicyRolledBack", "from_version"),
        ("PolicyVersionPromoted", "previous_version"),
        ("PolicyVersionProposed", "policy"),
    }
)
"""Fields a command may leave empty for the processor to fill in: revoking an actor's keys
without naming one revokes each (one event per key); a rollback without ``--to`` goes to the
version active before, and one without ``--from`` (a promotion without ``--replacing``)
records the version it replaced; a proposal
recorded before proposals had to name their policy took its document's name (compared
below)."""


def _differs(command: Mapping[str, Any], event: GovernanceEvent) -> str | None:
    """Why ``event`` is not what the signed ``command`` asked for, if it is not: every field
    both have holds the same value (a command's empty text is the event's absent value: the
    processor records ``condition: ""`` as none), so a field the command left empty cannot be
    filled in later; the event was recorded within the command's validity after it was signed;
    and a proposal's document is stored in canonical form, so its content hash, and the
    ``governs`` and ``owner`` read from it, are compared instead."""
    later = {name for kind, name in SIGNED_WHEN_SET if isinstance(event, _PRODUCES.get(kind, ()))}
    for f in dataclasses.fields(event):
        if f.name in _NOT_COMPARED or (f.name not in command and f.name not in later):
            continue
        wanted = command.get(f.name)
        if wanted is None and (type(event).__name__, f.name) in _FILLED_IN:
            continue
        recorded = to_json_value(getattr(event, f.name))
        if (None if recorded == "" else recorded) != (None if wanted == "" else wanted):
            return f"the event's {f.name} is not the signed command's"
    try:
        signed_at = datetime.fromisoformat(str(command.get("occurred_at")))
    except ValueError:
        return "the signed command has no time"
    if signed_at.tzinfo is None:  # no signer writes one; compared, it was a TypeError
        return "the signed command's time has no zone"
    if not within_validity(signed_at, event.occurred_at):
        return "the event's time is not within the signed command's validity"
    if isinstance(event, PolicyVersionProposed):
        if content_hash(event.document) != event.content_hash:
            # What the evaluator runs is the document; what was signed and shown is its hash
            # (a red team recorded a permissive document under a strict one's hash and
            # signature: it decided, and every check here passed).
            return "the event's document does not hash to its content_hash: it was altered"
        signed = _signed_policy(str(command.get("document", "")), event.content_hash)
        if signed is None:
            return "the signed command's document does not load"
        if signed.content_hash != event.content_hash:
            return "the event's document is not the signed command's"
        if (signed.name, tuple(signed.governs), signed.owner) != (
            event.policy,
            tuple(event.governs),
            event.owner,
        ):
            return "the event's policy, governs or owner is not the signed document's"
    return None


def _signed_policy(document: str, recorded_hash: str) -> Policy | None:
    """A signed proposal's document read as the processor read it when it recorded it (``None``
    if it does not load): as a recorded document, so a limit or check that came later does not
    unprove it; its numbers exactly, or, if that is not the hash recorded, as YAML's floats, as
    every document was read before numbers with a fraction were read exactly."""
    signed = None
    with contextlib.suppress(PolicyError):
        signed = parse_policy(document, limits=RECORDED_LIMITS, new_document=False)
        if signed.content_hash == recorded_hash:
            return signed
    with contextlib.suppress(PolicyError):
        return parse_policy(
            document, limits=RECORDED_LIMITS, new_document=False, numbers_as_floats=True
        )
    return signed


def _derived(state: LedgerState, event: GovernanceEvent) -> str | None:
    """Why ``event``'s fields that the command processor derives from the state (its aggregate's
    sequence, a proposal's version, a promotion's previous version, a rollback's version, a
    revocation's principal) are not what it derived from ``state``, the state just before the
    event: an event of the aggregate deleted, inserted or moved, or a field altered after."""
    aggregate = aggregate_of(event)
    held = aggregate_record(state, event)
    last = held.sequence if held is not None else 0
    if event.sequence != last + 1:
        return (
            f"it is event {event.sequence} of {aggregate}, but the last one before it is "
            f"{last}: an event of {aggregate} is missing, inserted or moved"
        )
    policy = held if isinstance(held, PolicyRecord) else None
    if isinstance(event, PolicyVersionProposed):
        latest = policy.latest if policy is not None else 0
        if event.version != latest + 1:
            return f"it proposes version {event.version}, but the next version was {latest + 1}"
    elif isinstance(event, PolicyVersionPromoted) and policy is not None:
        expected = policy.previous_for(event.stage, event.version)
        if event.previous_version != expected:
            return f"its previous version is {event.previous_version}, but it was {expected}"
    elif isinstance(event, PolicyRolledBack) and policy is not None:
        if event.from_version != policy.active:
            return f"it rolls back from v{event.from_version}, but v{policy.active} was active"
        if _signed_field(event, "to_version") is None:  # the processor chose the target
            target = policy.rollback_target()
            if event.to_version != target:
                return f"it rolls back to v{event.to_version}, but the version before was v{target}"
    elif isinstance(event, GrantRevoked) and not (
        isinstance(held, PrincipalRecord) and event.grant_id in held.grants
    ):
        return f"it revokes grant {event.grant_id}, which {aggregate} did not hold"
    return None


def _signed_field(event: GovernanceEvent, name: str) -> Any:
    """A field of the command ``event`` recorded as signed (``None`` if absent or unreadable;
    :func:`verify_event` reports an unreadable one)."""
    try:
        return json.loads(str(event.signed_command))["command"].get(name)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def event_action(event: GovernanceEvent) -> tuple[str, str]:
    """(action, resource) the command that produced ``event`` was authorized as: what
    :func:`ledger.core.lifecycle.commands.command_action` says of that command (a test holds
    the two to each other)."""
    match event:
        case PolicyVersionProposed():
            return "ledger.policy.propose", f"policy:{event.policy}"
        case PolicyVersionApproved():
            return "ledger.policy.approve", f"policy:{event.policy}"
        case PolicyVersionPromoted():
            return "ledger.policy.promote", f"policy:{event.policy}"
        case PolicyRolledBack():
            return "ledger.policy.rollback", f"policy:{event.policy}"
        case PolicyRetired():
            return "ledger.policy.retire", f"policy:{event.policy}"
        case GrantIssued():
            return "ledger.grant.issue", f"principal:{event.principal}"
        case GrantRevoked():
            return "ledger.grant.revoke", f"principal:{event.principal}"
        case RoleAssigned():
            return "ledger.role.assign", event.role
        case RoleRevoked():
            return "ledger.role.revoke", event.role
        case ActorKeyRegistered():
            return "ledger.key.register", f"principal:{event.principal}"
        case ActorKeyRevoked():
            return "ledger.key.revoke", f"principal:{event.principal}"
        case _:
            assert_never(event)


def _unauthorized(
    state: LedgerState,
    event: GovernanceEvent,
    admins: frozenset[str],
    protected: frozenset[str] | None = None,
    members: Mapping[str, Mapping[str, str]] | None = None,
) -> str | None:
    """Why the command processor should have refused ``event``'s command in ``state``, the
    state just before it: its actor held no grant for it then (not an administrator), or it
    approved its own version. A signature proves who sent a command, not that they might: a
    processor that skipped the check — a bug, a forged snapshot, a compromised host — shows
    here. ``members``: each role's members in ``state`` with who assigned them
    (:func:`~ledger.core.state.role_members` of every role, kept by a caller walking a history;
    those an administrator assigned may be left out, as they are never checked), else looked
    up."""
    should = "the command processor should have refused it"
    at = f"{event.occurred_at:%Y-%m-%dT%H:%M:%SZ}"
    # Refused for administrators too: approving one's own version, and deploying (or rolling
    # back to) a version nobody approved.
    registrar = key_registrar(state, event.actor, event.command_key_id, admins)
    if isinstance(event, PolicyVersionApproved):
        version = _version(state, event.policy, event.version)
        if version is not None and version.author == event.actor:
            return f"{event.actor} approved its own version {event.version} of {event.policy}"
        if version is not None and version.author == registrar:
            return (
                f"{event.actor} approved version {event.version} of {event.policy} with a key "
                f"its author {registrar} registered: {should}"
            )
    unapproved = _unapproved_target(state, event)
    if unapproved is not None:
        return f"{unapproved} (at {at}, in the history merged by time): {should}"
    reached = _beyond_assigner(state, event, admins, members)  # for administrators too
    if reached is not None:
        reached = f"{reached} ({at}): {should}"
    if event.actor in admins:
        return reached
    action, resource = event_action(event)
    now = event.occurred_at
    if authorize(state, event.actor, action, resource, now=now) is None:
        return (
            f"{event.actor} held no grant of {action} on {resource} at {at} in the history "
            f"before it: {should}"
        )
    if registrar is not None and authorize(state, registrar, action, resource, now=now) is None:
        return (
            f"{event.actor} signed with a key {registrar} registered, and {registrar} held no "
            f"grant of {action} on {resource} at {at} (a delegate's key acts no further than "
            f"the delegate): {should}"
        )
    # Delegation never amplifies: what a delegate hands on, its own grants then covered.
    handed = None
    if isinstance(event, GrantIssued):
        beyond = not_held(
            state, event.actor, tuple(event.actions), event.resource,
            condition=event.condition, valid_until=event.valid_until, now=now,
        )  # fmt: skip
        if isinstance(beyond, NotChecked):
            return f"{event.actor}'s grant {event.grant_id!r} {beyond.why} ({at}): {should}"
        if beyond is not None:
            handed = f"{beyond!r} on {event.resource!r}"
    elif isinstance(event, RoleAssigned):
        unheld = first_not_held(state, event.actor, effective_grants(state, event.role), now=now)
        if unheld is not None and isinstance(unheld[0], NotChecked):
            return f"{event.actor} assigned {event.role}, whose grants {unheld[0].why} ({at}): {should}"
        if unheld is not None:
            handed = f"{unheld[0]!r} on {unheld[1].resource!r} (through {event.role})"
    elif (target := _deployed_target(state, event)) is not None:
        assert isinstance(event, (PolicyVersionPromoted, PolicyRolledBack))
        taken, complete = takeovers(state, event.policy, target.governs)
        deploying = f"{event.policy} v{_number(event)}"
        problem = takeover_problem(state, event.actor, deploying, taken, complete, now=now)
        if problem is None and registrar is not None:
            problem = takeover_problem(state, registrar, deploying, taken, complete, now=now)
            if problem is not None:
                problem = f"{event.actor} signed with a key {registrar} registered, and {problem}"
        if problem is not None:
            return f"{problem} ({at}): {should}"
    elif isinstance(event, (ActorKeyRegistered, ActorKeyRevoked)):
        problem = key_delegation_problem(
            state, event.actor, event.principal,
            registering=isinstance(event, ActorKeyRegistered), now=now, admins=admins,
            protected=protected, signed_with=event.command_key_id,
        )  # fmt: skip
        if problem is not None:
            return f"{problem.split(': ask an administrator')[0]} ({at}): {should}"
    if handed is not None:
        return (
            f"{event.actor} handed on {handed}, which its own grants in force at {at} did not "
            f"cover (only an administrator hands on more than it holds): {should}"
        )
    return reached


def _beyond_assigner(
    state: LedgerState,
    event: GovernanceEvent,
    admins: frozenset[str],
    members: Mapping[str, Mapping[str, str]] | None,
) -> str | None:
    """A grant issued to a role that reached a member a delegate assigned, beyond what that
    delegate held (:func:`~ledger.core.authority.role_reach_problem`)."""
    if not isinstance(event, GrantIssued) or not event.principal.startswith("role:"):
        return None
    role = event.principal
    reach = role_reach_problem(
        state, event.grant_id, role,
        role_members(state, role) if members is None else members.get(role, {}),
        tuple(event.actions), event.resource, condition=event.condition,
        valid_until=event.valid_until, now=event.occurred_at, admins=admins,
    )  # fmt: skip
    return None if reach is None else reach.why


def _version(state: LedgerState, policy: str, number: int | None) -> PolicyVersion | None:
    record = state.policies.get(policy)
    return record.versions.get(number) if record is not None and number is not None else None


def _number(event: PolicyVersionPromoted | PolicyRolledBack) -> int:
    return event.version if isinstance(event, PolicyVersionPromoted) else event.to_version


def _deployed_target(state: LedgerState, event: GovernanceEvent) -> PolicyVersion | None:
    """The version a promotion to canary or active, or a rollback, made decide requests."""
    if isinstance(event, PolicyVersionPromoted) and event.stage in (Stage.CANARY, Stage.ACTIVE):
        return _version(state, event.policy, event.version)
    if isinstance(event, PolicyRolledBack):
        return _version(state, event.policy, event.to_version)
    return None


def _unapproved_target(state: LedgerState, event: GovernanceEvent) -> str | None:
    """A canary or active version, or a rollback's target, that nobody had approved."""
    if isinstance(event, PolicyVersionPromoted) and event.stage in (Stage.CANARY, Stage.ACTIVE):
        number, how = event.version, f"promoted to {event.stage.value}"
    elif isinstance(event, PolicyRolledBack):
        number, how = event.to_version, "rolled back to"
    else:
        return None
    version = _version(state, event.policy, number)
    if version is None or version.approved_by is not None:
        return None
    return f"{event.policy} v{number} was {how} without an approval"


@dataclass(frozen=True, slots=True, kw_only=True)
class Witnesses:
    """When the broker received each signed command still on the commands topic (a week; in an
    export, as exported): (command id, signature) -> (its time, whether that time is the
    broker's own, LogAppendTime, or only the sender's). Keyed by the signature too: a record
    under a command's id that is not that signed command (anyone allowed to send commands can
    send one) says nothing of it."""

    received: Mapping[tuple[str, bytes], tuple[datetime, bool]] = field(default_factory=dict)


KEY_CHAIN_LINKS: Final = 10_000
"""The most registrations :func:`registration_problem` follows from a key to its trust anchor
(a key registered by a key registered by ...): a principal that registers each new key of its
own with the one before adds a link each time (keys proven once are remembered, ``proven``)."""


def registration_problem(
    state: LedgerState,
    owner: str,
    key: ActorKey,
    anchors: Mapping[str, bytes] | None = None,
    known: Mapping[str, bytes | Collection[bytes]] | None = None,
    *,
    admins: frozenset[str] = frozenset(),
    proven: set[tuple[str, str, bytes, str]] | None = None,
) -> str | None:
    """Why ``owner``'s ``key`` may not sign, for how it came into the ledger, if it may not. A
    key signs only if its id is its public key's, its registration is proven
    (:func:`verify_event`: signed, over a command that asked for it, by a key of the
    registering actor registered before it and not yet revoked) and was the registering
    actor's to make (:func:`_registration_authority`), and so on for the key that signed it,
    back to a trusted anchor (:func:`_trusted_anchor`).

    A red team, holding the command processor's credential, wrote an ``ActorKeyRegistered`` of
    its own key for another actor into the log: the processor folded it and accepted the
    commands it signed as that actor's, until ``actor verify`` flagged them. A review then
    wrote, with any actor's genuine key, that actor's refused registration of its own key for
    ``human:admin``: signed, but not that actor's to make. The signing key itself, when it is
    an anchor, must be a configured one (:func:`authenticate`).

    ``proven``: the keys proven before, each as (owner, key id, public key, registration event
    id), added to as keys are: a key is taken as proven only if it is that very registration
    (a review: cached by its id alone, a key planted under a proven id for another actor
    signed unchecked). Not a chain with a link another's key registered, whose registrar an
    anchor planted later would free from its limits (a review)."""
    chain: list[tuple[str, str, bytes, str]] = []
    seen: set[str] = set()
    delegated = False  # a link another's key registered: judged again at each command
    while True:
        event = key.registration
        entry = (owner, key.key_id, bytes(key.public_key), event.event_id if event else "")
        if proven is not None and entry in proven:
            break
        if key.key_id != key_id_of(key.public_key):
            return f"its id {key.key_id} is not its public key's ({key_id_of(key.public_key)})"
        weak = weak_key(bytes(key.public_key))
        if weak is not None:  # a red team: one registered through `actor add --public-key`
            return f"{key.key_id} of {owner} cannot sign: {weak}"
        if owner == ANCHOR_ACTOR:  # a review: a key planted for it registered unbounded keys
            return f"{ANCHOR_ACTOR} signs nothing: its keys are never registered by a command"
        if key.registered_with is None:  # a trust anchor (or a registration without a proof)
            if event is not None and (event.actor != ANCHOR_ACTOR or event.command_signature):
                return f"its registration {event.event_id} by {event.actor} carries no proof"
            if chain and not _trusted_anchor(state, owner, key, anchors, known):
                return (
                    f"it was registered under a trust anchor of {owner} ({key.key_id}) that the "
                    "command processor's configuration does not hold"
                )
            break  # (the signing key's own anchor check is authenticate's)
        if event is None:
            return f"its registration is not in the state ({key.key_id} of {owner})"
        verdict = verify_event(state, event)
        if not verdict.ok:
            return f"its registration {event.event_id} is not proven: {verdict.problem}"
        refused = _registration_authority(state, event, admins, anchors, known)
        if refused is not None:
            return f"its registration {event.event_id} was not {event.actor}'s to make: {refused}"
        delegated = delegated or not (
            event.actor == event.principal
            or _administrator(state, event.actor, admins, anchors, known)
        )
        chain.append(entry)
        seen.add(key.key_id)
        signer = actor_key(state, event.actor, key.registered_with)
        if signer is None or signer.key_id in seen:
            return f"the keys that registered {key.key_id} lead back to it, not to a trust anchor"
        if event.actor == event.principal and (
            (signer.registration is not None and signer.registration.sequence >= event.sequence)
            or (signer.revocation is not None and signer.revocation.sequence < event.sequence)
        ):  # reviews: folded before its signer, its registrar (ActorKey.origin) was unknown,
            # so unbounded; or signed by a key revoked before it, back-dated
            return (
                f"its registration {event.event_id} is signed with {signer.key_id}, which "
                f"{owner}'s history registers only after it, or had revoked before it"
            )
        if (
            event.actor != event.principal
            and not _administrator(state, event.actor, admins, anchors, known)
            and not (
                signer.origin == ANCHOR_ACTOR
                or (
                    signer.origin is not None
                    and _administrator(state, signer.origin, admins, anchors, known)
                )
            )
        ):  # a review: a key agent:low registered for ops registered a key for ops2, unbounded
            return (
                f"its registration {event.event_id} is signed with {signer.key_id}, a key "
                f"{signer.origin or 'nobody known'} registered for {event.actor}: a key someone "
                "else registered registers keys for no one else"
            )
        if len(chain) >= KEY_CHAIN_LINKS:
            return f"more than {KEY_CHAIN_LINKS} registrations lead from it to a trust anchor"
        owner, key = event.actor, signer
    if proven is not None and not delegated:
        proven.update(chain)
    return None


def _trusted_anchor(
    state: LedgerState,
    owner: str,
    key: ActorKey,
    anchors: Mapping[str, bytes] | None,
    known: Mapping[str, bytes | Collection[bytes]] | None,
) -> bool:
    """Is the trust anchor ``key`` of ``owner`` one to trust: written as the command processor
    writes anchors (by it, its id its public key's), and, with ``anchors``, the configured one
    or one the key store keeps retired (``known``: ``retired/ACTOR/*.pub``, a rotated key or
    an administrator who is one no more; not any actor's ``.pub``, which a review planted as
    an anchor before the actor's key was registered); without ``anchors``, any. Not by
    where it stands in the log: a review planted an anchor before a genuine rotation, and one
    "replaced" by a copy of the configured key under another id, and both rooted keys."""
    event = key.registration
    if key.key_id != key_id_of(key.public_key) or (
        event is not None and (event.actor != ANCHOR_ACTOR or event.command_signature)
    ):
        return False
    if anchors is None:
        return True
    held = (known or {}).get(owner)
    kept = {held} if isinstance(held, bytes) else set(held or ())
    return key.public_key == anchors.get(owner) or key.public_key in kept


def _administrator(
    state: LedgerState,
    actor: str,
    admins: frozenset[str],
    anchors: Mapping[str, bytes] | None,
    known: Mapping[str, bytes | Collection[bytes]] | None,
) -> bool:
    """Is ``actor`` an administrator: configured, or holding a trusted anchor
    (:func:`_trusted_anchor`: one who is one no more keeps what its registrations made, while
    the key store keeps its ``.pub`` retired). An anchor planted in the log is trusted only if
    its id is its key's and that key is configured or retired: reviews planted one under
    another id, and one with an actor's ``.pub`` not yet registered, and each made a
    low-privilege actor an administrator."""
    if actor in admins:
        return True
    record = state.principals.get(actor)
    return record is not None and any(
        k.registered_with is None and _trusted_anchor(state, actor, k, anchors, known)
        for k in record.keys
    )


def _registration_authority(
    state: LedgerState,
    event: ActorKeyRegistered,
    admins: frozenset[str],
    anchors: Mapping[str, bytes] | None,
    known: Mapping[str, bytes | Collection[bytes]] | None,
) -> str | None:
    """Why the registration ``event`` was not its actor's to make, if it was not: a principal
    registers its own keys, an administrator anyone's. Anyone else's registration of another's
    key (a delegate's, before delegates were refused it; a former administrator's) never makes
    an administrator's key, and counts only if that registrar holds no anchor the
    configuration does not trust: what such a key may do is bounded by its registrar's own
    grants (``key_registrar``), unless the registrar passes for an administrator by an anchor,
    which an insider can plant."""
    actor, owner = event.actor, event.principal
    if actor == owner or _administrator(state, actor, admins, anchors, known):
        return None
    if _administrator(state, owner, admins, anchors, known):
        return f"only an administrator registers a key of the administrator {owner}"
    registrar = state.principals.get(actor)
    planted = [
        k.key_id
        for k in (registrar.keys if registrar is not None else ())
        if k.registered_with is None and not _trusted_anchor(state, actor, k, anchors, known)
    ]
    if planted:
        return (
            f"{actor} holds a trust anchor the command processor's configuration does not "
            f"({planted[0]}), which would free the key from its registrar's limits"
        )
    return None


def witnesses_from(commands: Iterable[tuple[Command, datetime, bool]]) -> Witnesses:
    """:class:`Witnesses` from the commands topic's records: (command, its record's time,
    whether that is the broker's). A command sent twice: its first copy. A copy whose time is
    outside the window the command processor takes it in (before it was signed, or after its
    validity) is left out: a replay sent days later, or a record stamped by its sender with any
    time, must not stand for the command the processor decided (a review)."""
    first: dict[tuple[str, bytes], tuple[datetime, bool]] = {}
    for command, at, broker in commands:
        if command.signature is None:
            continue
        slack = RECEIVED_SLACK if broker else CLOCK_SKEW + RECEIVED_SLACK
        try:
            inside = (
                command.occurred_at - CLOCK_SKEW - slack
                <= at
                <= command.occurred_at + COMMAND_VALID_FOR + CLOCK_SKEW + slack
            )
        except OverflowError:  # a command dated at the edge of time witnesses nothing (a review)
            continue
        if not inside:
            continue
        key = (command.event_id, bytes(command.signature))
        if key not in first or at < first[key][0]:
            first[key] = (at, broker)
    return Witnesses(received=first)


RECEIVED_SLACK: Final = timedelta(seconds=5)
"""How far before its command reached the broker an event may be dated: the processor's clock
against the broker's (one host's, or NTP's: well under this). Where the record's time is its
sender's (a topic created before the commands topic took the broker's time), the sender's
clock may run :data:`CLOCK_SKEW` ahead of the processor's too."""


def _witnessed(witnesses: Witnesses, event: GovernanceEvent) -> str | None:
    """Why ``event`` is dated before its signed command reached the broker, if it is. A red
    team, holding the command processor's credential, wrote the event of a command the
    processor had refused (the approver's grant revoked 22 s before she signed), dated a second
    before the revocation: its time is the writer's, and ``actor verify`` proved it."""
    if event.command_signature is None:
        return None
    seen = witnesses.received.get((event.command_id, bytes(event.command_signature)))
    if seen is None:
        return None
    received, broker = seen
    slack = RECEIVED_SLACK if broker else CLOCK_SKEW + RECEIVED_SLACK
    earliest = datetime.min.replace(tzinfo=received.tzinfo) + slack
    if received > earliest and event.occurred_at >= received - slack:  # (no overflow)
        return None
    early = (received - event.occurred_at).total_seconds()
    whose = "the broker's time" if broker else "its sender's time"
    return (
        f"it is dated {event.occurred_at.isoformat()}, {early:.1f} s before its command "
        f"reached the ledger ({received.isoformat()}, {whose}): back-dated, or the command "
        "processor's clock runs behind"
    )


def verify_history(
    events: Iterable[GovernanceEvent],
    admins: Iterable[str] = (),
    witnesses: Witnesses | None = None,
) -> list[Verdict]:
    """:func:`verify_event` for every event of a governance history (policy and grant events,
    each topic in its log order), against the keys its ``ActorKeyRegistered``/``ActorKeyRevoked``
    events registered (folded with the core's ``replay``); each event's derived fields against
    the state before it (:func:`_derived`), which finds an event deleted, inserted or moved
    within its aggregate's history; and its actor's authority in that state
    (:func:`_unauthorized`: the bootstrap administrators, ``admins`` as the command processor
    is configured (``$LEDGER_ADMINS``) and those with a trust anchor, may do everything); with
    ``witnesses``, each event's time against when its signed command reached the broker
    (:func:`_witnessed`); and each event's key against its registration's proof
    (:func:`_signed_by_unproven_keys`)."""
    history = list(events)
    final = replay(history, EMPTY_STATE)
    configured = frozenset(admins)
    admins = configured | frozenset(
        e.principal
        for e in history
        if isinstance(e, ActorKeyRegistered)
        and e.actor == ANCHOR_ACTOR
        and e.command_signature is None  # what verify_event takes for an anchor
    )
    # Whose keys only administrators register and revoke: those the processor is configured
    # with (a former administrator's anchor stays in the history), else every anchor's.
    unauthorized = _authority_problems(history, admins, configured or admins)
    verdicts = []
    state = EMPTY_STATE
    # command id -> its first event, aggregate, sequence (:func:`_applied_again`)
    applied: dict[str, tuple[str, str, int]] = {}
    for index, event in enumerate(history):
        verdict = verify_event(final, event)
        if verdict.ok:
            again = None
            if not verdict.anchor:
                again = (witnesses and _witnessed(witnesses, event)) or _applied_again(
                    applied, event
                )
            problem = again or _derived(state, event)
            authority = problem is None and not verdict.anchor and index in unauthorized
            if authority:
                problem = unauthorized[index]
            if problem is not None:
                verdict = dataclasses.replace(
                    verdict, ok=False, anchor=False, problem=problem, authority=authority
                )
        verdicts.append(verdict)
        state = fold(state, event)
    return _signed_by_unproven_keys(history, verdicts)


def _signed_by_unproven_keys(
    history: list[GovernanceEvent], verdicts: list[Verdict]
) -> list[Verdict]:
    """``verdicts`` with every event signed by a key whose registration is not proven made
    unproven too (and so on, for keys such a key registered). A review: an
    ``ActorKeyRegistered`` for ``human:admin`` with a junk proof, written with the command
    processor's credential, was itself unproven, but the grant signed with its key was proven:
    a signature is worth what the key's registration is. One pass over the registrations in
    their log's order (a key is registered before it signs), then one over every event."""
    verdicts = list(verdicts)
    unproven: dict[str, str] = {}  # key id -> the registration not proven

    def tainted(index: int, event: GovernanceEvent) -> None:
        registration = unproven.get(str(event.command_key_id))
        verdict = verdicts[index]
        if verdict.ok and not verdict.anchor and registration is not None:
            verdicts[index] = dataclasses.replace(
                verdict,
                ok=False,
                problem=f"it is signed with key {event.command_key_id}, whose registration "
                f"(event {registration}) is not proven",
            )

    for index, event in enumerate(history):
        if isinstance(event, ActorKeyRegistered):
            tainted(index, event)
            verdict = verdicts[index]
            # Its proof fails (one only today's authority rules fail was signed as recorded).
            if not verdict.ok and not verdict.authority:
                unproven[str(event.actor_key_id)] = event.event_id
    if unproven:
        for index, event in enumerate(history):
            tainted(index, event)
    return verdicts


def _applied_again(applied: dict[str, tuple[str, str, int]], event: GovernanceEvent) -> str | None:
    """Why ``event`` is a copy of one its signed command produced before, if it is (and
    remember it in ``applied``: command id -> its first event, aggregate and last sequence).
    A signed command applies once: each command type produces one event, but for revoking an
    actor's keys without naming one, one event per key, written one after another in that
    actor's history. A red team, holding the command processor's credential, wrote a genuine
    ``RoleAssigned`` again after its revocation, with a new event id and the next sequence:
    the role came back, and every check here proved the copy (its signature, its fields, its
    time within the command's validity, set by whoever writes it); a review then wrote a copy
    of a revoke-all event naming a key registered after it."""
    aggregate = aggregate_of(event)
    seen = applied.get(event.command_id)
    if seen is None:
        applied[event.command_id] = (event.event_id, aggregate, event.sequence)
        return None
    first, where, last = seen
    if (
        isinstance(event, ActorKeyRevoked)
        and _signed_field(event, "actor_key_id") is None
        and where == aggregate
        and event.sequence == last + 1
    ):  # the next key of one revocation of them all
        applied[event.command_id] = (first, where, event.sequence)
        return None
    return (
        f"its signed command {event.command_id} already produced event {first}: a signed "
        "command applies once, so this is a copy written after it"
    )


def _merged(history: list[GovernanceEvent]) -> list[int]:
    """The indices of ``history`` in the order the processor applied its events: the grant and
    the policy events merged by the processor's clock (ties: grant events first), each kept in
    its own log order. Sorted by time alone, an event whose time went back (a clock stepped
    back, or an insider's back-dated copy) came before its aggregate's earlier events, the fold
    dropped them as out of order, and every later grant of that principal went missing: its
    genuine acts were judged unauthorized (a red team)."""
    grants = [i for i, e in enumerate(history) if isinstance(e, GRANT_EVENT_TYPES)]
    policies = [i for i, e in enumerate(history) if not isinstance(e, GRANT_EVENT_TYPES)]
    order: list[int] = []
    g = p = 0
    while g < len(grants) and p < len(policies):
        if history[grants[g]].occurred_at <= history[policies[p]].occurred_at:
            order.append(grants[g])
            g += 1
        else:
            order.append(policies[p])
            p += 1
    return order + grants[g:] + policies[p:]


def _authority_problems(
    history: list[GovernanceEvent], admins: frozenset[str], protected: frozenset[str]
) -> dict[int, str]:
    """:func:`_unauthorized` of each event (by its index in ``history``) against the state of
    every event recorded before it in time: the authority a proposal needs is on the grant
    topic, which ``history`` lists after the policy topic, so the two are merged by the
    processor's clock (ties: grant events first, as a grant is applied before the command
    that needs it)."""
    order = _merged(history)
    problems: dict[int, str] = {}
    state = EMPTY_STATE
    # Each role's members a delegate assigned, with who did, kept as the fold goes: a scan of
    # every principal at each grant to a role would make a long history's check quadratic,
    # and the members administrators assigned (most, or all) are never checked.
    members: dict[str, dict[str, str]] = {}
    for i in order:
        event = history[i]
        if not (isinstance(event, ActorKeyRegistered) and event.actor == ANCHOR_ACTOR):
            problem = _unauthorized(state, event, admins, protected, members)
            if problem is not None:
                problems[i] = problem
        state = fold(state, event)
        if isinstance(event, (RoleAssigned, RoleRevoked)):  # as the fold left it
            record = state.principals.get(event.principal)
            by = record.role_assigned_by.get(event.role) if record is not None else None
            if by is None or by in admins:
                members.get(event.role, {}).pop(event.principal, None)
            else:
                members.setdefault(event.role, {})[event.principal] = by
    return problems
