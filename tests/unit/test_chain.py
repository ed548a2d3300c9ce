"""The decision hash chain's core (ledger.core.chain): what is hashed, how records link, and
that the writer's fast canonical text is byte for byte the documented canonical JSON."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import itertools
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.codec import default_codec
from ledger.core.chain import (
    GENESIS,
    ChainHead,
    canonical_text,
    checkpoint,
    form_hash,
    form_hashes,
    hashed_text,
    link,
    record_hash,
)
from ledger.core.events import (
    BatchDecisionRecorded,
    BatchItemDecision,
    DecisionRecorded,
    Determination,
    Mode,
    ShadowResult,
    Stage,
)
from ledger.core.jsonform import canonical_json, to_json_value

T = datetime(2026, 11, 26, 16, 48, 26, 123456, tzinfo=UTC)


def decision(**changes: Any) -> DecisionRecorded:
    fields: dict[str, Any] = {
        "event_id": "d-1",
        "occurred_at": T,
        "actor": "service:evaluator",
        "request_id": "r-1",
        "requested_at": T - timedelta(milliseconds=3),
        "action": "refund.issue",
        "principal": "agent:bot",
        "resource": "account:42",
        "determination": Determination.ALLOW,
        "reason_code": "rule_matched",
        "policy": "refund",
        "policy_version": 1,
        "rule": "auto-refund",
        "facts": {"amount": Decimal("120.50"), "tenure_days": 400, "standing": "good"},
        "governance_position": {"ledger.policy-events/0": 4, "ledger.grant-events/0": 2},
        "evaluator_id": "evaluator-a",
    }
    fields.update(changes)
    return DecisionRecorded(**fields)


def batch(**changes: Any) -> BatchDecisionRecorded:
    fields: dict[str, Any] = {
        "event_id": "b-1",
        "occurred_at": T,
        "actor": "service:evaluator",
        "request_id": "rb-1",
        "principal": "agent:bot",
        "decisions": (
            BatchItemDecision(
                item_id="1",
                action="refund.issue",
                resource="account:1",
                determination=Determination.ALLOW_WITH_CONSTRAINTS,
                constraints={"refund_method": "credit"},
            ),
        ),
        "governance_position": {"ledger.policy-events/0": 4},
        "evaluator_id": "evaluator-a",
    }
    fields.update(changes)
    return BatchDecisionRecorded(**fields)


def reference_hash(record: Any) -> str:
    """The scheme as the README gives it to third parties, with nothing but json and hashlib
    (a pre-evaluation's null ``stale_after`` left out: it is written in the form before it)."""
    form = to_json_value(record)
    del form["hash"]
    if isinstance(record, BatchDecisionRecorded) and form.get("stale_after") is None:
        del form["stale_after"]
    text = json.dumps(form, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- linking


def test_a_chain_links_each_record_to_the_one_before() -> None:
    head = ChainHead("evaluator-a/n1")
    records = []
    for i in range(4):
        record, head = link(decision(event_id=f"d-{i}", request_id=f"r-{i}"), head)
        records.append(record)
    assert [r.chain_seq for r in records] == [1, 2, 3, 4]
    assert {r.chain_id for r in records} == {"evaluator-a/n1"}
    assert records[0].prev_hash is GENESIS
    for before, after in itertools.pairwise(records):
        assert after.prev_hash == before.hash
    assert head == ChainHead("evaluator-a/n1", 4, records[-1].hash)


def test_the_hash_is_the_documented_recipe_and_covers_the_chain_fields() -> None:
    record, _ = link(decision(), ChainHead("c", 6, "sha256:" + "ab" * 32))
    assert record.hash is not None and record.hash.startswith("sha256:")
    assert record.hash == reference_hash(record) == record_hash(record)
    assert record.hash == form_hash(to_json_value(record))
    for name, other in (("chain_id", "c2"), ("chain_seq", 8), ("prev_hash", None)):
        assert record_hash(dataclasses.replace(record, **{name: other})) != record.hash, name


def test_link_applies_changes_in_the_same_copy_and_leaves_its_inputs_alone() -> None:
    original = decision()
    head = ChainHead("c")
    record, new_head = link(original, head, {"latency_us": 812})
    assert record.latency_us == 812 and record.hash == reference_hash(record)
    assert original.latency_us == 0 and original.hash is None  # not modified
    assert head == ChainHead("c") and new_head.seq == 1


def test_batches_are_chained_like_single_decisions() -> None:
    first, head = link(decision(), ChainHead("c"))
    second, head = link(batch(), head)
    assert second.chain_seq == 2 and second.prev_hash == first.hash
    assert second.hash == reference_hash(second)


def test_every_field_is_covered() -> None:
    record, _ = link(decision(), ChainHead("c"))
    changed = {
        "determination": Determination.DENY,
        "facts": {**record.facts, "amount": Decimal("120.5")},  # the scale counts
        "occurred_at": record.occurred_at + timedelta(microseconds=1),
        "governance_position": {"ledger.policy-events/0": 5},
        "latency_us": 1,
        "rule": None,
    }
    for name, value in changed.items():
        assert record_hash(dataclasses.replace(record, **{name: value})) != record.hash, name
    assert record_hash(dataclasses.replace(record, hash="sha256:forged")) == record.hash


def test_stamped_records_keep_their_hash_through_the_wire_format() -> None:
    codec = default_codec()
    record, head = link(decision(), ChainHead("c"))
    item, _ = link(batch(), head)
    for sent in (record, item):
        back = codec.decode(codec.encode(sent))
        assert back == sent
        assert record_hash(back) == sent.hash  # type: ignore[arg-type]


def test_checkpoints_name_the_head() -> None:
    record, head = link(decision(), ChainHead("c"))
    cp = checkpoint(head, now=T, actor="service:evaluator", evaluator_id="evaluator-a")
    assert (cp.chain_id, cp.chain_seq, cp.head_hash, cp.final) == ("c", 1, record.hash, False)
    again = checkpoint(head, now=T + timedelta(seconds=1), actor="service:evaluator")
    assert again.event_id == cp.event_id  # derived from the chain and sequence
    final = checkpoint(head, now=T, actor="service:evaluator", final=True)
    assert final.final and final.event_id != cp.event_id
    with pytest.raises(ValueError):
        checkpoint(ChainHead("c"), now=T, actor="service:evaluator")


# --------------------------------------------------------------------------- the fast text

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
    st.datetimes(
        min_value=datetime(1, 1, 2),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5, minutes=-30))]),
    ),
    st.lists(st.text(max_size=4), max_size=3).map(tuple),
)
_values = st.dictionaries(st.text(max_size=6), _scalars, max_size=5)
_stamps = st.datetimes(
    min_value=datetime(1, 1, 2),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=9))]),
)
_text = st.text(max_size=12)
_optional_text = st.none() | _text


