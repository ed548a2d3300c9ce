"""The ledger's events and commands: the contract between every part of the product.

Every type here has exactly one Avro schema in ``schemas/`` with the same name and the same
fields in the same order (a test keeps them in step). Types are frozen, slotted, keyword-only
dataclasses; names of facts that happened are past tense, names of requests are imperative.

Common fields, first in every record:

- ``event_id``: a UUID (string form; UUIDv7 where the producer generates it, so ids sort by time).
- ``occurred_at``: when it happened, an aware UTC ``datetime`` (Avro ``timestamp-micros``).
- ``actor``: the principal that caused it (``human:alice``, ``agent:refund-bot``, ``service:evaluator``).

Governance events (policy and grant events) also carry the aggregate they belong to and the
aggregate's ``sequence`` (1, 2, 3 … assigned by the single-writer command processor). ``fold``
applies an event only when its sequence is the next one for its aggregate, which is what makes
re-delivery of an already applied event a no-op.

Governance commands carry their actor's signature (``key_id``, ``signature``: Ed25519 over
:func:`ledger.core.signing.signed_bytes`); every governance event an accepted command produced
records that proof (``command_key_id``, ``command_signature``, and the signed bytes as
``signed_command``), so who did what can be verified offline with the actors' registered keys
(``ActorKeyRegistered`` events).

Value types carried in facts, context and constraints (see :data:`Value`): ``None``, ``bool``,
``int``, ``float``, ``str``, ``Decimal`` (exact), aware ``datetime`` (UTC) and ``tuple[str, ...]`` (a ``list[str]`` sent is read back as one).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Final, TypeAlias, get_args

__all__ = [
    "item_ref",
    "item_ref_splits",
    "COMMAND_PROCESSOR",
    "EVALUATOR",
    "Value",
    "Stage",
    "Determination",
    "Mode",
    # commands
    "ProposePolicyVersion",
    "ApprovePolicyVersion",
    "PromotePolicyVersion",
    "RollbackPolicy",
    "RetirePolicy",
    "IssueGrant",
    "RevokeGrant",
    "AssignRole",
    "RevokeRole",
    "RegisterActorKey",
    "RevokeActorKey",
    "Command",
    "COMMAND_TYPES",
    "POLICY_EVENT_TYPES",
    "GRANT_EVENT_TYPES",
    "GOVERNANCE_EVENT_TYPES",
    # command results
    "CommandAccepted",
    "CommandRejected",
    "CommandResult",
    # policy events
    "PolicyVersionProposed",
    "PolicyVersionApproved",
    "PolicyVersionPromoted",
    "PolicyRolledBack",
    "PolicyRetired",
    "PolicyEvent",
    # grant events
    "GrantIssued",
    "GrantRevoked",
    "RoleAssigned",
    "RoleRevoked",
    "ActorKeyRegistered",
    "ActorKeyRevoked",
    "GrantEvent",
    "GovernanceEvent",
    # evaluation
    "EvaluationRequested",
    "BatchItem",
    "BatchEvaluationRequested",
    "ShadowResult",
    "DecisionRecorded",
    "BatchItemDecision",
    "BatchDecisionRecorded",
    "DecisionCorrected",
    "ChainCheckpoint",
    # faults
    "DeadLetter",
    "EVENT_TYPES",
    "Event",
]

Value: TypeAlias = (
    bool | int | float | str | Decimal | datetime | tuple[str, ...] | list[str] | None
)
"""A fact, context or constraint value. Decimals are exact; datetimes are aware UTC; a list of
texts is carried as a tuple (what a reader of the ledger gets back)."""

COMMAND_PROCESSOR: Final = "service:command-processor"
"""The actor of every governance event and command result (the single writer, DESIGN §7)."""
EVALUATOR: Final = "service:evaluator"
"""The actor of decision traces, corrections and chain checkpoints."""


class Stage(enum.StrEnum):
    """Where a policy version stands in its lifecycle (DESIGN §7)."""

    DRAFT = "draft"  # proposed, not yet approved
    APPROVED = "approved"  # approved, not deciding anything yet
    SHADOW = "shadow"  # evaluated and recorded, never enforced
    CANARY = "canary"  # decides the requests whose hash bucket is under the canary percent
    ACTIVE = "active"  # decides every other request
    SUPERSEDED = "superseded"  # was active or canary, replaced since
    RETIRED = "retired"  # the whole policy was retired


class Determination(enum.StrEnum):
    """The closed set of answers (DESIGN §5)."""

    ALLOW = "allow"
    DENY = "deny"
    ALLOW_WITH_CONSTRAINTS = "allow_with_constraints"
    ERROR = "error"

    @property
    def permits(self) -> bool:
        """Whether the action may go ahead: ``allow``, or ``allow_with_constraints`` on its
        terms (honour them); never ``deny`` nor ``error`` (an agent engineer's walkthrough:
        code testing ``!= DENY`` acted on an ``error``)."""
        return self in (Determination.ALLOW, Determination.ALLOW_WITH_CONSTRAINTS)


class Mode(enum.StrEnum):
    """Integration pattern of an evaluation request (DESIGN §8)."""

    SYNC = "sync"
    ASYNC = "async"


def _empty() -> Mapping[str, Value]:
    return {}


# --------------------------------------------------------------------------- commands
# Published on ``ledger.commands`` by the CLI/SDK; validated by the command processor.


@dataclass(frozen=True, slots=True, kw_only=True)
class ProposePolicyVersion:
    """Submit a new version of a policy. ``document`` is the policy YAML as written.

    ``policy`` names the policy the document is for. The command processor authorizes the actor
    on that name before it reads the document, so a proposal without it is rejected (records
    written before the field existed decode with ``None``).
    """

    event_id: str
    occurred_at: datetime
    actor: str
    document: str
    note: str | None = None
    policy: str | None = None
    key_id: str | None = None
    signature: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovePolicyVersion:
    """Approve a proposed version; the approver must differ from the author."""

    event_id: str
    occurred_at: datetime
    actor: str
    policy: str
    version: int
    note: str | None = None
    key_id: str | None = None
    signature: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PromotePolicyVersion:
    """Move a version to shadow, canary (with ``percent`` 1-99) or active.
    ``previous_version``: the version its sender saw in that stage and means to replace;
    refused when another holds it (``None``: judged by the signing time alone)."""

    event_id: str
    occurred_at: datetime
    actor: str
    policy: str
    version: int
    stage: Stage
    percent: int | None = None
    note: str | None = None
    previous_version: int | None = None
    key_id: str | None = None
    signature: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RollbackPolicy:
    """Re-activate the previous active version, or ``to_version``. Needs a reason, not approval.
    ``from_version``: the version its sender saw active and means to undo; refused when another
    is active (``None``: judged by the signing time alone)."""

    event_id: str
    occurred_at: datetime
    actor: str
    policy: str
    reason: str
    to_version: int | None = None
    from_version: int | None = None
    key_id: str | None = None
    signature: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RetirePolicy:
    """Retire a policy: its actions become ungoverned (and so denied) unless another policy
    governs them."""

    event_id: str
    occurred_at: datetime
    actor: str
    policy: str
    reason: str
    key_id: str | None = None
    signature: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class IssueGrant:
    """Give ``principal`` (or a ``role:``) ``actions`` on resources matching ``resource``."""

    event_id: str
    occurred_at: datetime
    actor: str
    grant_id: str
    principal: str
    actions: tuple[str, ...]
    resource: str
    condition: str | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    approved_by: str | None = None
    note: str | None = None
    key_id: str | None = None
    signature: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RevokeGrant:
    """Revoke a grant by id."""

    event_id: str
    occurred_at: datetime
    actor: str
    grant_id: str
    reason: str | None = None
    key_id: str | None = None
    signature: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AssignRole:
    """Make ``principal`` a member of ``role`` (``role:billing_admin``)."""

    event_id: str
    occurred_at: datetime
    actor: str
    principal: str
    role: str
    key_id: str | None = None
    signature: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RevokeRole:
    """Remove ``principal`` from ``role``."""

    event_id: str
    occurred_at: datetime
    actor: str
    principal: str
    role: str
    key_id: str | None = None
    signature: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterActorKey:
    """Register ``public_key`` (raw Ed25519, 32 bytes) as a signing key of ``principal``.

    ``actor_key_id`` is the key's id, derived from the key (:func:`ledger.core.signing.key_id_of`).
    """

    event_id: str
    occurred_at: datetime
    actor: str
    principal: str
    actor_key_id: str
    public_key: bytes
    note: str | None = None
    key_id: str | None = None
    signature: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RevokeActorKey:
    """Revoke ``principal``'s key ``actor_key_id`` (``None``: every key it holds)."""

    event_id: str
    occurred_at: datetime
    actor: str
    principal: str
    reason: str
    actor_key_id: str | None = None
    key_id: str | None = None
    signature: bytes | None = None


