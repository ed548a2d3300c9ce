"""Kafka adapters shared by the client SDK, the CLI and replay (kafka-python, blocking).

Client settings are tuned for the synchronous decision path (DESIGN §11): producers send at
once (``linger_ms=0``) with ``acks=all`` and idempotence; consumers answer a fetch as soon as one
byte is there (``fetch_min_bytes=1``) and never park idle for long (small ``fetch_max_wait_ms``).

Every client is made by a factory here that first checks the bootstrap string and that some
server on it accepts a TCP connection, so a typo or a stopped broker is one
:class:`~ledger.errors.UsageError` / :class:`~ledger.errors.KafkaUnavailable` line within
seconds, not a ``ValueError`` or kafka-python's 30 s bootstrap timeout.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ledger.codec import Codec, default_codec
from ledger.core.events import Event, GovernanceEvent
from ledger.errors import CodecError, KafkaUnavailable
from ledger.settings import TopicNames, parse_bootstrap

__all__ = [
    "PRODUCER_CONFIG",
    "CONSUMER_CONFIG",
    "ADMIN_CONFIG",
    "CONNECT_TIMEOUT",
    "check_reachable",
    "make_producer",
    "make_consumer",
    "position_key",
    "Positioned",
    "read_governance",
    "read_topic",
    "new_id",
    "utcnow",
]

CONNECT_TIMEOUT = 2.0
"""Seconds a bootstrap server has to accept a TCP connection before it counts as unreachable."""
_BOOTSTRAP_TIMEOUT_MS = 5000
"""How long kafka-python may take to get metadata from a server that did accept the connection
(its default, 30 s, is how long an unreachable ledger took to report)."""

PRODUCER_CONFIG: dict[str, Any] = {
    "bootstrap_timeout_ms": _BOOTSTRAP_TIMEOUT_MS,
    "acks": "all",
    "enable_idempotence": True,
    "linger_ms": 0,
    "retries": 5,
    "max_in_flight_requests_per_connection": 5,
}
CONSUMER_CONFIG: dict[str, Any] = {
    "bootstrap_timeout_ms": _BOOTSTRAP_TIMEOUT_MS,
    "enable_auto_commit": False,
    "fetch_min_bytes": 1,
    "fetch_max_wait_ms": 20,
    "auto_offset_reset": "earliest",
}
ADMIN_CONFIG: dict[str, Any] = {  # for `ledger.topics`, which makes its own admin clients
    "bootstrap_timeout_ms": _BOOTSTRAP_TIMEOUT_MS,
    "request_timeout_ms": 15000,
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


_WHAT_TO_DO = "is it running (`ledger ps`, `ledger up`)? else check --bootstrap / $LEDGER_BOOTSTRAP"


def check_reachable(bootstrap: str, *, timeout: float = CONNECT_TIMEOUT) -> None:
    """Return once some server of ``bootstrap`` accepts a TCP connection, else raise.

    A malformed string is a :class:`~ledger.errors.UsageError`; no server answering within
    ``timeout`` seconds each (refused, unknown host, filtered) a
    :class:`~ledger.errors.KafkaUnavailable` naming why, for each server.
    """
    reasons = []
    for host, port in parse_bootstrap(bootstrap):
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except socket.gaierror:
            reasons.append(f"{host}: unknown host")
        except TimeoutError:
            reasons.append(f"{host}:{port}: no answer within {timeout:g} s")
        except OSError as exc:
            reasons.append(f"{host}:{port}: {(exc.strerror or str(exc)).lower()}")
    raise KafkaUnavailable(
        f"cannot reach Kafka at {bootstrap} ({'; '.join(reasons)}): {_WHAT_TO_DO}"
    )


def _client(kind: Any, bootstrap: str, config: dict[str, Any]) -> Any:
    from kafka.errors import KafkaError

    check_reachable(bootstrap)
    try:
        return kind(bootstrap_servers=bootstrap, **config)
    except (KafkaError, OSError) as exc:
        raise KafkaUnavailable(f"cannot reach Kafka at {bootstrap}: {exc}: {_WHAT_TO_DO}") from exc


def make_producer(bootstrap: str, **overrides: Any) -> Any:
    from kafka import KafkaProducer

    return _client(KafkaProducer, bootstrap, {**PRODUCER_CONFIG, **overrides})


def make_consumer(bootstrap: str, **overrides: Any) -> Any:
    from kafka import KafkaConsumer

    return _client(KafkaConsumer, bootstrap, {**CONSUMER_CONFIG, **overrides})


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