@st.composite
def decisions(draw: st.DrawFn) -> DecisionRecorded:
    shadows = draw(
        st.lists(
            st.builds(
                ShadowResult,
                policy=_text,
                version=st.integers(1, 9),
                stage=st.sampled_from(Stage),
                determination=st.sampled_from(Determination),
                rule=_optional_text,
                constraints=_values,
                reasons=st.lists(_text, max_size=2).map(tuple),
            ),
            max_size=2,
        )
    )
    return DecisionRecorded(
        event_id=draw(_text),
        occurred_at=draw(_stamps),
        actor=draw(_text),
        request_id=draw(_text),
        requested_at=draw(_stamps),
        action=draw(_text),
        principal=draw(_text),
        resource=draw(_text),
        determination=draw(st.sampled_from(Determination)),
        constraints=draw(_values),
        reasons=tuple(draw(st.lists(_text, max_size=3))),
        reason_code=draw(_optional_text),
        policy=draw(_optional_text),
        policy_version=draw(st.none() | st.integers(0, 2**40)),
        content_hash=draw(_optional_text),
        stage=draw(st.none() | st.sampled_from(Stage)),
        rule=draw(_optional_text),
        grant_id=draw(_optional_text),
        facts=draw(_values),
        context=draw(_values),
        shadow_results=tuple(shadows),
        bucket=draw(st.none() | st.integers(0, 99)),
        mode=draw(st.sampled_from(Mode)),
        default=draw(st.none() | st.sampled_from(Determination)),
        evaluator_id=draw(_text),
        latency_us=draw(st.integers(0, 10**9)),
        governance_position=draw(st.dictionaries(_text, st.integers(0, 2**40), max_size=3)),
        prev_hash=draw(_optional_text),
        hash=draw(_optional_text),
        chain_id=draw(_optional_text),
        chain_seq=draw(st.none() | st.integers(1, 2**40)),
    )


def expected_text(record: Any) -> str:
    form = to_json_value(record)
    del form["hash"]
    return canonical_json(form).decode("utf-8")


@settings(max_examples=300, deadline=None)
@given(decisions())
def test_fast_canonical_text_equals_canonical_json(record: DecisionRecorded) -> None:
    assert canonical_text(record) == expected_text(record)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.builds(
            BatchItemDecision,
            item_id=_text,
            action=_text,
            resource=_text,
            determination=st.sampled_from(Determination),
            constraints=_values,
            reasons=st.lists(_text, max_size=2).map(tuple),
            reason_code=_optional_text,
            policy_version=st.none() | st.integers(1, 9),
        ),
        max_size=3,
    ),
    _values,
)
def test_fast_canonical_text_of_batches(items: list[BatchItemDecision], where: Any) -> None:
    record = batch(decisions=tuple(items), governance_position={k: 1 for k in where})
    assert canonical_text(record) == expected_text(record)


# --------------------------------------------------------------------------- the writer in C


