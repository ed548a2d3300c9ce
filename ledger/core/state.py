"""The ledger's materialised governance state and the pure fold that builds it.

``fold(state, event) -> state`` is the only way state changes. It is deterministic and
idempotent under re-delivery: a governance event applies only when its ``sequence`` is exactly
the next one of its aggregate (the policy name for policy events, the ``principal`` field for
grant events); anything else — a duplicate, or a gap — leaves the state as it was.

Each fold copies only what it touches: the one policy or principal record, and the top-level
mapping that holds it (copy-on-write). :func:`replay` applies the *same* per-event rules
(``_apply_policy``, ``_apply_grant``) to private mutable records instead, and freezes them once at
the end: its intermediate states are never observed, so it need not build them. It is equal to
folding one event at a time (a property test holds it to that).

Some of what the state holds is built when first read, not when folded
(:class:`~ledger.core.pmap.BuiltOnRead`): an issued grant is held as its event
(:class:`~ledger.core.authority.HeldGrants`), and a principal a replay rebuilt as its draft
(:class:`HeldPrincipals`). Every read gives the built value, so no reader can tell.

``LedgerState.memo`` caches values *derived* from one immutable state (the action → policy index,
each principal's effective grants). A new state starts with an empty memo, so the cache can never
be stale; it is excluded from equality.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final, assert_never

from ledger.core.authority import Grant, HeldGrants
from ledger.core.builders import builder
from ledger.core.collector import collector_paused
from ledger.core.events import (
    GRANT_EVENT_TYPES,
    POLICY_EVENT_TYPES,
    ActorKeyRegistered,
    ActorKeyRevoked,
    GovernanceEvent,
    GrantEvent,
    GrantIssued,
    GrantRevoked,
    PolicyEvent,
    PolicyRetired,
    PolicyRolledBack,
    PolicyVersionApproved,
    PolicyVersionPromoted,
    PolicyVersionProposed,
    RoleAssigned,
    RoleRevoked,
    Stage,
)
from ledger.core.globs import (
    compile_globs,
)
from ledger.core.limits import DEFAULT_LIMITS
from ledger.core.pmap import BuiltOnRead, PMap
from ledger.core.policy import Policy
from ledger.core.policy.canonical import content_hash
from ledger.errors import PolicyError

_GRANT_EVENT_TYPES: Final = frozenset(GRANT_EVENT_TYPES)
_POLICY_EVENT_TYPES: Final = frozenset(POLICY_EVENT_TYPES)

__all__ = [
    "PolicyVersion",
    "PolicyRecord",
    "PrincipalRecord",
    "HeldPrincipals",
    "ActorKey",
    "actor_key",
    "key_owner",
    "keys_registered_with",
    "role_members",
    "grant_id_use",
    "LedgerState",
    "EMPTY_STATE",
    "fold",
    "replay",
    "Replay",
    "with_position",
    "with_positions",
    "with_unreadable",
    "unread",
    "authority_unread",
    "any_unread",
    "every_unread",
    "POLICY",
    "PRINCIPAL",
    "aggregate_of",
    "bucket",
    "aggregate_record",
    "RECORDED_LIMITS",
    "compile_deployed",
    "load_document",
]

RECORDED_LIMITS: Final = replace(
    DEFAULT_LIMITS,
    policy_condition_chars=DEFAULT_LIMITS.policy_document_bytes,
    policy_governs=DEFAULT_LIMITS.policy_document_bytes,
    request_name_chars=DEFAULT_LIMITS.policy_document_bytes,
    glob_wildcards=DEFAULT_LIMITS.policy_document_bytes,
    glob_chars=DEFAULT_LIMITS.policy_document_bytes,
    glob_class_chars=DEFAULT_LIMITS.policy_document_bytes,
    policy_id_chars=DEFAULT_LIMITS.policy_document_bytes,
    policy_reason_chars=DEFAULT_LIMITS.policy_document_bytes,
    policy_constraints_chars=DEFAULT_LIMITS.policy_document_bytes,
)
"""The limits a recorded policy document is read back under. A version the ledger accepted
loads under the limits it was accepted under: a limit that came later is enforced where
documents are proposed, never on the recorded history (replaying a ledger, or verifying who
proposed what, must not turn its policies into errors). policy_condition_chars,
policy_governs, request_name_chars (for each governs entry), glob_wildcards, glob_chars,
glob_class_chars, policy_id_chars, policy_reason_chars and policy_constraints_chars came later."""


@functools.lru_cache(maxsize=512)
def load_document(document: str) -> Policy | None:
    """Compile a canonical policy document, cached by its text (replay sees the same text often).

    ``None`` when the document does not load (it was validated at proposal, so this means the
    stored event is corrupt); such a version decides nothing but an ``error``.
    """
    try:
        return Policy.from_canonical(document, limits=RECORDED_LIMITS)
    except (PolicyError, ValueError):  # ValueError: what a check missed (a fuzzer found one,
        return None  # a text no encoder takes): a version that does not load, never a crash


class _NotLoaded:
    """PolicyVersion._compiled before its first read: one object, also through a copy or a
    pickle (a fresh ``object()`` would pass for a compiled policy)."""

    __slots__ = ()

    def __reduce__(self) -> str:
        return "_NOT_LOADED"

    def __copy__(self) -> _NotLoaded:
        return self

    def __deepcopy__(self, memo: Any) -> _NotLoaded:
        return self


_NOT_LOADED: Final[Any] = _NotLoaded()


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyVersion:
    """One version of a policy, where it stands, and its compiled form (:attr:`compiled`)."""

    policy: str
    version: int
    stage: Stage
    content_hash: str
    document: str
    author: str
    proposed_at: datetime
    owner: str
    governs: tuple[str, ...]
    note: str | None = None
    approved_by: str | None = None
    approved_at: datetime | None = None
    _compiled: Any = field(default=_NOT_LOADED, repr=False, compare=False)

    def governs_action(self, action: str) -> bool:
        """Does this version's own ``governs`` name ``action`` (exactly or by a glob)? A version
        decides, and is compared in shadow, only for what it governs."""
        if action in self.governs:
            return True
        return compile_globs(self.governs).matches(action)

    @property
    def compiled(self) -> Policy | None:
        """The version's document compiled (``None`` when it does not load: see
        :func:`load_document`), on first read. A replay builds every version ever proposed;
        evaluation runs only the deployed ones, so only those are compiled (a long-lived ledger
        holds thousands of versions, each costing milliseconds to compile):
        :func:`compile_deployed` compiles them ahead of their first request."""
        loaded = self._compiled
        if loaded is _NOT_LOADED:
            # The document is what runs; its hash is what was signed, approved and shown. One
            # that does not hash to it was altered after it was recorded (a red team wrote a
            # permissive document under a strict one's hash and signature): it decides nothing
            # but an error, as a document that does not load.
            genuine = content_hash(self.document) == self.content_hash
            loaded = load_document(self.document) if genuine else None
            object.__setattr__(self, "_compiled", loaded)  # a cache: no field anyone compares
        return loaded  # type: ignore[no-any-return]  # the cache attribute is set through object.__setattr__, untyped

    def __getstate__(self) -> list[Any]:
        """A pickle (a governance snapshot) carries the version, never its compiled form: that
        is rebuilt from the document on first read, by the code that loads it."""
        return [
            _NOT_LOADED if name == "_compiled" else getattr(self, name) for name in _VERSION_FIELDS
        ]


_VERSION_FIELDS: Final = tuple(f.name for f in fields(PolicyVersion))


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyRecord:
    """Every version of one policy and which ones are deployed.

    ``history`` lists the versions that became active, oldest first; while a version is active it
    is the last entry. Rollback's "previous version" is read from it.
    """

    name: str
    sequence: int = 0
    versions: Mapping[int, PolicyVersion] = field(default_factory=dict)
    active: int | None = None
    canary: int | None = None
    canary_percent: int | None = None
    shadows: tuple[int, ...] = ()
    retired: bool = False
    history: tuple[int, ...] = ()
    deployed_at: datetime | None = None
    """When the versions that decide (active, canary and its percent) last changed, or the
    policy was retired: a promotion, a rollback, a retirement (``None``: never)."""
    deployed_by: str | None = None
    """Who made that change (the event's actor)."""
    activated: frozenset[int] = frozenset()
    """Every version that was ever active (promoted to active, or rolled back to): what a
    rollback may name (``history`` loses a version rolled back from)."""

    @property
    def latest(self) -> int:
        """The highest version number (0 when none)."""
        return max(self.versions, default=0)

    def rollback_target(self) -> int | None:
        """Where a rollback that names no version goes: the version active before the current
        one; with nothing earlier but a canary running, the active one (which ends the canary);
        otherwise nowhere (``None``)."""
        history = self.history
        earlier = (
            history[:-1]
            if self.active is not None and history and history[-1] == self.active
            else history
        )
        if earlier:
            return earlier[-1]
        if self.canary is not None and self.active is not None:
            return self.active
        return None

    def previous_for(self, stage: Stage, version: int) -> int | None:
        """The version ``version``'s promotion to ``stage`` takes that stage from (the
        ``previous_version`` its event records): the active one, or the canary; ``None`` for a
        shadow, which takes nothing, or when ``version`` already holds the stage."""
        held = (
            self.active if stage is Stage.ACTIVE else self.canary if stage is Stage.CANARY else None
        )
        return held if held != version else None

    def governs(self) -> tuple[frozenset[str], frozenset[str]]:
        """What the policy decides (its active and canary versions' ``governs``) and what it
        only observes (its shadow versions' beyond those); nothing once retired. A draft or an
        approved version governs nothing until it is deployed."""
        if self.retired:
            return frozenset(), frozenset()
        deciding = [v for v in (self.active, self.canary) if v is not None]
        decides = frozenset(p for v in deciding for p in self.versions[v].governs)
        observes = frozenset(p for v in self.shadows for p in self.versions[v].governs) - decides
        return decides, observes

    def decides_for(self, bucket: int) -> int | None:
        """The version that decides a request in canary ``bucket`` (0-99): the canary below its
        percentage (every bucket while no version is active), else the active version."""
        if self.canary is not None and (self.active is None or bucket < (self.canary_percent or 0)):
            return self.canary
        return self.active

    def splits(self) -> bool:
        """Do the active and canary versions govern different actions? Then which version
        decides, and so whether the policy governs an action at all, depends on the bucket."""
        if self.retired or self.active is None or self.canary is None:
            return False
        active, canary = self.versions[self.active], self.versions[self.canary]
        return set(active.governs) != set(canary.governs)

    def governs_when(self, canary_decides: bool) -> tuple[frozenset[str], frozenset[str]]:
        """:meth:`governs` for one request: what its deciding version (the canary when
        ``canary_decides`` or no version is active, else the active one) governs, and what the
        other deployed versions govern beyond it, which they only observe."""
        if self.retired:
            return frozenset(), frozenset()
        decider = (
            self.canary
            if self.canary is not None and (canary_decides or self.active is None)
            else self.active
        )
        decides = frozenset() if decider is None else frozenset(self.versions[decider].governs)
        everything = frozenset(p for v in self.deployed() for p in self.versions[v].governs)
        return decides, everything - decides

    def deployed(self) -> tuple[int, ...]:
        """Versions that take part in evaluation: active, canary, shadows."""
        out = [v for v in (self.active, self.canary) if v is not None]
        out.extend(v for v in self.shadows if v not in out)
        return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class ActorKey:
    """A signing key of an actor, as the ledger registered (and maybe revoked) it."""

    key_id: str
    public_key: bytes
    registered_at: datetime
    registered_by: str
    registered_with: str | None = None
    """The key that signed the registration (``None``: a trust anchor)."""
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None
    registration: ActorKeyRegistered | None = field(default=None, compare=False, repr=False)
    """The event that registered it, with its proof: the command processor lets a key sign only
    if that proves it (:func:`ledger.core.signing.registration_problem`)."""
    revocation: ActorKeyRevoked | None = field(default=None, compare=False, repr=False)
    """The event that revoked it: which command, and where in its actor's history."""
    origin: str | None = field(default=None, compare=False, repr=False)
    """Who registered it, through the keys its principal registered itself: for a key the
    principal registered with another of its keys, that key's origin (``None``: with none of
    its keys), else ``registered_by``. Kept as each key is folded, so
    :func:`ledger.core.authority.key_registrar` reads it at once (a red team's chain of 9,000
    self-registrations made ``actor verify`` walk it again for every event: quadratic)."""

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True, kw_only=True)
class PrincipalRecord:
    """One grant aggregate: a principal (or role) with its grants, its role memberships and its
    signing keys (in registration order, revoked ones included)."""

    principal: str
    sequence: int = 0
    grants: PMap[str, Grant] = field(default_factory=HeldGrants)
    roles: frozenset[str] = frozenset()
    keys: tuple[ActorKey, ...] = ()
    role_assigned_by: Mapping[str, str] = field(default_factory=dict)
    """Who assigned each of :attr:`roles` (the actor of its latest ``RoleAssigned``). Evaluation
    never reads it: a grant issued to a role later is checked against a delegate's assignments
    (a delegate's member must not gain through the role what the delegate does not hold)."""
    revoked_grants: PMap[str, datetime] = field(default_factory=PMap)
    """The ids of the grants revoked from this principal, each with when (its ``GrantRevoked``
    that took the grant away). Evaluation never reads it: a grant id is never issued again
    (:func:`grant_id_use`), so a decision's grant id names one grant for good. Persistent, as
    :attr:`grants` is: a fold adds to it without copying it."""
    _key_index: dict[str, ActorKey] | None = field(
        default=None, init=False, compare=False, repr=False
    )

    def key(self, key_id: str | None) -> ActorKey | None:
        """The key ``key_id`` of this principal (active or revoked), found at once: an index of
        :attr:`keys` built at the first look-up (a principal may register thousands)."""
        index = self._key_index
        if index is None:
            index = {k.key_id: k for k in self.keys}
            object.__setattr__(self, "_key_index", index)
        return index.get(key_id) if key_id is not None else None


