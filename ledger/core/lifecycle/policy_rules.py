"""The rules of the policy commands: propose, approve, promote, roll back, retire.

Lives here: one function per command (``_propose``, ``_approve``, ``_promote``, ``_rollback``,
``_retire``), each returning the events to append or a :class:`.Rejection`, and ``_record`` (the
named policy, or ``unknown_policy``). They are private: :func:`ledger.core.lifecycle.decide`
(:mod:`.rules`) is the way in.

May import: the core's modules outside this package and, of this package, :mod:`.rejections`
and :mod:`.commands`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Final

from ledger.core.authority import key_registrar, takeover_problem
from ledger.core.events import (
    ApprovePolicyVersion,
    GovernanceEvent,
    PolicyRetired,
    PolicyRolledBack,
    PolicyVersionApproved,
    PolicyVersionPromoted,
    PolicyVersionProposed,
    PromotePolicyVersion,
    ProposePolicyVersion,
    RetirePolicy,
    RollbackPolicy,
    Stage,
)
from ledger.core.governing import takeovers
from ledger.core.jsonform import format_timestamp, parse_instant
from ledger.core.lifecycle.commands import _allowed
from ledger.core.lifecycle.rejections import Rejection, _reject, _shown, clipped
from ledger.core.limits import Limits
from ledger.core.policy import parse_policy
from ledger.core.state import LedgerState, PolicyRecord, PolicyVersion
from ledger.errors import PolicyError

__all__ = ["CANARY_PERCENTS", "deployment_change_times"]  # the rules: through decide (.rules)

CANARY_PERCENTS: Final = range(1, 100)
"""The shares of requests a canary may take, in percent (the CLI checks a flag against it)."""


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
        same = _proposed_since(record, c, policy.content_hash)
        if same is not None:
            return _reject(
                "already_applied",
                f"identical to {policy.name} version {same.version}, which {clipped(same.author)} "
                f"proposed at {format_timestamp(same.proposed_at)}, after this proposal was "
                "signed (the same document sent twice at once)",
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


def _proposed_since(
    record: PolicyRecord, c: ProposePolicyVersion, content_hash: str
) -> PolicyVersion | None:
    """A version of ``record`` with ``content_hash`` proposed after ``c`` was signed: the same
    document proposed twice at once (two governors, a retry racing its first send) became two
    versions to review (a review of concurrent governance). The versions are numbered in the
    order they were proposed, so only those since are read."""
    for number in range(record.latest, 0, -1):
        version = record.versions.get(number)
        if version is None:
            continue
        if version.proposed_at <= c.occurred_at:
            return None
        if version.content_hash == content_hash:
            return version
    return None


def _live_version(
    state: LedgerState, policy: str, number: int
) -> tuple[PolicyRecord, PolicyVersion] | Rejection:
    """Policy ``policy`` and its version ``number``, for a command that acts on the version
    (approve, promote): refused when the policy is unknown or retired or has no such version."""
    record = _record(state, policy)
    if isinstance(record, Rejection):
        return record
    if record.retired:
        return _reject("policy_retired", f"{policy} is retired; roll it back to revive it first")
    version = record.versions.get(number)
    if version is None:
        return _reject("unknown_version", f"{policy} has no version {number}")
    return record, version


def _self_approval(c: ApprovePolicyVersion) -> Rejection:
    return _reject(
        "self_approval",
        f"{c.actor} proposed {c.policy} v{c.version} and cannot approve it: another person "
        "holding ledger.policy.approve does",
    )


def _approve(
    state: LedgerState,
    c: ApprovePolicyVersion,
    now: datetime,
    new_id: Callable[[], str],
    admins: frozenset[str],
) -> tuple[GovernanceEvent, ...] | Rejection:
    # Who may, before anything of the policy's state: its answers (who approved it, which
    # versions exist) are for those who may act on it (a review).
    denied = _allowed(state, c, now, admins)
    if denied:
        record = state.policies.get(c.policy)
        version = record.versions.get(c.version) if record is not None else None
        if version is not None and version.author == c.actor:  # theirs: they know it exists
            return _self_approval(c)  # the rule that holds whatever they are granted
        return denied
    found = _live_version(state, c.policy, c.version)
    if isinstance(found, Rejection):
        return found
    record, version = found
    if version.approved_by is not None:
        return _reject(
            "already_applied", f"{c.policy} v{c.version} was approved by {version.approved_by}"
        )
    if c.actor == version.author:
        return _self_approval(c)
    if key_registrar(state, c.actor, c.key_id, admins) == version.author:
        return _reject(
            "self_approval",
            f"{c.actor} signed with a key {version.author} registered, and {version.author} "
            f"proposed {c.policy} v{c.version}: another person approves it, with a key of their "
            "own",
        )
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
    # Who may, before what the policy's state says: someone holding only `propose` was told
    # `not_approved` or `no_active_version` (a policy owner's walkthrough), `unknown_version`
    # (a review).
    denied = _allowed(state, c, now, admins)
    if denied:
        return denied
    found = _live_version(state, c.policy, c.version)
    if isinstance(found, Rejection):
        return found
    record, version = found
    if c.stage not in (Stage.SHADOW, Stage.CANARY, Stage.ACTIVE):
        return _reject(
            "invalid_stage", f"cannot promote to {c.stage.value}; use shadow, canary or active"
        )
    if c.stage is Stage.CANARY:
        if c.percent is None or c.percent not in CANARY_PERCENTS:
            low, high = CANARY_PERCENTS[0], CANARY_PERCENTS[-1]
            return _reject(
                "invalid_percent", f"canary percent must be {low} to {high}, got {c.percent}"
            )
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
                + (
                    f"v{c.version} to active (it is observed in shadow already)"
                    if c.version in record.shadows
                    else f"v{c.version} to shadow to observe it, or to active"
                ),
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
    if c.previous_version is not None:
        if c.stage is Stage.SHADOW:
            return _reject(
                "invalid_stage",
                "a shadow replaces no version: promote to shadow without naming one it replaces",
            )
        held = record.previous_for(c.stage, c.version)
        if held is None and c.previous_version == c.version:
            # A red team's: a canary's own percent changed with `--replacing` naming it; the
            # event records the version replaced, none here, so the check cannot hold it.
            return _reject(
                "invalid_stage",
                f"{c.policy} v{c.version} holds that stage already and replaces no version: "
                "`--replacing` names the version it would take the stage from; to change a "
                "canary's percent, leave it out",
            )
        if held != c.previous_version:
            return _reject(
                "deployment_changed",
                _changed_from(
                    record,
                    f"promotion was sent to replace v{c.previous_version} as {c.stage.value}",
                ),
            )
    # Naming the version it replaces adds a check that needs no clock; the clock rule stays
    # beside it for the stage it does not name (a second review: without it, a canary started
    # after the command was signed was replaced, and an A-B-A re-promotion undone).
    if c.stage is not Stage.SHADOW or record.canary == c.version:
        unseen = _unseen_change(record, c, "promotion")
        if unseen is not None:
            return unseen
    if c.stage is not Stage.SHADOW:  # a shadow decides nothing, so takes nothing over
        denied = _taking_over(state, c, c.version, now, admins)
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
            note=c.note,
        ),
    )


def _rollback(
    state: LedgerState,
    c: RollbackPolicy,
    now: datetime,
    new_id: Callable[[], str],
    admins: frozenset[str],
) -> tuple[GovernanceEvent, ...] | Rejection:
    denied = _allowed(state, c, now, admins)  # before the state's answers, as for a promotion
    if denied:
        return denied
    record = _record(state, c.policy)
    if isinstance(record, Rejection):
        return record
    if not c.reason or not c.reason.strip():
        return _reject("missing_reason", "a rollback needs a reason")
    if c.from_version is not None and record.retired:  # a review: "send it anew", forever
        by, at = record.deployed_by, record.deployed_at
        when = f" by {clipped(by or '?')} at {format_timestamp(at)}" if at is not None else ""
        return _reject(
            "deployment_changed",
            f"this rollback was sent to undo v{c.from_version}, but {record.name} was "
            f"retired{when}: a rollback without `--from` revives it, if that is what you mean",
        )
    if c.from_version is not None and record.active != c.from_version:
        return _reject(
            "deployment_changed",
            _changed_from(
                record,
                f"rollback was sent to undo v{c.from_version}",
                canary=c.from_version == record.canary,
            ),
        )
    # `--from` adds a check that needs no clock; the clock rule stays beside it (a second
    # review: without it, a canary started after signing was ended, an A-B-A re-promotion undone).
    unseen = _unseen_change(record, c, "rollback")
    if c.to_version is not None:
        target = record.versions.get(c.to_version)
        if target is None:
            return _reject("unknown_version", f"{c.policy} has no version {c.to_version}")
        if target.approved_by is None:
            return _reject("not_approved", f"{c.policy} v{c.to_version} was never approved")
        if c.to_version not in record.activated:
            # A red team's: a holder of the rollback grant alone made a version never deployed
            # active, a promotion without the promote grant, past canary.
            return _reject(
                "never_active",
                f"{c.policy} v{c.to_version} was never active: a rollback restores a version "
                f"that was{_restorable(record)}; to make v{c.to_version} active, promote it "
                f"(`ledger policy promote {_shown(c.policy, 80)} {c.to_version} --to active "
                f"--by YOU`, "
                "which needs ledger.policy.promote)",
            )
        if record.active == c.to_version and record.canary is None:
            return _reject("already_applied", f"{c.policy} v{c.to_version} is already active")
        to = c.to_version  # the active one itself while a canary runs: the canary goes
    elif unseen is not None:  # before where it would go: from what its sender saw, elsewhere
        return unseen
    else:
        previous = record.rollback_target()
        if previous is None:
            return _reject("no_previous_version", _nothing_before(c.policy, record))
        to = previous
    if unseen is not None:
        return unseen
    denied = _taking_over(state, c, to, now, admins)
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


def _unseen_change(
    record: PolicyRecord, c: PromotePolicyVersion | RollbackPolicy | RetirePolicy, what: str
) -> Rejection | None:
    """Refused when the versions that decide changed after ``c`` was signed, by another actor,
    whom its sender could not have seen act: two governors rolling back one bad version at once
    walked the policy back two versions, or three; a rollback meant to undo v4 undid the fix
    promoted a moment before it, making v4 active again; a second canary replaced one its
    sender never saw (a review of concurrent governance); a retirement took out of service the
    fix promoted a moment before it. A command naming its version (or a retirement) does not
    count its actor's own changes (its commands signed together and sent in turn are one
    intent); a rollback naming none does, being judged against what is active (a review: one
    automation identity rolling back twice at once walked the policy back two versions).
    ``None``: nothing unseen."""
    at, by = record.deployed_at, record.deployed_by
    if at is None or at <= c.occurred_at:
        return None
    bare = isinstance(c, RollbackPolicy) and c.to_version is None
    if by == c.actor and not bare:
        return None
    deployed = _deployment(record)
    return _reject(
        "deployment_changed",
        f"{c.policy}'s deployment changed after this {what} was signed "
        f"({format_timestamp(c.occurred_at)}): {clipped(by or '?')} made it {deployed} at "
        f"{format_timestamp(at)}. A {what} is judged against what its sender saw: look again "
        f"(`ledger policy show {_shown(c.policy, 80)}`) and send it anew if it is still wanted "
        "(if nothing changed in between, the signer's clock is behind the command processor's)",
    )


def _changed_from(record: PolicyRecord, sent: str, *, canary: bool = False) -> str:
    """Why a command that named the version it saw (a rollback's ``--from``, a promotion's
    ``--replacing``) is refused: another version holds that stage now. A check by the versions,
    beside the clock rule: two governors undoing one bad version at once roll it back once, even
    when the second signed after the first was applied."""
    at, by = record.deployed_at, record.deployed_by
    since = (
        f" ({clipped(by or '?')} made it so at {format_timestamp(at)})" if at is not None else ""
    )
    which = (
        f" (v{record.canary} is its canary: `--from` names the active version)" if canary else ""
    )
    return (
        f"this {sent}, but {record.name} is now "
        f"{_deployment(record)}{since}{which}: look again (`ledger policy show "
        f"{_shown(record.name, 80)}`) and send it anew if it is still wanted"
    )


_CHANGED_AT: Final = re.compile(
    r"'s deployment changed after this \w+ was signed \((\S+)\): .+? at (\S+)\. "
)


def deployment_change_times(message: str) -> tuple[datetime, datetime] | None:
    """When a command refused ``deployment_changed`` was signed, and when the change it did
    not see was made, from its rejection's message (:func:`_unseen_change` writes it): a
    command-line tool compares them with its own clock, to say when its machine's runs behind
    (a review: a signer 90 s behind was refused again and again, told to send it anew)."""
    found = _CHANGED_AT.search(message)
    if found is None:
        return None
    try:
        return parse_instant(found.group(1)), parse_instant(found.group(2))
    except ValueError:
        return None


def _deployment(record: PolicyRecord) -> str:
    """What decides for ``record`` now, in words: ``v3 active, v4 canary at 10%``."""
    if record.retired:
        return "retired"
    parts = (
        [f"v{record.active} active"] if record.active is not None else ["without an active version"]
    )
    if record.canary is not None:
        parts.append(f"v{record.canary} canary at {record.canary_percent}%")
    return ", ".join(parts)


def _taking_over(
    state: LedgerState,
    c: PromotePolicyVersion | RollbackPolicy,
    version: int,
    now: datetime,
    admins: frozenset[str],
) -> Rejection | None:
    """Refused when deploying ``c.policy`` v``version`` would decide actions another policy
    decides now and the actor may not deploy that one, or the delegate who registered the key
    it signed with may not (as :func:`._allowed` asks: a review found a key registered under
    the earlier rules let its delegate take actions over) (:func:`takeover_problem`)."""
    if c.actor in admins:
        return None
    taken, complete = takeovers(state, c.policy, state.policies[c.policy].versions[version].governs)
    if not taken and complete:
        return None
    deploying = f"{c.policy} v{version}"
    problem = takeover_problem(state, c.actor, deploying, taken, complete, now=now)
    registrar = key_registrar(state, c.actor, c.key_id, admins)
    if problem is None and registrar is not None:
        problem = takeover_problem(state, registrar, deploying, taken, complete, now=now)
        if problem is not None:
            problem = f"{c.actor} signed with a key {registrar} registered, and {problem}"
    return None if problem is None else _reject("not_authorized", problem)


def _nothing_before(policy: str, record: PolicyRecord) -> str:
    """Why a rollback naming no version has nowhere to go, and what would: a rollback goes
    back one step of the active versions' history, and each rollback takes a step off it."""
    now = f"v{record.active} is active" if record.active is not None else "nothing is active"
    others = _once_active(record)
    if not others:
        return (
            f"{policy} has no earlier active version to roll back to ({now}, and no other "
            "version was ever active)"
        )
    shown = ", ".join(f"v{v}" for v in others[:5]) + (", …" if len(others) > 5 else "")
    return (
        f"{policy} has no earlier active version to roll back to ({now}, and no version "
        f"active before it is left to go back to): name the version to restore (`--to N`); "
        f"active before: {shown}"
    )