Command: TypeAlias = (
    ProposePolicyVersion
    | ApprovePolicyVersion
    | PromotePolicyVersion
    | RollbackPolicy
    | RetirePolicy
    | IssueGrant
    | RevokeGrant
    | AssignRole
    | RevokeRole
    | RegisterActorKey
    | RevokeActorKey
)
COMMAND_TYPES: Final[tuple[type, ...]] = get_args(Command)
"""The command types, in the union's order (the one list: topics, decoding and export follow it)."""

# --------------------------------------------------------------------------- command results
# On ``ledger.command-results``, keyed by command id.


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandAccepted:
    """The command was valid; ``event_ids`` are the governance events it produced."""

    event_id: str
    occurred_at: datetime
    actor: str
    command_id: str
    command_type: str
    aggregate: str
    event_ids: tuple[str, ...] = ()
    version: int | None = None  # the version created (propose) or active again (rollback)
    message: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandRejected:
    """The command was refused; nothing was applied. ``code`` is stable (see ``ledger.errors``)."""

    event_id: str
    occurred_at: datetime
    actor: str
    command_id: str
    command_type: str
    aggregate: str
    code: str
    reason: str


CommandResult: TypeAlias = CommandAccepted | CommandRejected

# --------------------------------------------------------------------------- policy events
# On ``ledger.policy-events``, keyed by policy name. ``sequence`` counts per policy.


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyVersionProposed:
    """A version was accepted as a draft. ``document`` is the canonical form (JSON text)."""

    event_id: str
    occurred_at: datetime
    actor: str
    command_id: str
    policy: str
    sequence: int
    version: int
    document: str
    content_hash: str
    owner: str
    governs: tuple[str, ...]
    note: str | None = None
    command_key_id: str | None = None
    command_signature: bytes | None = None
    signed_command: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyVersionApproved:
    event_id: str
    occurred_at: datetime
    actor: str
    command_id: str
    policy: str
    sequence: int
    version: int
    note: str | None = None
    command_key_id: str | None = None
    command_signature: bytes | None = None
    signed_command: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyVersionPromoted:
    """``version`` now holds ``stage``; ``previous_version`` held it before (if any)."""

    event_id: str
    occurred_at: datetime
    actor: str
    command_id: str
    policy: str
    sequence: int
    version: int
    stage: Stage
    percent: int | None = None
    previous_version: int | None = None
    note: str | None = None
    command_key_id: str | None = None
    command_signature: bytes | None = None
    signed_command: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyRolledBack:
    """``to_version`` is active again in place of ``from_version``; any canary is cleared."""

    event_id: str
    occurred_at: datetime
    actor: str
    command_id: str
    policy: str
    sequence: int
    from_version: int | None
    to_version: int
    reason: str
    command_key_id: str | None = None
    command_signature: bytes | None = None
    signed_command: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyRetired:
    event_id: str
    occurred_at: datetime
    actor: str
    command_id: str
    policy: str
    sequence: int
    reason: str
    command_key_id: str | None = None
    command_signature: bytes | None = None
    signed_command: str | None = None


