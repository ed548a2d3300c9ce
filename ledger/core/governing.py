"""Who governs an action: the index from actions to the policies that decide them, and the
questions asked of it (which policy decides, which overlap, which a new version takes over).

Everything here reads a :class:`~ledger.core.state.LedgerState` and never changes it; what it
derives is remembered in the state's ``memo`` (a new state starts with an empty one, so nothing
cached is ever stale). The precedence rule (an exact ``governs`` entry over a glob, the longest
fixed start, then the policy name) lives in :func:`governs_precedence` alone.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from ledger.core.events import Stage
from ledger.core.globs import (
    Globs,
    compile_globs,
    glob_matches,
    globs_share,
    is_pattern,
    match_units,
)
from ledger.core.globwork import GlobWork, fixed_start
from ledger.core.state import LedgerState, PolicyRecord, bucket

__all__ = [
    "governing_policy",
    "governs_units",
    "governed_by",
    "overlapping_governs",
    "overlapping_governs_checked",
    "overlapping_documents",
    "takeovers",
    "governs_may_share",
    "governs_precedence",
    "why_ungoverned",
]

_MEMO_LIMIT: Final = 8192  # cached per-action lookups at most (oldest out): actions are untrusted


_Index = tuple[dict[str, str], tuple[tuple[Globs, str], ...]]
"""Exact ``governs`` entries to policy names, then the globs in the order they are tried."""


def _governance_index(
    state: LedgerState, canaries: frozenset[str] | None = None
) -> tuple[_Index, _Index]:
    """The index of what policies' deciding versions (active, canary) govern, and that of what
    only their other deployed versions govern, which they observe but never decide. With
    ``canaries``, for one request: the policies named there are decided by their canary
    version, the others by their active one (:meth:`PolicyRecord.governs_when`)."""
    memo_key = "governance" if canaries is None else ("governance", canaries)
    cached = state.memo.get(memo_key)
    if cached is not None:
        return cached  # type: ignore[no-any-return]  # the memo holds Any; this key only ever this function's result
    exact: tuple[dict[str, str], dict[str, str]] = ({}, {})
    globs: tuple[list[tuple[int, str, str]], list[tuple[int, str, str]]] = ([], [])
    for name in sorted(state.policies):
        record = state.policies[name]
        tiers = record.governs() if canaries is None else record.governs_when(name in canaries)
        for tier, patterns in enumerate(tiers):
            for pattern in sorted(patterns):
                if is_pattern(pattern):
                    globs[tier].append(
                        governs_precedence(pattern, name)[1:]
                    )  # globs: drop the flag
                else:
                    exact[tier].setdefault(pattern, name)  # names in order: lowest wins
    deciding: _Index = (exact[0], tuple((compile_globs((p,)), n) for _, p, n in sorted(globs[0])))
    observing: _Index = (exact[1], tuple((compile_globs((p,)), n) for _, p, n in sorted(globs[1])))
    # Sorted by governs_precedence: the first glob matching an action governs it.
    state.memo[memo_key] = (deciding, observing)
    return deciding, observing


def governed_by(state: LedgerState | None, record: PolicyRecord, version: int, action: str) -> bool:
    """:meth:`PolicyVersion.governs_action`, remembered per state (a policy may govern 256
    globs: matching them all cost a request ~20 us, a review measured)."""
    if state is None:
        return record.versions[version].governs_action(action)
    key = ("governed", record.name, version)
    memo = state.memo.get(key)
    if memo is None:
        memo = state.memo[key] = {}
    found = memo.get(action)
    if found is None:
        found = record.versions[version].governs_action(action)
        if len(memo) >= _MEMO_LIMIT:
            del memo[next(iter(memo))]
        memo[action] = found
    return bool(found)


def _split_canaries(state: LedgerState) -> Mapping[str, int]:
    """Policy name → canary percentage, of the policies whose canary and active versions govern
    different actions (:meth:`PolicyRecord.splits`): usually none."""
    cached = state.memo.get("split canaries")
    if cached is None:
        cached = state.memo["split canaries"] = {
            name: record.canary_percent or 0
            for name, record in state.policies.items()
            if record.splits()
        }
    return cached


def governs_precedence(pattern: str, policy: str) -> tuple[bool, int, str, str]:
    """Which of two ``governs`` entries that match one action decides it: the lower key. An
    exact name before any glob, then the longer glob, then of two globs as long the one first in
    code-point order, then the lower policy name. :func:`governing_policy` chooses by it and
    the overlap note names the winner by it."""
    return is_pattern(pattern), -len(pattern), pattern, policy


def _lookup(index: _Index, action: str) -> str | None:
    exact, globs = index
    name = exact.get(action)
    if name is None:
        name = next((n for rx, n in globs if rx.matches(action)), None)
    return name


def overlapping_governs(
    state: LedgerState, name: str, governs: Iterable[str]
) -> list[tuple[str, str, str]]:
    """:func:`overlapping_governs_checked`'s overlaps, without whether the look was complete."""
    return overlapping_governs_checked(state, name, governs)[0]


