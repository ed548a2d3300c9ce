"""The export's reading of Kafka: which offsets a run reads (:meth:`Source.plan`), and the
records handed in offset order to the rows of an export (:class:`Sink`).

The topics are read with librdkafka (confluent-kafka), not kafka-python: on the benchmark's
200,000 decisions kafka-python spent ~85 µs a record in pure-Python batch parsing and CRC-32C
(more than making the rows), librdkafka ~3-5 µs (see the README's status table).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

from ledger.audit.writer import ExportWriter, RowFiles
from ledger.errors import ExportError
from ledger.kafka.reading import RDKAFKA_READ_CONFIG, READ_BATCH
from ledger.settings import KafkaSecurity, TopicNames

__all__ = ["RDKAFKA_CONFIG", "IDLE_LIMIT", "Idle", "Where", "Ranges", "Source", "Sink"]

log = logging.getLogger("ledger.export")

RDKAFKA_CONFIG: Final[dict[str, Any]] = RDKAFKA_READ_CONFIG
"""librdkafka settings of the export's consumer (on the ledger's consumer defaults): those of
every read of whole topics."""
CONSUME_BATCH: Final = READ_BATCH
"""Records taken from librdkafka's queue per call."""
IDLE_LIMIT: Final = 30.0
"""Seconds without a record or an end-of-partition event before a one-shot export gives up."""
IDLE_SAY: Final = 5.0
"""Seconds without one before the wait is said (an operator's drill: an export whose broker was
killed sat silent for its 30 s)."""


class Idle:
    """How long a bounded read has gone without anything from Kafka at ``bootstrap``: said once
    after :data:`IDLE_SAY` seconds, ended with one :class:`ExportError` line after
    :data:`IDLE_LIMIT` (a broker restarting in between is waited for)."""

    def __init__(self, bootstrap: str, what: str = "") -> None:
        self.bootstrap = bootstrap
        self.what = what  # " of TOPIC partition N" for one partition's reader
        self.last = time.monotonic()
        self.said = False

    def arrived(self) -> None:
        self.last = time.monotonic()
        self.said = False

    def check(self, left: str) -> None:
        """Say or end the wait; ``left``: what is still to be read."""
        idle = time.monotonic() - self.last
        if idle > IDLE_LIMIT:
            raise ExportError(
                f"no records{self.what} arrived for {IDLE_LIMIT:g} s although {left}: is the "
                f"broker at {self.bootstrap} healthy? (`ledger ps`)"
            )
        if idle > IDLE_SAY and not self.said:
            self.said = True
            log.warning(
                "waiting for Kafka at %s: no records%s for %g s although %s (a broker "
                "restarting?); giving up after %g s",
                self.bootstrap,
                self.what,
                IDLE_SAY,
                left,
                IDLE_LIMIT,
            )


Where = tuple[str, int]
Ranges = dict[Where, tuple[int, int]]
"""Per partition: the first offset to read and the end offset (exclusive)."""


