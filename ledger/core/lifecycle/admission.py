"""Admission of a signed command: authentication, freshness, and a command id decided once.

Lives here: :func:`authenticate` (the signature, by a registered, unrevoked key of the actor),
:func:`fresh` (signed within its validity), :func:`decide_signed` (both, then :func:`.decide`,
recording the proof on every event), :class:`FirstAnswer` and :func:`decide_again` (a command id
seen before gets its first answer, or ``duplicate_command_id``), :func:`finish_again` (what an
applied command left unwritten), and :func:`register_anchors`
(the bootstrap administrators' keys from the configuration).

May import: the core's modules outside this package and, of this package, :mod:`.rejections`,
:mod:`.commands` and :mod:`.rules`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from ledger.core.ed25519 import weak_key
from ledger.core.events import ActorKeyRegistered, ActorKeyRevoked, Command, GovernanceEvent
from ledger.core.lifecycle.commands import DEFAULT_ADMINS, command_aggregate
from ledger.core.lifecycle.rejections import Rejection, _reject, _shown, clipped
from ledger.core.lifecycle.rules import decide, unfinished
from ledger.core.limits import DEFAULT_LIMITS, Limits
from ledger.core.signing import (
    ANCHOR_ACTOR,
    CLOCK_SKEW,
    COMMAND_VALID_FOR,
    PUBLIC_KEY_BYTES,
    key_id_of,
    registration_problem,
    signed_bytes,
    verify_signature,
    within_validity,
)
from ledger.core.state import PRINCIPAL, LedgerState, actor_key, any_unread, key_owner

__all__ = [
    "authenticate",
    "fresh",
    "decide_signed",
    "FirstAnswer",
    "KeyTrust",
    "decide_again",
    "finish_again",
    "register_anchors",
]


def authenticate(
    state: LedgerState,
    command: Command,
    anchors: Mapping[str, bytes] | None = None,
    known: Mapping[str, bytes | Collection[bytes]] | None = None,
    *,
    admins: frozenset[str] = DEFAULT_ADMINS,
    proven: set[tuple[str, str, bytes, str]] | None = None,
) -> Rejection | None:
    """``None`` when ``command`` is signed by a registered, unrevoked key of its actor, else
    the :class:`Rejection` (``unsigned_command``, ``unknown_actor_key``, ``bad_signature``).

    With ``anchors`` (the command processor's configured trust anchors: principal -> public
    key), a key the log holds as a trust anchor signs only if it is one of them: an anchor is
    trusted as the processor's configuration is, not as the log is (a red team, holding the
    processor's credential, wrote an anchor of its own key for ``human:admin`` into the log,
    and its commands were accepted as the administrator's).

    The key must have come into the ledger proven (:func:`registration_problem`, ``known``: the
    public keys the processor's key store holds; ``admins``: who administers, for the authority
    of each registration; ``proven``: keys proven before): a key an insider wrote into the log
    signs nothing.

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
    if (
        anchors is not None
        and key.registered_with is None
        and anchors.get(command.actor) != key.public_key
    ):
        if _among(known, command.actor, bytes(key.public_key)):
            # A review: a rotation done as the README says read like a forgery.
            return _reject(
                "unknown_actor_key",
                f"{what}: key {command.key_id} is a retired trust anchor of "
                f"{clipped(command.actor)} (its .pub is in the key store's retired/ folder): "
                "a rotated anchor signs nothing more; sign with its current key",
            )
        return _reject(
            "unknown_actor_key",
            f"{what}: key {command.key_id} is a trust anchor of {clipped(command.actor)} in the "
            "log that the command processor's configuration does not hold (its key store's "
            "public key of that administrator, $LEDGER_ADMINS): an anchor is trusted as the "
            "configuration is; if the key was rotated, restart the command processor with the "
            "new .pub, else someone wrote it into the log",
        )
    weak = weak_key(bytes(key.public_key))
    if weak is not None:  # registered before such keys were refused (a review)
        return _reject(
            "unknown_actor_key",
            f"{what}: key {command.key_id} of {clipped(command.actor)} cannot sign: {weak}; "
            "revoke it and register a key made with `ledger actor keygen`",
        )
    if not verify_signature(key.public_key, command.signature, signed_bytes(command)):
        return _reject(
            "bad_signature",
            f"{what}: the signature does not verify with key {command.key_id} (the command was "
            "altered after it was signed, or signed with another key)",
        )
    unproven = registration_problem(
        state, command.actor, key, anchors, known, admins=admins, proven=proven
    )
    if unproven is not None:
        return _reject(
            "unknown_actor_key",
            f"{what}: key {command.key_id} of {clipped(command.actor)} is in the log but not "
            f"proven: {unproven}. The command processor did not write that registration from a "
            "signed command: `ledger actor verify` lists it; register a new key",
        )
    return None


def fresh(command: Command, now: datetime) -> Rejection | None:
    """``None`` when ``command`` was signed within :data:`COMMAND_VALID_FOR` before ``now``
    (and at most :data:`CLOCK_SKEW` after it), else the ``stale_command`` :class:`Rejection`."""
    if within_validity(command.occurred_at, now):
        return None
    if command.occurred_at > now:  # a red team was told of the ten minutes after, not this
        return _reject(
            "stale_command",
            f"{type(command).__name__} by {clipped(command.actor)} was signed at "
            f"{command.occurred_at.isoformat()}, more than {CLOCK_SKEW.seconds // 60} minutes "
            f"ahead of the command processor's clock ({now.isoformat()}): check the signer's "
            "clock, then sign it again",
        )
    return _reject(
        "stale_command",
        f"{type(command).__name__} by {clipped(command.actor)} was signed at "
        f"{command.occurred_at.isoformat()}, outside the {COMMAND_VALID_FOR.seconds // 60} "
        "minutes a signed command is valid for: sign it again (a check of the signer's clock "
        "may be due)",
    )


