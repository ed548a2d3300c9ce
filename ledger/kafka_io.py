"""Kafka adapters shared by the client SDK, the CLI and replay (kafka-python, blocking).

Client settings are tuned for the synchronous decision path (DESIGN §11): producers send at
once (``linger_ms=0``) with ``acks=all`` and idempotence; consumers answer a fetch as soon as one
byte is there (``fetch_min_bytes=1``) and never park idle for long (small ``fetch_max_wait_ms``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ledger.codec import Codec, default_codec
from ledger.core.events import Event, GovernanceEvent
from ledger.errors import CodecError, KafkaUnavailable
from ledger.settings import TopicNames

__all__ = [
    "PRODUCER_CONFIG",
    "CONSUMER_CONFIG",
    "make_producer",
    "make_consumer",
    "position_key",
    "Positioned",
    "read_governance",
    "read_topic",
    "new_id",
    "utcnow",
]

PRODUCER_CONFIG: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "linger_ms": 0,
    "retries": 5,
    "max_in_flight_requests_per_connection": 5,
}
CONSUMER_CONFIG: dict[str, Any] = {
    "enable_auto_commit": False,
    "fetch_min_bytes": 1,
    "fetch_max_wait_ms": 20,
    "auto_offset_reset": "earliest",
}


def new_id() -> str:
    """A time-ordered UUIDv7 string, so ids sort by creation time (exports, lookups)."""
    ms = time.time_ns() // 1_000_000
    rand = uuid.uuid4().int
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= ((rand >> 64) & 0xFFF) << 64
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def utcnow() -> datetime:
    """The adapters' clock. The core never reads a clock: time is passed to it."""
    return datetime.now(UTC)


def position_key(topic: str, partition: int) -> str:
    """The key of a governance position entry: ``"topic/partition"``."""
    return f"{topic}/{partition}"


def make_producer(bootstrap: str, **overrides: Any) -> Any:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    try:
        return KafkaProducer(bootstrap_servers=bootstrap, **{**PRODUCER_CONFIG, **overrides})
    except (KafkaError, OSError) as exc:
        raise KafkaUnavailable(f"cannot reach Kafka at {bootstrap}: {exc}") from exc


def make_consumer(bootstrap: str, **overrides: Any) -> Any:
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    try:
        return KafkaConsumer(bootstrap_servers=bootstrap, **{**CONSUMER_CONFIG, **overrides})
    except (KafkaError, OSError) as exc:
        raise KafkaUnavailable(f"cannot reach Kafka at {bootstrap}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Positioned:
    """A decoded record with where it came from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    event: Event


def read_topic(
    bootstrap: str, topics: Iterable[str], *, codec: Codec | None = None, idle_timeout: float = 2.0
) -> Iterator[Positioned]:
    """Every record of ``topics`` from the beginning to the end offsets seen at the start.

    Reads without a consumer group (nothing is committed) and stops at the end offsets captured
    when it began, so the result is a consistent prefix of the log. Undecodable records are
    skipped (processors dead-letter them; readers must not stop on them).
    """
    from kafka import TopicPartition

    codec = codec or default_codec()
    consumer = make_consumer(bootstrap, consumer_timeout_ms=int(idle_timeout * 1000))
    try:
        parts: list[Any] = []
        for topic in topics:
            found = consumer.partitions_for_topic(topic)
            if found is None:
                raise KafkaUnavailable(
                    f"topic {topic} does not exist at {bootstrap}: run `ledger topics create`"
                )
            parts.extend(TopicPartition(topic, p) for p in sorted(found))
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


def read_governance(
    bootstrap: str, topics: TopicNames, *, codec: Codec | None = None
) -> Iterator[tuple[str, int, GovernanceEvent]]:
    """Governance events in log order, as ``(position_key, offset, event)``.

    Policy and grant topics are read to their current ends. Each has one partition, so the
    order within each is the order of the ledger; the two streams are independent aggregates.
    """
    for rec in read_topic(bootstrap, [topics.policy_events, topics.grant_events], codec=codec):
        yield position_key(rec.topic, rec.partition), rec.offset, rec.event  # type: ignore[misc]
