"""What the Faust processors share: the app factory and the governance follower.

Governance state is not kept in a Faust table. Every worker follows the (single-partition)
policy and grant topics itself with a group-less consumer and folds them with the core's pure
``fold``, so each worker sees every governance event (Faust's GlobalTable has open bugs across
several workers) and the state is exactly what replay computes. A worker answers nothing until
its follower has caught up with the end offsets seen at start: never from partial state.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import faust
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from ledger.codec import Codec
from ledger.core.events import GovernanceEvent
from ledger.core.limits import DEFAULT_LIMITS, Limits
from ledger.core.state import EMPTY_STATE, LedgerState, fold, with_position
from ledger.errors import CodecError
from ledger.kafka_io import position_key
from ledger.settings import Settings

__all__ = [
    "create_faust_app",
    "GovernanceFollower",
    "ProcessorStats",
    "Output",
    "OutputLimit",
    "send_or_die",
    "send_all",
    "die",
    "state_dir",
    "DELIVERY_FAILED_EXIT",
    "HANDLING_FAILED_EXIT",
]

log = logging.getLogger("ledger.processors")


def create_faust_app(
    settings: Settings, *, app_id: str, bootstrap: str, **overrides: Any
) -> faust.App:
    """A Faust app tuned for the decision path (DESIGN §11).

    At-least-once (not exactly-once: Faust's transactions only make output visible at commit,
    every few seconds, which would break the synchronous budget); idempotence comes from request
    and command ids instead. Faust flushes its producer before committing offsets, so an input
    offset is committed only after the output it caused is durably written.
    """
    name = f"{settings.topics.prefix}{app_id}"
    datadir = state_dir(settings, app_id)
    datadir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level itself
    conf: dict[str, Any] = {
        "broker": f"kafka://{bootstrap}",
        # Faust's default data dir is "<app>-data" in the working directory: keep it with the
        # rest of the stack's state instead of littering wherever the worker was started.
        "datadir": str(datadir),
        "value_serializer": "raw",
        "key_serializer": "raw",
        "producer_linger_ms": 0,
        "producer_acks": -1,
        "processing_guarantee": "at_least_once",
        "topic_allow_declare": False,  # topics are created by `ledger topics create`
        "topic_disable_leader": True,
        "web_enabled": False,
        "consumer_auto_offset_reset": "earliest",
        "broker_commit_interval": 0.5,
        # A worker that dies without leaving its group (SIGKILL, OOM, power loss) holds its
        # partitions until the broker stops hearing from it; Faust's default of 60 s leaves
        # those requests unanswered for a minute after a crash-restart. 10 s (heartbeat 1 s)
        # bounds that outage while tolerating ordinary GC/scheduling pauses.
        "broker_session_timeout": 10.0,
        "broker_heartbeat_interval": 1.0,
        "store": "memory://",
        "table_standby_replicas": 0,
    }
    conf.update(overrides)
    return faust.App(name, **conf)


def state_dir(settings: Settings, app_id: str) -> Path:
    """The app's own directory under ``$LEDGER_HOME/faust`` (Faust data, in-flight markers)."""
    return settings.home / "faust" / f"{settings.topics.prefix}{app_id}"


Output = tuple[str, bytes, bytes]
"""One record to write: (topic, key, value)."""


# A batch of one header-less record adds its 61-byte batch header and at most ~32 bytes of
# record framing (varint lengths, attributes, deltas) to the key and value.
_FRAMING_BOUND = 128


@dataclass(frozen=True, slots=True)
class OutputLimit:
    """The largest record a processor may write, and the check against it.

    The smaller of the ledger's record limit and the producer's ``max_request_size`` (which the
    producer enforces by raising from ``send`` itself), measured as the producer measures a
    record: key, value and the record batch's framing.
    """

    max_bytes: int

    @classmethod
    def for_app(cls, app: faust.App, limits: Limits = DEFAULT_LIMITS) -> OutputLimit:
        return cls(min(limits.record_bytes, int(app.conf.producer_max_request_size)))

    def size(self, key: bytes | None, value: bytes | None) -> int:
        return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, []))

    def fits(self, key: bytes | None, value: bytes | None) -> bool:
        raw = (len(key) if key else 0) + (len(value) if value else 0)
        if raw + _FRAMING_BOUND <= self.max_bytes:  # the common case, without the estimate
            return True
        return self.size(key, value) <= self.max_bytes


DELIVERY_FAILED_EXIT = 70
HANDLING_FAILED_EXIT = 71


def die(exit_code: int, message: str, *args: Any) -> NoReturn:
    """Stop the process at once, before any offset can be committed.

    A hard exit, not a Faust crash: when Faust sees an agent raise, it acknowledges the events
    it was handling and commits past them. Whatever input had no written outcome is re-delivered
    on restart; request and command ids make that idempotent.
    """
    log.critical(message, *args, exc_info=sys.exc_info()[0] is not None)
    os._exit(exit_code)


