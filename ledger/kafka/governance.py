"""Governance from Kafka: the history read to its end (replay, CLI) and followed live
(processors).

Governance state is not kept in a Faust table. Every processor worker follows the
(single-partition) policy and grant topics itself with a group-less librdkafka consumer
(:class:`GovernanceFollower`) and folds them with the core's pure ``fold``, so each worker sees
every governance event (Faust's GlobalTable has open bugs across several workers) and the state
is exactly what replay (:func:`load_history` + :func:`ledger.core.history.state_at`) computes. A
worker answers nothing until its follower has caught up with the end offsets seen at start:
never from partial state.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, cast

from ledger.codec import Codec, default_codec
from ledger.core.collector import collector_paused
from ledger.core.events import (
    COMMAND_TYPES,
    GOVERNANCE_EVENT_TYPES,
    POLICY_EVENT_TYPES,
    Command,
    GovernanceEvent,
)
from ledger.core.history import HistoryEntry, offset_gaps
from ledger.core.signing import Witnesses, witnesses_from
from ledger.core.state import (
    EMPTY_STATE,
    POLICY,
    PRINCIPAL,
    LedgerState,
    Replay,
    aggregate_of,
    compile_deployed,
    fold,
    unread_aggregate,
    unread_words,
    with_positions,
    with_unreadable,
)
from ledger.errors import CodecError, UnknownSchemaError
from ledger.files import held_exclusively
from ledger.kafka.clients import make_rdkafka_consumer
from ledger.kafka.reading import (
    fetch_arrived,
    position_key,
    rdkafka_end_offset,
    rdkafka_partitions,
    read_raw,
)
from ledger.kafka.snapshots import (
    SnapshotMemory,
    SnapshotUnusable,
    read_snapshot,
    record_digest,
    remove_other_snapshots,
    snapshot_fingerprint,
    snapshot_key,
    snapshot_lock,
    write_snapshot,
)
from ledger.settings import KafkaSecurity, TopicNames

__all__ = [
    "decode_governance",
    "read_governance",
    "load_history",
    "Lacking",
    "GovernanceFollower",
]

log = logging.getLogger("ledger.governance")


BULK_FOLD = 100
"""Records folded together in bulk (a :class:`~ledger.core.state.Replay`) from this many on."""
CATCH_UP_CHUNK = 100_000
"""Records fetched while catching up that are decoded and fed to the catch-up's replay together
(bounds the memory the fetched records take)."""
CATCH_UP_BYTES = 64 * 1024 * 1024
"""…and their bytes at most (a proposal's record can be ~1 MB: 100,000 of those are not held)."""
RECENT_READS = 10_000
"""Ids of the governance events read live lately that a follower with a snapshot keeps (an event
its process applies after reading it back is not held for one)."""
HELD_TOO_LONG = 1_000
"""Live fetches after which a snapshot held back by events not read back is logged as a warning."""
FETCH_MAX = 5000
"""Records taken from the consumer at a time at most."""
FETCH_WAIT = 0.5
"""Seconds one fetch waits when nothing has arrived (a record ends the wait at once)."""
STATS_INTERVAL_MS = 1000
"""Milliseconds between librdkafka's statistics, which say when the broker last answered
(``last_fetch``; ``ledger ps`` finds a processor unhealthy when that is 5 s old)."""
TOPIC_WAIT = 10.0
"""Seconds a governance topic may be missing at start before that is an error (a topic
created a moment ago)."""
SAID_EVERY = 30.0
"""Seconds between two log lines about the same consumer error."""
SNAPSHOT_AFTER = 50_000
"""A follower writes a new snapshot when it has folded this many records since the state of the
one on disk, catching up or live (one that had none it could use writes one as soon as its
catch-up folded anything)."""


def decode_governance(codec: Codec, value: bytes | None) -> GovernanceEvent:
    """A governance record's event; :class:`~ledger.errors.CodecError` for anything else
    (undecodable bytes, or a record of another type on a governance topic)."""
    if value is None:
        raise CodecError("empty record (tombstone) on a governance topic")
    event = codec.decode(value)
    if not isinstance(event, GOVERNANCE_EVENT_TYPES):
        raise CodecError(f"{type(event).__name__} is not a governance event")
    return event  # type: ignore[return-value]  # isinstance of a tuple of types above does not narrow to the union


def not_governance(where: str, exc: CodecError) -> str:
    """What ``ledger actor verify`` says of a governance record that is not a governance event
    (``where``: its topic, partition and offset)."""
    if isinstance(exc, UnknownSchemaError):  # honest, if a newer ledger wrote it
        return (
            f"{where}: its record's schema is unknown to this ledger ({exc}): if a newer version "
            "of the ledger wrote it, upgrade this one and verify again"
        )
    return f"{where}: its record is not a governance event ({exc})"


def read_governance(
    bootstrap: str,
    topics: TopicNames,
    *,
    codec: Codec | None = None,
    security: KafkaSecurity | None = None,
    lacking: Lacking | None = None,
) -> Iterator[HistoryEntry]:
    """Governance events in log order, each with its position key and offset.

    Policy and grant topics are read to their current ends. Each has one partition, so the
    order within each is the order of the ledger; the two streams are independent aggregates.
    Records that are not governance events are skipped, as the processors skip them, and
    noted in ``lacking``, when given (:class:`Lacking`): what is shown lacks them.
    """
    codec = codec or default_codec()
    governance = [topics.policy_events, topics.grant_events]
    for rec in read_raw(bootstrap, governance, security=security):
        try:
            event = decode_governance(codec, rec.value)
        except CodecError as exc:
            if lacking is not None:
                lacking.note(exc, rec.topic, rec.partition, rec.offset, topics, rec.key)
            continue
        yield HistoryEntry(position_key(rec.topic, rec.partition), rec.offset, event)


@dataclass
class Lacking:
    """What a read of the governance history passed over, as the processors pass it, but what
    ``skip`` names (``LEDGER_GOVERNANCE_SKIP``: judged no release's): records of a schema this
    ledger does not know (``newer``: a newer release's, as ``TOPIC/PARTITION@OFFSET (policy
    'refund')``), and damaged ones (``damaged``: no governance event of any schema, cut short,
    empty or not Avro, as ``TOPIC/PARTITION@OFFSET``), the first :data:`SHOWN` of each, and
    how many (``counts``). What is shown lacks them (a review: `ps` named the damaged ones
    while the commands reading the same history said nothing)."""

    SHOWN: ClassVar[int] = 10
    skip: frozenset[str] = frozenset()
    newer: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"newer": 0, "damaged": 0})

    def note(
        self,
        failure: CodecError,
        topic: str,
        partition: int,
        offset: int,
        topics: TopicNames,
        key: bytes | str | None,
    ) -> None:
        """Note the record at ``offset`` that did not decode (``failure``); ``key``: its
        Kafka key (an export's ``key`` column holds it as text)."""
        where = f"{position_key(topic, partition)}@{offset}"
        if where in self.skip:
            return
        newer = isinstance(failure, UnknownSchemaError)
        which = "newer" if newer else "damaged"
        self.counts[which] += 1  # a flood of them is counted, not held
        if self.counts[which] > self.SHOWN:
            return
        if newer:
            kind = POLICY if topic == topics.policy_events else PRINCIPAL
            raw = key.encode() if isinstance(key, str) else key
            self.newer.append(f"{where} ({unread_words(*unread_aggregate(kind, raw))})")
        else:
            self.damaged.append(where)


