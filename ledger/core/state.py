"""The ledger's materialised governance state and the pure fold that builds it.

``fold(state, event) -> state`` is the only way state changes. It is deterministic and
idempotent under re-delivery: a governance event applies only when its ``sequence`` is exactly
the next one of its aggregate (the policy name for policy events, the ``principal`` field for
grant events); anything else — a duplicate, or a gap — leaves the state as it was.

Each fold copies only what it touches: the one policy or principal record, and the top-level
mapping that holds it (copy-on-write), so replaying a long history stays linear in practice.

``LedgerState.memo`` caches values *derived* from one immutable state (the action → policy index,
each principal's effective grants). A new state starts with an empty memo, so the cache can never
be stale; it is excluded from equality.
"""

from __future__ import annotations

import fnmatch
import functools
import gc
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final, assert_never

from ledger.core.authority import Grant, grant_from_event
from ledger.core.events import (
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
from ledger.core.pmap import PMap
from ledger.core.policy import Policy
from ledger.errors import PolicyError

__all__ = [
    "PolicyVersion",
    "PolicyRecord",
    "PrincipalRecord",
    "LedgerState",
    "EMPTY_STATE",
    "fold",
    "replay",
    "with_position",
    "aggregate_of",
    "governing_policy",
    "load_document",
]

_MEMO_LIMIT: Final = 8192  # bound on cached per-action lookups: request actions are untrusted input


@functools.lru_cache(maxsize=512)
def load_document(document: str) -> Policy | None:
    """Compile a canonical policy document, cached by its text (replay sees the same text often).

    ``None`` when the document does not load (it was validated at proposal, so this means the
    stored event is corrupt); such a version decides nothing but an ``error``.
    """
    try:
        return Policy.from_canonical(document)
    except PolicyError:
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyVersion:
    """One version of a policy, where it stands, and its compiled form."""

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
    compiled: Policy | None = field(default=None, repr=False, compare=False)


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

    @property
    def latest(self) -> int:
        """The highest version number (0 when none)."""
        return max(self.versions, default=0)

    def deployed(self) -> tuple[int, ...]:
        """Versions that take part in evaluation: active, canary, shadows."""
        out = [v for v in (self.active, self.canary) if v is not None]
        out.extend(v for v in self.shadows if v not in out)
        return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class PrincipalRecord:
    """One grant aggregate: a principal (or role) with its grants and its role memberships."""

    principal: str
    sequence: int = 0
    grants: PMap[str, Grant] = field(default_factory=PMap)
    roles: frozenset[str] = frozenset()


def _new_memo() -> dict[Any, Any]:
    return {}


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerState:
    """Immutable governance state. Build it with :func:`fold` / :func:`replay`.

    ``position`` maps ``"topic/partition"`` to the offset of the last governance record applied
    (kept by the adapters with :func:`with_position`); every decision records it.
    """

    policies: PMap[str, PolicyRecord] = field(default_factory=PMap)
    principals: PMap[str, PrincipalRecord] = field(default_factory=PMap)
    position: Mapping[str, int] = field(default_factory=dict)
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


def aggregate_of(event: GovernanceEvent) -> str:
    """The aggregate a governance event belongs to (its Kafka key)."""
    if isinstance(event, (GrantIssued, GrantRevoked, RoleAssigned, RoleRevoked)):
        return event.principal
    return event.policy


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
            updated = _apply_policy(record, event)
            return LedgerState(
                policies=state.policies.set(
                    event.policy, replace(updated, sequence=event.sequence)
                ),
                principals=state.principals,
                position=state.position,
            )
        case GrantIssued() | GrantRevoked() | RoleAssigned() | RoleRevoked():
            prec = state.principals.get(event.principal) or PrincipalRecord(
                principal=event.principal
            )
            if event.sequence != prec.sequence + 1:
                return state
            return LedgerState(
                policies=state.policies,
                principals=state.principals.set(event.principal, _apply_grant(prec, event)),
                position=state.position,
            )
        case _:
            assert_never(event)


def replay(events: Iterable[GovernanceEvent], state: LedgerState = EMPTY_STATE) -> LedgerState:
    """Fold every event in order.

    The cyclic garbage collector is paused while folding (and restored after): a long replay
    allocates millions of acyclic records, and the collector's repeated full scans of them
    otherwise cost several times the fold itself. Nothing here creates reference cycles.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for event in events:
            state = fold(state, event)
    finally:
        if was_enabled:
            gc.enable()
    return state


def _set_stage(versions: dict[int, PolicyVersion], version: int | None, stage: Stage) -> None:
    if version is not None and version in versions:
        versions[version] = replace(versions[version], stage=stage)


def _apply_policy(
    record: PolicyRecord,
    event: PolicyVersionProposed
    | PolicyVersionApproved
    | PolicyVersionPromoted
    | PolicyRolledBack
    | PolicyRetired,
) -> PolicyRecord:
    versions = dict(record.versions)
    match event:
        case PolicyVersionProposed():
            versions[event.version] = PolicyVersion(
                policy=event.policy,
                version=event.version,
                stage=Stage.DRAFT,
                content_hash=event.content_hash,
                document=event.document,
                author=event.actor,
                proposed_at=event.occurred_at,
                owner=event.owner,
                governs=tuple(event.governs),
                note=event.note,
                compiled=load_document(event.document),
            )
            return replace(record, versions=versions)
        case PolicyVersionApproved():
            current = versions.get(event.version)
            if current is None:
                return record
            versions[event.version] = replace(
                current,
                stage=Stage.APPROVED if current.stage is Stage.DRAFT else current.stage,
                approved_by=event.actor,
                approved_at=event.occurred_at,
            )
            return replace(record, versions=versions)
        case PolicyVersionPromoted():
            v = event.version
            if v not in versions:
                return record
            shadows = tuple(s for s in record.shadows if s != v)
            active, canary, percent, history = (
                record.active,
                record.canary,
                record.canary_percent,
                record.history,
            )
            if event.stage is Stage.SHADOW:
                if active == v:
                    active = None
                if canary == v:
                    canary, percent = None, None
                shadows = (*shadows, v)
            elif event.stage is Stage.CANARY:
                if canary is not None and canary != v:
                    _set_stage(versions, canary, Stage.SUPERSEDED)
                canary, percent = v, event.percent
            elif event.stage is Stage.ACTIVE:
                if active is not None and active != v:
                    _set_stage(versions, active, Stage.SUPERSEDED)
                if canary == v:
                    canary, percent = None, None
                active = v
                history = (*history, v)
            else:
                return record  # other stages are never promoted to (rejected by decide)
            _set_stage(versions, v, event.stage)
            return replace(
                record,
                versions=versions,
                active=active,
                canary=canary,
                canary_percent=percent,
                shadows=shadows,
                history=history,
                retired=False,
            )
        case PolicyRolledBack():
            to = event.to_version
            if to not in versions:
                return record
            history = record.history
            if record.active is not None and history and history[-1] == record.active:
                history = history[:-1]
            if not history or history[-1] != to:
                history = (*history, to)
            if record.active is not None and record.active != to:
                _set_stage(versions, record.active, Stage.SUPERSEDED)
            if record.canary is not None and record.canary != to:
                _set_stage(versions, record.canary, Stage.SUPERSEDED)
            _set_stage(versions, to, Stage.ACTIVE)
            return replace(
                record,
                versions=versions,
                active=to,
                canary=None,
                canary_percent=None,
                shadows=tuple(s for s in record.shadows if s != to),
                history=history,
                retired=False,
            )
        case PolicyRetired():
            for v in record.deployed():
                _set_stage(versions, v, Stage.RETIRED)
            return replace(
                record,
                versions=versions,
                active=None,
                canary=None,
                canary_percent=None,
                shadows=(),
                retired=True,
            )
        case _:
            assert_never(event)


def _apply_grant(
    record: PrincipalRecord, event: GrantIssued | GrantRevoked | RoleAssigned | RoleRevoked
) -> PrincipalRecord:
    # Records are built directly (not with dataclasses.replace): this runs once per grant event.
    grants, roles = record.grants, record.roles
    match event:
        case GrantIssued():
            grants = grants.set(event.grant_id, grant_from_event(event))
        case GrantRevoked():
            grants = grants.delete(event.grant_id)
        case RoleAssigned():
            roles = roles | {event.role}
        case RoleRevoked():
            roles = roles - {event.role}
        case _:
            assert_never(event)
    return PrincipalRecord(
        principal=record.principal, sequence=event.sequence, grants=grants, roles=roles
    )


# ----------------------------------------------------------------------------------- look-ups


def _governance_index(
    state: LedgerState,
) -> tuple[dict[str, str], tuple[tuple[re.Pattern[str], str], ...]]:
    cached = state.memo.get("governance")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    exact: dict[str, str] = {}
    globs: list[tuple[int, str, str]] = []
    for name in sorted(state.policies):
        record = state.policies[name]
        if record.retired:
            continue
        patterns: set[str] = set()
        for v in record.deployed():
            patterns.update(record.versions[v].governs)
        for pattern in sorted(patterns):
            if any(ch in pattern for ch in "*?["):
                globs.append((-len(pattern), pattern, name))
            else:
                exact.setdefault(pattern, name)  # names are visited in order: lowest name wins
    ordered = tuple((re.compile(fnmatch.translate(p)), name) for _, p, name in sorted(globs))
    index = (exact, ordered)
    state.memo["governance"] = index
    return index


def governing_policy(state: LedgerState, action: str) -> PolicyRecord | None:
    """The policy that governs ``action``: an exact ``governs`` entry first, else the longest
    matching glob (ties by policy name). Only policies with a deployed version count."""
    exact, globs = _governance_index(state)
    name = exact.get(action)
    if name is None and globs:
        key = ("action", action)
        if key in state.memo:
            name = state.memo[key]
        else:
            name = next((n for rx, n in globs if rx.match(action)), None)
            if len(state.memo) < _MEMO_LIMIT:
                state.memo[key] = name
    return state.policies[name] if name is not None else None