PolicyEvent: TypeAlias = (
    PolicyVersionProposed
    | PolicyVersionApproved
    | PolicyVersionPromoted
    | PolicyRolledBack
    | PolicyRetired
)

# --------------------------------------------------------------------------- grant events
# On ``ledger.grant-events``, keyed by principal (or role). ``sequence`` counts per principal.


@dataclass(frozen=True, slots=True, kw_only=True)
class GrantIssued:
    event_id: str
    occurred_at: datetime
    actor: str  # granted_by
    command_id: str
    principal: str
    sequence: int
    grant_id: str
    actions: tuple[str, ...]
    resource: str
    condition: str | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    approved_by: str | None = None
    note: str | None = None
    command_key_id: str | None = None
    command_signature: bytes | None = None
    signed_command: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GrantRevoked:
    event_id: str
    occurred_at: datetime
    actor: str
    command_id: str
    principal: str
    sequence: int
    grant_id: str
    reason: str | None = None
    command_key_id: str | None = None
    command_signature: bytes | None = None
    signed_command: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RoleAssigned:
    event_id: str
    occurred_at: datetime
    actor: str
    command_id: str
    principal: str
    sequence: int
    role: str
    command_key_id: str | None = None
    command_signature: bytes | None = None
    signed_command: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RoleRevoked:
    event_id: str
    occurred_at: datetime
    actor: str
    command_id: str
    principal: str
    sequence: int
    role: str
    command_key_id: str | None = None
    command_signature: bytes | None = None
    signed_command: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ActorKeyRegistered:
    """``public_key`` is a signing key of ``principal`` from now on (until revoked).

    Written by the command processor for an accepted :class:`RegisterActorKey`, and for the
    bootstrap administrators' keys (its trust anchors, from its configuration) with actor
    ``service:command-processor`` and no command signature.
    """

    event_id: str
    occurred_at: datetime
    actor: str
    command_id: str
    principal: str
    sequence: int
    actor_key_id: str
    public_key: bytes
    note: str | None = None
    command_key_id: str | None = None
    command_signature: bytes | None = None
    signed_command: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ActorKeyRevoked:
    """``principal``'s key ``actor_key_id`` signs nothing from now on."""

    event_id: str
    occurred_at: datetime
    actor: str
    command_id: str
    principal: str
    sequence: int
    actor_key_id: str
    reason: str
    command_key_id: str | None = None
    command_signature: bytes | None = None
    signed_command: str | None = None