def overlapping_governs_checked(
    state: LedgerState, name: str, governs: Iterable[str]
) -> tuple[list[tuple[str, str, str]], bool]:
    """``(other policy, its pattern, ours)`` for every deployed version of another policy whose
    ``governs`` shares an action with ``governs``: the same name, a glob matching a name, or
    two globs some action matches both of (``expense.*`` and ``*.approve``; not ``crm.*.read``
    and ``crm.*.write``), or, once :data:`_OVERLAP_WORK` cannot pay for that walk, whose fixed
    beginnings agree (:func:`governs_may_share`). A note, not a rule (:func:`governing_policy`
    decides which policy governs); past the budget it names what it found, and says it stopped
    (the second value false: a review made "no other policy governs them" false by spending
    the budget on a policy of long globs that matched nothing)."""
    ours = sorted(set(governs))
    found: set[tuple[str, str, str]] = set()
    work = GlobWork(_OVERLAP_WORK)  # a note must not cost a proposal much on a big ledger
    capped = False  # a cap stopped the look somewhere: what was not looked at may overlap too
    for other in sorted(state.policies):
        record = state.policies[other]
        if other == name or record.retired:
            continue
        theirs = sorted(frozenset().union(*record.governs()))
        with_this = 0  # per policy: one with many names must not hide the others
        for mine in ours:
            if not work.pairs(len(theirs)) or with_this >= _OVERLAP_MOST:
                capped = True
                break
            for pattern in theirs:
                if governs_may_share(mine, pattern, work):
                    found.add((other, pattern, mine))
                    with_this += 1
                    if with_this >= _OVERLAP_MOST or len(found) >= _OVERLAP_ALL:
                        capped = True
                        break
                if work.spent:
                    return sorted(found), False
        if work.spent or len(found) >= _OVERLAP_ALL:
            break
    return sorted(found), not (work.spent or capped)


def overlapping_documents(
    policies: Sequence[tuple[str, Sequence[str]]],
) -> list[tuple[int, str, int, str]]:
    """``(i, entry of policy i, j, entry of policy j)`` for two of ``policies`` (name,
    ``governs``), of different names, whose entries may share an action
    (:func:`governs_may_share`), ``i < j``: what ``ledger policy validate`` notes of files
    checked together, before any is proposed (a policy owner's walkthrough: only a proposal
    said so). Bounded as :func:`overlapping_governs` is; two versions of one policy are not
    compared."""
    found: list[tuple[int, str, int, str]] = []
    work = GlobWork(_OVERLAP_WORK)
    for i, (name, ours) in enumerate(policies):
        for j in range(i + 1, len(policies)):
            other, theirs = policies[j]
            if other == name:
                continue
            for mine in ours:
                if not work.pairs(len(theirs)):
                    return found
                for pattern in theirs:
                    if governs_may_share(mine, pattern, work):
                        found.append((i, mine, j, pattern))
                        if len(found) >= _OVERLAP_ALL:
                            return found
    return found


