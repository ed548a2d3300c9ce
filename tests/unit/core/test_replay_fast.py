"""The batch ``replay`` (and the ``state_at`` adapter) equal ``fold`` applied one event at a time.

Histories are generated over a few aggregates with sequences that are mostly right but also
duplicated, skipped and out of order, versions that may not exist, grants revoked twice or never
issued, conditions that do not compile and a document that does not load.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from ledger.core.history import HistoryEntry, PositionFolder, state_at, state_at_position
from ledger.core.pmap import PMap
from ledger.core.state import (
    EMPTY_STATE,
    LedgerState,
    Replay,
    fold,
    replay,
    with_position,
)

REFUND = (Path(__file__).resolve().parents[3] / "examples" / "policies" / "refund.yaml").read_text()
DOCUMENTS = (REFUND, REFUND.replace("750", "900"), "not: [a policy")
T0 = datetime(2025, 1, 1, tzinfo=UTC)
POLICIES = ("refund", "payout")
PRINCIPALS = ("agent:a", "agent:b", "role:ops", "role:eng")
KINDS = (
    "propose",
    "approve",
    "promote",
    "rollback",
    "retire",
    "issue",
    "revoke",
    "assign",
    "unassign",
)


@st.composite
def histories(draw: st.DrawFn) -> list[GovernanceEvent]:
    seq: dict[str, int] = {}
    events: list[GovernanceEvent] = []
    for i in range(draw(st.integers(min_value=0, max_value=60))):
        kind = draw(st.sampled_from(KINDS))
        aggregate = draw(st.sampled_from(POLICIES if KINDS.index(kind) < 5 else PRINCIPALS))
        if draw(st.integers(min_value=0, max_value=9)) == 0:
            sequence = draw(st.integers(min_value=1, max_value=8))  # duplicate, gap or reorder
        else:
            sequence = seq.get(aggregate, 0) + 1
        seq[aggregate] = max(seq.get(aggregate, 0), sequence)
        common = {
            "event_id": f"e{i}",
            "occurred_at": T0 + timedelta(seconds=i),
            "actor": draw(st.sampled_from(("human:x", "human:y"))),  # who assigned a role
            "command_id": f"c{i}",
            "sequence": sequence,
        }
        version = draw(st.integers(min_value=1, max_value=3))
        event: GovernanceEvent
        match kind:
            case "propose":
                doc = draw(st.sampled_from(DOCUMENTS))
                event = PolicyVersionProposed(
                    **common,
                    policy=aggregate,
                    version=version,
                    document=doc,
                    content_hash=str(DOCUMENTS.index(doc)),
                    owner="team:x",
                    governs=(f"{aggregate}.*",),
                )
            case "approve":
                event = PolicyVersionApproved(**common, policy=aggregate, version=version)
            case "promote":
                stage = draw(
                    st.sampled_from((Stage.ACTIVE, Stage.CANARY, Stage.SHADOW, Stage.DRAFT))
                )
                event = PolicyVersionPromoted(
                    **common,
                    policy=aggregate,
                    version=version,
                    stage=stage,
                    percent=draw(st.sampled_from((None, 10, 50))),
                )
            case "rollback":
                event = PolicyRolledBack(
                    **common, policy=aggregate, from_version=None, to_version=version, reason="r"
                )
            case "retire":
                event = PolicyRetired(**common, policy=aggregate, reason="r")
            case "issue":
                event = GrantIssued(
                    **common,
                    principal=aggregate,
                    grant_id=f"g{version}",
                    actions=(draw(st.sampled_from(("refund.*", "x.y"))),),
                    resource="*",
                    condition=draw(st.sampled_from((None, "amount < 5", "amount <"))),
                )
            case "revoke":
                event = GrantRevoked(**common, principal=aggregate, grant_id=f"g{version}")
            case "assign":
                event = RoleAssigned(**common, principal=aggregate, role=f"role:r{version}")
            case _:
                event = RoleRevoked(**common, principal=aggregate, role=f"role:r{version}")
        events.append(event)
    # Re-deliveries: earlier records again, at later points.
    for j in draw(st.lists(st.integers(min_value=0, max_value=200), max_size=10)):
        if events:
            src = j % len(events)
            events.insert(draw(st.integers(min_value=src, max_value=len(events))), events[src])
    return events


def one_by_one(events: list[GovernanceEvent], state: LedgerState = EMPTY_STATE) -> LedgerState:
    for event in events:
        state = fold(state, event)
    return state


def assert_same(fast: LedgerState, slow: LedgerState) -> None:
    assert fast == slow
    # Beyond equality: the same iteration order (deterministic across processes), the same
    # compiled artefacts, and grants held as built Grant objects.
    assert list(fast.policies) == list(slow.policies)
    assert list(fast.principals) == list(slow.principals)
    for name, record in slow.principals.items():
        mine = fast.principals[name]
        assert isinstance(mine.grants, PMap) and type(mine.roles) is frozenset
        assert list(mine.grants.items()) == list(record.grants.items())
        for gid, grant in record.grants.items():
            assert type(mine.grants[gid]) is type(grant)
            assert mine.grants[gid].condition_broken == grant.condition_broken
            assert (mine.grants[gid].compiled is None) == (grant.compiled is None)
    for name, policy in slow.policies.items():
        for v, pv in policy.versions.items():
            assert fast.policies[name].versions[v].compiled is pv.compiled  # same cached compile


@settings(max_examples=300, deadline=None)
@given(histories())
def test_replay_equals_fold_one_by_one(events: list[GovernanceEvent]) -> None:
    assert_same(replay(events), one_by_one(events))


@settings(max_examples=150, deadline=None)
@given(histories(), st.integers(min_value=0, max_value=80))
def test_replay_continues_from_any_state(events: list[GovernanceEvent], cut: int) -> None:
    # Replaying the rest onto a state folded from a prefix: the same as folding it all.
    cut = min(cut, len(events))
    start = one_by_one(events[:cut])
    assert_same(replay(events[cut:], start), one_by_one(events))
    assert replay([], start) is start


@settings(max_examples=150, deadline=None)
@given(histories(), st.integers(min_value=0, max_value=80))
def test_replay_continues_from_a_replayed_state(events: list[GovernanceEvent], cut: int) -> None:
    # The first replay's principals are still drafts (built on read): the second starts from
    # them, and some are read in between, some not.
    cut = min(cut, len(events))
    start = replay(events[:cut])
    for name in list(start.principals)[::2]:
        start.principals[name]
    assert_same(replay(events[cut:], start), one_by_one(events))


@settings(max_examples=150, deadline=None)
@given(histories(), st.lists(st.integers(min_value=0, max_value=80), max_size=6), st.booleans())
def test_a_replay_fed_in_parts_equals_fold_one_by_one(
    events: list[GovernanceEvent], cuts: list[int], from_replayed: bool
) -> None:
    # How a processor catches up: one Replay fed chunk after chunk (any sizes, empty ones
    # too), from a state folded or replayed from a prefix; that state is left as it was.
    cuts = sorted(min(cut, len(events)) for cut in cuts) or [0]
    prefix = cuts[0]
    start = replay(events[:prefix]) if from_replayed else one_by_one(events[:prefix])
    fed = Replay(start)
    for begin, end in zip(cuts, [*cuts[1:], len(events)], strict=True):
        fed.feed(events[begin:end])
    assert_same(fed.result(), one_by_one(events))
    assert_same(start, one_by_one(events[:prefix]))  # read only now: reading builds drafts


@settings(max_examples=150, deadline=None)
@given(histories(), st.integers(min_value=0, max_value=80), st.booleans())
def test_state_at_equals_fold_with_position(
    events: list[GovernanceEvent], at_index: int, until_end: bool
) -> None:
    keys = ("ledger.policy-events/0", "ledger.grant-events/0", "ledger.grant-events/1")
    offsets = dict.fromkeys(keys, 0)
    entries = []
    for i, event in enumerate(events):
        key = keys[i % 3]
        offsets[key] += 1
        entries.append(HistoryEntry(key, offsets[key], event))
    at = None if until_end else T0 + timedelta(seconds=at_index)
    slow = EMPTY_STATE
    for entry in entries:
        if at is None or entry.event.occurred_at <= at:
            slow = with_position(fold(slow, entry.event), entry.position_key, entry.offset)
    fast = state_at(entries, at)
    assert_same(fast, slow)
    assert dict(fast.position) == dict(slow.position)
    # A history read once (a generator, as a reader may hand it over) folds to the same.
    once = state_at((entry for entry in entries), at)
    assert_same(once, slow)
    assert dict(once.position) == dict(slow.position)


@settings(max_examples=150, deadline=None)
@given(
    histories(),
    st.dictionaries(
        st.sampled_from(("ledger.policy-events/0", "ledger.grant-events/0", "ledger.other/0")),
        st.integers(min_value=0, max_value=40),
    ),
)
def test_state_at_position_equals_fold_of_the_entries_at_or_before_it(
    events: list[GovernanceEvent], position: dict[str, int]
) -> None:
    keys = ("ledger.policy-events/0", "ledger.grant-events/0", "ledger.grant-events/1")
    offsets = dict.fromkeys(keys, -1)
    entries = []
    for i, event in enumerate(events):
        key = keys[i % 3]
        offsets[key] += 1
        entries.append(HistoryEntry(key, offsets[key], event))
    slow = EMPTY_STATE
    for entry in entries:  # a key the position does not name contributes nothing
        if entry.offset <= position.get(entry.position_key, -1):
            slow = with_position(fold(slow, entry.event), entry.position_key, entry.offset)
    fast = state_at_position(iter(entries), position)
    assert_same(fast, slow)
    assert dict(fast.position) == dict(slow.position)


KEYS = ("ledger.policy-events/0", "ledger.grant-events/0", "ledger.grant-events/1")


def _entries(events: list[GovernanceEvent], by_aggregate: bool) -> list[HistoryEntry]:
    """``events`` as read from three keys: each aggregate's from one key, as Kafka keys them
    (``by_aggregate``), or round robin (an aggregate on several keys)."""
    offsets = dict.fromkeys(KEYS, -1)
    entries = []
    for i, event in enumerate(events):
        if not by_aggregate:
            key = KEYS[i % 3]
        elif isinstance(event, (GrantIssued, GrantRevoked, RoleAssigned, RoleRevoked)):
            key = KEYS[1 + PRINCIPALS.index(event.principal) % 2]
        else:
            key = KEYS[0]
        offsets[key] += 1
        entries.append(HistoryEntry(key, offsets[key], event))
    return entries


@settings(max_examples=150, deadline=None)
@given(
    histories(),
    st.lists(
        st.dictionaries(st.sampled_from(KEYS), st.integers(min_value=-1, max_value=30)),
        max_size=8,
    ),
    st.booleans(),
    st.booleans(),
)
def test_a_position_folder_gives_each_position_the_state_at_it(
    events: list[GovernanceEvent],
    positions: list[dict[str, int]],
    by_aggregate: bool,
    ordered: bool,
) -> None:
    # Batch reproduction folds the history once for many decisions' positions: each state
    # must be the one a decision reproduced alone gets, in order or not.
    entries = _entries(events, by_aggregate)
    folder = PositionFolder(entries)
    if ordered:
        positions = sorted(positions, key=PositionFolder.order)
    for position in positions:
        alone = state_at_position(entries, position)
        batched = folder.state_at(position)
        assert batched == alone
        assert sorted(batched.policies) == sorted(alone.policies)
        assert dict(batched.position) == dict(alone.position)


def test_a_position_folder_folds_positions_in_order_once() -> None:
    events = [
        PolicyVersionProposed(
            event_id=f"p{i}",
            occurred_at=T0 + timedelta(seconds=i),
            actor="human:x",
            command_id=f"c{i}",
            sequence=1,
            policy=f"policy-{i}",
            version=1,
            document=REFUND,
            content_hash="h",
            owner="team:x",
            governs=("refund.*",),
        )
        for i in range(6)
    ]
    entries = [HistoryEntry(KEYS[0], i, e) for i, e in enumerate(events)]
    folder = PositionFolder(entries)
    for offset in (0, 0, 2, 5):
        assert sorted(folder.state_at({KEYS[0]: offset}).policies) == sorted(
            f"policy-{i}" for i in range(offset + 1)
        )
    assert folder.full_folds == 1
    folder.state_at({KEYS[0]: 1})  # behind: folded again from the start, still right
    assert folder.full_folds == 2
    assert sorted(folder.state_at({KEYS[0]: 3}).policies) == [f"policy-{i}" for i in range(4)]


def test_pmap_bulk_build_equals_successive_sets() -> None:
    items = {f"k{i}": i for i in range(5000)}
    stepwise: PMap[str, int] = PMap()
    for k, v in items.items():
        stepwise = stepwise.set(k, v)
    bulk = PMap.from_mapping(items)
    assert bulk == stepwise and len(bulk) == 5000 and list(bulk) == list(stepwise)
    changes = {"k3": -3, "new": 1}
    assert list(stepwise.update(changes).items()) == list(
        stepwise.set("k3", -3).set("new", 1).items()
    )
    small = PMap.from_mapping({"a": 1})
    big_change = {f"z{i}": i for i in range(100)}
    assert small.update(big_change) == {"a": 1, **big_change}
    assert PMap.from_mapping({}) == {} and small.update({}) is small


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(min_value=17, max_value=3_000),
    changes=st.lists(
        st.tuples(st.integers(min_value=0, max_value=4_000), st.integers()), max_size=300
    ),
)
def test_a_few_changes_to_a_trie_equal_successive_sets(
    size: int, changes: list[tuple[int, int]]
) -> None:
    # update() of a big map copies each touched leaf once: the result must be what setting each
    # change in turn gives (values, length, iteration order), and the original map unchanged.
    base = PMap.from_mapping({f"k{i}": i for i in range(size)})
    before = list(base.items())
    items = {f"k{k}": v for k, v in changes}
    stepwise = base
    for key, value in items.items():
        stepwise = stepwise.set(key, value)
    updated = base.update(items)
    assert list(updated.items()) == list(stepwise.items()) and len(updated) == len(stepwise)
    assert list(base.items()) == before and len(base) == size


def test_a_small_map_iterates_as_the_trie_would_through_growth_and_deletes() -> None:
    # Maps of up to FLAT_MAX items are one dict in the trie's order: whether built in one pass,
    # by successive sets, grown past the limit, or shrunk by deletes, the order is the same.
    from ledger.core.pmap import FLAT_MAX

    keys = [f"grant-{i}" for i in range(3 * FLAT_MAX)]
    stepwise: PMap[str, int] = PMap()
    for n, key in enumerate(keys):
        stepwise = stepwise.set(key, n)
        bulk = PMap.from_mapping({k: i for i, k in enumerate(keys[: n + 1])})
        assert list(bulk.items()) == list(stepwise.items()), n
    for key in keys[: 2 * FLAT_MAX + 3]:  # back under the limit: still the trie's order
        stepwise = stepwise.delete(key)
    rest = {k: i for i, k in enumerate(keys) if i >= 2 * FLAT_MAX + 3}
    assert list(PMap.from_mapping(rest).items()) == list(stepwise.items())
    small = PMap.from_mapping({"a": 1, "b": 2})
    assert list(small.set("a", 9).items()) == [(k, 9 if k == "a" else v) for k, v in small.items()]
    assert small.delete("zzz") is small and "a" in small and small.get("zzz") is None
    with pytest.raises(TypeError):
        small.set(3.5, 1)  # type: ignore[arg-type]


def _common(n: int) -> dict[str, Any]:
    return {
        "event_id": f"e{n}",
        "occurred_at": T0 + timedelta(seconds=n),
        "command_id": f"c{n}",
        "actor": "human:admin",
    }


def _issued(n: int, principal: str = "agent:a", *, condition: str | None = None) -> GrantIssued:
    return GrantIssued(
        **_common(n),
        principal=principal,
        sequence=n,
        grant_id=f"g{n:03d}",
        actions=("refund.*",),
        resource="account:*",
        condition=condition,
    )


@pytest.mark.parametrize("was_enabled", [True, False])
def test_replay_restores_the_collector_as_it_found_it(was_enabled: bool) -> None:
    # replay pauses the cyclic collector while it folds and freezes; the caller's setting comes
    # back afterwards, also when a record that is not a governance event stops it.
    import gc

    events = [_issued(1)]
    seen: list[bool] = []

    def watched() -> Iterator[GovernanceEvent]:
        seen.append(gc.isenabled())
        yield from events

    (gc.enable if was_enabled else gc.disable)()
    try:
        state = replay(watched())
        assert seen == [False] and gc.isenabled() is was_enabled
        assert list(state.principals["agent:a"].grants) == ["g001"]
        with pytest.raises(TypeError, match="not a governance event"):
            replay([object()])  # type: ignore[list-item]
        assert gc.isenabled() is was_enabled
    finally:
        gc.enable()


@pytest.mark.parametrize("count", [3, 40])  # a flat map and a trie
def test_grants_stay_events_until_read_then_are_built_once(count: int) -> None:
    from ledger.core.authority import Grant, HeldGrants, grant_from_event

    events = [_issued(n, condition="amount < 5" if n % 2 else None) for n in range(1, count + 1)]
    for state in (replay(events), one_by_one(events)):
        grants = state.principals["agent:a"].grants
        assert type(grants) is HeldGrants and len(grants) == count
        assert all(type(v) is GrantIssued for _, v in grants.stored_items())  # nothing built
        first = grants["g001"]
        assert type(first) is Grant and first == grant_from_event(events[0])
        assert grants["g001"] is first  # built once: the map now stores the Grant
        assert dict(grants.stored_items())["g001"] is first
        assert type(dict(grants.stored_items())["g002"]) is GrantIssued  # others still wait
        # A later state shares the storage, so it finds the grant built; a fold builds nothing.
        later = fold(state, _issued(count + 1))
        again = later.principals["agent:a"].grants
        assert type(again) is HeldGrants and again["g001"] is first
        assert type(dict(again.stored_items())[f"g{count + 1:03d}"]) is GrantIssued
        assert again.get("g002") == grant_from_event(events[1])
        assert again.get("nope") is None and again.get("nope", first) is first
        assert "g003" in again and "nope" not in again
        assert all(type(g) is Grant for g in again.values())
        assert dict(again.items()) == {
            e.grant_id: grant_from_event(e) for e in [*events, _issued(count + 1)]
        }


def test_a_revoke_in_a_fold_builds_nothing_and_removes_the_grant() -> None:
    from ledger.core.authority import HeldGrants

    state = replay([_issued(1), _issued(2)])
    revoked = fold(
        state,
        GrantRevoked(**_common(3), principal="agent:a", sequence=3, grant_id="g001"),
    )
    grants = revoked.principals["agent:a"].grants
    assert type(grants) is HeldGrants and list(grants) == ["g002"]
    assert all(type(v) is GrantIssued for _, v in grants.stored_items())
    assert "g001" in state.principals["agent:a"].grants  # the earlier state is unchanged


def test_a_pmap_subclass_keeps_its_class_through_every_change() -> None:
    from ledger.core.pmap import FLAT_MAX

    class Tagged(PMap[str, int]):
        __slots__ = ()

    m: PMap[str, int] = Tagged()
    for n in range(3 * FLAT_MAX):  # flat, then grown into a trie
        m = m.set(f"k{n}", n)
        assert type(m) is Tagged
    assert type(m.delete("k0")) is Tagged and type(m.update({"x": 1})) is Tagged
    assert type(m.update({f"y{n}": n for n in range(200)})) is Tagged
    assert type(Tagged.from_mapping({"a": 1})) is Tagged and type(Tagged({"a": 1})) is Tagged
    small = Tagged.from_mapping({"a": 1}).delete("a")
    assert type(small) is Tagged and list(small.stored_items()) == []
    assert list(m.stored_items()) == list(m.items())


def test_principals_stay_drafts_until_read_then_are_built_once() -> None:
    from ledger.core.state import HeldPrincipals, PrincipalRecord

    events = [_issued(1), _issued(2), _issued(1, "agent:b"), _issued(1, "role:ops")]
    state = replay(events)
    principals = state.principals
    assert type(principals) is HeldPrincipals
    assert all(type(v) is not PrincipalRecord for _, v in principals.stored_items())
    record = principals["agent:a"]
    assert type(record) is PrincipalRecord and record.sequence == 2 and len(record.grants) == 2
    assert principals["agent:a"] is record  # built once, then kept
    assert principals.get("agent:b") == one_by_one(events).principals["agent:b"]
    assert principals.get("nobody") is None
    stored = dict(principals.stored_items())
    assert stored["agent:a"] is record and type(stored["role:ops"]) is not PrincipalRecord
    # A fold on top reads the one principal it changes; the others stay as they were stored.
    later = fold(state, _issued(2, "agent:b"))
    assert type(later.principals) is HeldPrincipals and later.principals["agent:b"].sequence == 2
    assert type(dict(later.principals.stored_items())["role:ops"]) is not PrincipalRecord
    assert later == one_by_one([*events, _issued(2, "agent:b")])


def test_a_replay_onto_a_plain_principals_map_still_builds_what_it_hands_out() -> None:
    from ledger.core.state import HeldPrincipals, PrincipalRecord

    base = LedgerState(principals=PMap())
    state = replay([_issued(1)], base)
    assert type(state.principals) is HeldPrincipals
    assert type(state.principals["agent:a"]) is PrincipalRecord