_NONE_REVOKED: Final[PMap[str, datetime]] = PMap()
"""The revoked grants of most principals: one empty map, shared (a map is immutable)."""


class _Principal:
    """A principal record under construction by a :class:`Replay` (mutable, private to it).

    When the replay ends, each one it changed goes into the state as it is, and becomes its
    :class:`PrincipalRecord` when first read (:class:`HeldPrincipals`); nothing changes it after.
    """

    __slots__ = (
        "assigned_by",
        "grants",
        "initial",
        "keys",
        "name",
        "revoked",
        "roles",
        "sequence",
    )
    name: str
    initial: int
    sequence: int
    grants: dict[str, Grant | GrantIssued]
    roles: set[str]
    keys: dict[str, ActorKey]
    assigned_by: dict[str, str]
    revoked: dict[str, datetime]

    def __init__(self, name: str, record: PrincipalRecord | _Principal | None) -> None:
        """Start from ``record`` as the state stores it: a built record, another replay's
        draft (copied, never built: it belongs to that state), or nothing."""
        self.name = name
        self.initial = record.sequence if record is not None else 0
        self.sequence = self.initial
        if record is None:
            self.grants, self.roles, self.keys, self.assigned_by = {}, set(), {}, {}
            self.revoked = {}
        elif isinstance(record, _Principal):
            self.grants, self.roles, self.keys, self.assigned_by = (
                record.grants.copy(),
                record.roles.copy(),
                record.keys.copy(),
                record.assigned_by.copy(),
            )
            self.revoked = record.revoked.copy()
        else:
            self.grants = dict(record.grants.stored_items())
            self.roles = set(record.roles)
            self.keys = {k.key_id: k for k in record.keys}
            self.assigned_by = dict(record.role_assigned_by)
            self.revoked = dict(record.revoked_grants.stored_items())

    def frozen(self) -> PrincipalRecord:
        return PrincipalRecord(
            principal=self.name,
            sequence=self.sequence,
            grants=HeldGrants.from_mapping(self.grants),  # type: ignore[arg-type]  # events kept
            roles=frozenset(self.roles),
            keys=tuple(self.keys.values()),
            role_assigned_by=dict(self.assigned_by),
            revoked_grants=PMap.from_mapping(self.revoked) if self.revoked else _NONE_REVOKED,
        )


