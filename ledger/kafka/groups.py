"""Who holds what in a consumer group, as the broker tells it: the partitions of a topic that
the members of a group are assigned, by the ``client.id`` each gave (``ledger ps``/``up`` tell the request partitions an evaluator
this home did not start holds from those of no one)."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from typing import Any

from ledger.errors import KafkaUnavailable
from ledger.kafka.clients import make_admin
from ledger.settings import KafkaSecurity, Settings

__all__ = ["partitions_by_client", "members_holding", "static_instance_id", "records_waiting"]


def static_instance_id(settings: Settings, group: str) -> str:
    """The ``group.instance.id`` of a static member of ``group`` run by this host and ledger
    home (the command processor's: ``processors.command_loop.consumer_config``), which ``ps``
    looks for among the group's members. The home's real path: `ps` through a link to it
    (which the README supports) took the home's own command processor for another's (a
    review); `up` starts processors through the real path."""
    try:
        real = Path(settings.home).resolve()
    except OSError:  # a loop of links: as given
        real = Path(settings.home)
    home = hashlib.sha256(str(real).encode()).hexdigest()[:12]
    return f"{group}@{socket.gethostname()}:{home}"


def partitions_by_client(
    bootstrap: str, group: str, topic: str, *, security: KafkaSecurity | None = None
) -> dict[str, int]:
    """Client id → how many partitions of ``topic`` the broker has assigned its members in
    consumer group ``group`` (:func:`members_holding`, summed by client id)."""
    held: dict[str, int] = {}
    for client, _, count in members_holding(bootstrap, group, topic, security=security):
        held[client] = held.get(client, 0) + count
    return held


def members_holding(
    bootstrap: str, group: str, topic: str, *, security: KafkaSecurity | None = None
) -> list[tuple[str, str | None, int]]:
    """Each member of consumer group ``group``: its client id, its ``group.instance.id`` (a
    static member's; ``None``), and how many partitions of ``topic`` the broker has assigned it
    (classic protocol; a client that rejoined may be two members for a while), members holding
    none included; none for a group the broker does not know. :class:`~ledger.errors.KafkaUnavailable` (or another :class:`LedgerError`)
    when the broker cannot be asked: unreachable, the group's coordinator unknown, not allowed
    to describe the group."""
    from kafka.errors import KafkaError

    try:
        admin = make_admin(bootstrap, security=security)
        try:
            described = admin.describe_groups([group])
        finally:
            admin.close()
    except KafkaError as exc:
        raise KafkaUnavailable(f"cannot describe consumer group {group}: {exc}") from exc
    found = described.get(group) or {}
    error = found.get("error")
    if error and "GroupIdNotFound" in str(error):
        return []  # no member, ever or any more
    if error:
        raise KafkaUnavailable(f"cannot describe consumer group {group}: {error}")
    return [
        (
            str(member.get("client_id") or ""),
            member.get("group_instance_id") or None,
            _count(member.get("member_assignment"), topic),
        )
        for member in found.get("members") or ()
    ]


def _count(assignment: Any, topic: str) -> int:
    """The partitions of ``topic`` in a member's assignment, decoded (an object with
    ``partitions()``, or its dictionary form) or not there (``b""``: none yet)."""
    if not assignment:
        return 0
    if hasattr(assignment, "partitions"):
        return sum(1 for tp in assignment.partitions() if tp.topic == topic)
    pairs = assignment.get("assigned_partitions") or ()
    return sum(
        len(p["partitions"] if isinstance(p, dict) else p[1])
        for p in pairs
        if (p["topic"] if isinstance(p, dict) else p[0]) == topic
    )


def records_waiting(
    bootstrap: str,
    group: str,
    topic: str,
    partitions: int | None,
    *,
    security: KafkaSecurity | None = None,
) -> int:
    """How many records of ``topic``'s ``partitions`` (``None``: as many as the broker says it
    has) consumer group ``group`` has not committed yet, as the broker says (each partition's
    end offset less the group's committed one, or its log start where it committed none): how
    far behind the evaluators are (an operator's walkthrough: nothing showed a 75,000-request
    backlog). :class:`KafkaUnavailable` when the broker cannot be asked."""
    from kafka import TopicPartition
    from kafka.admin import OffsetSpec
    from kafka.errors import KafkaError

    try:
        admin = make_admin(bootstrap, security=security)
        try:
            if partitions is None:  # no evaluator runs to say (a chaos drill: when it matters)
                (described,) = admin.describe_topics([topic])
                partitions = len(described.get("partitions") or ())
            parts = [TopicPartition(topic, p) for p in range(partitions)]
            ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in parts})
            starts = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in parts})
            committed = admin.list_group_offsets({group: parts}).get(group) or {}
        finally:
            admin.close()
    except KafkaError as exc:
        raise KafkaUnavailable(f"cannot read the offsets of {topic} for {group}: {exc}") from exc
    waiting = 0
    for tp in parts:
        if tp not in ends or tp not in starts:  # a partition the broker did not answer for
            continue
        end, start = ends[tp].offset, starts[tp].offset
        at = committed.get(tp)
        position = at.offset if at is not None and at.offset >= 0 else start
        waiting += max(0, end - max(position, start))
    return waiting
