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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import faust

from ledger.codec import Codec
from ledger.core.events import GovernanceEvent
from ledger.core.state import EMPTY_STATE, LedgerState, fold, with_position
from ledger.errors import CodecError
from ledger.kafka_io import position_key
from ledger.settings import Settings

__all__ = ["create_faust_app", "GovernanceFollower", "ProcessorStats", "send_or_die"]

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
    datadir = settings.home / "faust" / name
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


DELIVERY_FAILED_EXIT = 70


def _die_on_failure(future: asyncio.Future[Any]) -> None:
    if future.cancelled() or future.exception() is None:
        return
    log.critical(
        "output could not be written, stopping before any offset is committed: %r",
        future.exception(),
    )
    # A hard exit, not a Faust crash: no commit may follow a lost output. The input is
    # re-delivered on restart and request/command ids make that idempotent.
    os._exit(DELIVERY_FAILED_EXIT)


async def send_or_die(producer: Any, topic: str, key: bytes, value: bytes) -> asyncio.Future[Any]:
    """Send through the app's producer; if the broker finally refuses the record, exit at once.

    Faust flushes the producer before committing input offsets but does not raise when a send
    failed, so without this an input could be committed while its output was lost.
    """
    future: asyncio.Future[Any] = await producer.send(topic, key, value, None, None, None)
    future.add_done_callback(_die_on_failure)
    return future


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
            if not pending:
                self.ready.set()
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=5000)
                fetched_ms = max(consumer.last_poll_timestamp(tp) or 0 for tp in parts)
                self.last_fetch = fetched_ms / 1000 if fetched_ms else None
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