class HeldPrincipals(BuiltOnRead[str, PrincipalRecord]):
    """The state's principal records: one a replay rebuilt is held as its draft until it is
    first read, and built then, once (:class:`~ledger.core.pmap.BuiltOnRead`): a replay of a
    long history does not build the records of tens of thousands of principals that the
    question asked of it never reads."""

    __slots__ = ()
    RAW = _Principal

    def _build_value(self, raw: _Principal) -> PrincipalRecord:
        return raw.frozen()


def bucket(key: str) -> int:
    """Stable canary bucket 0-99 of ``key`` (CRC-32 of its UTF-8 bytes, mod 100).

    Never Python's ``hash()``, which is salted per process: every worker, and every replay, must
    put a resource in the same bucket.
    """
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % 100


def _new_memo() -> dict[Any, Any]:
    return {}


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerState:
    """Immutable governance state. Build it with :func:`fold` / :func:`replay`.

    ``position`` maps ``"topic/partition"`` to the offset of the last governance record applied
    (kept by the adapters with :func:`with_position`); every decision records it.
    ``unreadable``: what the adapters could not fold (:func:`with_unreadable`).
    """

    policies: PMap[str, PolicyRecord] = field(default_factory=PMap)
    principals: PMap[str, PrincipalRecord] = field(default_factory=HeldPrincipals)
    position: Mapping[str, int] = field(default_factory=dict)
    unreadable: frozenset[tuple[str, str]] = frozenset()
    """Aggregates, ``(kind, name)`` (:data:`POLICY` or :data:`PRINCIPAL`), with a governance
    record the adapter could not read because a newer release wrote it (name ``""``: a record
    of no readable key, every aggregate of its kind). Their state here is an earlier one:
    nothing is decided or changed on it (:func:`unread`). Empty nearly always."""
    memo: dict[Any, Any] = field(default_factory=_new_memo, init=False, repr=False, compare=False)