GrantEvent: TypeAlias = (
    GrantIssued | GrantRevoked | RoleAssigned | RoleRevoked | ActorKeyRegistered | ActorKeyRevoked
)
GovernanceEvent: TypeAlias = PolicyEvent | GrantEvent
POLICY_EVENT_TYPES: Final[tuple[type, ...]] = get_args(PolicyEvent)
"""What ``ledger.policy-events`` carries, in the union's order."""
GRANT_EVENT_TYPES: Final[tuple[type, ...]] = get_args(GrantEvent)
"""What ``ledger.grant-events`` carries (grants, roles and actor keys), in the union's order."""
GOVERNANCE_EVENT_TYPES: Final[tuple[type, ...]] = POLICY_EVENT_TYPES + GRANT_EVENT_TYPES

# --------------------------------------------------------------------------- evaluation
# Requests on ``ledger.evaluation-requests`` (keyed by resource or request id); decisions on
# ``ledger.decisions`` and corrections on ``ledger.corrections`` (keyed by request id).


@dataclass(frozen=True, slots=True, kw_only=True)
class EvaluationRequested:
    """May ``principal`` do ``action`` on ``resource``, given ``facts``?

    ``event_id`` is the request id: one decision is recorded per request id. In ``async`` mode
    the caller has proceeded on ``default``; a correction follows if the decision differs.
    ``requested_by`` is who asked: the enforcement point's configured actor (the SDK's), as it
    states it — the broker authenticates only its credential's role (``agent``), shared by every
    enforcement point; ``principal`` is whom the request is about.
    """

    event_id: str
    occurred_at: datetime
    actor: str
    action: str
    principal: str
    resource: str
    facts: Mapping[str, Value] = field(default_factory=_empty)
    context: Mapping[str, Value] = field(default_factory=_empty)
    mode: Mode = Mode.SYNC
    default: Determination | None = None
    reply_partition: int | None = None
    """The decisions/corrections partition the requester reads (``None``: the key's)."""
    requested_by: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchItem:
    """One action of a pre-evaluation batch."""

    item_id: str
    action: str
    resource: str
    facts: Mapping[str, Value] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchEvaluationRequested:
    """Pre-evaluation: many actions of one principal at workflow start (DESIGN §8.2)."""

    event_id: str
    occurred_at: datetime
    actor: str
    principal: str
    items: tuple[BatchItem, ...]
    context: Mapping[str, Value] = field(default_factory=_empty)
    reply_partition: int | None = None
    """The decisions partition the requester reads (``None``: the key's)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ShadowResult:
    """What a non-deciding version (shadow, or the other of active/canary) would have said."""

    policy: str
    version: int
    stage: Stage
    determination: Determination
    rule: str | None = None
    constraints: Mapping[str, Value] = field(default_factory=_empty)
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionRecorded:
    """The decision trace (DESIGN §6.4): enough to reproduce the decision exactly later.

    ``event_id`` is the decision id; ``request_id`` the request's ``event_id``.
    ``governance_position`` maps ``"topic/partition"`` to the offset of the last governance
    event applied to the state that decided. ``chain_id``/``chain_seq``/``prev_hash``/``hash``
    put the trace in its writer's hash chain (DESIGN §9, tamper evidence, see
    :mod:`ledger.core.chain`); the evaluator fills them, records written before chains existed
    have them ``None``. ``requested_by`` is the request's (who asked).
    """

    event_id: str
    occurred_at: datetime  # decided_at
    actor: str  # the evaluator, ``service:evaluator``
    request_id: str
    requested_at: datetime
    action: str
    principal: str
    resource: str
    determination: Determination
    constraints: Mapping[str, Value] = field(default_factory=_empty)
    reasons: tuple[str, ...] = ()
    reason_code: str | None = None
    policy: str | None = None
    policy_version: int | None = None
    content_hash: str | None = None
    stage: Stage | None = None
    rule: str | None = None
    grant_id: str | None = None
    facts: Mapping[str, Value] = field(default_factory=_empty)
    context: Mapping[str, Value] = field(default_factory=_empty)
    shadow_results: tuple[ShadowResult, ...] = ()
    bucket: int | None = None
    mode: Mode = Mode.SYNC
    default: Determination | None = None
    evaluator_id: str = ""
    latency_us: int = 0
    governance_position: Mapping[str, int] = field(default_factory=dict)
    prev_hash: str | None = None
    hash: str | None = None
    chain_id: str | None = None
    chain_seq: int | None = None
    requested_by: str | None = None

    @property
    def permitted(self) -> bool:
        """Whether the action may go ahead (:attr:`Determination.permits`): ``allow``, or
        ``allow_with_constraints``, whose ``constraints`` must then be honoured."""
        return self.determination.permits


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchItemDecision:
    item_id: str
    action: str
    resource: str
    determination: Determination
    constraints: Mapping[str, Value] = field(default_factory=_empty)
    reasons: tuple[str, ...] = ()
    reason_code: str | None = None
    policy: str | None = None
    policy_version: int | None = None
    rule: str | None = None
    grant_id: str | None = None

    @property
    def permitted(self) -> bool:
        """Whether the item's action may go ahead (:attr:`Determination.permits`)."""
        return self.determination.permits