def takeovers(
    state: LedgerState, name: str, governs: Iterable[str]
) -> tuple[dict[str, tuple[str, str]], bool]:
    """Which other policies' actions deploying ``governs`` as policy ``name``'s deciding
    version (active or canary) would take over: other policy → (its deciding pattern, ours)
    for each policy one of whose active or canary patterns may share an action with one of
    ours that wins it (:func:`governs_precedence`), ours not already deciding for ``name``
    (what it decides now is nobody else's); and whether the look was complete, within
    :data:`_OVERLAP_WORK` (else some other policy may be taken over too). Shares as
    :func:`overlapping_governs` does (:func:`governs_may_share`): two globs share an action when
    some action matches both, so it misses no takeover and finds none between globs that share
    nothing (``crm.*.write`` takes nothing from ``crm.*.read``); only two globs the budget
    cannot walk any more count as sharing when their fixed beginnings agree, as all did before.

    Two names share an action only when equal (a set look-up, not charged); our glob never
    wins a name another policy governs exactly; so only pairs with a glob of theirs are
    charged (a review: 2,000 policies of 10 exact names each ran the budget out, refusing every
    deployment by a non-administrator)."""
    current = state.policies.get(name)
    already = current.governs()[0] if current is not None else frozenset()
    ours = sorted(set(governs) - already)
    our_names = [m for m in ours if not is_pattern(m)]
    ranked = [(governs_precedence(m, name), m) for m in ours]
    found: dict[str, tuple[str, str]] = {}
    work = GlobWork(_OVERLAP_WORK)
    for other in sorted(state.policies):
        record = state.policies[other]
        if other == name or record.retired:
            continue
        theirs = record.governs()[0]  # what it decides: a shadow's is nobody's yet
        if name < other:  # the same name in both: the lower policy name decides it
            same = next((m for m in our_names if m in theirs), None)
            if same is not None:
                found[other] = (same, same)
                continue
        their_globs = sorted((governs_precedence(p, other), p) for p in theirs if is_pattern(p))
        if not their_globs:
            continue
        for rank, mine in ranked:
            if not work.pairs(len(their_globs)):
                return found, False
            hit = next(
                (
                    p
                    for their_rank, p in their_globs
                    if rank < their_rank and governs_may_share(mine, p, work)
                ),
                None,
            )
            if work.spent:
                return found, False
            if hit is not None:
                found[other] = (hit, mine)
                break
    return found, True


_OVERLAP_WORK: Final = 100_000_000
"""What one overlap note may spend comparing globs (:class:`~ledger.core.globwork.GlobWork`,
~0.1 s). A count of pairs was not a bound: a red team's long globs cost 0.5 ms a pair, 13 s a
proposal. Ordinary ``governs`` cost ~1 us a pair, so ~100,000 pairs fit."""
_OVERLAP_MOST: Final = 10
"""Overlaps found with one other policy (a policy owner's: 256 names of one policy hid, behind
"and more", another policy's glob this one took over)."""
_OVERLAP_ALL: Final = 1_000


def governs_may_share(a: str, b: str, work: GlobWork) -> bool:
    """May the ``governs`` entries ``a`` and ``b`` share an action? The same name; a glob
    matching the name; or two globs some name matches both of (:func:`globs_share`, exact:
    ``crm.*.read`` and ``crm.*.write`` share nothing). A match or a walk is tried, and charged
    to ``work``, only when the fixed beginnings agree (a name's is all of it), which holds
    whenever the two share a name. Two globs whose walk ``work`` cannot pay for any more may
    share: the rule must not miss one, and answered so before it walked."""
    if a == b:
        return True
    fixed_a, fixed_b = fixed_start(a), fixed_start(b)  # a name's is all of it
    glob_a, glob_b = len(fixed_a) < len(a), len(fixed_b) < len(b)
    if glob_a and glob_b:
        if not (fixed_a.startswith(fixed_b) or fixed_b.startswith(fixed_a)):
            return False
        return not work.overlap(a, b) or globs_share(a, b)
    if glob_b:
        a, b, fixed_a = b, a, fixed_b
    elif not glob_a:
        return False  # two names: only equal ones
    return b.startswith(fixed_a) and work.match(a, b) and glob_matches(a, b)


def _canaries(state: LedgerState, key: str | None) -> frozenset[str] | None:
    """The policies decided by their canary for the request of canary key ``key``, among those
    whose canary governs other actions than their active version; ``None`` when there are none
    such, or no key (every active and canary version decides)."""
    split = _split_canaries(state)
    if not split or key is None:
        return None
    b = bucket(key)
    return frozenset(name for name, percent in split.items() if b < percent)


def governs_units(state: LedgerState, action: str, key: str | None = None) -> int:
    """What finding the policy that governs ``action`` (:func:`governing_policy`, same ``key``)
    may cost, in units of the evaluation budget: nothing for a name a deciding version governs
    exactly (looked up), else matching it against every deployed version's ``governs`` glob,
    each tried on its own (:func:`~ledger.core.globs.match_units`). Charged whether or not the
    answer is remembered: what a request is charged must not depend on what the evaluator was
    asked before it, or a replay would not decide the same (a red team's pre-evaluation of 500
    fresh 1 KB actions against 40 policies of 256 globs took 2.4 s, uncharged)."""
    canaries = _canaries(state, key)
    deciding, observing = _governance_index(state, canaries)
    if action in deciding[0]:
        return 0
    memo_key = ("governs units", canaries)
    sums = state.memo.get(memo_key)
    if sums is None:
        globs = (*deciding[1], *observing[1])
        sums = state.memo[memo_key] = (len(globs), sum(rx.searched for rx, _ in globs))
    tried, searched = sums
    return match_units(tried, searched, len(action))