EMPTY_STATE: Final = LedgerState()


def with_position(state: LedgerState, key: str, offset: int) -> LedgerState:
    """Record that the governance record at ``key`` (``"topic/partition"``) ``offset`` is applied."""
    position = dict(state.position)
    position[key] = offset
    new = replace(state, position=MappingProxyType(position))
    # Governance content is unchanged, so the derived caches stay valid: share them.
    new.memo.update(state.memo)
    return new


def with_positions(state: LedgerState, positions: Mapping[str, int]) -> LedgerState:
    """:func:`with_position` for many keys at once (later keys' offsets replace earlier ones)."""
    if not positions:
        return state
    position = dict(state.position)
    position.update(positions)
    new = replace(state, position=MappingProxyType(position))
    new.memo.update(state.memo)
    return new


POLICY: Final = "policy"
"""The kind of a policy's aggregate (its events' Kafka key is the policy name)."""
PRINCIPAL: Final = "principal"
"""The kind of a principal's aggregate (grants, roles, keys: keyed by the principal)."""


def with_unreadable(state: LedgerState, unreadable: frozenset[tuple[str, str]]) -> LedgerState:
    """``state`` marked as lacking records of the ``unreadable`` aggregates, ``(kind, name)``:
    a processor of an earlier release skipped records a newer one wrote (a schema it does not
    know). The operators' upgrade drill: such an evaluator decided under a policy's earlier
    version while the newer ones decided under its next, and its command processor numbered
    the policy's events anew. On such a state the core decides nothing those records could
    change (``error`` / ``governance_unreadable``) and refuses every command."""
    if unreadable == state.unreadable:
        return state
    new = replace(state, unreadable=unreadable)
    new.memo.update(state.memo)  # the governance content is the same
    return new


def unread(state: LedgerState, kind: str, name: str) -> bool:
    """Whether the aggregate ``(kind, name)`` has a record ``state`` lacks (see
    :func:`with_unreadable`)."""
    marked = state.unreadable
    return bool(marked) and ((kind, name) in marked or (kind, "") in marked)


def every_unread(state: LedgerState, kind: str) -> str | None:
    """``every policy (a record of no readable key)`` when a record of no readable key marks
    every aggregate of ``kind`` (see :func:`with_unreadable`), else ``None``: what messages
    name instead of the one aggregate they were asked about."""
    return unread_words(kind, "") if (kind, "") in state.unreadable else None


def unread_words(kind: str, name: str) -> str:
    """An aggregate with a record unread, in words: ``policy 'refund'``, or (name ``""``, a
    record of no readable key) ``every policy (a record of no readable key)``."""
    return f"{kind} {name[:100]!r}" if name else f"every {kind} (a record of no readable key)"


def unread_aggregate(kind: str, key: bytes | None) -> tuple[str, str]:
    """The aggregate of ``kind`` an unread governance record is of, from its Kafka key: the
    policy or principal it names, or ``""`` for a key that is no name (none, or not UTF-8),
    which stands for every aggregate of the kind (one rule for the processors and the CLI: a
    red team saw them name such a record differently)."""
    try:
        return kind, key.decode("utf-8") if key else ""
    except UnicodeDecodeError:
        return kind, ""


def any_unread(state: LedgerState, kind: str) -> bool:
    """Whether an aggregate of ``kind`` has a record ``state`` lacks: what is read across every
    aggregate of the kind (which policy governs an action; grant ids, keys, a role's members)
    may have changed with it."""
    return bool(state.unreadable) and kind in _kinds(state.unreadable)


@functools.lru_cache(maxsize=8)
def _kinds(marked: frozenset[tuple[str, str]]) -> frozenset[str]:
    """The kinds in ``marked``, found once per set (a frozenset keeps its hash): checked per
    request while anything is marked, and a log full of keys a newer release wrote must not
    make each request scan them all."""
    return frozenset(kind for kind, _ in marked)


def authority_unread(state: LedgerState, principal: str) -> bool:
    """Whether ``principal``'s authority (its grants, roles and keys, and the grants of every
    role it holds) may lack a record (see :func:`with_unreadable`)."""
    if not state.unreadable:
        return False
    if unread(state, PRINCIPAL, principal):
        return True
    record = state.principals.get(principal)
    return record is not None and any(unread(state, PRINCIPAL, r) for r in record.roles)


def aggregate_of(event: GovernanceEvent) -> str:
    """The aggregate a governance event belongs to (its Kafka key)."""
    if isinstance(event, _PRINCIPAL_EVENTS):
        return event.principal
    return event.policy


def aggregate_record(
    state: LedgerState, event: GovernanceEvent
) -> PolicyRecord | PrincipalRecord | None:
    """The record, in ``state``, of the aggregate ``event`` belongs to (``None``: none yet)."""
    if isinstance(event, _PRINCIPAL_EVENTS):
        return state.principals.get(event.principal)
    return state.policies.get(event.policy)


_PRINCIPAL_EVENTS: Final = (
    GrantIssued,
    GrantRevoked,
    RoleAssigned,
    RoleRevoked,
    ActorKeyRegistered,
    ActorKeyRevoked,
)


def actor_key(state: LedgerState, actor: str, key_id: str) -> ActorKey | None:
    """``actor``'s key ``key_id`` (active or revoked), or ``None`` when it is not theirs."""
    record = state.principals.get(actor)
    return record.key(key_id) if record is not None else None


