"""Reading topics: which partitions a topic has, and a topic read to its end.

The one answer to "this topic does not exist" is :class:`~ledger.errors.TopicMissing`, raised by
:func:`topic_partitions` (blocking clients) and :func:`topic_partitions_async` (aiokafka), which
every reader uses. :func:`read_topic` reads topics from the beginning to the end offsets seen
when it started: a consistent prefix of the log, without a consumer group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ledger.codec import Codec, default_codec
from ledger.core.events import Event
from ledger.errors import CodecError, TopicMissing
from ledger.kafka.clients import make_consumer
from ledger.settings import KafkaSecurity

__all__ = [
    "Positioned",
    "position_key",
    "topic_partitions",
    "topic_partitions_async",
    "read_topic",
]


def position_key(topic: str, partition: int) -> str:
    """The key of a governance position entry: ``"topic/partition"``."""
    return f"{topic}/{partition}"


def _missing(topic: str, bootstrap: str | None) -> TopicMissing:
    where = f" at {bootstrap}" if bootstrap else ""
    return TopicMissing(
        f"topic {topic} does not exist{where}: run `ledger topics create` (or `ledger up`), and "
        "check $LEDGER_TOPIC_PREFIX"
    )


def topic_partitions(consumer: Any, topic: str, *, bootstrap: str | None = None) -> list[Any]:
    """The ``TopicPartition`` list of ``topic`` (sorted), from a kafka-python consumer.

    Raises :class:`~ledger.errors.TopicMissing` when the topic does not exist.
    """
    from kafka import TopicPartition

    found = consumer.partitions_for_topic(topic)
    if not found:  # None (unknown) or empty (kafka-python for a topic it knows nothing of)
        raise _missing(topic, bootstrap)
    return [TopicPartition(topic, p) for p in sorted(found)]


async def topic_partitions_async(
    consumer: Any, topic: str, *, bootstrap: str | None = None, wait: float = 10.0
) -> list[Any]:
    """:func:`topic_partitions` for an aiokafka consumer, whose metadata may lag a moment
    behind a topic created just before: asks again for up to ``wait`` seconds."""
    from aiokafka import TopicPartition

    loop = asyncio.get_running_loop()
    give_up = loop.time() + wait
    while True:
        await consumer._client.force_metadata_update()
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        if loop.time() >= give_up:
            raise _missing(topic, bootstrap)
        await asyncio.sleep(0.1)


@dataclass(frozen=True, slots=True)
class Positioned:
    """A decoded record with where it came from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    event: Event


def read_topic(
    bootstrap: str,
    topics: Iterable[str],
    *,
    codec: Codec | None = None,
    idle_timeout: float = 2.0,
    security: KafkaSecurity | None = None,
) -> Iterator[Positioned]:
    """Every record of ``topics`` from the beginning to the end offsets seen at the start.

    Reads without a consumer group (nothing is committed) and stops at the end offsets captured
    when it began, so the result is a consistent prefix of the log. Undecodable records are
    skipped (processors dead-letter them; readers must not stop on them).
    """
    codec = codec or default_codec()
    consumer = make_consumer(
        bootstrap, security=security, consumer_timeout_ms=int(idle_timeout * 1000)
    )
    try:
        parts: list[Any] = []
        for topic in topics:
            parts.extend(topic_partitions(consumer, topic, bootstrap=bootstrap))
        if not parts:
            return
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        remaining = {tp for tp in parts if end[tp] > 0}
        while remaining:
            batch = consumer.poll(timeout_ms=int(idle_timeout * 1000))
            if not batch:
                # Nothing arrived within the idle timeout although end offsets say more exists.
                still = {tp for tp in remaining if consumer.position(tp) < end[tp]}
                if not still:
                    break
                continue
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= end[tp]:
                        continue
                    try:
                        event = codec.decode(record.value)
                    except CodecError:
                        continue
                    yield Positioned(tp.topic, tp.partition, record.offset, record.timestamp, event)
                if consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    finally:
        consumer.close()
