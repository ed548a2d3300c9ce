"""Reading topics: which partitions a topic has, and a topic read to its end.

The one answer to "this topic does not exist" is :class:`~ledger.errors.TopicMissing`, raised by
:func:`topic_partitions` (kafka-python) and :func:`rdkafka_partitions` (librdkafka), which every
reader uses. :func:`read_topic` reads topics from the beginning to the end offsets seen
when it started: a consistent prefix of the log, without a consumer group.

Records are read with librdkafka (confluent-kafka), as the export reads them, not kafka-python:
kafka-python decodes every header key as UTF-8 while it parses a fetch, so one record whose
header key is not UTF-8 (anyone allowed to write a topic can send one) made every read of that
topic raise before any ledger code saw the record, for as long as the topic keeps it (a red
team's: replay and simulate failed for good on the requests topic). librdkafka hands over the
record and leaves its headers alone, which the ledger does not use.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ledger.codec import Codec, default_codec
from ledger.core.events import Event
from ledger.errors import CodecError, KafkaUnavailable, TopicMissing
from ledger.kafka.clients import (
    METADATA_TIMEOUT,
    access_denied,
    error_words,
    kafka_failure,
    make_rdkafka_consumer,
    refused_login,
)
from ledger.settings import KafkaSecurity

__all__ = [
    "Positioned",
    "position_key",
    "topic_partitions",
    "rdkafka_partitions",
    "rdkafka_watermarks",
    "rdkafka_end_offset",
    "RDKAFKA_READ_CONFIG",
    "READ_BATCH",
    "RawRecord",
    "fetch_arrived",
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
    client: Any,
    topic: str,
    *,
    bootstrap: str | None = None,
    timeout: float = METADATA_TIMEOUT,
    wait: float = 0.0,
) -> list[int]:
    """The partition numbers of ``topic`` (sorted), from a librdkafka client (``confluent_kafka``
    consumer or producer). Raises :class:`~ledger.errors.TopicMissing` when it does not exist;
    with ``wait``, once it has not for that many seconds (a topic created a moment ago)."""
    give_up = time.monotonic() + wait
    while True:
        try:
            return _partitions(client, topic, bootstrap, timeout)
        except TopicMissing:
            if time.monotonic() >= give_up:
                raise
        time.sleep(0.1)


def _partitions(client: Any, topic: str, bootstrap: str | None, timeout: float) -> list[int]:
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
        if hasattr(client, "user") and client.user is None:
            # An agent engineer's walkthrough: a ClientConfig built by hand has no security,
            # and a secured broker (what `ledger up` starts) drops the plain connection; the
            # words sent them to check Kafka and variables that config never reads.
            credentials = (
                "this client connects without credentials, which a secured ledger, the "
                "default of `ledger up`, refuses the same way (the SDK: a `ClientConfig` built "
                "without `security=`: build it with `ClientConfig.from_env(actor=…)`, or pass "
                "`security=KafkaSecurity(…)`; the CLI: set $LEDGER_SASL_USERNAME and "
                "$LEDGER_SASL_PASSWORD, or $LEDGER_HOME, for this address)"
            )
        else:
            credentials = (
                "a broker that refuses this client's credentials looks the same to librdkafka "
                "(check `ledger credentials show ROLE`, or "
                "$LEDGER_SASL_USERNAME/$LEDGER_SASL_PASSWORD)"
            )
        raise KafkaUnavailable(
            f"cannot read Kafka's metadata{where}: {error_words(error)}: is Kafka running there (`ledger "
            f"ps`, `ledger broker status`)? {credentials[0].upper()}{credentials[1:]}; and an "
            "address where something other than Kafka answers looks the same too"
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


def rdkafka_watermarks(consumer: Any, tp: Any, *, timeout: float = 10.0) -> tuple[int, int]:
    """The log start and end offsets of ``tp`` (a ``confluent_kafka.TopicPartition``) from a
    librdkafka consumer, asking again while the broker says to retry (a topic created a moment
    ago may have no leader yet). Raises librdkafka's ``KafkaException`` otherwise."""
    from confluent_kafka import KafkaException

    give_up = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0]
            if time.monotonic() >= give_up or not (error.retriable() or error.code() == 6):
                raise
        time.sleep(0.1)