def key_owner(state: LedgerState, key_id: str) -> str | None:
    """Whose key ``key_id`` is (registered to one principal at most), or ``None``."""
    # Linear in the principals; commands are rare next to evaluations.
    for name, record in state.principals.items():
        if any(k.key_id == key_id for k in record.keys):
            return name
    return None


def keys_registered_with(state: LedgerState, key_id: str) -> list[tuple[str, ActorKey]]:
    """The active keys whose registration ``key_id`` signed, or a key it signed did, and so on:
    what a thief of ``key_id`` may have registered (a red team: revoking a stolen key left the
    key it had registered with it active, with no word). ``(owner, key)`` in the order met."""
    found: list[tuple[str, ActorKey]] = []
    signers, seen = [key_id], {key_id}
    while signers:
        signer = signers.pop(0)
        for name, record in state.principals.items():
            for key in record.keys:
                if key.registered_with == signer and key.key_id not in seen:
                    seen.add(key.key_id)
                    signers.append(key.key_id)
                    if key.active:
                        found.append((name, key))
    return found


def role_members(state: LedgerState, role: str) -> dict[str, str]:
    """The members of ``role``, each with who assigned it
    (:attr:`PrincipalRecord.role_assigned_by`), in the principals' order."""
    # Linear in the principals (commands are rare next to evaluations), reading each as it is
    # stored: a replay's drafts are not built for it (items() took twice as long, 47,000 principals).
    found = {}
    stored: Iterable[tuple[str, PrincipalRecord | _Principal]] = state.principals.stored_items()
    for name, held in stored:
        assigned = held.assigned_by if isinstance(held, _Principal) else held.role_assigned_by
        by = assigned.get(role)
        if by is not None:
            found[name] = by
    return found


def grant_id_use(state: LedgerState, grant_id: str) -> tuple[str, datetime | None] | None:
    """Who holds or held the grant ``grant_id`` and when it was revoked (``None``: it is held
    still, in force, ended or not begun), or ``None`` when the id was never issued. A grant id
    names one grant for good: decisions record it and audits join on it, so the rules never
    issue one again. A held grant is named before a revoked one (a history an earlier release
    accepted may have issued an id again)."""
    # Linear in the principals, as role_members (commands are rare next to evaluations), and
    # reading each as it is stored: nobody's record or grants are built for it.
    revoked: tuple[str, datetime | None] | None = None
    stored: Iterable[tuple[str, PrincipalRecord | _Principal]] = state.principals.stored_items()
    for name, held in stored:
        if isinstance(held, _Principal):
            grants: Mapping[str, object] = held.grants
            gone: Mapping[str, datetime] = held.revoked
        else:
            grants, gone = held.grants, held.revoked_grants
        if grant_id in grants:
            return name, None
        if revoked is None and grant_id in gone:
            revoked = name, gone[grant_id]
    return revoked


# ----------------------------------------------------------------------------------- the fold


def fold(state: LedgerState, event: GovernanceEvent) -> LedgerState:
    """Apply one governance event; a duplicate or out-of-order event is a no-op."""
    match event:
        case (
            PolicyVersionProposed()
            | PolicyVersionApproved()
            | PolicyVersionPromoted()
            | PolicyRolledBack()
            | PolicyRetired()
        ):
            record = state.policies.get(event.policy) or PolicyRecord(name=event.policy)
            if event.sequence != record.sequence + 1:
                return state
            draft = _PolicyDraft(record)
            _apply_policy(draft, event)
            return LedgerState(
                policies=state.policies.set(event.policy, draft.frozen()),
                principals=state.principals,
                position=state.position,
                unreadable=state.unreadable,
            )
        case (
            GrantIssued()
            | GrantRevoked()
            | RoleAssigned()
            | RoleRevoked()
            | ActorKeyRegistered()
            | ActorKeyRevoked()
        ):
            prec = state.principals.get(event.principal)
            if event.sequence != (prec.sequence if prec is not None else 0) + 1:
                return state
            grants = _GrantChanges(prec.grants if prec is not None else HeldGrants())
            roles = set(prec.roles) if prec is not None else set()
            # The keys as a map only for an event that changes them: the others keep the tuple.
            changes_keys = isinstance(event, ActorKeyRegistered | ActorKeyRevoked)
            keys = {k.key_id: k for k in prec.keys} if prec is not None and changes_keys else {}
            assigned_by = dict(prec.role_assigned_by) if prec is not None else {}
            revoked: dict[str, datetime] = {}  # this event's, added to the persistent map
            _apply_grant(grants, roles, keys, assigned_by, revoked, event)
            updated = PrincipalRecord(
                principal=event.principal,
                sequence=event.sequence,
                grants=grants.frozen(),
                roles=frozenset(roles),
                keys=tuple(keys.values()) if changes_keys or prec is None else prec.keys,
                role_assigned_by=assigned_by,
                revoked_grants=(prec.revoked_grants if prec is not None else _NONE_REVOKED).update(
                    revoked
                ),  # the same map when this event revoked nothing
            )
            return LedgerState(
                policies=state.policies,
                principals=state.principals.set(event.principal, updated),
                position=state.position,
                unreadable=state.unreadable,
            )
        case _:
            assert_never(event)


def replay(events: Iterable[GovernanceEvent], state: LedgerState = EMPTY_STATE) -> LedgerState:
    """Fold every event in order: the same state as ``fold`` applied to each in turn.

    The per-event rules are fold's own; only the storage differs (:class:`Replay`, fed once).
    """
    return Replay(state).feed(events).result()


