"""The ledger's ACLs: who may read and write which topic, as Kafka's authorizer enforces it.

One table (:func:`acl_table`), per role, for the topics under a deployment's prefix; principals
are ``User:<role>`` (the local broker's SCRAM users are named after the roles). ``admin`` is a
super user of the broker and needs none; nobody else may delete records or topics, create
topics or change ACLs (nothing grants ``DELETE``, ``CREATE`` or ``ALTER``).

| role | writes | reads |
| --- | --- | --- |
| ``agent`` | evaluation-requests | decisions, corrections (describe: policy and grant events, for the governance position) |
| ``governance`` | commands | command-results, policy-events, grant-events |
| ``command-processor`` | policy-events, grant-events, command-results, dead-letters | commands, policy-events, grant-events, command-results (the answers of the last minutes, at start) |
| ``evaluator`` | decisions, corrections, chain-checkpoints, dead-letters | evaluation-requests, policy-events, grant-events, decisions and corrections (de-duplication, at each assignment) |
| ``exporter``, ``auditor`` | — | every ledger topic (chain-checkpoints included) |

Consumer groups: each processor its own (``<prefix>ledger-<processor>``), the exporter's
``<prefix>ledger-exporter…``, and every other role groups named ``<prefix><role>.…``; every
role may describe ``ledger-unused``, the group assign-only readers name and never join.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from ledger.errors import KafkaUnavailable
from ledger.kafka.clients import UNUSED_GROUP, kafka_failure, make_admin
from ledger.settings import ROLES, KafkaSecurity, Role, TopicNames

__all__ = ["Permission", "acl_table", "ensure_acls", "PROCESSOR_GROUPS"]

Operation = Literal["READ", "WRITE", "DESCRIBE"]

PROCESSOR_GROUPS: Final[dict[Role, str]] = {
    "command-processor": "ledger-command-processor",
    "evaluator": "ledger-evaluator",
    "exporter": "ledger-exporter",
}
"""The consumer group (Faust app id, without the topic prefix) of each processor role."""


@dataclass(frozen=True, slots=True, order=True)
class Permission:
    """``User:<role>`` may ``operation`` the ``kind`` (topic or group) ``name`` (or every name
    starting with it, when ``prefixed``)."""

    role: Role
    kind: Literal["topic", "group"]
    name: str
    operation: Operation
    prefixed: bool = False


def acl_table(topics: TopicNames) -> tuple[Permission, ...]:
    """Every permission of the ledger's roles on ``topics`` (see the module docstring)."""
    t = topics
    governance = (t.policy_events, t.grant_events)
    everything = t.all()
    rows: list[Permission] = []

    def allow(role: Role, operation: Operation, names: Iterable[str]) -> None:
        rows.extend(Permission(role, "topic", name, operation) for name in names)

    allow("agent", "WRITE", [t.evaluation_requests])
    allow("agent", "READ", [t.decisions, t.corrections])
    allow("agent", "DESCRIBE", governance)
    allow("governance", "WRITE", [t.commands])
    allow("governance", "READ", [t.command_results, *governance])
    allow("command-processor", "READ", [t.commands, *governance, t.command_results])
    allow("command-processor", "WRITE", [*governance, t.command_results, t.dead_letters])
    allow("evaluator", "READ", [t.evaluation_requests, *governance, t.decisions, t.corrections])
    allow("evaluator", "WRITE", [t.decisions, t.corrections, t.chain_checkpoints, t.dead_letters])
    allow("exporter", "READ", everything)
    allow("auditor", "READ", everything)
    for role, group in PROCESSOR_GROUPS.items():
        rows.append(Permission(role, "group", t.group(group), "READ", prefixed=role == "exporter"))
    for role in ("agent", "governance", "auditor"):
        rows.append(Permission(role, "group", t.group(f"{role}."), "READ", prefixed=True))
    # The group assign-only readers name and never join: librdkafka asks for its coordinator.
    rows.extend(
        Permission(role, "group", UNUSED_GROUP, "DESCRIBE") for role in ROLES if role != "admin"
    )
    return tuple(sorted(rows))


def _acl(permission: Permission) -> object:
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    return ACL(
        principal=f"User:{permission.role}",
        host="*",
        operation=ACLOperation[permission.operation],
        permission_type=ACLPermissionType.ALLOW,
        resource_pattern=ResourcePattern(
            ResourceType.TOPIC if permission.kind == "topic" else ResourceType.GROUP,
            permission.name,
            ACLResourcePatternType.PREFIXED
            if permission.prefixed
            else ACLResourcePatternType.LITERAL,
        ),
    )


def _present(admin: object) -> set[object]:
    from kafka.admin import (
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePatternFilter,
        ResourceType,
    )

    everything = ACLFilter(
        principal=None,
        host=None,
        operation=ACLOperation.ANY,
        permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
    )
    found, error = admin.describe_acls(everything)  # type: ignore[attr-defined]  # kafka-python ships no type hints
    if int(getattr(error, "errno", 0) or 0):
        raise KafkaUnavailable(f"describing ACLs failed: {error}")
    return set(found)


def ensure_acls(
    bootstrap: str,
    topics: TopicNames,
    *,
    security: KafkaSecurity | None,
    wait: float = 10.0,
) -> int:
    """Create the ledger's ACLs for ``topics`` (idempotent), as ``security`` (the admin).

    Returns once the broker enforces them all (an ACL is committed by the controller first and
    reaches the broker a moment later), after at most ``wait`` seconds. Returns how many ACLs
    were missing."""
    from kafka.errors import KafkaError

    wanted = {_acl(p) for p in acl_table(topics)}
    admin = make_admin(bootstrap, security=security)
    try:
        missing = wanted - _present(admin)
        if missing:
            admin.create_acls(list(missing))
            give_up = time.monotonic() + wait
            while wanted - _present(admin):
                if time.monotonic() > give_up:
                    raise KafkaUnavailable(
                        f"the ACLs created on {bootstrap} were not in force within {wait:g} s"
                    )
                time.sleep(0.05)
        return len(missing)
    except KafkaError as exc:
        raise kafka_failure(
            exc, security, bootstrap, f"setting the ledger's ACLs on {bootstrap}"
        ) from exc
    finally:
        admin.close()
