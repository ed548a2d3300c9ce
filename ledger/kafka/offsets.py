"""A consumer group's commit that lies past its partition's end, and where it starts instead.

A copy of a running home, restored (the broker's logs copied before its offsets topic), or a
broker that lost its log's tail, leaves a group's committed offset past the partition's end.
The clients' ``auto.offset.reset`` then starts the partition from its beginning: the evaluators
decided 28,429 requests a second time (an operator's walkthrough), and Faust, which skips what
lies below the commit it read, silently left the next commands unanswered until the log grew
past it. Every processor starts such a partition at its end instead, claimed there (its commit
put back to the end), and says so at ERROR with :func:`past_end_note`: nothing before is
handled twice, and everything written after the end was read is handled. What lay at the lost
offsets is not in the copy, and records written between the broker's return and that read are
not handled.

The evaluator does this at each assignment of its request partitions (it has many workers;
:mod:`processors.request_loop`); the command processor, one worker on one partition, with
:func:`claim_commits_past_end` before its consumer joins.
"""

from __future__ import annotations

import logging
import time

from ledger.errors import KafkaUnavailable
from ledger.kafka.clients import make_consumer
from ledger.kafka.reading import topic_partitions
from ledger.settings import KafkaSecurity

__all__ = ["past_end_note", "claim_commits_past_end", "CLAIM_PATIENCE"]

log = logging.getLogger("ledger.offsets")

CLAIM_PATIENCE = 30.0
"""Seconds :func:`claim_commits_past_end` retries a commit the group refuses (a member of a
killed worker not yet timed out still holds it: 10 s sessions) before it gives up."""


def past_end_note(topic: str, partition: int, committed: int, end: int) -> str:
    """The ERROR line of a partition whose group commit ``committed`` lies past its ``end``."""
    return (
        f"{topic}[{partition}]: the group's committed offset {committed} lies past its end "
        f"{end} (a copy of a running home restored, or a broker that lost its log's tail): "
        f"starting at the end, not the beginning; {committed - end} offsets answered before "
        "are not in the log, and records written since the broker came back, before this "
        "start, are not answered (see the README, *Backing up and restoring*)"
    )


def claim_commits_past_end(
    bootstrap: str,
    topic: str,
    group_id: str,
    *,
    security: KafkaSecurity | None = None,
    patience: float = CLAIM_PATIENCE,
) -> dict[int, tuple[int, int]]:
    """Put the group's commit of each partition of ``topic`` that lies past the partition's end
    back to the end, before a member of the group starts (a commit from outside the group is
    refused while members hold it: retried for ``patience`` seconds). Returns, per partition
    claimed, its commit before and the end it was claimed at."""
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata

    consumer = make_consumer(bootstrap, security=security, group_id=group_id)
    try:
        try:
            parts = topic_partitions(consumer, topic, bootstrap=bootstrap)
            ends = consumer.end_offsets(parts)
            found: dict[int, tuple[int, int]] = {}
            for tp in parts:
                committed = consumer.committed(tp)
                if committed is not None and committed > ends[tp]:
                    log.error(past_end_note(topic, tp.partition, committed, ends[tp]))
                    found[tp.partition] = (committed, ends[tp])
        except KafkaError as exc:  # a broker slow at the start: one line, not a traceback
            raise KafkaUnavailable(
                f"could not read where group {group_id} stands on {topic} ({exc}): start it "
                "again once the broker answers"
            ) from exc
        deadline = time.monotonic() + patience
        while found:
            try:
                # Read again at each try: another worker of the group may have started meanwhile
                # and committed past the end legitimately; claiming the old end then would
                # rewind it, and what it handled would be handled again (a review).
                claims = {
                    tp: OffsetAndMetadata(ends[tp], "", -1)
                    for tp in parts
                    if tp.partition in found
                    and (now := consumer.committed(tp)) is not None
                    and now > ends[tp]
                    and now == found[tp.partition][0]
                }
                if claims:
                    consumer.commit(claims)
                return found
            except KafkaError as exc:
                if time.monotonic() > deadline:
                    raise KafkaUnavailable(
                        f"could not put the commit of {topic} back to its end for group "
                        f"{group_id} within {patience:.0f} s ({exc}): is another worker of the "
                        "group still running? stop it, then start this one again"
                    ) from exc
                time.sleep(1.0)
        return found
    finally:
        consumer.close()