def item_ref(request_id: str, item_id: str) -> str:
    """``REQUEST#ITEM``: how readers name one item of a pre-evaluation. Ids are free text, so
    one such text can name several decisions (a request whose own id holds a ``#``, an item id
    that does, two items of a hand-built batch with one id): a reader that finds more than one
    says so rather than take one."""
    return f"{request_id}#{item_id}"


def item_ref_splits(ref: str) -> list[tuple[str, str]]:
    """Every ``(request id, item id)`` that ``ref`` may name as :func:`item_ref` writes it: one
    per ``#`` in it (``a#b#c``: request ``a`` item ``b#c``, and request ``a#b`` item ``c``)."""
    return [(ref[:at], ref[at + 1 :]) for at, mark in enumerate(ref) if mark == "#" and at]


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchDecisionRecorded:
    """Every determination of a batch and the governance position they were made at.

    Chained like :class:`DecisionRecorded` (the same writer's chain, the same four fields).
    """

    event_id: str
    occurred_at: datetime
    actor: str
    request_id: str
    principal: str
    decisions: tuple[BatchItemDecision, ...]
    governance_position: Mapping[str, int] = field(default_factory=dict)
    evaluator_id: str = ""
    prev_hash: str | None = None
    hash: str | None = None
    chain_id: str | None = None
    chain_seq: int | None = None
    stale_after: datetime | None = None
    """When a grant of the principal (or of a role it holds) next begins or ends its validity
    window: time changes the answer then, and no governance event says so (a red team: a
    cached answer allowed under a grant since ended read as fresh). ``None``: no such edge
    ahead, or a record written before the field existed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionCorrected:
    """Async pattern: the decision differs from the default the caller proceeded on.

    ``constraints`` are the recorded decision's (an ``allow_with_constraints`` answer's): a
    caller that went ahead on ``allow`` learns what it should have honoured. Records written
    before the field existed read as without constraints.
    """

    event_id: str
    occurred_at: datetime
    actor: str
    request_id: str
    decision_id: str
    default: Determination
    determination: Determination
    reasons: tuple[str, ...] = ()
    constraints: Mapping[str, Value] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainCheckpoint:
    """The head of one writer's decision chain, on ``ledger.chain-checkpoints`` (keyed by chain).

    Published every so many decisions, after a second of activity and at a clean shutdown
    (``final``), so that deleting a chain's newest records is detected as well: the record at
    ``chain_seq`` must exist and have ``head_hash`` (see :mod:`ledger.core.chain`).
    """

    event_id: str
    occurred_at: datetime
    actor: str
    chain_id: str
    chain_seq: int
    head_hash: str
    evaluator_id: str = ""
    final: bool = False


# --------------------------------------------------------------------------- faults


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """A record a processor could not decode or handle, kept whole with the reason.

    A letter that would not fit a Kafka record with the original bytes carries their size and
    SHA-256 instead (``truncated``): the record itself stays on ``source_topic`` at ``offset``.
    """

    event_id: str
    occurred_at: datetime
    actor: str
    source_topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    code: str
    reason: str
    value_size: int | None = None
    value_sha256: str | None = None
    key_size: int | None = None
    key_sha256: str | None = None
    truncated: bool = False


Event: TypeAlias = (
    Command
    | CommandResult
    | GovernanceEvent
    | EvaluationRequested
    | BatchEvaluationRequested
    | DecisionRecorded
    | BatchDecisionRecorded
    | DecisionCorrected
    | ChainCheckpoint
    | DeadLetter
)

EVENT_TYPES: tuple[type, ...] = (
    *COMMAND_TYPES,
    CommandAccepted,
    CommandRejected,
    PolicyVersionProposed,
    PolicyVersionApproved,
    PolicyVersionPromoted,
    PolicyRolledBack,
    PolicyRetired,
    GrantIssued,
    GrantRevoked,
    RoleAssigned,
    RoleRevoked,
    ActorKeyRegistered,
    ActorKeyRevoked,
    EvaluationRequested,
    BatchEvaluationRequested,
    DecisionRecorded,
    BatchDecisionRecorded,
    DecisionCorrected,
    ChainCheckpoint,
    DeadLetter,
)
"""Every top-level record type, each with one ``schemas/<Name>.avsc``."""