@settings(max_examples=300, deadline=None)
@given(decisions())
def test_the_text_writer_in_c_writes_the_python_writers_text(record: DecisionRecorded) -> None:
    """Byte for byte; what it leaves to the Python writer (an instant in another zone or
    before the year 1000, a subclass of a plain value) hashes the same through it."""
    from ledger.core import _canonical, chain

    python = chain._text_writer(type(record), ("hash",))(record)
    assert python == expected_text(record)
    try:
        native = _canonical.text(record, "hash")
    except _canonical.Unsupported:
        assert canonical_text(record) == python
        return
    assert native == python


def test_an_evaluators_decision_is_written_in_c() -> None:
    """Instants in UTC and plain values, as the evaluator's: no value is left to Python."""
    from ledger.core import _canonical

    record = dataclasses.replace(
        decision(),
        facts={"amount": Decimal("12.50"), "at": datetime(2026, 1, 2, tzinfo=UTC), "n": 1.5},
        shadow_results=(
            ShadowResult(
                policy="p", version=2, stage=Stage.SHADOW, determination=Determination.DENY
            ),
        ),
    )
    assert _canonical.text(record, "hash") == expected_text(record)


def test_values_the_writer_in_c_leaves_to_python_still_hash_the_same() -> None:
    from ledger.core import _canonical

    class Colour(enum.StrEnum):
        RED = "red"

    class Name(str):
        pass

    record = dataclasses.replace(
        decision(), facts={"colour": Colour.RED, "n": Name("x"), "when": datetime(999, 1, 1)}
    )
    with pytest.raises(_canonical.Unsupported):
        _canonical.text(record, "hash")
    assert canonical_text(record) == expected_text(record)


def test_a_batch_hashed_before_stale_after_existed_still_links_and_one_with_it_is_covered() -> None:
    # BatchDecisionRecorded v2 had no stale_after: read back now, it is null, and the record's
    # hash is that of its form without it. A stale_after set is covered like every field.
    from ledger.core.chain import form_hashes

    linked, _ = link(batch(), ChainHead("c"))
    form = to_json_value(linked)
    del form["hash"]
    old = form_hash({k: v for k, v in form.items() if k != "stale_after"})
    assert old in form_hashes(form)
    later = datetime(2031, 1, 1, tzinfo=UTC)
    stamped, _ = link(batch(stale_after=later), ChainHead("c"))
    assert stamped.hash != linked.hash and stamped.hash == record_hash(stamped)
    nulled = dataclasses.replace(stamped, stale_after=None)
    assert record_hash(nulled) != stamped.hash
    unlinked = to_json_value(nulled)
    del unlinked["hash"]
    assert stamped.hash not in form_hashes(unlinked)  # nulling it breaks the link


def test_a_pre_evaluation_answered_otherwise_past_its_stale_after_is_the_same_question() -> None:
    # Two answers of one pre-evaluation at one governance position that differ were asked
    # other facts, unless a grant's window opened or closed between them (a review: a request
    # decided again after a crash, past its grant's end, passed for a copy someone wrote).
    from ledger.core.answering import same_question

    edge = T + timedelta(seconds=30)
    first = batch(stale_after=edge)
    denied = tuple(
        dataclasses.replace(i, determination=Determination.DENY, constraints={})
        for i in first.decisions
    )
    before = dataclasses.replace(first, occurred_at=edge - timedelta(seconds=1), decisions=denied)
    after = dataclasses.replace(first, occurred_at=edge, decisions=denied)
    assert not same_question(first, before)  # same state, same time window: other facts
    assert same_question(first, after) and same_question(after, first)
    assert not same_question(batch(), dataclasses.replace(batch(), decisions=denied))


def test_an_answer_without_stale_after_hashes_as_the_release_before_reads_it() -> None:
    # An upgrade drill: answers without `stale_after` are written in the form before it, so
    # the release before reads them, and it hashes what it reads; hashed with
    # "stale_after": null, every one read as altered (exit 11) to its `audit verify`.
    earlier, _ = link(batch(), ChainHead("c"))
    form = to_json_value(earlier)
    before = {k: v for k, v in form.items() if k not in ("hash", "stale_after")}
    text = json.dumps(before, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert earlier.hash == "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert earlier.hash in form_hashes(form)  # this release's verifier: either form
    # Written by the C writer (a review: the Python one took 5x as long), as the Python one.
    from ledger.core import _canonical, chain

    left_out = ("hash", "stale_after")
    python = chain._text_writer(BatchDecisionRecorded, left_out)(earlier)
    assert _canonical.text(earlier, left_out) == python == hashed_text(earlier)
    # One hashed with the null member (the release of 2026-12-07, evening) still verifies here.
    with_null = form_hash({k: v for k, v in form.items() if k != "hash"})
    assert with_null in form_hashes(form) and with_null != earlier.hash
    # A value is covered as every field is.
    later = batch(stale_after=T + timedelta(hours=1))
    stamped, _ = link(later, ChainHead("c"))
    assert stamped.hash == reference_hash(stamped) and '"stale_after"' in hashed_text(stamped)
