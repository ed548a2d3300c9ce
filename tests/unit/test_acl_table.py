"""The ACL table's rows for the group assign-only readers name: an operator's drill found three
quarters of the broker's log to be denials of librdkafka asking for its coordinator."""

from __future__ import annotations

from ledger.kafka.acls import acl_table
from ledger.kafka.clients import UNUSED_GROUP
from ledger.settings import ROLES, TopicNames


def test_every_role_may_describe_the_group_its_assign_only_readers_name() -> None:
    rows = [p for p in acl_table(TopicNames()) if p.kind == "group" and p.name == UNUSED_GROUP]
    assert {p.role for p in rows} == set(ROLES) - {"admin"}
    assert {(p.operation, p.prefixed) for p in rows} == {("DESCRIBE", False)}  # nothing more


def test_the_unused_group_is_not_under_a_deployments_prefix() -> None:
    # The consumer factory names it bare, whatever the topics' prefix.
    rows = acl_table(TopicNames(prefix="team-a."))
    assert any(p.name == UNUSED_GROUP for p in rows)