def _once_active(record: PolicyRecord) -> list[int]:
    """The versions a rollback may name, newest first: once active, approved, not active now."""
    return sorted(
        (
            v
            for v in record.activated
            if v != record.active and v in record.versions and record.versions[v].approved_by
        ),
        reverse=True,
    )


def _restorable(record: PolicyRecord) -> str:
    """`` (here: v3, v1)``, the versions a rollback may name, or nothing."""
    others = _once_active(record)
    if not others:
        return ""
    return (
        " (here: " + ", ".join(f"v{v}" for v in others[:5]) + (", …)" if len(others) > 5 else ")")
    )


def _retire(
    state: LedgerState,
    c: RetirePolicy,
    now: datetime,
    new_id: Callable[[], str],
    admins: frozenset[str],
) -> tuple[GovernanceEvent, ...] | Rejection:
    denied = _allowed(state, c, now, admins)  # before the state's answers, as for a promotion
    if denied:
        return denied
    record = _record(state, c.policy)
    if isinstance(record, Rejection):
        return record
    if not c.reason or not c.reason.strip():
        return _reject("missing_reason", "retiring a policy needs a reason")
    if record.retired:
        return _reject("already_applied", f"{c.policy} is already retired")
    # A review's Low: a retirement signed before another governor promoted a fix took the fix
    # out of service too, unseen; it is judged against what its sender saw, as a rollback is.
    unseen = _unseen_change(record, c, "retirement")
    if unseen is not None:
        return unseen
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
