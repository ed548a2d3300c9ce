"""The command processor's input and output on Kafka, with librdkafka (DESIGN §7).

``ledger.commands`` is read by a librdkafka consumer in the command processor's group, one
command at a time, in order, on the event loop (where the governance state changes), and the
processor's records are written by a librdkafka producer, each awaited to its acknowledgement.
Not Faust's aiokafka consumer: aiokafka parses every header of a fetched record as UTF-8 and
raises on a key that is not, before any ledger code sees the record, so one such record, which
anyone holding the ``governance`` credential could write, crashed the processor at every start
and no command after it was answered, emergency rollbacks included (a red team). librdkafka
hands headers over only when asked: such a record reaches the handler and is decided, or
dead-lettered, like any other.

Per command: decided against the follower's state; its governance events written and
acknowledged (``acks=all``) before its answer is sent, since the answer must never precede the
events. Per fetch: once every answer and dead letter is acknowledged, the offsets committed. An output the broker refuses
stops the process before that commit. A command handled again (a crash, or a stop, after its
events or its answer were written but before the commit) is answered again from what was
written: command ids make that idempotent. The consumer is a member of the processor's group,
so a second command processor started by mistake holds nothing while the first runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Final

from ledger.core.events import GovernanceEvent
from ledger.core.state import LedgerState
from ledger.kafka.clients import access_denied, make_rdkafka_consumer
from ledger.kafka.groups import static_instance_id
from ledger.kafka.reading import fetch_arrived
from ledger.settings import Settings
from processors.command_handler import CommandHandler
from processors.common import DELIVERY_FAILED_EXIT, HANDLING_FAILED_EXIT, die
from processors.outputs import Output
from processors.request_loop import Record

__all__ = ["CommandLoop", "Outbox", "FETCH_WAIT", "MAX_FETCH", "GIVE_UP_AFTER", "PROBE_EVERY"]

log = logging.getLogger("ledger.command-processor")

FETCH_WAIT = 0.5
"""Seconds one fetch of commands waits when there is none (a command ends the wait at once)."""
MAX_FETCH = 500
"""Commands fetched at a time; each is decided, in order, before the next, and the fetch's
offsets committed once all their outputs are acknowledged."""
_FLUSH_STEP = 0.5
"""Seconds of each wait for acknowledgements, so that a stop is not held up by one."""
_CLOSE_WAIT = 5.0
"""Seconds a stopping processor waits for its consumer to leave the group."""
GIVE_UP_AFTER = 30.0
"""Seconds of Kafka refusing the commands (ACLs, credential, topic gone) after which the
command processor stops, saying why."""
_SPELL_GAP = 120.0
"""Seconds without a refusal after which the next one starts a new spell (librdkafka repeats a
refusal as it refreshes its metadata, every 30 s here)."""
_SAID_EVERY = 30.0
"""Seconds between two log lines about the same consumer error."""
PROBE_EVERY = 5.0
"""Seconds between two probes of the commands topic while Kafka refuses it: librdkafka says a
refusal once and retries in silence, so a refusal that lasts tells nothing more by itself (an
operator's drill: with its READ ACL removed, the processor logged one line and looked healthy
for four minutes)."""
_PROBE_WAIT = 2.0
"""Seconds a probe waits for Kafka's word (a record, the topic's end, or a refusal)."""


def _gone_codes() -> frozenset[int]:
    from confluent_kafka import KafkaError

    return frozenset(
        {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION}
    )


_GONE: Final = _gone_codes()
"""Kafka's words for a commands topic that is not there: a refusal too (see ``_refused``)."""