class Replay:
    """A replay fed in parts: :meth:`feed` events as they come, :meth:`result` once at the end.

    The result is the state ``fold`` gives applied to every event fed, in order, starting from
    ``state`` (and :func:`replay` is one feed). A processor catching up feeds the history chunk
    by chunk as it fetches it, and still folds it in one pass: the records being rebuilt carry
    over from one part to the next rather than being frozen into a state and copied back at
    each. Nothing is published before :meth:`result`; ``state`` is never changed.

    The records being rebuilt live in private mutable dicts and are frozen once, by
    :meth:`result` (every policy touched becomes one new record, and each top-level map is built
    in one pass). An issued grant stays its event, in the state too, until something reads it
    (:class:`~ledger.core.authority.HeldGrants`), and a rebuilt principal its draft
    (:class:`HeldPrincipals`): a replay to answer "what did P hold at T" builds P's record and
    grants, not the tens of thousands of others. So after :meth:`result` the replay takes
    nothing more (its drafts are the state's now), nor after a feed raised (it is half-applied).

    The cyclic garbage collector is paused while folding and freezing (and restored after, also
    when a bad event raises): a long replay allocates millions of acyclic objects, and the
    collector's repeated full scans of them otherwise cost several times the work itself. The
    freezing allocates many objects too (every policy version built, the persistent maps), so
    it runs paused too: with the collector back on, its scans cost 1M-event replays ~40 %.
    Nothing here creates reference cycles.
    """

    __slots__ = ("_base", "_closed", "_initial", "_policies", "_principals")

    def __init__(self, state: LedgerState = EMPTY_STATE) -> None:
        self._base = state
        self._policies: dict[str, _PolicyDraft] = {}
        self._initial: dict[str, int] = {}  # each policy's sequence before this replay
        self._principals: dict[str, _Principal] = {}
        self._closed: str | None = None  # why it takes nothing more

    def feed(self, events: Iterable[GovernanceEvent]) -> Replay:
        """Fold ``events`` (the next ones in log order); returns the replay itself."""
        self._check_open()
        base_policies, base_principals = self._base.policies, self._base.principals
        policies, initial, principals = self._policies, self._initial, self._principals
        with collector_paused():
            try:
                for event in events:
                    # By exact type (one set look-up; a class-pattern match tries each class in
                    # turn): event types are final dataclasses. Grant events first: most of a history.
                    kind = type(event)
                    if kind in _GRANT_EVENT_TYPES:
                        grant_event: GrantEvent = event  # type: ignore[assignment]  # by its type
                        building = principals.get(grant_event.principal)
                        if building is None:
                            building = principals[grant_event.principal] = _Principal(
                                grant_event.principal, base_principals.stored(grant_event.principal)
                            )
                        if grant_event.sequence == building.sequence + 1:
                            _apply_grant(
                                building.grants,
                                building.roles,
                                building.keys,
                                building.assigned_by,
                                building.revoked,
                                grant_event,
                            )
                            building.sequence = grant_event.sequence
                    elif kind in _POLICY_EVENT_TYPES:
                        policy_event: PolicyEvent = event  # type: ignore[assignment]  # by its type
                        draft = policies.get(policy_event.policy)
                        if draft is None:
                            draft = policies[policy_event.policy] = _PolicyDraft(
                                base_policies.get(policy_event.policy)
                                or PolicyRecord(name=policy_event.policy)
                            )
                            initial[policy_event.policy] = draft.sequence
                        if policy_event.sequence == draft.sequence + 1:
                            _apply_policy(draft, policy_event)
                    else:
                        raise TypeError(f"not a governance event: {kind.__name__}")
            except BaseException:
                self._closed = "a part of it raised: it is half-applied"
                raise
        return self

    def result(self) -> LedgerState:
        """The state after every event fed (``state`` itself when none changed anything)."""
        self._check_open()
        self._closed = "its result was taken: its records are that state's now"
        state = self._base
        base_policies, base_principals = state.policies, state.principals
        initial = self._initial
        with collector_paused():
            rebuilt = {  # held as they are, built when read (HeldPrincipals)
                name: building
                for name, building in self._principals.items()
                if building.sequence != building.initial  # only what an event actually changed
            }
            changed = {
                name: draft.frozen()
                for name, draft in self._policies.items()
                if draft.sequence != initial[name]  # only what an event actually changed
            }
            if not changed and not rebuilt:
                return state
            if rebuilt and not isinstance(base_principals, HeldPrincipals):
                # A plain map would hand the drafts out as they are: hold them where they get
                # built.
                base_principals = HeldPrincipals.from_mapping(dict(base_principals.stored_items()))
            return LedgerState(
                policies=base_policies.update(changed),
                principals=base_principals.update(rebuilt),  # type: ignore[arg-type]  # on read
                position=state.position,
                unreadable=state.unreadable,
            )

    def _check_open(self) -> None:
        if self._closed is not None:
            raise RuntimeError(f"this replay takes nothing more: {self._closed}")


# The stages as plain module names: on Python 3.11 each ``Stage.X`` read goes through the enum's
# member descriptor (~100 ns), and a promotion reads several; the policy rules run once per
# policy event of a replay.
_DRAFT: Final = Stage.DRAFT
_APPROVED: Final = Stage.APPROVED
_SHADOW: Final = Stage.SHADOW
_CANARY: Final = Stage.CANARY
_ACTIVE: Final = Stage.ACTIVE
_SUPERSEDED: Final = Stage.SUPERSEDED
_RETIRED: Final = Stage.RETIRED