def governing_policy(
    state: LedgerState, action: str, key: str | None = None
) -> PolicyRecord | None:
    """The policy that governs ``action``: an exact ``governs`` entry first, else the longest
    matching glob (see :func:`governs_precedence` for ties), among what the policies' deciding
    versions govern; only when none of those does, among what their other deployed versions
    govern (the policy then only observes: :meth:`PolicyVersion.governs_action` of its
    deciding version is false). A shadow observes: it never takes another policy's action over,
    nor brings one to its own policy's active version.

    With ``key`` (the request's canary key: its resource, else its id), the deciding version
    of a policy whose canary governs other actions than its active version is the one that
    decides the key's :func:`bucket`, so a canary brings the actions only it governs to its
    own share of requests, never to the active version. Without ``key``, every active and
    canary version counts as deciding."""
    canaries = _canaries(state, key)
    if canaries is not None:
        # Per view and action, as below: a scan of every policy's globs per request was
        # 20 -> 229 us with 2,000 policies (a review).
        memo = state.memo.get(("actions", canaries))
        if memo is None:
            memo = state.memo[("actions", canaries)] = {}
        if action in memo:
            found = memo[action]
        else:
            deciding, observing = _governance_index(state, canaries)
            found = _lookup(deciding, action) or _lookup(observing, action)
            if len(memo) >= _MEMO_LIMIT:
                del memo[next(iter(memo))]
            memo[action] = found
        return state.policies[found] if found is not None else None
    deciding, observing = _governance_index(state)
    name = deciding[0].get(action)
    if name is None:
        actions = state.memo.get("actions")
        if actions is None:
            actions = state.memo["actions"] = {}
        if action in actions:
            name = actions[action] = actions.pop(action)  # to the end: the busiest stay
        else:
            name = _lookup(deciding, action) or _lookup(observing, action)
            if len(actions) >= _MEMO_LIMIT:  # junk actions must not crowd the real ones out
                del actions[next(iter(actions))]
            actions[action] = name
    return state.policies[name] if name is not None else None


_WAITING: Final = frozenset({Stage.DRAFT, Stage.APPROVED, Stage.SHADOW})


def why_ungoverned(state: LedgerState, action: str) -> str | None:
    """For a person reading an ``ungoverned_action`` answer (never recorded in a decision): the
    versions that govern ``action`` and decide nothing (a shadow, a draft, an approved version
    not deployed), else the action a deployed version governs that is closest to it. ``None``
    when neither. An agent engineer's walkthrough: a policy left in shadow and a misspelt action
    were answered alike, "no active policy governs X", with no word on either."""
    waiting: list[str] = []
    unapproved = shadow = False
    deployed: set[str] = set()
    for record in state.policies.values():
        if record.retired:
            continue
        for number in sorted(record.versions):
            version = record.versions[number]
            if number in (record.active, record.canary):
                deployed.update(g for g in version.governs if not any(c in g for c in "*?["))
            elif version.stage in _WAITING and version.governs_action(action):
                waiting.append(f"{record.name} v{number} ({version.stage.value})")
                unapproved |= version.approved_by is None
                shadow |= version.stage is Stage.SHADOW
    if waiting:
        shown = ", ".join(waiting[:3]) + (
            f" and {len(waiting) - 3} more" if len(waiting) > 3 else ""
        )
        # An agent engineer's walkthrough: a draft was told to be promoted, and the promotion
        # was refused not_approved.
        step = (
            "approve it (`ledger policy approve NAME VERSION --by …`, someone other than its "
            "author), then promote it"
            if unapproved
            else "promote one"
        )
        return (
            f"{shown} governs {action} but decides nothing"
            f"{' (a shadow only records what it would say)' if shadow else ''}: {step} to canary "
            "or active, `ledger policy promote NAME VERSION --to active --by …`"
        )
    names = sorted(deployed)[:1000]
    close = difflib.get_close_matches(action[:200], names, n=1, cutoff=0.75)
    if close:
        return f"did you mean {close[0]}? (an action a deployed policy governs)"
    return None