def _die_on_failure(future: asyncio.Future[Any]) -> None:
    if future.cancelled() or future.exception() is None:
        return
    die(
        DELIVERY_FAILED_EXIT,
        "output could not be written, stopping before any offset is committed: %r",
        future.exception(),
    )


async def send_or_die(producer: Any, topic: str, key: bytes, value: bytes) -> asyncio.Future[Any]:
    """Send through the app's producer; if the record is refused, now or later, exit at once.

    Faust flushes the producer before committing input offsets but does not raise when a send
    failed, so without this an input could be committed while its output was lost. A refusal can
    also come from ``send`` itself (a record over ``max_request_size`` raises there, before any
    future exists): that exits too, instead of propagating into the agent, where Faust would
    acknowledge the input and commit past it.
    """
    try:
        future: asyncio.Future[Any] = await producer.send(topic, key, value, None, None, None)
    except Exception as exc:  # every refusal is fatal here, whatever its type
        die(DELIVERY_FAILED_EXIT, "output to %s was refused, stopping before any commit: %r",
            topic, exc)  # fmt: skip
    future.add_done_callback(_die_on_failure)
    return future


async def send_all(producer: Any, outputs: list[Output]) -> None:
    """Send ``outputs`` in order with :func:`send_or_die`; never leave some of them unsent.

    Stopping the worker cancels its agent, possibly between two sends of one input's outputs;
    Faust would then acknowledge the input and commit past it with the rest unwritten. So a
    cancellation before every output is queued stops the process instead (the input is
    re-delivered on restart, and ids make that idempotent).
    """
    queued = 0
    try:
        for topic, key, value in outputs:
            await send_or_die(producer, topic, key, value)
            queued += 1
    except asyncio.CancelledError:
        if queued < len(outputs):
            die(HANDLING_FAILED_EXIT, "stopped with %d of %d outputs unsent: exiting uncommitted",
                len(outputs) - queued, len(outputs))  # fmt: skip
        raise


@dataclass
class ProcessorStats:
    """Counters a processor logs periodically (and tests read)."""

    processed: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    governance_events: int = 0
    undecodable_governance: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class GovernanceFollower:
    """Follows policy and grant events into a :class:`LedgerState` (see module docstring)."""

    def __init__(
        self,
        *,
        bootstrap: str,
        settings: Settings,
        codec: Codec,
        stats: ProcessorStats,
        on_event: Callable[[GovernanceEvent], None] | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._topics = (settings.topics.policy_events, settings.topics.grant_events)
        self._codec = codec
        self._stats = stats
        self._on_event = on_event
        self.state: LedgerState = EMPTY_STATE
        self.ready = asyncio.Event()
        #: Unix time of the last fetch response from the broker (health, `ledger ps`).
        self.last_fetch: float | None = None

    def apply_local(self, event: GovernanceEvent) -> None:
        """Apply an event this process just wrote, before it comes back from the log.

        The same event read later from the topic is a no-op for ``fold`` (its sequence is
        already applied) and only advances the position.
        """
        self.state = fold(self.state, event)
        if self._on_event is not None:
            self._on_event(event)

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
            fetch_min_bytes=1,
        )
        await consumer.start()
        try:
            parts: list[TopicPartition] = []
            for topic in self._topics:
                found: set[int] | None = None
                for _ in range(100):
                    await consumer._client.force_metadata_update()
                    found = consumer.partitions_for_topic(topic)
                    if found:
                        break
                    await asyncio.sleep(0.1)
                if not found:
                    raise RuntimeError(f"topic {topic} does not exist: run `ledger topics create`")
                parts.extend(TopicPartition(topic, p) for p in sorted(found))
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            end = await consumer.end_offsets(parts)
            pending = {tp for tp in parts if end[tp] > 0}
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=5000)
                fetched_ms = max(consumer.last_poll_timestamp(tp) or 0 for tp in parts)
                self.last_fetch = fetched_ms / 1000 if fetched_ms else None
                if not pending and not self.ready.is_set():
                    # Empty governance topics: ready after the first fetch, so whoever waits
                    # for readiness also finds proof of a live broker (the heartbeat does).
                    self.ready.set()
                for tp, records in batches.items():
                    state = self.state
                    key = position_key(tp.topic, tp.partition)
                    for record in records:
                        try:
                            event = self._codec.decode(record.value)
                        except CodecError as exc:
                            self._stats.undecodable_governance += 1
                            log.error(
                                "undecodable governance record %s@%s: %s", key, record.offset, exc
                            )
                            continue
                        state = fold(state, event)  # type: ignore[arg-type]
                        state = with_position(state, key, record.offset)
                        self._stats.governance_events += 1
                        if self._on_event is not None:
                            self._on_event(event)  # type: ignore[arg-type]
                    self.state = state
                if pending:
                    for tp in list(pending):
                        if await consumer.position(tp) >= end[tp]:
                            pending.discard(tp)
                    if not pending:
                        log.info("governance state caught up: %s", dict(self.state.position))
                        self.ready.set()
        finally:
            await consumer.stop()