def _among(
    known: Mapping[str, bytes | Collection[bytes]] | None, actor: str, public_key: bytes
) -> bool:
    """Is ``public_key`` one of ``actor``'s keys in ``known`` (the key store's retired keys)?"""
    held = (known or {}).get(actor)
    if held is None:
        return False
    return public_key == held if isinstance(held, bytes) else public_key in held


def decide_signed(
    state: LedgerState,
    command: Command,
    *,
    now: datetime,
    new_id: Callable[[], str],
    admins: frozenset[str] = DEFAULT_ADMINS,
    limits: Limits = DEFAULT_LIMITS,
    anchors: Mapping[str, bytes] | None = None,
    known: Mapping[str, bytes | Collection[bytes]] | None = None,
    proven: set[tuple[str, str, bytes, str]] | None = None,
) -> tuple[GovernanceEvent, ...] | Rejection:
    """:func:`authenticate` (``anchors``: the configured trust anchors, ``known``: the key
    store's public keys, ``proven``: keys proven before, when given), then
    :func:`fresh` (so a captured command cannot be replayed once its validity has passed),
    then :func:`decide`; every event accepted records the command's proof (its key id,
    signature and signed bytes), so who asked for it can be verified offline
    (:func:`ledger.core.signing.verify_history`)."""
    denied = authenticate(state, command, anchors, known, admins=admins, proven=proven) or fresh(
        command, now
    )
    if denied is not None:
        return denied
    outcome = decide(state, command, now=now, new_id=new_id, admins=admins, limits=limits)
    if isinstance(outcome, Rejection):
        return outcome
    return _with_proof(command, outcome)


def _with_proof(
    command: Command, events: tuple[GovernanceEvent, ...]
) -> tuple[GovernanceEvent, ...]:
    signed = signed_bytes(command).decode("utf-8")
    return tuple(
        replace(
            event,
            command_key_id=command.key_id,
            command_signature=command.signature,
            signed_command=signed,
        )
        for event in events
    )


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
    state: LedgerState,
    command: Command,
    first: FirstAnswer,
    *,
    trust: KeyTrust | None = None,
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
        return _authenticated(state, command, trust) or first.rejection
    if (
        first.signature is not None
        and command.signature == first.signature
        and _signed_as_sent(state, command)
    ):
        return first.event_ids  # the same command again (its key may have been revoked since)
    denied = _authenticated(state, command, trust)
    if denied is not None:
        return denied
    if first.signature is None:  # applied before signatures were recorded: an authentic repeat
        return first.event_ids
    return _reject(
        "duplicate_command_id",
        f"command id {_shown(command.event_id, 80)} was already used by another command: a "
        "command needs an id of its own (sign it again)",
    )


def finish_again(
    state: LedgerState,
    command: Command,
    first: FirstAnswer,
    *,
    now: datetime,
    new_id: Callable[[], str],
    trust: KeyTrust | None = None,
) -> tuple[GovernanceEvent, ...] | Rejection:
    """For a command applied before and delivered again as it was first signed (its signature
    the one its events recorded, ``first``): the events it did not write, with its proof, to
    append now (nearly always none). A command processor stopped between the events of a
    revocation of every key of an actor (one event per key) left the rest of the keys active,
    and the command, delivered again, was told "already applied" (a review). Written only
    while the command is valid, and its actor's key and authority hold as they did (else
    ``actor verify`` would not prove them: a review); otherwise, or when its actor's keys
    changed since, ``cut_short`` names the keys still active, for someone to revoke again.
    Another command under its id (even one :func:`decide_again` passes, as a command applied
    before signatures were recorded) finishes nothing."""
    if first.signature is None or command.signature != first.signature:
        return ()
    events = unfinished(state, command, now=now, new_id=new_id)
    if isinstance(events, Rejection) or not events:
        return events
    admins = trust.admins if trust is not None else DEFAULT_ADMINS
    decided = decide(state, command, now=now, new_id=new_id, admins=admins)
    refused = fresh(command, now) or _authenticated(state, command, trust)
    if refused is None and isinstance(decided, Rejection):
        refused = decided
    if refused is None:
        return _with_proof(command, events)
    keys = [e.actor_key_id for e in events if isinstance(e, ActorKeyRevoked)]
    return _reject(
        "cut_short",
        f"{type(command).__name__} by {clipped(command.actor)} was cut short (the command "
        f"processor stopped between its events) and cannot be finished now "
        f"({refused.code}: {refused.message[:300]}): "
        f"{clipped(command_aggregate(command))} still holds {', '.join(keys)}; revoke them again",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyTrust:
    """What a command processor trusts keys by, for :func:`authenticate`: its configured trust
    ``anchors``, the public keys its key store holds (``known``), its ``admins``, and the keys
    proven so far (``proven``, added to as they are)."""

    anchors: Mapping[str, bytes] | None = None
    known: Mapping[str, bytes | Collection[bytes]] | None = None
    admins: frozenset[str] = DEFAULT_ADMINS
    proven: set[tuple[str, str, bytes, str]] = field(default_factory=set)


def _authenticated(
    state: LedgerState, command: Command, trust: KeyTrust | None
) -> Rejection | None:
    if trust is None:
        return authenticate(state, command)
    return authenticate(
        state, command, trust.anchors, trust.known, admins=trust.admins, proven=trust.proven
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
        if weak_key(public_key) is not None:  # it could sign nothing (verify_signature)
            continue
        if any_unread(state, PRINCIPAL):  # its key may be another's, or its sequence taken, in
            continue  # a record not read (with_unreadable; a review)
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