class Outbox:
    """The processor's librdkafka producer, made when first used: :meth:`send` queues a record,
    :meth:`acknowledged` returns once every record queued is acknowledged by the broker, and
    stops the process at once when one was refused (nothing may be committed past it)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._producer: Any = None
        self._failure: Any = None

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        if self._producer is None:
            self._producer = self._make()
        try:
            self._producer.produce(topic, value=value, key=key, on_delivery=self._delivered)
        except Exception as exc:  # too large, unknown topic, a full queue: every refusal is fatal
            die(
                DELIVERY_FAILED_EXIT,
                "output to %s was refused, stopping before any offset is committed: %r",
                topic,
                exc,
            )

    def send_all(self, outputs: list[Output]) -> None:
        for topic, key, value in outputs:
            self.send(topic, key, value)

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None and self._failure is None:
            self._failure = error

    async def acknowledged(self) -> None:
        producer = self._producer
        if producer is not None:
            while await asyncio.to_thread(producer.flush, _FLUSH_STEP):
                pass
        if self._failure is not None:
            die(
                DELIVERY_FAILED_EXIT,
                "output could not be written, stopping before any offset is committed: %s",
                self._failure,
            )

    def poll(self) -> None:
        """Serve the producer's queued callbacks, its log lines among them: unpolled while no
        command came, librdkafka's lines of a broker's restart came out minutes later, stamped
        then, and read at 3 a.m. as a fresh failure (an operator's drill)."""
        if self._producer is not None:
            self._producer.poll(0)

    def close(self) -> None:
        """Deliver what is queued, for a few seconds at most (called when the processor stops:
        what is not delivered is handled again at the next start)."""
        if self._producer is not None:
            self._producer.flush(5)


def consumer_config(settings: Settings, group_id: str) -> dict[str, Any]:
    """The commands consumer's group settings. A static member of its group
    (``group.instance.id``: this host and ledger home): a command processor killed (SIGKILL,
    OOM) and started again takes its partition back at once, where a new member waited out
    the dead one's 10 s session, and every command sent meanwhile with it; the CLI's default
    10 s wait ran out on the first command after `ledger up` (a review of concurrent
    governance: 9.9-10.4 s from the kill to the first answer). A second command processor on
    the same host and home (by hand: `ledger up` starts one) fences the first, which stops
    with Kafka's fatal error; one elsewhere waits as a member of the group, as before."""
    return {
        "group.id": group_id,
        "client.id": group_id,
        "group.instance.id": static_instance_id(settings, group_id),
        # A processor that dies without leaving the group, and is not started again here,
        # holds the commands for at most 10 s (as Faust's consumer had it).
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
    }


class CommandLoop:
    """Reads ``ledger.commands`` and answers each command in turn (see the module docstring).

    ``state()`` is the governance state to decide against, ``apply(event)`` applies an event
    the processor has written (the follower's ``apply_local``), and ``ready()`` returns once the
    processor may answer (its state complete, its trust anchors recorded, its recent answers
    read back): nothing is fetched before.
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        settings: Settings,
        group_id: str,
        handler: CommandHandler,
        outbox: Outbox,
        state: Callable[[], LedgerState],
        apply: Callable[[GovernanceEvent], None],
    ) -> None:
        self._bootstrap = bootstrap
        self._settings = settings
        self._group_id = group_id
        self._handler = handler
        self._outbox = outbox
        self._state = state
        self._apply = apply
        self._said: dict[int, float] = {}  # consumer error code -> when last logged
        self._refusing: tuple[float, float] | None = None  # Kafka's refusals: first, last
        self._probed_at = 0.0  # when the refused commands topic was last probed (monotonic)
        self._io: Executor | None = None  # the consumer's one thread, while run() runs

    async def run(self, ready: Callable[[], Any]) -> None:
        await ready()
        consumer = make_rdkafka_consumer(
            self._bootstrap,
            security=self._settings.security,
            **consumer_config(self._settings, self._group_id),
        )
        # One thread makes every call on the consumer, its close too: a stop that cancels this
        # task while a fetch waits in librdkafka must not close the consumer under that fetch.
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-commands")
        loop = asyncio.get_running_loop()
        try:
            consumer.subscribe([self._settings.topics.commands])
            while True:
                messages = await loop.run_in_executor(self._io, self._fetch, consumer)
                if messages:
                    await self._take(consumer, messages)
                self._outbox.poll()
                if self._refusing is not None:
                    await self._probe_refusal(loop)
        finally:
            # After any fetch. A static member does not leave its group: its successor of the
            # same identity (a restart here) takes its place at once; another waits out the
            # session (consumer_config).
            with contextlib.suppress(Exception):
                self._io.submit(consumer.close).result(timeout=_CLOSE_WAIT)
            self._io.shutdown(wait=False)
            self._outbox.close()

    @staticmethod
    def _fetch(consumer: Any) -> list[Any]:
        """What has arrived, up to :data:`MAX_FETCH`; when nothing has, the first record within
        :data:`FETCH_WAIT` (``consume`` would wait for all it asks for: a lone command, an
        emergency rollback say, would wait the whole time)."""
        return fetch_arrived(consumer, MAX_FETCH, FETCH_WAIT)

    async def _take(self, consumer: Any, messages: list[Any]) -> None:
        """Answer ``messages`` in order, then commit past the last once every output is
        acknowledged (one wait and one commit per fetch: a flood of garbage records, each a
        dead letter, drains at thousands a second, and the command behind it waits that long)."""
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        last = None
        for message in messages:
            error = message.error()
            if error is None:
                self._refusing = None  # read: whatever refused before does no longer
                record = Record(
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    message.key(),
                    message.value(),
                )
                await self._answer(record)
            elif error.fatal() or error.code() == KafkaError._FATAL:
                # The consumer is unusable, its partition held by no one here: stop, so the
                # operator hears of it (`ps`), not go on healthy and answering nothing (a static
                # member fenced by another with its identity came as _FATAL, not fatal()).
                raise KafkaException(error)
            elif error.code() == KafkaError._BAD_COMPRESSION and (
                message.offset() is not None and message.offset() >= 0
            ):
                # Fetched again for ever otherwise, every command after it unanswered.
                topic, partition, offset = message.topic(), message.partition(), message.offset()
                self._outbox.send_all([self._handler.letters.undecompressible(message, error)])
                consumer.seek(TopicPartition(topic, partition, offset + 1))
            else:
                self._say(error)
                self._refused(error)
                continue
            last = message
        if last is not None:
            await self._outbox.acknowledged()
            await asyncio.get_running_loop().run_in_executor(self._io, self._commit, consumer, last)

    async def _answer(self, record: Record) -> None:
        """Decide ``record`` and queue its answer; its events, if any, are written and
        acknowledged first, and applied to the state the next command is decided against."""
        step = self._handler.handle(self._state(), record)
        if step.events:
            for _, (topic, key, value) in step.events:
                self._outbox.send(topic, key, value)
            await self._outbox.acknowledged()  # the events, before any answer
            for event, _ in step.events:
                self._apply(event)
        self._outbox.send_all(step.outputs)

    @staticmethod
    def _commit(consumer: Any, message: Any) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        done = TopicPartition(message.topic(), message.partition(), message.offset() + 1)
        try:
            consumer.commit(offsets=[done], asynchronous=False)
        except KafkaException as exc:  # the group moved on: whoever reads it next answers it
            log.warning(
                "could not commit %s[%s] up to %s (%s): the commands from there are answered "
                "again, the same, by whoever reads them next",
                done.topic,
                done.partition,
                done.offset,
                exc,
            )

    def _refused(self, error: Any) -> None:
        """Stop the process when Kafka has refused the commands for :data:`GIVE_UP_AFTER`
        seconds (the ACLs, the credential, the topic gone), with the refusal as its last log
        line: `ledger ps` then says it ended on that error. Running on, it looked healthy (its
        follower was) while no command was answered (a review: Faust's consumer had crashed on
        it, which at least said so)."""

        denied = access_denied(error, self._settings.security, self._bootstrap)
        if denied is None and error.code() not in _GONE:
            return
        now = time.monotonic()
        first, last = self._refusing or (now, now)
        if now - last > _SPELL_GAP:  # an earlier spell of them, long over: a new one
            first = now
        self._refusing = (first, now)
        if now - first >= GIVE_UP_AFTER:
            die(
                HANDLING_FAILED_EXIT,
                "cannot read %s for %.0f s, so no command is answered: %s (fix the ACLs or "
                "credential, or `ledger topics create --acls` as an admin, then `ledger up`)",
                self._settings.topics.commands,
                now - first,
                denied or error.str(),
            )

    async def _probe_refusal(self, loop: asyncio.AbstractEventLoop) -> None:
        """While a refusal spell is open: every :data:`PROBE_EVERY` seconds, read the commands
        topic once more with a consumer of its own (:meth:`_probe`). A refusal again carries the
        spell on (stopping the process once it lasts :data:`GIVE_UP_AFTER`); a read closes it."""
        spell, now = self._refusing, time.monotonic()
        if spell is None or now - max(spell[1], self._probed_at) < PROBE_EVERY:
            return
        # Paced apart from the spell (a review: a probe with no answer, a broker away, counted
        # as a refusal kept a spell open through a 10-minute outage, and one refusal after it
        # stopped the processor as refused for 600 s).
        self._probed_at = now
        answer = await loop.run_in_executor(self._io, self._probe)
        if answer is True:
            self._refusing = None
            log.info("command consumer: %s can be read again", self._settings.topics.commands)
        elif answer is False:
            # No word (a broker away): the refusal is not known to go on, so a spell counts
            # afresh from the next one (a review: a minute's broker restart between two
            # refusals read as "refused for 90 s" and stopped the processor).
            self._refusing = (now, now)
        else:
            self._refused(answer)

    def _probe(self) -> Any:
        """One read of the commands topic's end by a consumer that joins no group: ``True``
        when Kafka answered it (the end reached, or a record), the error when Kafka refused,
        ``False`` when nothing was said within :data:`_PROBE_WAIT` (a broker away: no word on
        the refusal either way)."""
        from confluent_kafka import OFFSET_END, KafkaError, KafkaException, TopicPartition

        try:
            probe = make_rdkafka_consumer(
                self._bootstrap,
                security=self._settings.security,
                group_id=self._group_id,  # not subscribed: it reads, joins nothing, commits nothing
                **{"enable.partition.eof": True},
            )
        except Exception:  # Kafka not reachable: no word on the refusal
            return False
        topic = self._settings.topics.commands
        try:
            # Its metadata first: without READ (which implies DESCRIBE) the topic is refused
            # there, and an assigned partition of it would wait in silence.
            described = probe.list_topics(topic, timeout=_PROBE_WAIT).topics.get(topic)
            if described is not None and described.error is not None:
                return described.error if self._refusal(described.error) else False
            probe.assign([TopicPartition(topic, 0, OFFSET_END)])
            deadline = time.monotonic() + _PROBE_WAIT
            while (left := deadline - time.monotonic()) > 0:
                message = probe.poll(min(left, 0.5))
                if message is None:
                    continue
                error = message.error()
                if error is None or error.code() == KafkaError._PARTITION_EOF:
                    # Read; and the group's commits too (a review: a refusal of the group, not
                    # the topic, read as over once the topic could be read).
                    try:
                        probe.committed([TopicPartition(topic, 0)], timeout=_PROBE_WAIT)
                    except KafkaException as exc:
                        refused = exc.args[0] if exc.args else None
                        if refused is not None and self._refusal(refused):
                            return refused
                        return False
                    return True
                if error.fatal() or self._refusal(error):
                    return error
            return False
        except Exception:  # the broker away, the metadata not answered: no word either way
            return False
        finally:
            with contextlib.suppress(Exception):
                probe.close()

    def _refusal(self, error: Any) -> bool:
        """Is ``error`` Kafka refusing the commands topic (an ACL, the credential, no topic)?"""
        denied = access_denied(error, self._settings.security, self._bootstrap)
        return denied is not None or error.code() in _GONE

    def _say(self, error: Any) -> None:
        now = time.monotonic()
        if now - self._said.get(error.code(), float("-inf")) >= _SAID_EVERY:
            self._said[error.code()] = now
            log.warning("command consumer: %s", error.str())