def rdkafka_end_offset(consumer: Any, tp: Any, *, timeout: float = 10.0) -> int:
    """The end offset of ``tp`` (:func:`rdkafka_watermarks`)."""
    return rdkafka_watermarks(consumer, tp, timeout=timeout)[1]


@dataclass(frozen=True, slots=True)
class Positioned:
    """A decoded record with where it came from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    event: Event


def fetch_arrived(consumer: Any, most: int, wait: float) -> list[Any]:
    """From a librdkafka consumer: what has arrived, up to ``most`` records; when nothing has,
    the first within ``wait`` seconds and what came with it. ``consume`` waits until it has
    all it asks for, so a lone record (a rollback, say) would wait the whole time."""
    messages: list[Any] = consumer.consume(num_messages=most, timeout=0)
    if messages:
        return messages
    first = consumer.poll(wait)
    if first is None:
        return []
    return [first, *consumer.consume(num_messages=most - 1, timeout=0)]


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
    key: bytes | None = None


RDKAFKA_READ_CONFIG: Final[dict[str, Any]] = {
    "fetch.wait.max.ms": 100,
    "fetch.max.bytes": 64 * 1024 * 1024,
    "max.partition.fetch.bytes": 8 * 1024 * 1024,
    "queued.max.messages.kbytes": 64 * 1024,
    "socket.receive.buffer.bytes": 4 * 1024 * 1024,
    "fetch.queue.backoff.ms": 20,
    # As kafka-python read: every record, and each batch's CRC checked.
    "isolation.level": "read_uncommitted",
    "check.crcs": True,
    # An end-of-partition event: how a read knows it is past offsets that hold no record
    # (transaction markers, compacted gaps) just before the end offset it captured.
    "enable.partition.eof": True,
}
"""librdkafka settings (on the ledger's consumer defaults) of a read of whole topics: this
module's and the export's (:mod:`ledger.audit.fromkafka`)."""
READ_BATCH: Final = 10_000
"""Records taken from librdkafka's queue per call, at most."""


def read_raw(
    bootstrap: str,
    topics: Iterable[str],
    *,
    idle_timeout: float = 2.0,
    security: KafkaSecurity | None = None,
    since_ms: int | None = None,
    ends: dict[tuple[str, int], int] | None = None,
    patience: float | None = None,
    starts: Mapping[tuple[str, int], int] | None = None,
) -> Iterator[RawRecord]:
    """Every record of ``topics`` from the beginning to the end offsets seen at the start
    (with ``since_ms``: from each partition's first record stamped at or after it), as bytes.

    Reads without a consumer group (nothing is committed) and stops at the end offsets captured
    when it began, so the result is a consistent prefix of the log. Given ``ends``, it is
    filled with those end offsets, by ``(topic, partition)``, before the first record; given
    ``starts`` (such end offsets of an earlier read), each partition named in it is read from
    there, so a reader that waits for a record reads only what came since. Each
    fetch waits up to ``idle_timeout`` seconds for records; a read that gets nothing for
    ``patience`` seconds while records are left fails (:class:`~ledger.errors.KafkaUnavailable`),
    else it waits for them (``None``, the default). A record whose batch does not decompress
    (only one written before the topics stored records uncompressed can be so) is handed over
    with no value, as an undecodable one; so is every record librdkafka reads, whatever its
    headers hold.
    """
    from confluent_kafka import (
        OFFSET_END,
        TIMESTAMP_LOG_APPEND_TIME,
        KafkaError,
        KafkaException,
        TopicPartition,
    )

    names = list(topics)
    consumer = make_rdkafka_consumer(bootstrap, security=security, **RDKAFKA_READ_CONFIG)
    try:
        # The next offset to read and the end offset, by partition: the partitions left.
        left: dict[tuple[str, int], list[int]] = {}
        for topic in names:
            for partition in rdkafka_partitions(consumer, topic, bootstrap=bootstrap):
                low, high = rdkafka_watermarks(consumer, TopicPartition(topic, partition))
                start = max(low, starts.get((topic, partition), low)) if starts else low
                left[(topic, partition)] = [start, high]
        if ends is not None:
            ends.update({where: high for where, (_, high) in left.items()})
        if since_ms is not None and left:
            asked = [TopicPartition(t, p, since_ms) for t, p in left]
            for found in consumer.offsets_for_times(asked, timeout=METADATA_TIMEOUT):
                where = (found.topic, found.partition)
                if found.offset < 0 or found.offset == OFFSET_END:
                    del left[where]  # nothing stamped that late: nothing to read here
                else:
                    left[where][0] = max(left[where][0], found.offset)
        left = {where: span for where, span in left.items() if span[0] < span[1]}
        if not left:
            return
        consumer.assign([TopicPartition(t, p, start) for (t, p), (start, _) in left.items()])
        quiet_since = time.monotonic()
        while left:
            # librdkafka waits for as many records as asked, or the whole wait: never ask for
            # more than are left (offsets without records, if any, are ended by an
            # end-of-partition event, which counts as one).
            want = max(1, min(READ_BATCH, sum(end - at for at, end in left.values())))
            messages = consumer.consume(num_messages=want, timeout=idle_timeout)
            if not messages:
                if patience is not None and time.monotonic() - quiet_since > patience:
                    raise KafkaUnavailable(
                        f"{', '.join(f'{t} partition {p}' for t, p in sorted(left))} were not "
                        f"read to their end offsets within {patience:.0f} s: is Kafka at "
                        f"{bootstrap} running (`ledger ps`, `ledger broker status`)?"
                    )
                continue
            quiet_since = time.monotonic()
            for message in messages:
                topic, partition, offset = message.topic(), message.partition(), message.offset()
                where = (topic, partition)
                span = left.get(where)
                error = message.error()
                if error is not None:
                    code = error.code()
                    if code == KafkaError._PARTITION_EOF:
                        if span is not None and offset >= span[1]:
                            del left[where]
                        continue
                    if code == KafkaError.GROUP_AUTHORIZATION_FAILED:
                        continue  # the never-used group id: no role needs it to read
                    denied = access_denied(error, security, bootstrap)
                    if denied is not None:
                        raise denied
                    if error.fatal():
                        raise KafkaUnavailable(
                            f"reading {', '.join(names)} at {bootstrap} failed: {error.str()}"
                        )
                    if code != KafkaError._BAD_COMPRESSION or span is None or offset < 0:
                        continue  # transient (a broker restarting): librdkafka retries
                    # Fetched again forever otherwise (a red team's zstd record inflating past
                    # librdkafka's limit): handed over with no bytes, and passed.
                    value = None
                else:
                    value = message.value()
                if span is None or offset < span[0]:
                    continue  # a partition already read to its end, or fetched again
                if offset >= span[1]:
                    del left[where]
                    continue
                span[0] = offset + 1
                kind, timestamp = message.timestamp()
                yield RawRecord(
                    topic,
                    partition,
                    offset,
                    timestamp,
                    value,
                    kind == TIMESTAMP_LOG_APPEND_TIME,
                    message.key(),
                )
                if offset + 1 >= span[1]:
                    del left[where]
                elif error is not None:
                    # Not fetching it now: passed over when it comes again.
                    with contextlib.suppress(KafkaException):
                        consumer.seek(TopicPartition(topic, partition, offset + 1))
    except KafkaException as exc:
        hint = ": is Kafka running there (`ledger ps`, `ledger broker status`)?"
        doing = f"reading {', '.join(names)} at {bootstrap}"
        raise kafka_failure(exc, security, bootstrap, doing, hint) from exc
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
