"""Answers: what the ledger publishes about a command it decided, and where its events go.

Lives here: :func:`command_result` (the ``CommandAccepted``/``CommandRejected`` for an outcome,
with ``_notes``: what a promotion or rollback supersedes (:func:`taken_out_of_service`), and :func:`overlap_note`: another
deployed policy that may govern the same actions), :func:`already_applied` (the answer to a
command delivered again after it was applied) and :func:`event_stream` (a governance event's
stream, :data:`EventStream`).

May import: the core's modules outside this package and, of this package, :mod:`.rejections`
and :mod:`.commands`.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Final, Literal, TypeAlias

from ledger.core.authority import pattern_covers
from ledger.core.events import (
    COMMAND_PROCESSOR,
    GRANT_EVENT_TYPES,
    Command,
    CommandAccepted,
    CommandRejected,
    CommandResult,
    GovernanceEvent,
    GrantIssued,
    GrantRevoked,
    PolicyRetired,
    PolicyRolledBack,
    PolicyVersionApproved,
    PolicyVersionPromoted,
    PolicyVersionProposed,
    Stage,
)
from ledger.core.globs import glob_matches, is_pattern
from ledger.core.globwork import GlobWork, fixed_start
from ledger.core.governing import (
    governed_by,
    governing_policy,
    governs_may_share,
    governs_precedence,
    overlapping_governs,
    overlapping_governs_checked,
)
from ledger.core.lifecycle.commands import command_aggregate
from ledger.core.lifecycle.rejections import Rejection
from ledger.core.state import LedgerState, PolicyRecord, PolicyVersion

__all__ = [
    "command_result",
    "overlap_note",
    "taken_out_of_service",
    "event_stream",
    "EventStream",
    "already_applied",
]


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
        said = [
            _new_name_note(state, event.policy),
            overlap_note(state, event.policy, event.governs),
        ]
        record = state.policies.get(event.policy)
        # Said first at proposal, and again at approval (a policy owner's walkthrough: a
        # misspelt `governs` passed validate, its tests, propose and approve, and the first
        # word of it came once its canary was deciding).
        dropped = (
            []
            if record is None
            else _dropped(state, record, event.version, None, event.governs, upcoming=True)
        )
        return [*dropped, *(n for n in said if n), *_same_as_earlier(record, event)]
    if isinstance(event, PolicyVersionApproved):
        record = state.policies.get(event.policy)
        version = None if record is None else record.versions.get(event.version)
        if record is None or version is None:
            return []
        return _dropped(state, record, version.version, None, version.governs, upcoming=True)
    if isinstance(event, GrantIssued):
        return _own_keys_only(event)
    record = state.policies.get(getattr(event, "policy", ""))
    notes: list[str] = []
    if isinstance(event, PolicyVersionPromoted) and record is not None:
        version = record.versions.get(event.version)
        if version is not None and event.stage is Stage.SHADOW:
            notes += _unobserved(state, event.policy, version.version, version.governs)
        elif version is not None and event.stage in (Stage.CANARY, Stage.ACTIVE):
            # What leaves this policy first: it changes who decides, the overlap note does not.
            notes += _decides_nothing(state, event.policy, version.version, version.governs)
            notes += _dropped(state, record, version.version, event.percent, version.governs)
            notes += _new_required_facts(record, version, event.percent)
            notes += [
                n for n in [overlap_note(state, event.policy, version.governs, explain=False)] if n
            ]
    elif isinstance(event, PolicyRolledBack) and record is not None:
        version = record.versions.get(event.to_version)
        if version is not None and (record.retired or record.active != version.version):
            # A version made active again (a retired policy revived): as a promotion to active.
            notes += _decides_nothing(state, event.policy, version.version, version.governs)
            notes += _dropped(state, record, version.version, None, version.governs)
            notes += _new_required_facts(record, version, None)
            notes += [
                n for n in [overlap_note(state, event.policy, version.governs, explain=False)] if n
            ]
    elif isinstance(event, PolicyRetired) and record is not None:
        idle = _idle(state, record)
        if idle:  # nothing is handed over: the others decided its actions all along
            return [*taken_out_of_service(record, event, idle=idle), *notes]
        notes += _inherited(state, event.policy, record)
        if record.active is not None:  # its canary decides some: the active version, none?
            governs = record.versions[record.active].governs
            active_idle = _decided_by_others(state, record.name, governs)
            return taken_out_of_service(record, event, active_idle=active_idle) + notes
    # What leaves service first: an owner looks for it, and the overlap notes can be long.
    return taken_out_of_service(record, event) + notes


def _same_as_earlier(record: PolicyRecord | None, event: PolicyVersionProposed) -> list[str]:
    """A proposal of an earlier version's very document (an auditor's walkthrough: restoring
    v1 by proposing its file again made v3, to be approved again, two versions under one
    content hash, without a word)."""
    if record is None:
        return []
    same = [v for n, v in sorted(record.versions.items()) if v.content_hash == event.content_hash]
    if not same:
        return []
    active = next((v.version for v in same if v.version == record.active), None)
    earlier = same[0].version if active is None else active
    if active is not None and not record.retired:  # a review: a rollback to it is refused
        back = ", the active version"
    elif earlier in record.activated and not record.retired:
        back = (
            f": `ledger policy rollback {event.policy} --to {earlier} --by YOU --reason WHY` "
            "restores it without an approval"
        )
    else:
        back = ""
    return [f"note: v{event.version} is identical to v{earlier} (same content hash){back}"]


def _idle(state: LedgerState, record: PolicyRecord) -> str | None:
    """Who decides, instead of ``record``'s deciding versions, every action they govern (a
    policy owner's walkthrough: retiring a typo's policy that never decided anything said its
    active version "stops deciding"), or None where they decide something."""
    deciding = [v for v in (record.active, record.canary) if v is not None]
    if not deciding:
        return None
    governs = {g for v in deciding for g in record.versions[v].governs}
    return _decided_by_others(state, record.name, governs)


_NAMES_COMPARED: Final = 2_000
"""The most policy names a proposal's "did you mean" compares its new name with (a note: on a
ledger of more, the first in name order)."""


def _new_name_note(state: LedgerState, policy: str) -> str | None:
    """The first version of a policy whose name is close to another's: a new policy, not the
    next version of that one (a policy owner's walkthrough: `email-outbund`, a typo, was
    proposed, approved and made active beside `email-outbound`, and decided nothing)."""
    if policy in state.policies:
        return None
    names = sorted(state.policies)[:_NAMES_COMPARED]
    close = difflib.get_close_matches(policy, names, n=1, cutoff=0.8)
    if not close:
        return None
    meant = close[0]
    if state.policies[meant].retired:  # a review: its proposal would be refused, retired
        return (
            f"note: {policy} is a new policy, its first version; did you mean {meant}? It is "
            f"retired: `ledger policy rollback {meant} --to N` revives it, then propose a new "
            f"version of it with `policy: {meant}` in the file"
        )
    return (
        f"note: {policy} is a new policy, its first version; did you mean {meant}? A new "
        f"version of {meant} needs `policy: {meant}` in the file"
    )


def _decides_nothing(
    state: LedgerState, policy: str, version: int, governs: Iterable[str]
) -> list[str]:
    """When every action a version deployed to decide governs is decided by another deployed
    policy (precedence: :func:`governs_precedence`), say so first: the version decides nothing
    (a policy owner's walkthrough: a typo's policy was made active, "accepted", and decided
    nothing, the one hint a precedence note further on)."""
    by = _decided_by_others(state, policy, governs)
    return [f"note: {policy} v{version} will decide none of its actions: {by}"] if by else []


def _decided_by_others(state: LedgerState, policy: str, governs: Iterable[str]) -> str | None:
    """``email-outbound decides email.send``: the deployed policies that decide every action of
    ``governs`` before ``policy`` would, or None where ``policy`` decides some of them."""
    mine = sorted(set(governs))
    if not mine:
        return None
    takers: dict[str, str] = {}  # each of ours -> a policy that decides all it matches
    for other, theirs, ours in overlapping_governs(state, policy, mine):
        record = state.policies[other]
        deciding = [v for v in (record.active, record.canary) if v is not None]
        if (
            ours not in takers
            # Decided in every bucket: by its active version and its canary alike (a review:
            # a canary alone governing it decides only its share, not all of it).
            and deciding
            and all(theirs in record.versions[v].governs for v in deciding)
            and _decider(policy, ours, other, theirs)[0] == other
            and pattern_covers(theirs, ours)
        ):
            takers[ours] = other
    if len(takers) < len(mine):
        return None
    by = ", ".join(f"{takers[m]} decides {m}" for m in mine[:3])
    return by + (f" and {len(mine) - 3} more" if len(mine) > 3 else "")


def _inherited(state: LedgerState, policy: str, record: PolicyRecord) -> list[str]:
    """What a retirement hands to other deployed policies (a policy owner's walkthrough:
    retiring payout-hours let risk-freeze's glob decide payments.payout.wire, without a word):
    its actions are ungoverned, and denied, only where no other policy governs them."""
    overlaps, complete = overlapping_governs_checked(state, policy, record.governs()[0])
    found = [
        (other, theirs, mine)
        for other, theirs, mine in overlaps
        if theirs in state.policies[other].governs()[0]  # a shadow's observes, never decides
    ]
    if not found:
        governed = sorted(record.governs()[0])
        if not governed or not complete:  # not said unless known (a review)
            return []
        shown = ", ".join(governed[:5]) + (" and more" if len(governed) > 5 else "")
        return [
            f"note: no other deployed policy governs {shown}: from now on those requests are "
            "denied ungoverned_action"
        ]
    shown = "; ".join(f"{other}'s {theirs} ~ {mine}" for other, theirs, mine in found[:3])
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    return [
        f"note: other deployed policies may now decide actions {policy} decided ({shown}{more}): "
        "a retired policy's actions are ungoverned, and denied, only where no other policy "
        "governs them"
    ]


def _own_keys_only(event: GrantIssued) -> list[str]:
    """A grant of ``ledger.key.register`` on another principal's keys does not let its holder
    register them (an administrator's act since keys for others can no longer be delegated):
    say so when it is issued, not when the holder is first refused (an operator's upgrade)."""
    if "ledger.key.register" not in event.actions or event.resource == (
        f"principal:{event.principal}"
    ):
        return []
    return [
        f"note: ledger.key.register on {event.resource} lets {event.principal} register keys "
        "of its own only: a key for another principal is registered by an administrator"
    ]


def _unobserved(state: LedgerState, policy: str, number: int, governs: Iterable[str]) -> list[str]:
    """A note naming what shadow version ``number`` will observe nothing of: the actions of its
    ``governs`` another deployed policy's deciding version outranks it on. A shadow runs only
    on the requests its own policy decides or, where no deciding version governs the action,
    observes, so ``--disagreeing`` would show nothing there, not agreement. Exact names are asked of :func:`governing_policy` itself; a glob is compared
    with each other policy's deciding entries it may share actions with."""
    record = state.policies.get(policy)
    ours = record.governs()[0] if record is not None else frozenset()
    lost: list[str] = []
    entries = sorted(set(governs))
    # Each name asked of governing_policy may be matched against every deployed glob (a red
    # team: 240 names of 1,024 characters against 240 long globs, 4.4 s a promotion).
    work = GlobWork(_COVER_WORK)
    deployed = sum(
        len(p)
        for r in state.policies.values()
        for side in r.governs()
        for p in side
        if is_pattern(p)
    )
    for mine in (m for m in entries if not is_pattern(m)):
        if not work.pairs(1) or not work.charge(len(mine) * deployed):
            lost.append("the rest (too many long names and globs to compare)")
            break
        decider = governing_policy(state, mine)
        if decider is not None and decider.name != policy and _decides(state, decider, mine):
            lost.append(f"{mine} ({decider.name} decides it)")
        # What no deciding version governs, of this policy or another, is observed: its
        # requests come to this policy as the one that observes them (governing_policy).
    globs = [m for m in entries if is_pattern(m)]
    if globs:
        for other, theirs, mine in overlapping_governs(state, policy, globs):
            if theirs not in _deciding(state.policies[other]):
                continue  # what another policy only observes takes nothing from this one
            if not is_pattern(theirs):
                decider = governing_policy(state, theirs)
                if decider is not None and decider.name == other:
                    lost.append(f"{theirs} ({other} decides it)")
                continue
            # The shared actions go to the better of their glob and this policy's best
            # deciding entry there (none: this policy decides none of them).
            rivals = [p for p in ours if governs_may_share(p, theirs, work)]
            best = min(rivals, key=lambda p: governs_precedence(p, policy), default=None)
            if best is None or governs_precedence(theirs, other) < governs_precedence(best, policy):
                narrower = theirs if glob_matches(mine, theirs) else mine
                lost.append(f"{narrower} ({other} decides what {theirs} matches)")
    if not lost:
        return []
    lost = list(dict.fromkeys(lost))
    return [
        f"note: shadow v{number} observes nothing of {'; '.join(lost[:3])}"
        + ("; and more" if len(lost) > 3 else "")
        + ": a shadow runs only on the requests its own policy decides"
    ]


def _deciding(record: PolicyRecord) -> frozenset[str]:
    return record.governs()[0]


def _decides(state: LedgerState, record: PolicyRecord, action: str) -> bool:
    """Does a deciding version (active, canary) of ``record`` govern ``action``?"""
    return any(governed_by(state, record, v, action) for v in (record.active, record.canary) if v)


def _dropped(
    state: LedgerState,
    record: PolicyRecord,
    number: int,
    percent: int | None,
    governs: Iterable[str],
    *,
    upcoming: bool = False,
) -> list[str]:
    """A note naming what version ``number``, made the canary (of ``percent``) or active
    (``upcoming``: proposed or approved, once it is), does not govern of what the active
    version governs, and what becomes of those requests
    (the canary's share of them): decided by another deployed policy that governs them, named
    with its pattern (a policy owner's walkthrough: the note said "denied ungoverned_action",
    and another team's policy decided them, as errors, on facts it did not expect), else
    denied ``ungoverned_action``."""
    active = record.versions.get(record.active) if record.active is not None else None
    if active is None or active.version == number:
        return []
    kept = frozenset(governs)
    globs = [k for k in kept if is_pattern(k)]  # a name covers only itself
    work = GlobWork(_COVER_WORK)
    gone: list[str] = []
    dropped: list[str] = []  # the entries themselves
    for g in active.governs:
        if g in kept:
            continue
        covered = False
        if not work.pairs(len(globs)):
            break
        for k in globs:
            if not g.startswith(fixed_start(k)):  # what k matches begins with it
                continue
            if not work.match(k, g):
                break
            if pattern_covers(k, g):
                covered = True
                break
        if work.spent:
            break
        if not covered:
            gone.append(g + _still_governed(g, kept, work))
            dropped.append(g)
    if upcoming:
        when = "once it decides (canary or active), in its share"
    else:
        when = f"in its share ({percent}%)" if percent is not None else "from now on"
    notes = [
        f"note: v{number} does not govern {', '.join(gone[:5])}"
        + (" and more" if len(gone) > 5 else "")
        + f", which v{active.version} (active) does: {when} "
        + _taken_by(state, record.name, dropped)
    ][: 1 if gone else 0]
    if work.spent:
        notes.append(
            f"note: too many long globs to compare all of v{number}'s governs with "
            f"v{active.version}'s: `ledger policy diff` shows what changed"
        )
    return notes


def _new_required_facts(
    record: PolicyRecord, version: PolicyVersion, percent: int | None
) -> list[str]:
    """A note naming the facts ``version``, made the canary (of ``percent``) or active,
    requires that the active version does not (a policy owner's walkthrough: a 30% canary
    requiring a new fact turned 62 of 200 requests into ``error``, and its promotion said
    nothing, though the README's two steps for adding a fact were there to follow)."""
    active = record.versions.get(record.active) if record.active is not None else None
    if active is None or active.version == version.version:
        return []
    # Read from the recorded canonical documents: compiling both versions, conditions and all,
    # took the single command processor 0.73 s for the costliest the limits allow (a review).
    new, old = _required_facts(version.document), _required_facts(active.document)
    if new is None or old is None:
        return []
    added = [name for name in new if name not in old]
    if not added:
        return []
    when = f"in its share ({percent}%)" if percent is not None else "from now on"
    shown = ", ".join(added[:5]) + (" and more" if len(added) > 5 else "")
    it = "it" if len(added) == 1 else "them"
    return [
        f"note: v{version.version} requires {shown}, which v{active.version} (active) does "
        f"not: {when} a request without {it} is decided error / invalid_facts; have the agents "
        f"send {it} first, or declare {it} optional"
    ]


def _required_facts(document: str) -> list[str] | None:
    """The facts a recorded version's canonical document declares required, in order (None
    when it is not one: a version recorded before documents were canonical)."""
    try:
        facts = json.loads(document).get("facts") or {}
    except (ValueError, AttributeError):
        return None
    if not isinstance(facts, dict):
        return None
    return [
        name
        for name, spec in facts.items()
        if isinstance(spec, dict) and not spec.get("optional", False)
    ]


def _taken_by(state: LedgerState, policy: str, dropped: list[str]) -> str:
    """What becomes of the requests for ``dropped`` (entries ``policy`` no longer governs):
    the other deployed policies whose deciding versions govern them, each with its pattern, then
    ungoverned_action for the rest."""
    found, complete = overlapping_governs_checked(state, policy, dropped)
    takers = [
        (other, theirs, mine)
        for other, theirs, mine in found
        if theirs in state.policies[other].governs()[0]  # a shadow's observes, never decides
    ]
    if not takers and not complete:
        return (
            "those requests are denied ungoverned_action unless another deployed policy governs "
            "them (too many long globs to compare them all)"
        )
    if not takers:
        return "those requests are denied ungoverned_action (no other deployed policy governs them)"
    shown = "; ".join(f"{mine} by {other} (its {theirs})" for other, theirs, mine in takers[:3])
    more = f" and {len(takers) - 3} more" if len(takers) > 3 else ""
    rest = (
        "any other is denied ungoverned_action"
        if complete
        else "any other is denied ungoverned_action unless another deployed policy governs it "
        "(not every glob could be compared)"
    )
    return (
        f"another deployed policy decides those it governs, with its own rules and facts "
        f"({shown}{more}); {rest}"
    )


def _still_governed(glob: str, kept: frozenset[str], work: GlobWork) -> str:
    """`` beyond payments.card.refund``: what of a dropped ``glob`` the new version still
    governs (names and globs it covers), so a narrowing does not read as dropping all of it."""
    if not is_pattern(glob) or not work.pairs(len(kept)):
        return ""
    fixed = fixed_start(glob)
    inside = []
    for k in sorted(kept):
        if k.startswith(fixed) and work.match(glob, k) and pattern_covers(glob, k):
            inside.append(k)
    if not inside:
        return ""
    return f" beyond {', '.join(inside[:3])}" + (" and more" if len(inside) > 3 else "")


_COVER_WORK: Final = 300_000_000
"""What one promotion's note may spend comparing globs (:class:`~ledger.core.globwork.GlobWork`,
~0.3 s: a review stalled the command processor 68 s comparing two versions' 256 long globs pair
by pair); a note, not a rule, so beyond it the note names what it found."""


def taken_out_of_service(
    record: PolicyRecord | None,
    event: GovernanceEvent,
    *,
    idle: str | None = None,
    active_idle: str | None = None,
) -> list[str]:
    """What a promotion or a rollback takes out of service, said from the policy's ``record``
    before the event: ``v2 was the canary (10%): it is superseded``, ``the canary v3 (20%)
    ends``. A command's answer and ``ledger policy show`` both say it this way; a rollback's
    own fields (``from_version=1, to_version=1``) read as one that did nothing. ``idle``: who
    decided all along every action a retired policy's deciding versions govern, where known;
    ``active_idle``, every action its active version governs (its canary deciding some)."""
    if record is None:
        return []
    notes: list[str] = []
    if (
        isinstance(event, PolicyVersionPromoted)
        and event.stage is Stage.CANARY
        and record.canary == event.version
        and record.canary_percent != event.percent
    ):  # a policy owner's walkthrough: widening a canary answered only "v2 → canary"
        notes.append(
            f"the canary v{event.version}'s share goes from {record.canary_percent}% to "
            f"{event.percent}% of requests"
        )
    if isinstance(event, PolicyVersionPromoted) and event.previous_version is not None:
        was = (
            f"the canary ({record.canary_percent}%)"
            if event.stage is Stage.CANARY
            else event.stage.value
        )
        notes.append(f"v{event.previous_version} was {was}: it is superseded")
    if (
        isinstance(event, PolicyVersionPromoted)
        and event.stage is Stage.SHADOW
        and record.canary == event.version
    ):
        notes.append(
            f"the canary v{event.version} ({record.canary_percent}%) ends: it observes as a "
            f"shadow, and v{record.active} decides all requests"
        )
    elif isinstance(event, PolicyRolledBack):
        if record.retired:  # a policy owner's walkthrough: a revival read as any rollback
            notes.append(
                f"{record.name} was retired: it is back in service, v{event.to_version} "
                "deciding its actions again"
            )
        if record.canary is not None and record.canary != event.to_version:
            notes.append(f"the canary v{record.canary} ({record.canary_percent}%) ends")
        if record.active is not None and record.active != event.to_version:
            notes.append(f"v{record.active} is superseded")
    elif isinstance(event, PolicyRetired) and not record.retired:
        # What stops, said as a promotion says it (a policy owner's walkthrough: retiring a
        # policy with a shadow running did not say the shadow ended).
        if idle is not None:
            deciding = [f"v{record.active} (active)"] if record.active is not None else []
            deciding += [f"the canary v{record.canary}"] if record.canary is not None else []
            notes.append(
                f"{' and '.join(deciding)} decided none of {record.name}'s actions ({idle}): "
                "no decision changes"
            )
        if record.active is not None and idle is None:
            notes.append(
                f"v{record.active} (active) decided none of its actions ({active_idle})"
                if active_idle is not None  # a review: not "stops deciding"
                else f"v{record.active} (active) stops deciding"
            )
        if record.canary is not None and idle is None:
            notes.append(f"the canary v{record.canary} ({record.canary_percent}%) ends")
        notes += [f"the shadow v{number} ends" for number in sorted(record.shadows)]
    return notes


def overlap_note(
    state: LedgerState, policy: str, governs: Iterable[str], *, explain: bool = True
) -> str | None:
    """Where another deployed policy may govern the same actions as ``governs``, say so, and
    how the ledger chooses (not an error: teams may mean it, a glob beside an exact name)."""
    found = overlapping_governs(state, policy, governs)
    if not found:
        return None
    # A pattern another policy's shadow alone governs decides nothing there: a shadow never
    # keeps an action (a policy owner's walkthrough: `*` beside a shadow's `payout.issue` was
    # said to leave it to the shadow's policy, which then observed nothing).
    work = GlobWork(_COVER_WORK)
    observed = {
        (other, theirs)
        for other, theirs, _ in found
        if _only_observed(state.policies[other].governs()[0], theirs, work)
    }

    def winner(other: str, theirs: str, mine: str) -> str:
        return policy if (other, theirs) in observed else _decider(policy, mine, other, theirs)[0]

    # What this policy takes from another first: that changes who decides, the rest does not.
    found.sort(key=lambda f: winner(*f) != policy)
    shown = "; ".join(
        _who_decides(policy, mine, other, theirs, observed=(other, theirs) in observed)
        for other, theirs, mine in found[:3]
    )
    unshown = sorted({other for other, _, _ in found[3:]})
    more = f"; and more with {', '.join(unshown[:5])}" if unshown else ""
    more += " and others" if len(unshown) > 5 else ""
    rule = (
        "; where both are deployed an exact name decides before a glob, then the longest glob "
        "(of two as long, the first in code-point order), then the lower policy name"
        if explain  # said at proposal; a deployment repeats only who decides (a policy owner's
        else ""  # walkthrough: the same long note on every command buried the others)
    )
    return f"note: actions may also be governed by another policy ({shown}{more}){rule}"


def _only_observed(deciding: Iterable[str], pattern: str, work: GlobWork) -> bool:
    """Is ``pattern`` governed only by a policy's shadow: no entry its deciding versions govern
    may share an action with it (a review: ``payout.issue`` in a shadow, beside an active
    ``payout.*``, was noted as the shadow's alone, though the active version decides it).
    Past ``work``'s budget, not so: the note then says what precedence says."""
    return not any(governs_may_share(entry, pattern, work) for entry in deciding) and (
        not work.spent
    )


def _who_decides(policy: str, mine: str, other: str, theirs: str, *, observed: bool = False) -> str:
    """``refund.* ~ refund's refund.issue: refund decides it``: which of two deployed policies
    decides the actions both patterns match (by :func:`governs_precedence`, as
    ``governing_policy`` chooses), so an owner sees what a glob will not decide. ``observed``:
    ``theirs`` is only a shadow's, which decides nothing: ``policy`` decides, and the shadow
    observes nothing of it then."""
    winner, shared = _decider(policy, mine, other, theirs)
    if observed:
        return (
            f"{mine} ~ {other}'s {theirs} (only its shadow's): {policy} decides {shared}, "
            f"and {other}'s shadow no longer observes {shared}"
        )
    return f"{mine} ~ {other}'s {theirs}: {winner} decides {shared}"


def _decider(policy: str, mine: str, other: str, theirs: str) -> tuple[str, str]:
    """Which of two deployed policies decides what ``mine`` and ``theirs`` both match (by
    :func:`governs_precedence`, as ``governing_policy`` chooses), and what that is."""
    ours, others = governs_precedence(mine, policy), governs_precedence(theirs, other)
    shared = "what both match" if is_pattern(theirs) and is_pattern(mine) else "it"
    return (policy if ours < others else other), shared


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
    written: int = 0,
) -> CommandAccepted:
    """The answer to a command delivered again after it was applied (its events were written
    before a crash let it come back): accepted, naming the events it produced, nothing new —
    or, ``written``, the last of them are those it had left unwritten, written now
    (``finish_again``)."""
    message = "already applied"
    if written:
        message += f"; it had been cut short: its last {written} events were written now"
    return CommandAccepted(
        event_id=event_id,
        occurred_at=now,
        actor=actor,
        command_id=command.event_id,
        command_type=type(command).__name__,
        aggregate=command_aggregate(command),
        event_ids=event_ids,
        message=message,
    )