class Source:
    """A librdkafka consumer of the ledger's topics: :meth:`plan` says what a run has to read
    (from the writer's next offsets, never before the log start: a bounded topic, commands with
    its 7 days, may have dropped records since the last run, to the end offsets seen now), and
    :meth:`watch` assigns it."""

    def __init__(self, bootstrap: str, topics: TopicNames, security: KafkaSecurity | None) -> None:
        from ledger.kafka.acls import PROCESSOR_GROUPS
        from ledger.kafka.clients import make_rdkafka_consumer

        self.bootstrap = bootstrap
        self.security = security
        self.citing_first = _citing_first(topics)
        self.start: dict[Where, int] = {}
        self.end: dict[Where, int] = {}
        self.done: set[Where] = set()  # partitions read up to their end offset
        self.closed = False
        # The exporter's group (its ACLs allow it); it is never joined nor committed to.
        group = {"group.id": topics.group(f"{PROCESSOR_GROUPS['exporter']}.export")}
        self.consumer = make_rdkafka_consumer(
            bootstrap, security=security, **RDKAFKA_CONFIG, **group
        )

    def plan(self, writer: ExportWriter) -> Ranges:
        """Every partition of the ledger's topics: where the run starts, and its end offset.

        The ends are read a topic at a time, so a live ledger writes between them: each topic
        is read before the topics its records cite (checkpoints before the decisions they
        vouch for, decisions before the requests they answer and the governance records they
        were decided at). What the export holds of a citing topic was then written before the
        cited topics' ends were read, and so is all there (else `audit verify` would call a
        healthy export's newest cited record missing)."""
        from confluent_kafka import TopicPartition

        from ledger.kafka.reading import rdkafka_partitions

        ranges: Ranges = {}
        for topic in sorted(writer.formats, key=self.citing_first):
            for partition in rdkafka_partitions(self.consumer, topic, bootstrap=self.bootstrap):
                low, high = self._watermarks(TopicPartition(topic, partition))
                start = writer.next_offset(topic, partition)
                if start > high:
                    raise ExportError(
                        f"{writer.out} has {topic} partition {partition} up to offset {start}, "
                        f"but Kafka's ends at {high}: the topic was recreated, or this is another "
                        "ledger's export; export into a fresh directory"
                    )
                ranges[(topic, partition)] = (max(start, low), high)
        return ranges

    def watch(self, ranges: Ranges, *, bounded: bool) -> None:
        """Read these partitions from their start (a bounded read: those with something before
        their end offset, up to it)."""
        from confluent_kafka import TopicPartition

        self.start = {where: start for where, (start, _) in ranges.items()}
        self.end = {where: end for where, (_, end) in ranges.items()}
        self.done = set()
        self.consumer.assign(
            [
                TopicPartition(topic, partition, start)
                for (topic, partition), (start, end) in ranges.items()
                if not bounded or start < end
            ]
        )

    def _watermarks(self, tp: Any) -> tuple[int, int]:
        from confluent_kafka import KafkaException

        from ledger.kafka.reading import rdkafka_watermarks

        try:
            return rdkafka_watermarks(self.consumer, tp)
        except KafkaException as exc:
            raise self._error(exc.args[0]) from exc

    def _error(self, error: Any) -> Exception:
        from ledger.errors import KafkaUnavailable
        from ledger.kafka.clients import access_denied

        denied = access_denied(error, self.security, self.bootstrap)
        if denied is not None:
            return denied
        if error.fatal():
            return KafkaUnavailable(f"reading Kafka at {self.bootstrap} failed: {error}")
        return ExportError(f"reading Kafka at {self.bootstrap} failed: {error}")

    def read(self, sink: Sink, *, bounded: bool, wait: float = 1.0) -> tuple[int, bool]:
        """Hand ``sink`` the next records (those of a bounded run below its end offsets only).
        Returns (records handed, whether anything arrived: a record or an end of partition)."""
        from confluent_kafka import (
            TIMESTAMP_NOT_AVAILABLE,
            KafkaError,
            KafkaException,
            TopicPartition,
        )

        want = CONSUME_BATCH
        if bounded:
            # librdkafka returns when it has ``want`` records or the wait is over: never ask
            # for more than are left (a helper's unit ended with a second's wait for records
            # that were not coming), and wait less, should offsets without records be left.
            left = sum(e - sink.position(w) for w, e in self.end.items() if w not in self.done)
            want = max(1, min(want, left))
            wait = min(wait, 0.25)
        messages = self.consumer.consume(num_messages=want, timeout=wait)
        if not messages:
            return 0, False
        end, done, add = self.end, self.done, sink.add
        taken = 0
        for message in messages:
            error = message.error()
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if error is not None:
                code = error.code()
                if code == KafkaError._PARTITION_EOF:
                    if offset >= end.get((topic, partition), 0):
                        done.add((topic, partition))
                    continue
                if code == KafkaError.GROUP_AUTHORIZATION_FAILED:
                    continue  # the never-used group: a role without it still exports
                if error.fatal() or code in (
                    KafkaError._AUTHENTICATION,
                    KafkaError.SASL_AUTHENTICATION_FAILED,
                    KafkaError.TOPIC_AUTHORIZATION_FAILED,
                ):
                    raise self._error(error)
                if code == KafkaError._BAD_COMPRESSION and offset is not None and offset >= 0:
                    # Fetched again forever otherwise (a red team: a zstd record inflating
                    # past librdkafka's limit hung the export). Its row is kept with no bytes,
                    # as an undecodable record's (undecodable_records lists it), and the
                    # export goes on past it.
                    stop = end.get((topic, partition))
                    if bounded and (stop is None or offset >= stop):
                        continue  # not this run's, as below
                    log.warning(
                        "%s[%s]@%s does not decompress (%s): exported as a row with no bytes",
                        topic,
                        partition,
                        offset,
                        error.str(),
                    )
                    if add(topic, partition, offset, None, message.key(), None):
                        taken += 1
                    if bounded and stop is not None and offset + 1 >= stop:
                        done.add((topic, partition))
                        continue
                    try:
                        self.consumer.seek(TopicPartition(topic, partition, offset + 1))
                    except KafkaException as exc:  # not fetching it now: passed when it comes
                        log.warning(
                            "could not seek past %s[%s]@%s: %s", topic, partition, offset, exc
                        )
                    continue
                continue  # transient (a broker restarting): librdkafka retries
            where = (topic, partition)
            if bounded:
                stop = end.get(where)
                if stop is None:
                    continue  # of a partition no longer assigned (a helper's previous unit)
                if offset + 1 >= stop:
                    done.add(where)
                    if offset >= stop:
                        continue
            kind, timestamp = message.timestamp()
            if add(
                topic,
                partition,
                offset,
                None if kind == TIMESTAMP_NOT_AVAILABLE else timestamp,
                message.key(),
                message.value(),
            ):
                taken += 1
        return taken, True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.consumer.close()


class Sink:
    """Records into rows of ``files``, every partition's in offset order from the offset
    ``start`` names (skipping what was read already, or is not wanted)."""

    def __init__(self, files: RowFiles, start: Callable[[str, int], int]) -> None:
        self.files = files
        self.start = start
        self._next: dict[Where, int] = {}

    def position(self, where: Where) -> int:
        """The offset of the next record of partition ``where`` the sink takes."""
        found = self._next.get(where)
        return found if found is not None else self.start(*where)

    def add(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int | None,
        key: bytes | None,
        value: bytes | None,
    ) -> bool:
        expected = self._next.get((topic, partition))
        if expected is None:
            expected = self.start(topic, partition)
        if offset < expected:
            return False  # read again after a seek, or before what the manifest holds
        self._next[(topic, partition)] = offset + 1
        self.files.add(topic, partition, offset, timestamp_ms, key, value)
        return True


def _citing_first(topics: TopicNames) -> Callable[[str], int]:
    """A sort key putting each ledger topic before the topics its records cite."""
    order = [
        topics.chain_checkpoints,  # vouch for decisions
        topics.corrections,  # name decisions
        topics.command_results,  # answer commands, name governance events
        topics.dead_letters,  # name the requests and commands they set aside
        topics.decisions,  # answer requests, cite governance records
        topics.evaluation_requests,
        topics.commands,
        topics.policy_events,
        topics.grant_events,
    ]
    rank = {topic: i for i, topic in enumerate(order)}
    return lambda topic: rank.get(topic, len(order))