def load_history(
    bootstrap: str,
    topics: TopicNames,
    *,
    codec: Codec | None = None,
    security: KafkaSecurity | None = None,
    lacking: Lacking | None = None,
) -> list[HistoryEntry]:
    """Every governance event in the ledger, in log order (``lacking``: as
    :func:`read_governance`'s)."""
    return list(read_governance(bootstrap, topics, codec=codec, security=security, lacking=lacking))


def command_witnesses(
    bootstrap: str,
    topics: TopicNames,
    *,
    codec: Codec | None = None,
    security: KafkaSecurity | None = None,
) -> Witnesses:
    """When the broker received each signed command still on the commands topic (a week), and
    whether the time is its own (:func:`~ledger.core.signing.witnesses_from`): ``ledger actor
    verify`` holds each governance event's time to its command's."""
    codec = codec or default_codec()
    commands: list[tuple[Command, datetime, bool]] = []
    for rec in read_raw(bootstrap, [topics.commands], security=security):
        try:
            command = codec.decode(rec.value)  # type: ignore[arg-type]  # a None value (tombstone) is a CodecError, caught below
        except CodecError:
            continue  # not a command: nothing it witnesses
        if isinstance(command, COMMAND_TYPES):
            at = datetime.fromtimestamp(rec.timestamp_ms / 1000, UTC)
            commands.append((cast(Command, command), at, rec.log_append))
    return witnesses_from(commands)


def check_governance_log(
    bootstrap: str,
    topics: TopicNames,
    *,
    codec: Codec | None = None,
    security: KafkaSecurity | None = None,
) -> tuple[list[HistoryEntry], list[str]]:
    """The governance history (as :func:`load_history`), and what is wrong with the topics'
    records, one line each: a record that is not a governance event (undecodable bytes, an
    empty record, another type), and offsets missing from 0 to the end offset seen when the
    read began (records deleted: the governance topics keep every record and are written
    without transactions). :func:`load_history` skips such records, as the processors do;
    ``ledger actor verify`` reports them, since only the command processor writes there."""
    codec = codec or default_codec()
    governance = (topics.policy_events, topics.grant_events)
    ends: dict[tuple[str, int], int] = {}
    seen: dict[tuple[str, int], list[int]] = {}
    history: list[HistoryEntry] = []
    problems: list[str] = []
    for rec in read_raw(bootstrap, governance, security=security, ends=ends):
        seen.setdefault((rec.topic, rec.partition), []).append(rec.offset)
        try:
            event = decode_governance(codec, rec.value)
        except CodecError as exc:
            where = f"{rec.topic} partition {rec.partition} offset {rec.offset}"
            problems.append(not_governance(where, exc))
            continue
        history.append(HistoryEntry(position_key(rec.topic, rec.partition), rec.offset, event))
    for (topic, partition), end in sorted(ends.items()):
        problems.extend(
            offset_gaps(
                topic,
                partition,
                seen.get((topic, partition), []),
                end,
                f"the topic's end offset is {end}",
            )
        )
    return history, problems


