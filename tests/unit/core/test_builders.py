"""ledger.core.builders: instances built straight into the slots equal those of ``__init__``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from ledger.core.authority import Grant, grant_from_event
from ledger.core.builders import builder, copier, field_names
from ledger.core.events import DecisionRecorded, Determination, GrantIssued
from ledger.core.state import PolicyVersion

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def _values(cls: type) -> dict[str, object]:
    # A distinct value per field, so a builder that swapped two fields would be caught.
    out: dict[str, object] = {}
    for n, f in enumerate(dataclasses.fields(cls)):
        out[f.name] = f"{f.name}-{n}"
    return out


@pytest.mark.parametrize("cls", [Grant, PolicyVersion, DecisionRecorded, GrantIssued])
def test_a_built_instance_equals_one_made_by_init_field_for_field(cls: type) -> None:
    values = _values(cls)
    built = builder(cls)(*(values[name] for name in field_names(cls)))
    made = cls(**values)
    assert type(built) is cls
    assert {n: getattr(built, n) for n in values} == {n: getattr(made, n) for n in values}
    copied = copier(cls)(built)
    assert copied is not built
    assert {n: getattr(copied, n) for n in values} == values
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(built, field_names(cls)[0], "changed")  # still frozen


def test_grant_from_event_puts_each_field_where_init_would() -> None:
    event = GrantIssued(
        event_id="e1",
        occurred_at=T0,
        actor="human:admin",
        command_id="c1",
        principal="agent:bot",
        sequence=1,
        grant_id="g1",
        actions=("refund.*",),
        resource="account:*",
        condition="amount < 5",
        valid_from=T0,
        valid_until=datetime(2027, 1, 1, tzinfo=UTC),
        approved_by="human:boss",
        note="why",
    )
    grant = grant_from_event(event)
    assert (grant.grant_id, grant.principal, grant.actions, grant.resource) == (
        "g1",
        "agent:bot",
        ("refund.*",),
        "account:*",
    )
    assert (grant.granted_by, grant.issued_at, grant.condition) == ("human:admin", T0, "amount < 5")
    assert (grant.valid_from, grant.valid_until) == (T0, datetime(2027, 1, 1, tzinfo=UTC))
    assert (grant.approved_by, grant.note) == ("human:boss", "why")
    assert grant.covers("refund.issue", "account:1") and not grant.covers("ticket.x", "account:1")
    assert grant.compiled is not None and not grant.condition_broken


def test_classes_a_builder_would_break_are_refused() -> None:
    @dataclass
    class Plain:
        x: int

    @dataclass(frozen=True, slots=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            if self.x < 0:
                raise ValueError("negative")

    for cls in (Plain, Checked):
        with pytest.raises(TypeError):
            builder(cls)


def test_a_decision_decoded_by_the_codec_is_a_normal_instance() -> None:
    from ledger.codec import Codec

    codec = Codec()
    decision = DecisionRecorded(
        event_id="d1",
        occurred_at=T0,
        actor="service:evaluator",
        request_id="r1",
        requested_at=T0,
        action="refund.issue",
        principal="agent:bot",
        resource="account:1",
        determination=Determination.DENY,
    )
    decoded = codec.decode(codec.encode(decision))
    assert decoded == decision and hash(decoded.event_id) == hash("d1")
    assert dataclasses.replace(decoded, resource="account:2").resource == "account:2"


def test_a_caller_naming_a_stale_field_order_fails_at_once() -> None:
    order = field_names(Grant)
    assert builder(Grant, order) is builder(Grant)
    swapped = (order[1], order[0], *order[2:])
    with pytest.raises(TypeError, match="update the caller"):
        builder(Grant, swapped)
    with pytest.raises(TypeError, match="update the caller"):
        builder(Grant, order[:-1])
