"""Reading topics: which partitions a topic has, and a topic read to its end.

The one answer to "this topic does not exist" is :class:`~ledger.errors.TopicMissing`, raised by
:func:`topic_partitions` (blocking clients) and :func:`topic_partitions_async` (aiokafka), which
every reader uses. :func:`read_topic` reads topics from the beginning to the end offsets seen
when it started: a consistent prefix of the log, without a consumer group.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ledger.codec import Codec, default_codec
from ledger.core.events import Event
from ledger.errors import CodecError, KafkaUnavailable, TopicMissing
from ledger.kafka.clients import METADATA_TIMEOUT, access_denied, make_consumer, refused_login
from ledger.settings import KafkaSecurity

__all__ = [
    "Positioned",
    "position_key",
    "topic_partitions",
    "topic_partitions_async",
    "rdkafka_partitions",
    "rdkafka_end_offset",
    "RawRecord",
    "read_raw",
    "read_topic",
]


@functools.lru_cache(maxsize=1024)
def position_key(topic: str, partition: int) -> str:
    """The key of a governance position entry: ``"topic/partition"``.

    One string object per partition (cached): a history of a million entries shares a handful
    of keys instead of holding a million copies, and a replay recording each key's offset finds
    them by identity, with their hashes computed once.
    """
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


_NOT_AUTHORIZED = 29  # TOPIC_AUTHORIZATION_FAILED, in Kafka's protocol and librdkafka


def rdkafka_partitions(
    client: Any, topic: str, *, bootstrap: str | None = None, timeout: float = METADATA_TIMEOUT
) -> list[int]:
    """The partition numbers of ``topic`` (sorted), from a librdkafka client (``confluent_kafka``
    consumer or producer). Raises :class:`~ledger.errors.TopicMissing` when it does not exist."""
    from confluent_kafka import KafkaError, KafkaException

    try:
        meta = _metadata(client, topic, timeout)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        code = error.code() if isinstance(error, KafkaError) else None
        where = f" at {bootstrap}" if bootstrap else ""
        refused = getattr(client, "refused", None)
        login = code in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED)
        if refused or login:
            user = getattr(client, "user", None)
            raise refused_login(user, refused[0] if refused else error, bootstrap) from exc
        raise KafkaUnavailable(
            f"cannot read Kafka's metadata{where}: {error}: is Kafka running there (`ledger "
            "ps`, `ledger broker status`)? A broker that refuses this client's credentials "
            "looks the same to librdkafka (check `ledger credentials show ROLE`, or "
            "$LEDGER_SASL_USERNAME/$LEDGER_SASL_PASSWORD), and so does an address where "
            "something other than Kafka answers"
        ) from exc
    if meta is not None and meta.error is not None and meta.error.code() == _NOT_AUTHORIZED:
        # A broker with ACLs does not tell a client whether a topic it may not use exists.
        where = f" at {bootstrap}" if bootstrap else ""
        raise TopicMissing(
            f"topic {topic} does not exist{where}, or this client's credentials may not use it: "
            "check $LEDGER_TOPIC_PREFIX (`ledger topics create` creates the topics) and the "
            "client's role (`ledger credentials show ROLE`)"
        )
    if meta is None or meta.error is not None or not meta.partitions:
        raise _missing(topic, bootstrap)
    return sorted(meta.partitions)


def _metadata(client: Any, topic: str, timeout: float) -> Any:
    """``topic``'s metadata, waiting at most ``timeout`` seconds. A ledger producer or consumer
    (one that keeps the refused logins its error callback sees, ``refused``) is asked in
    half-second slices, serving that callback between them (a consumer only while it has no
    partitions assigned, whose poll returns no record): librdkafka reports a refused login there only,
    and the metadata call itself would wait out its whole timeout as a transport failure."""
    from confluent_kafka import KafkaException

    refused = getattr(client, "refused", None)
    if refused is None:
        return client.list_topics(topic, timeout=timeout).topics.get(topic)
    refused.clear()  # this call's refusals only: an earlier one may have been fixed since
    give_up = time.monotonic() + timeout
    while True:
        left = give_up - time.monotonic()
        try:
            return client.list_topics(topic, timeout=max(min(0.5, left), 0.01)).topics.get(topic)
        except KafkaException:
            if not getattr(client, "assignment", list)():  # a consumer's poll would consume
                client.poll(0)
            if refused or left <= 0.5:
                raise


def rdkafka_end_offset(consumer: Any, tp: Any, *, timeout: float = 10.0) -> int:
    """The end offset of ``tp`` (a ``confluent_kafka.TopicPartition``) from a librdkafka
    consumer, asking again while the broker says to retry (a topic created
    a moment ago may have no leader yet)."""
    from confluent_kafka import KafkaException

    give_up = time.monotonic() + timeout
    while True:
        try:
            _, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            return int(high)
        except KafkaException as exc:
            error = exc.args[0]
            if time.monotonic() >= give_up or not (error.retriable() or error.code() == 6):
                raise
        time.sleep(0.1)


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


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A record's bytes with where they came from, not decoded."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    value: bytes | None
    log_append: bool = False
    """Whether ``timestamp_ms`` is the broker's (LogAppendTime), not the sender's."""


def read_raw(
    bootstrap: str,
    topics: Iterable[str],
    *,
    idle_timeout: float = 2.0,
    security: KafkaSecurity | None = None,
    since_ms: int | None = None,
    ends: dict[tuple[str, int], int] | None = None,
) -> Iterator[RawRecord]:
    """Every record of ``topics`` from the beginning to the end offsets seen at the start
    (with ``since_ms``: from each partition's first record stamped at or after it), as bytes.

    Reads without a consumer group (nothing is committed) and stops at the end offsets captured
    when it began, so the result is a consistent prefix of the log. Given ``ends``, it is
    filled with those end offsets, by ``(topic, partition)``, before the first record.
    """
    from kafka.errors import AuthorizationError, UnsupportedCodecError

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
        if ends is not None:
            ends.update({(tp.topic, tp.partition): end[tp] for tp in parts})
        if since_ms is not None:
            found = consumer.offsets_for_times({tp: since_ms for tp in parts})
            for tp in parts:
                at = found.get(tp)
                if at is None:  # nothing stamped that late: nothing to read here
                    end[tp] = 0
                else:
                    consumer.seek(tp, at.offset)
        remaining = {tp for tp in parts if end[tp] > 0 and consumer.position(tp) < end[tp]}
        while remaining:
            try:
                batch = consumer.poll(timeout_ms=int(idle_timeout * 1000))
            except UnsupportedCodecError as exc:
                # Only records written before the topics stored records uncompressed can be
                # so: one line, never a traceback (a red team's lz4 request).
                raise KafkaUnavailable(
                    f"reading {', '.join(sorted({tp.topic for tp in parts}))} at {bootstrap}: a "
                    "record batch is "
                    f"compressed with a codec this reader lacks ({exc}); it was written before "
                    "`ledger topics create --acls` made the topic store records uncompressed: "
                    "read it with `ledger export` (which passes it), or have an administrator "
                    "delete it"
                ) from None
            if not batch:
                # Nothing arrived within the idle timeout although end offsets say more exists.
                still = {tp for tp in remaining if consumer.position(tp) < end[tp]}
                if not still:
                    break
                continue
            for tp, records in batch.items():
                for record in records:
                    if record.offset < end[tp]:
                        yield RawRecord(
                            tp.topic,
                            tp.partition,
                            record.offset,
                            record.timestamp,
                            record.value,
                            getattr(record, "timestamp_type", 0) == 1,
                        )
                if consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    except AuthorizationError as exc:
        # The topic is listed to this credential but not readable (an operator's check:
        # `policy list` with the agent's credential was a traceback, not kafka_access_denied).
        raise (access_denied(exc, security, bootstrap) or exc) from exc
    finally:
        consumer.close()


def read_topic(
    bootstrap: str,
    topics: Iterable[str],
    *,
    codec: Codec | None = None,
    idle_timeout: float = 2.0,
    security: KafkaSecurity | None = None,
    since_ms: int | None = None,
) -> Iterator[Positioned]:
    """Every record of ``topics`` from the beginning to the end offsets seen at the start
    (:func:`read_raw`), decoded. Undecodable records are skipped (processors dead-letter them;
    readers must not stop on them; ``ledger actor verify`` reports them on the governance
    topics, :func:`~ledger.kafka.governance.check_governance_log`).
    """
    codec = codec or default_codec()
    raw = read_raw(
        bootstrap, topics, idle_timeout=idle_timeout, security=security, since_ms=since_ms
    )
    for record in raw:
        try:
            event = codec.decode(record.value)  # type: ignore[arg-type]  # a None value (tombstone) is a CodecError, caught below
        except CodecError:
            continue
        yield Positioned(record.topic, record.partition, record.offset, record.timestamp_ms, event)