class GovernanceFollower:
    """Follows policy and grant events into a :class:`LedgerState` (see module docstring).

    ``ready`` is set once the state includes every event written before the follower started;
    ``last_fetch`` is the Unix time the broker serving its partitions last answered (health:
    librdkafka's statistics say, every :data:`STATS_INTERVAL_MS`).

    While catching up, the cyclic garbage collector is paused. The state being built is
    hundreds of thousands of acyclic objects, and the collector's scans of them, set off again
    and again by the fetching between chunks, cost a million-event catch-up through Kafka more
    than all the rest (13.5 to 14.8 s against 7.6 to 8.5 s with it paused). With
    ``freeze_when_caught_up`` (the processors'), everything the process holds once it has
    caught up is then moved out of the collector's reach for good (``gc.freeze()``): a full
    collection over that state would pause the process for about a second
    (``benchmarks.replay``) whenever the collector decided on one. Reference counting still
    frees what is dropped later; only a reference cycle frozen then and dropped later (a
    library's connection object, say) is never collected, a bounded, one-time cost. (Cyclic garbage made while the collector is paused is frozen too: a
    300,000-record catch-up through Kafka had none.) Without it, resuming the collector scans
    what was built, once.

    With a ``snapshot`` file (the processors'), the follower starts from the state saved there
    (:mod:`ledger.kafka.snapshots`) once it has read back, from Kafka, the last record folded
    into it at each position and found the same bytes; it then folds only the records after
    those. Any check that fails is logged and the whole history replayed. A new snapshot is
    written on a thread of its own while the follower is ready and the processor answers (5 to
    6 s for a million events' state, ``benchmarks.replay --kafka``, most of it holding Python's
    interpreter lock: answers are slower meanwhile, but come; :meth:`wait_for_snapshot` waits
    for it): once a catch-up that could not start from one folded anything, and whenever
    ``snapshot_after`` records or more were folded since the file's state (at the end of a
    catch-up, or after a live fetch). Never while events this process wrote
    (:meth:`apply_local`) are not read back yet: the file only ever holds a state the log
    alone gives. One follower writes it at a time (a lock beside it); another that finds it
    being written leaves it to that one. A follower with ``on_event`` cannot have one: its
    listener must see every event. One with a ``memory`` (the command processor's) can: the
    memory is called with every event folded, saved in the snapshot with the state and
    restored from it (:class:`~ledger.kafka.snapshots.SnapshotMemory`), so it holds what it
    would have remembered of the whole history.
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        topics: TopicNames,
        codec: Codec | None = None,
        on_event: Callable[[GovernanceEvent], None] | None = None,
        consumer_config: dict[str, Any] | None = None,
        security: KafkaSecurity | None = None,
        compile_deployed: bool = False,
        freeze_when_caught_up: bool = False,
        snapshot: Path | None = None,
        snapshot_after: int = SNAPSHOT_AFTER,
        memory: SnapshotMemory | None = None,
        skip: frozenset[str] = frozenset(),
    ) -> None:
        if snapshot is not None and on_event is not None:
            raise ValueError(
                "a follower with on_event sees every event: it cannot start from a snapshot "
                "(a memory can: see SnapshotMemory)"
            )
        if memory is not None:
            if on_event is not None:
                raise ValueError("a follower has one listener: on_event or a memory")
            on_event = memory.remember
        self._bootstrap = bootstrap
        self._compile_deployed = compile_deployed
        self._freeze = freeze_when_caught_up
        self._security = security
        self._topics = (topics.policy_events, topics.grant_events)
        self._codec = codec or default_codec()
        self._on_event = on_event
        self._consumer_config = consumer_config or {}
        self.state: LedgerState = EMPTY_STATE
        self.ready = asyncio.Event()
        self.last_fetch: float | None = None
        self.applied = 0
        """Governance records folded so far."""
        self.undecodable = 0
        """Records on the governance topics that are not governance events (logged, skipped)."""
        self.newer = 0
        """Of those, records of a schema this release does not know: a newer release's
        (``ledger ps`` says so). Their aggregates (the records' keys) are published with the
        state (``LedgerState.unreadable``): nothing is decided or changed on them."""
        self.damaged = 0
        """Of those, records of no schema this release knows as a governance event's (cut short,
        empty, not Avro: damaged, or forged with the command processor's credential), but those
        ``skip`` names: the state lacks whatever they held; ``ledger ps`` says so."""
        self.damaged_at: list[str] = []
        """Where the first five of those are (``TOPIC/PARTITION@OFFSET``)."""
        self._unreadable: frozenset[tuple[str, str]] = frozenset()
        self._skip = skip  # TOPIC/PARTITION@OFFSET: records the operator judged no release's
        self.from_snapshot = 0
        """Events in the snapshot the state started from (0: it started from the beginning)."""
        self._snapshot = snapshot
        self._snapshot_after = snapshot_after
        self._memory = memory
        self._snapshot_writer: threading.Thread | None = None
        if snapshot is not None:
            snapshot_fingerprint(memory)  # the code this process runs, read now (it is kept)
        # Each position key's last folded record (offset, value), to write with a snapshot; and
        # the events applied locally that have not come back from the log yet.
        self._tails: dict[str, tuple[int, bytes | None]] = {}
        self._local_unread: dict[str, GovernanceEvent] = {}  # event id -> event
        # Ids of the events read live lately (the newest RECENT_READS): an event can come back
        # from the log before the process that wrote it applies it (see apply_local).
        self._recent_reads: OrderedDict[str, None] = OrderedDict()
        self._held_for = 0  # live fetches since a snapshot was due but events were held
        # Events folded that the snapshot file does not hold (as far as this follower knows),
        # and whether there is one (the start's, or one this follower wrote).
        self._unsaved = 0
        self._on_disk = False
        # While catching up: the replay the chunks are fed to, and what it has not published yet.
        self._replay: Replay | None = None
        self._positions: dict[str, int] = {}
        self._touched: set[str] = set()
        self._said: dict[int, float] = {}  # consumer error code -> when last logged

    def apply_local(self, event: GovernanceEvent) -> None:
        """Apply an event this process just wrote, before it comes back from the log.

        The same event read later from the topic is a no-op for ``fold`` (its sequence is
        already applied) and only advances the position.
        """
        # No snapshot holds it before it is read back from the log, unless it was already
        # (the follower's fetch can see it before its writer, awaiting the broker's ack, does).
        if self._snapshot is not None and event.event_id not in self._recent_reads:
            self._local_unread[event.event_id] = event
        if self._replay is not None:  # catching up (nothing is answered yet): its next event
            try:
                self._replay.feed([event])
            except BaseException:  # a half-applied replay is of no use: start from the log
                self._replay, self._positions, self._touched = None, {}, set()
                raise
        else:
            self.state = fold(self.state, event)
        if self._on_event is not None:
            self._on_event(event)

    async def run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        # Every call into the consumer runs on a worker thread (they block), one at a time: a
        # stop (the task cancelled) does not wait for a fetch in progress, and the consumer is
        # closed only once that fetch has returned.
        calls = threading.Lock()

        def call(method: Callable[..., Any], *args: Any) -> Any:
            with calls:
                return method(*args)

        consumer = await asyncio.to_thread(self._new_consumer)
        # The collector paused until caught up (see the class docstring), by the core's one
        # pause; closed early once caught up, else when the loop ends (stopped, or failed).
        paused = contextlib.ExitStack()
        try:
            parts, end = await asyncio.to_thread(call, self._end_offsets, consumer)
            self.last_fetch = time.time()  # the broker answered, with the end offsets
            paused.enter_context(collector_paused())
            resumed = await self._resume(consumer, call, end)
            start = [TopicPartition(t, p, resumed.get((t, p), OFFSET_BEGINNING)) for t, p in parts]
            await asyncio.to_thread(call, consumer.assign, start)
            reached = dict(resumed)  # each partition's next offset, as far as fetched
            pending = {tp for tp in parts if end[tp] > reached.get(tp, 0)}
            if not pending:  # nothing to catch up with (empty topics, or all in the snapshot)
                paused.close()
                self._caught_up()
                self.ready.set()
            backlog: list[tuple[str, list[Any]]] = []  # fetched while catching up, unfolded
            held = held_bytes = 0
            while True:
                messages = await asyncio.to_thread(call, _fetch, consumer)
                fetched = self._by_partition(consumer, messages, reached)
                if not pending:
                    self.apply_fetched(fetched)
                    self._start_snapshot(live=True)
                    continue
                # Catching up: nothing is answered from partial state, so the fetched records
                # are decoded in chunks of CATCH_UP_CHUNK records or CATCH_UP_BYTES and fed to one
                # replay, whose state is published once, when caught up.
                backlog += fetched
                for _, records in fetched:
                    held += len(records)
                    held_bytes += sum(map(len, records))  # a message's len: its value's
                for tp in list(pending):
                    if reached.get(tp, 0) >= end[tp]:
                        pending.discard(tp)
                if held >= CATCH_UP_CHUNK or held_bytes >= CATCH_UP_BYTES or not pending:
                    self.apply_fetched(backlog, more=bool(pending))
                    backlog, held, held_bytes = [], 0, 0
                if not pending:
                    log.info("governance state caught up: %s", dict(self.state.position))
                    self._caught_up()
                    self._start_snapshot()
                    paused.close()
                    self.ready.set()
        finally:
            paused.close()  # stopped (or failed) while catching up: a no-op once closed
            await asyncio.to_thread(call, consumer.close)

    def _new_consumer(self) -> Any:
        """A librdkafka consumer of no group (partitions are assigned, nothing is committed).

        Not aiokafka's: it decodes every header key of a fetched record as UTF-8 and raises on
        one that is not, before any ledger code sees the record, so one such record on a
        governance topic (the command processor's credential may write there) stopped every
        processor at every start, for good: Kafka cannot delete one record in the middle of a
        partition (a red team). librdkafka hands headers over only when asked, and the follower
        never asks: such a record is folded, or counted undecodable, as any other."""
        return make_rdkafka_consumer(
            self._bootstrap,
            security=self._security,
            **{
                # As aiokafka read: records of a transaction left open are not held back.
                "isolation.level": "read_uncommitted",
                # Where a partition's end was reached (the catch-up's end, past any control
                # record, which is never delivered as a message).
                "enable.partition.eof": True,
                "statistics.interval.ms": STATS_INTERVAL_MS,
                "stats_cb": self._heard,
                **self._consumer_config,
            },
        )

    def _heard(self, raw: str) -> None:
        """librdkafka's statistics (served by the fetches): ``last_fetch`` becomes when the
        broker serving the followed partitions last sent this consumer anything (its fetches
        are answered within ``fetch.wait.max.ms`` while it is up): a record read from the
        consumer's local queue says nothing of the broker."""
        try:
            stats = json.loads(raw)
            idle = [
                broker["rxidle"]
                for broker in stats["brokers"].values()
                if broker.get("toppars") and broker.get("rxidle", -1) >= 0
            ]
            at = float(stats["time"])  # whole seconds: the answer is at most a second older
        except (ValueError, KeyError, TypeError, AttributeError):
            return
        if idle:
            heard = at - min(idle) / 1e6
            if self.last_fetch is None or heard > self.last_fetch:
                self.last_fetch = heard

    def _end_offsets(
        self, consumer: Any
    ) -> tuple[list[tuple[str, int]], dict[tuple[str, int], int]]:
        """The followed partitions, ``(topic, partition)``, and their end offsets now."""
        from confluent_kafka import TopicPartition

        parts = [
            (topic, partition)
            for topic in self._topics
            for partition in rdkafka_partitions(
                consumer, topic, bootstrap=self._bootstrap, wait=TOPIC_WAIT
            )
        ]
        return parts, {tp: rdkafka_end_offset(consumer, TopicPartition(*tp)) for tp in parts}

    def _by_partition(
        self, consumer: Any, messages: list[Any], reached: dict[tuple[str, int], int]
    ) -> list[tuple[str, list[Any]]]:
        """``messages`` (a fetch) as runs of one partition's records under its position key,
        each partition's next offset noted in ``reached``. A fatal consumer error is raised
        (the follower stops, and the processor with it); another is logged, thinned."""
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        fetched: list[tuple[str, list[Any]]] = []
        run: list[Any] = []
        topic, partition = None, None
        for message in messages:
            error = message.error()
            if error is None:
                if message.partition() != partition or message.topic() != topic:
                    topic, partition, run = message.topic(), message.partition(), []
                    fetched.append((position_key(topic, partition), run))
                run.append(message)
                continue
            code, offset = error.code(), message.offset()
            if code == KafkaError._PARTITION_EOF:
                where = (message.topic(), message.partition())
                reached[where] = max(reached.get(where, 0), offset)
            elif error.fatal():
                raise KafkaException(error)
            elif code == KafkaError._BAD_COMPRESSION and offset is not None and offset >= 0:
                # Fetched again for ever otherwise, and every event after it never folded: an
                # undecodable record, passed.
                at = f"{position_key(message.topic(), message.partition())}@{offset}"
                self._undecodable(at, error.str())
                # (No fetch is running: this is between two, on the event loop.)
                consumer.seek(TopicPartition(message.topic(), message.partition(), offset + 1))
            else:
                self._say(error)
        for _, records in fetched:
            last = records[-1]
            where = (last.topic(), last.partition())
            reached[where] = max(reached.get(where, 0), last.offset() + 1)
        return fetched

    def _undecodable(self, where: str, why: object) -> None:
        """Pass the governance record at ``where`` (``TOPIC/PARTITION@OFFSET``), which is no
        governance event this release reads: one ``LEDGER_GOVERNANCE_SKIP`` names is skipped
        as the operator judged it; any other is damaged (cut short, empty, not Avro, a batch
        that does not decompress), and counted where ``ledger ps`` names it until it is judged
        (a red team: a genuine GrantRevoked cut short was dropped, `ps` green)."""
        self.undecodable += 1
        if where in self._skip:
            log.warning(
                "governance record %s skipped, as LEDGER_GOVERNANCE_SKIP says (judged no "
                "release's): %s",
                where,
                why,
            )
            return
        self.damaged += 1
        if len(self.damaged_at) < 5:
            self.damaged_at.append(where)
        log.error("undecodable governance record %s: %s", where, why)

    def _say(self, error: Any) -> None:
        from confluent_kafka import KafkaError

        if error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
            return  # the group id librdkafka requires, never used: no role may use it
        now = time.monotonic()
        if now - self._said.get(error.code(), float("-inf")) >= SAID_EVERY:
            self._said[error.code()] = now
            log.warning("governance consumer: %s", error.str())

    async def _resume(
        self, consumer: Any, call: Callable[..., Any], end: dict[tuple[str, int], int]
    ) -> dict[tuple[str, int], int]:
        """Start from the snapshot file, if there is one and it checks out against the log:
        the state is set, and each partition's next offset to read returned (read from the
        beginning: any partition not returned)."""
        path = self._snapshot
        if path is None:
            return {}
        started = time.perf_counter()
        try:
            snapshot = read_snapshot(path, memory=self._memory, key=snapshot_key(self._security))
        except FileNotFoundError:
            log.info("no governance snapshot at %s yet: replaying the whole history", path)
            return {}
        except (SnapshotUnusable, OSError) as exc:
            log.warning(
                "governance snapshot %s not used (%s): replaying the whole history", path, exc
            )
            return {}
        by_key = {position_key(*tp): tp for tp in end}
        resumed: dict[tuple[str, int], int] = {}
        tails: dict[str, tuple[int, bytes | None]] = {}
        problem, wanted = None, {}
        for key, (offset, _) in snapshot.tails.items():
            tp = by_key.get(key)
            if tp is None:
                problem = f"it has {key}, which this ledger's governance topics do not"
            elif offset >= end[tp]:
                problem = f"{key} ends before offset {offset}, which it was taken after"
            else:
                wanted[tp] = offset
                continue
            break
        found = {} if problem else await self._records_at(consumer, call, wanted)
        for key, (offset, digest) in snapshot.tails.items():
            if problem:
                break
            tp = by_key[key]
            record = found[tp]
            if (
                record is not None
                and record.offset() == offset
                and record_digest(record.value()) == digest
            ):
                resumed[tp], tails[key] = offset + 1, (offset, record.value())
                continue
            problem = (
                f"the record at {key}@{offset} is not the one it was taken after "
                "(topics re-created, or another cluster?)"
            )
        if problem:
            log.warning(
                "governance snapshot %s not used (%s): replaying the whole history", path, problem
            )
            return {}
        if self._memory is not None:
            try:
                self._memory.restore(snapshot.memory)
            except ValueError as exc:
                log.warning(
                    "governance snapshot %s not used (its memory: %s): replaying the whole history",
                    path,
                    exc,
                )
                return {}
        self.state, self._tails, self.from_snapshot = snapshot.state, tails, snapshot.events
        self._on_disk = True
        if self._compile_deployed:
            compile_deployed(self.state, list(self.state.policies))
        log.info(
            "started from the governance snapshot written %s (%d events) in %.2f s: %s",
            snapshot.written_at,
            snapshot.events,
            time.perf_counter() - started,
            dict(self.state.position),
        )
        return resumed

    async def _records_at(
        self, consumer: Any, call: Callable[..., Any], wanted: dict[tuple[str, int], int]
    ) -> dict[tuple[str, int], Any]:
        """Each partition's first record at or after its offset in ``wanted`` (``None``: there
        is none before the partition's end). All are assigned at once: a fetch of one partition
        parked at its end would hold up the next partition's first fetch for as long as the
        broker parks it (``fetch.wait.max.ms``). Each wait is a call of its own, so a stop is
        not held up."""
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        assigned = [TopicPartition(*tp, offset) for tp, offset in wanted.items()]
        await asyncio.to_thread(call, consumer.assign, assigned)
        found: dict[tuple[str, int], Any] = {}
        while len(found) < len(wanted):
            for message in await asyncio.to_thread(call, _fetch, consumer):
                where = (message.topic(), message.partition())
                if where in found or where not in wanted:
                    continue
                error = message.error()
                if error is None:
                    found[where] = message
                elif error.code() == KafkaError._PARTITION_EOF:
                    found[where] = None
                elif error.fatal():
                    raise KafkaException(error)
                else:
                    self._say(error)
        return found

    def _start_snapshot(self, *, live: bool = False) -> None:
        """After a catch-up, or a live fetch: start writing the state to the snapshot file,
        when one is configured and enough was folded since the file's state to be worth it (see
        the class docstring), on a thread of its own; the follower goes on meanwhile. What is
        written is taken here, on the thread that changes it: the state (immutable), the tails
        and what the memory saves. A failure to write is logged: the next start replays more,
        nothing else."""
        path, state = self._snapshot, self.state
        if path is None or self._unsaved == 0:
            return
        if self.newer or self.damaged:
            # Past records a newer release wrote, or damaged ones, the state lacks them: a
            # snapshot would hide them from the next start, whose count `ledger ps` says (a
            # review).
            if not live:
                log.warning(
                    "governance snapshot not written: %d governance record(s) a newer release "
                    "wrote and %d damaged one(s) cannot be read by this one (`ledger ps`)",
                    self.newer,
                    self.damaged,
                )
            return
        if self._on_disk and self._unsaved < self._snapshot_after:
            return  # the one on disk is recent enough
        writer = self._snapshot_writer
        if writer is not None and writer.is_alive():
            return  # (a live fetch: the next one tries again)
        if self._local_unread:
            if not live:
                log.info(
                    "governance snapshot not written: events this process wrote are not read "
                    "back yet"
                )
            else:  # the next fetch tries again: they are usually read back by then
                self._held_for += 1
                if self._held_for == HELD_TOO_LONG:
                    log.warning(
                        "no governance snapshot written for %d fetches: %d event(s) this "
                        "process wrote never came back from the log (first: %s)",
                        self._held_for,
                        len(self._local_unread),
                        next(iter(self._local_unread)),
                    )
            return
        self._held_for = 0
        tails = {}
        for key, offset in state.position.items():
            at, value = self._tails.get(key, (None, None))
            if at != offset:  # cannot happen: both are set by _decode
                log.error("governance snapshot not written: no record kept for %s@%s", key, offset)
                return
            tails[key] = (offset, record_digest(value))
        memory = self._memory
        saved = None if memory is None else memory.saved()
        events = self.from_snapshot + self.applied
        # Counted as written even if the write fails: it is tried again after snapshot_after
        # more records, not at every fetch (a full disk would make each one try and fail).
        self._unsaved, self._on_disk = 0, True
        self._snapshot_writer = threading.Thread(
            target=self._write_snapshot,
            args=(path, state, tails, events, memory, saved, snapshot_key(self._security)),
            name="ledger-governance-snapshot",
            daemon=True,  # a stop does not wait for it: the file is replaced whole or not at all
        )
        self._snapshot_writer.start()

    def wait_for_snapshot(self, timeout: float | None = None) -> bool:
        """Wait until the snapshot being written, if any, is written (or has failed);
        ``False`` if it is still being written after ``timeout`` seconds. Blocking: for
        tests, benchmarks and tools, not the event loop."""
        writer = self._snapshot_writer
        if writer is not None:
            writer.join(timeout)
            return not writer.is_alive()
        return True

    @staticmethod
    def _write_snapshot(
        path: Path,
        state: LedgerState,
        tails: dict[str, tuple[int, str]],
        events: int,
        memory: SnapshotMemory | None,
        saved: Any,
        key: bytes | None,
    ) -> None:
        started = time.perf_counter()
        try:
            # One writer at a time: evaluator workers started together (after an upgrade, say)
            # would each spend seconds writing the same state.
            with held_exclusively(snapshot_lock(path)) as held:
                if not held:
                    log.info("governance snapshot not written: another worker is writing it")
                    return
                size = write_snapshot(
                    path,
                    state,
                    tails,
                    events=events,
                    memory=memory,
                    saved=saved,
                    key=key,
                )
        except OSError as exc:  # a full disk, a folder in its place: one line, not a traceback
            log.error(
                "could not write the governance snapshot %s (%s): the next start replays more",
                path,
                exc.strerror or exc,
            )
            return
        except Exception:  # a traceback, should it be a bug
            log.exception(
                "could not write the governance snapshot %s: the next start replays more", path
            )
            return
        log.info(
            "governance snapshot written to %s: %d events, %.1f MB in %.2f s",
            path,
            events,
            size / 1e6,
            time.perf_counter() - started,
        )
        for other in remove_other_snapshots(path, now=time.time()):
            log.info(
                "removed %s: a governance snapshot of other code, not written for a day", other
            )

    def _caught_up(self) -> None:
        if self._freeze:
            gc.freeze()  # a list splice, no pause; it also clears the youngest generation's count
            log.info(
                "caught-up state frozen out of the collector's scans: %d objects",
                gc.get_freeze_count(),
            )

    def apply_fetched(self, fetched: list[tuple[str, list[Any]]], *, more: bool = False) -> None:
        """Fold fetched records, each list under its position key, into the state; then
        publish it (:meth:`run` calls this with what it fetches).

        Many records (catching up at start) are folded with the core's :class:`Replay`: the same
        rules in bulk, several times faster than one ``fold`` per event. With ``more`` (catching
        up: more chunks follow), the records are fed to a replay that stays open, and nothing is
        published; the next call without ``more`` feeds its records too and publishes the
        replay's state, so a history fetched in bounded chunks is still folded in one pass. A
        live fetch, a few records, is folded one event at a time: ``fold`` builds the records it
        touches, where a replay would leave drafts for the request path to build on first read.
        """
        count = sum(len(records) for _, records in fetched)
        bulk = more or self._replay is not None or count >= BULK_FOLD
        # In bulk, decoding pauses the cyclic collector as replay does: thousands of new
        # acyclic events would otherwise set off its full scans of the whole state.
        try:
            with collector_paused(bulk):
                events = self._decode(fetched)
                if bulk:
                    replay = self._replay or Replay(self.state)
                    replay.feed(events)
                    self._replay = replay
                else:
                    state = self.state
                    for event in events:
                        state = fold(state, event)
        except BaseException:  # nothing of this catch-up is published, nor held on to
            self._replay, self._positions, self._touched = None, {}, set()
            raise
        self.applied += len(events)
        self._unsaved += len(events)
        if self._on_event is not None:
            for event in events:
                self._on_event(event)
        if self._compile_deployed:
            self._touched.update(
                aggregate_of(e) for e in events if isinstance(e, POLICY_EVENT_TYPES)
            )
        if more:
            return
        # Taken before the work that could fail: nothing of it lingers for the next call.
        caught_up, positions, touched = self._replay, self._positions, self._touched
        self._replay, self._positions, self._touched = None, {}, set()
        if caught_up is not None:
            state = caught_up.result()
        elif not events:
            if not positions and self.state.unreadable == self._unreadable:
                return
            state = self.state  # only records it could not read: published as lacking them
        state = with_unreadable(with_positions(state, positions), self._unreadable)
        if touched:
            # Before the state is published: the first request a new version decides does not
            # wait for it to compile.
            compile_deployed(state, sorted(touched))
        self.state = state

    def unread_aggregates(self, limit: int = 10) -> list[str]:
        """The aggregates with a record this follower could not read (a newer release's), in
        words, at most ``limit`` (and how many more), for ``ledger ps``."""
        shown = [unread_words(kind, name) for kind, name in sorted(self._unreadable)]
        more = len(shown) - limit
        return shown[:limit] + ([f"{more} more"] if more > 0 else [])

    def _aggregate(self, record: Any) -> tuple[str, str]:
        """The aggregate a governance record is of, ``(kind, name)``, from its topic and key
        (:func:`~ledger.core.state.unread_aggregate`)."""
        return unread_aggregate(
            POLICY if record.topic() == self._topics[0] else PRINCIPAL, record.key()
        )

    def _decode(self, fetched: list[tuple[str, list[Any]]]) -> list[GovernanceEvent]:
        """The governance events of ``fetched`` (librdkafka messages, or anything with their
        ``value()`` and ``offset()``; undecodable records counted, logged and skipped), noting
        each position key's last decoded offset to publish with them."""
        events: list[GovernanceEvent] = []
        positions, tails = self._positions, self._tails
        decode, codec = decode_governance, self._codec
        marked: set[tuple[str, str]] = set()
        for key, records in fetched:
            last = None
            for record in records:
                try:
                    events.append(decode(codec, record.value()))
                except CodecError as exc:
                    where = f"{key}@{record.offset()}"
                    if where in self._skip or not isinstance(exc, UnknownSchemaError):
                        self._undecodable(where, exc)
                        continue
                    self.undecodable += 1
                    self.newer += 1
                    aggregate = self._aggregate(record)
                    # Marked, not cited: a decision's position names only records folded (a
                    # review: one citing it did not reproduce with this release's reader).
                    marked.add(aggregate)
                    log.error(
                        "governance record %s@%s of %s is of a schema this release does not "
                        "know (a newer release's?): nothing it could change is decided or "
                        "changed until the newer release runs: %s",
                        key,
                        record.offset(),
                        unread_words(*aggregate),
                        exc,
                    )
                    continue
                last = record
            if last is not None:
                positions[key] = last.offset()
                tails[key] = (last.offset(), last.value())
        if marked - self._unreadable:  # once a fetch: a set rebuilt per record grew as n²
            self._unreadable = self._unreadable | marked

        unread = self._local_unread
        if unread:
            for event in events:
                if unread.get(event.event_id) == event:
                    del unread[event.event_id]
        if self._snapshot is not None and self.ready.is_set():  # live: a few records a fetch
            recent = self._recent_reads
            for event in events:
                recent[event.event_id] = None
            while len(recent) > RECENT_READS:  # the oldest out, O(1) (a dict's first key
                recent.popitem(last=False)  # is found by scanning past those deleted before)
        return events


def _fetch(consumer: Any) -> list[Any]:
    """What has arrived, up to :data:`FETCH_MAX` records, else the first within
    :data:`FETCH_WAIT` (:func:`~ledger.kafka.reading.fetch_arrived`)."""
    return fetch_arrived(consumer, FETCH_MAX, FETCH_WAIT)