class _PolicyDraft:
    """A policy record being changed in place: for one event by :func:`fold` (on a copy), for a
    whole history by :func:`replay`. :meth:`frozen` gives the immutable record.

    Versions are built lazily, as grants are: a version proposed here is held as its event, and
    stage and approval changes wait in ``pending``, so a version that changes stage many times
    in one replay becomes one :class:`PolicyVersion`, when the draft is frozen.
    """

    __slots__ = (
        "activated",
        "active",
        "canary",
        "canary_percent",
        "deployed_at",
        "deployed_by",
        "history",
        "name",
        "pending",
        "retired",
        "sequence",
        "shadows",
        "versions",
    )

    def __init__(self, record: PolicyRecord) -> None:
        self.name = record.name
        self.sequence = record.sequence
        self.versions: dict[int, PolicyVersion | PolicyVersionProposed] = dict(record.versions)
        self.pending: dict[int, dict[str, Any]] = {}  # version -> fields changed since built
        self.active = record.active
        self.canary = record.canary
        self.canary_percent = record.canary_percent
        self.shadows = record.shadows
        self.retired = record.retired
        self.history = list(record.history)  # appended to in place; a tuple again when frozen
        self.deployed_at = record.deployed_at
        self.deployed_by = record.deployed_by
        self.activated = record.activated  # a new frozenset when one is added (rarely)

    def stage_of(self, version: int) -> Stage:
        changed = self.pending.get(version)
        if changed is not None and "stage" in changed:
            stage: Stage = changed["stage"]
            return stage
        held = self.versions[version]
        return _DRAFT if type(held) is PolicyVersionProposed else held.stage  # type: ignore[union-attr]  # a type() identity test does not narrow for mypy

    def change(self, version: int | None, **fields: Any) -> None:
        """Set fields of a version that exists (a missing one is ignored, as the rules say)."""
        if version is not None and version in self.versions:
            changed = self.pending.get(version)
            if changed is None:
                self.pending[version] = fields
            else:
                changed.update(fields)

    def set_stage(self, version: int | None, stage: Stage) -> None:
        """``change(version, stage=stage)`` without the keyword dict: the rules' commonest
        change (every promotion makes one or two)."""
        if version is not None and version in self.versions:
            changed = self.pending.get(version)
            if changed is None:
                self.pending[version] = {"stage": stage}
            else:
                changed["stage"] = stage

    def frozen(self) -> PolicyRecord:
        built: dict[int, PolicyVersion] = {}
        for version, held in self.versions.items():
            changed = self.pending.get(version)
            if isinstance(held, PolicyVersionProposed):
                built[version] = _proposed(held, changed)
            else:
                built[version] = replace(held, **changed) if changed else held
        self.versions, self.pending = dict(built.items()), {}
        return PolicyRecord(
            name=self.name,
            sequence=self.sequence,
            versions=built,
            active=self.active,
            canary=self.canary,
            canary_percent=self.canary_percent,
            shadows=self.shadows,
            retired=self.retired,
            history=tuple(self.history),
            deployed_at=self.deployed_at,
            deployed_by=self.deployed_by,
            activated=self.activated,
        )


_build_version: Final = builder(
    PolicyVersion,
    (
        "policy",
        "version",
        "stage",
        "content_hash",
        "document",
        "author",
        "proposed_at",
        "owner",
        "governs",
        "note",
        "approved_by",
        "approved_at",
        "_compiled",
    ),
)


def _proposed(event: PolicyVersionProposed, changed: dict[str, Any] | None) -> PolicyVersion:
    """The version ``event`` proposed, with the changes made to it since (stage, approval)."""
    if changed is None:
        changed = {}
    # Positionally, in the order _build_version names (ledger.core.builders).
    return _build_version(
        event.policy,
        event.version,
        changed.get("stage", _DRAFT),
        event.content_hash,
        event.document,
        event.actor,  # author
        event.occurred_at,  # proposed_at
        event.owner,
        tuple(event.governs),
        event.note,
        changed.get("approved_by"),
        changed.get("approved_at"),
        _NOT_LOADED,  # compiled when first read
    )


def _apply_policy(
    draft: _PolicyDraft,
    event: PolicyVersionProposed
    | PolicyVersionApproved
    | PolicyVersionPromoted
    | PolicyRolledBack
    | PolicyRetired,
) -> None:
    """The policy rules: change ``draft`` by ``event`` (the next in its sequence), in place."""
    draft.sequence = event.sequence
    match event:
        case PolicyVersionProposed():
            draft.pending.pop(event.version, None)
            draft.versions[event.version] = event  # built when the draft is frozen
        case PolicyVersionApproved():
            if event.version not in draft.versions:
                return
            stage = draft.stage_of(event.version)
            draft.change(
                event.version,
                stage=_APPROVED if stage is _DRAFT else stage,
                approved_by=event.actor,
                approved_at=event.occurred_at,
            )
        case PolicyVersionPromoted() | PolicyRolledBack() | PolicyRetired():
            deployed = (draft.active, draft.canary, draft.canary_percent, draft.retired)
            _deploy(draft, event)
            # What a rollback or promotion signed before it did not see (policy_rules).
            if deployed != (draft.active, draft.canary, draft.canary_percent, draft.retired):
                draft.deployed_at, draft.deployed_by = event.occurred_at, event.actor
        case _:
            assert_never(event)


def _deploy(
    draft: _PolicyDraft, event: PolicyVersionPromoted | PolicyRolledBack | PolicyRetired
) -> None:
    """The rules of the events that change which versions are deployed, in place."""
    versions = draft.versions
    match event:
        case PolicyVersionPromoted():
            v, stage = event.version, event.stage
            if v not in versions or stage not in _PROMOTABLE:
                return  # other stages are never promoted to (rejected by decide)
            if v in draft.shadows:
                draft.shadows = tuple(s for s in draft.shadows if s != v)
            if stage is _SHADOW:
                if draft.active == v:
                    draft.active = None
                if draft.canary == v:
                    draft.canary, draft.canary_percent = None, None
                draft.shadows = (*draft.shadows, v)
            elif stage is _CANARY:
                if draft.canary is not None and draft.canary != v:
                    draft.set_stage(draft.canary, _SUPERSEDED)
                draft.canary, draft.canary_percent = v, event.percent
            else:  # Stage.ACTIVE
                if draft.active is not None and draft.active != v:
                    draft.set_stage(draft.active, _SUPERSEDED)
                if draft.canary == v:
                    draft.canary, draft.canary_percent = None, None
                draft.active = v
                draft.history.append(v)
                if v not in draft.activated:
                    draft.activated = draft.activated | {v}
            draft.set_stage(v, stage)
            draft.retired = False
        case PolicyRolledBack():
            to = event.to_version
            if to not in versions:
                return
            history = draft.history
            if draft.active is not None and history and history[-1] == draft.active:
                history.pop()
            if not history or history[-1] != to:
                history.append(to)
            if to not in draft.activated:
                draft.activated = draft.activated | {to}
            if draft.active is not None and draft.active != to:
                draft.set_stage(draft.active, _SUPERSEDED)
            if draft.canary is not None and draft.canary != to:
                draft.set_stage(draft.canary, _SUPERSEDED)
            draft.set_stage(to, _ACTIVE)
            draft.active, draft.canary, draft.canary_percent = to, None, None
            if to in draft.shadows:
                draft.shadows = tuple(s for s in draft.shadows if s != to)
            draft.retired = False
        case PolicyRetired():
            deployed = [v for v in (draft.active, draft.canary) if v is not None]
            deployed.extend(v for v in draft.shadows if v not in deployed)
            for v in deployed:
                draft.set_stage(v, _RETIRED)
            draft.active, draft.canary, draft.canary_percent = None, None, None
            draft.shadows = ()
            draft.retired = True
        case _:
            assert_never(event)


_PROMOTABLE: Final = frozenset({Stage.SHADOW, Stage.CANARY, Stage.ACTIVE})


def _origin(keys: Mapping[str, ActorKey], event: ActorKeyRegistered) -> str | None:
    """:attr:`ActorKey.origin` of the key ``event`` registers, among its principal's ``keys``."""
    if event.actor != event.principal:
        return event.actor
    signer = keys.get(event.command_key_id) if event.command_key_id is not None else None
    return signer.origin if signer is not None else None


def _apply_grant(
    grants: MutableMapping[str, Grant | GrantIssued],
    roles: set[str],
    keys: dict[str, ActorKey],
    assigned_by: dict[str, str],
    revoked: MutableMapping[str, datetime],
    event: GrantIssued
    | GrantRevoked
    | RoleAssigned
    | RoleRevoked
    | ActorKeyRegistered
    | ActorKeyRevoked,
) -> None:
    """The grant rules, applied in place: by :func:`fold` to a copy-on-write overlay of one
    record, by :func:`replay` to its private record. An issued grant is held as its event, in
    the state too, until it is first read (:class:`~ledger.core.authority.HeldGrants`), so a
    grant revoked before anyone reads it is never built.
    A role membership remembers who assigned it (``assigned_by``), until it is revoked.
    A revoked grant leaves its id and when in ``revoked``, for good; it is only ever written
    here, never read (so :func:`fold` passes an empty dict and adds what it holds after).
    A key is registered once (a second registration of its id changes nothing) and revoked for
    good."""
    match event:  # the common cases first: a class pattern is an isinstance check
        case GrantIssued():
            grants[event.grant_id] = event
        case GrantRevoked():
            if grants.pop(event.grant_id, None) is not None:
                revoked[event.grant_id] = event.occurred_at
        case RoleAssigned():
            roles.add(event.role)
            assigned_by[event.role] = event.actor
        case RoleRevoked():
            roles.discard(event.role)
            assigned_by.pop(event.role, None)
        case ActorKeyRegistered():
            if event.actor_key_id not in keys:
                keys[event.actor_key_id] = ActorKey(
                    key_id=event.actor_key_id,
                    public_key=bytes(event.public_key),
                    registered_at=event.occurred_at,
                    registered_by=event.actor,
                    registered_with=event.command_key_id,
                    registration=event,
                    origin=_origin(keys, event),
                )
        case ActorKeyRevoked():
            key = keys.get(event.actor_key_id)
            if key is not None and key.active:
                keys[event.actor_key_id] = replace(
                    key,
                    revoked_at=event.occurred_at,
                    revoked_by=event.actor,
                    revoke_reason=event.reason,
                    revocation=event,
                )
        case _:
            assert_never(event)


class _GrantChanges(MutableMapping[str, Grant | GrantIssued]):
    """A mutable view of a persistent grant map that records changes, for one :func:`fold`.

    It reads and writes the stored form (an issued grant stays its event, :class:`HeldGrants`
    builds it when the state is read), so a fold builds no grant. :meth:`frozen` applies the
    changes to the base map (sharing its structure).
    """

    __slots__ = ("_base", "_changes")

    def __init__(self, base: PMap[str, Grant]) -> None:
        if not isinstance(base, HeldGrants):  # a plain map would hand events out unbuilt
            base = HeldGrants.from_mapping(dict(base.stored_items()))
        self._base: PMap[str, Grant | GrantIssued] = base  # type: ignore[assignment]  # stored form
        self._changes: dict[str, Grant | GrantIssued | None] = {}  # None: removed

    def __getitem__(self, key: str) -> Grant | GrantIssued:
        if key in self._changes:
            value = self._changes[key]
            if value is None:
                raise KeyError(key)
            return value
        return PMap.__getitem__(self._base, key)  # as stored: nothing is built

    def __setitem__(self, key: str, value: Grant | GrantIssued) -> None:
        self._changes[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:  # a KeyError when absent, as a mapping must
            raise KeyError(key)
        self._changes[key] = None

    def __contains__(self, key: object) -> bool:
        if key in self._changes:
            return self._changes[key] is not None
        return key in self._base

    def __iter__(self) -> Iterator[str]:
        changes = self._changes
        for key in self._base:
            if key not in changes or changes[key] is not None:
                yield key
        yield from (k for k, v in changes.items() if v is not None and k not in self._base)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def frozen(self) -> PMap[str, Grant]:
        result = self._base
        for key, value in self._changes.items():
            result = result.delete(key) if value is None else result.set(key, value)
        return result  # type: ignore[return-value]  # a HeldGrants: it builds what it holds


def compile_deployed(state: LedgerState, policies: Iterable[str]) -> int:
    """Compile now the deployed versions of ``policies`` that are not compiled yet (a version is
    otherwise compiled by the first request it decides), and return how many were. An
    evaluator calls this as it folds governance events, so a promotion's compiling happens
    there rather than in the first request after it."""
    compiled = 0
    for name in policies:
        record = state.policies.get(name)
        if record is None:
            continue
        for number in record.deployed():
            version = record.versions[number]
            if version._compiled is _NOT_LOADED:
                _ = version.compiled
                compiled += 1
    return compiled
