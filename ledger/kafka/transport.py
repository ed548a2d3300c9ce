"""The SDK's Kafka transport: requests and commands out, their replies back, by record key.

:class:`KafkaTransport` implements :class:`ledger.client.Transport` over librdkafka
(``confluent-kafka``; measured several times faster than kafka-python on this request/reply
path, see the README): one producer publishes requests (to the evaluation-requests topic, keyed
by resource) and commands (to the commands topic, keyed by aggregate); one listener thread reads
the replies from their end and completes each waiting future by record key, before decoding
anything else.

Each transport picks one **reply partition** of the decisions and corrections topics and names
it in every request it sends (``reply_partition``); the evaluator writes the decision (and any
correction) there, so the listener reads that one partition of each — a client does not read
every decision of the ledger to find its own. Command results (one partition, low volume) are
read whole.

Request ids are chosen by senders: anyone holding the agent credential (who reads every
decision, so learns the ids) can send a copy of a request under its id, asking something else,
and the evaluator that decides the copy first takes the genuine request for a repeat. So a reply
is taken only if it answers what was asked, as the core says
(:func:`ledger.core.answering.answers_request`, :func:`~ledger.core.answering.answers_batch`),
compared with the request as its evaluator reads it (the record sent, decoded, on the caller's
thread). A waiting call's decision for another request under its id is ignored (logged once per
id) and the call waits for its own answer; if none comes, its timeout says that decisions for
another request under its id were read.

An asynchronous request's correction is bound to the request's decision: the first decision
recorded for the request id that answers what was asked settles it. When it agrees with the
default, nothing more is delivered; otherwise only the correction the core derives from it
(:func:`ledger.core.evaluate.correction_for`: same decision, default and determination) is. A
second decision under the id is recorded (the audit query ``requests_decided_twice`` lists
them) but never reaches the client that asked. A waiting call blocks on its future, which the
listener completes the moment the record arrives: no polling interval on the way.

A listener that stops on an error (its consumer failed or was closed under it, the reply topics
were deleted) never turns into a hang:

- every pending call fails at once with :class:`~ledger.errors.ClientClosed` carrying the cause;
- the next call (:meth:`KafkaTransport.check`) tries once to start a new listener, which resumes
  the reply topics where the old one stopped (so no correction is lost across the restart), and
  raises :class:`~ledger.errors.ClientClosed` with the cause when it cannot; every later call
  tries again;
- a closed transport raises :class:`~ledger.errors.ClientClosed` at once.

May import what the Kafka wing may (see :mod:`ledger.kafka`); never :mod:`ledger.client`, whose
``LedgerClient`` picks this transport by default.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Final

from ledger.codec import Codec, default_codec
from ledger.core.answering import answers_batch, answers_request
from ledger.core.evaluate import correction_for
from ledger.core.events import (
    BatchDecisionRecorded,
    BatchEvaluationRequested,
    Command,
    CommandAccepted,
    CommandRejected,
    DecisionCorrected,
    DecisionRecorded,
    Determination,
    EvaluationRequested,
)
from ledger.core.lifecycle import command_aggregate
from ledger.core.limits import DEFAULT_LIMITS, Limits, record_fits
from ledger.core.text import clipped
from ledger.errors import ClientClosed, CodecError, KafkaUnavailable, TopicMissing, UsageError
from ledger.kafka.clients import make_rdkafka_consumer, make_rdkafka_producer
from ledger.kafka.reading import (
    position_key,
    rdkafka_end_offset,
    rdkafka_partitions,
)
from ledger.settings import KafkaSecurity, TopicNames

__all__ = ["KafkaTransport", "LISTENER_THREAD", "LISTENER_CONFIG"]

log = logging.getLogger("ledger.client")

LISTENER_THREAD = "ledger-client-listener"
"""The name of the listener thread (``on_correction`` hooks run on it)."""
WATCH_MOST = 250_000
"""Asynchronous requests a client watches for a correction at most (the oldest are let go)."""
WATCH_FOR = 24 * 3600.0
"""Seconds a client watches an asynchronous request for its correction."""
EARLY_MOST = 4
"""Corrections of one watched request read before its decision that are held until it comes
(the decision and its correction are on two topics, read side by side)."""

LISTENER_CONFIG: dict[str, Any] = {
    # A fetch is answered the moment a reply is written; the wait only bounds how long an idle
    # fetch is parked, so a long one costs no latency and spares the broker idle requests.
    "fetch.wait.max.ms": 500,
    # Each record's CRC checked (librdkafka's default is not to): a relay that flips a byte of
    # a reply without mending its CRC is caught (a red team's relay flipped deny to allow; the
    # broker's own port check stops the relay, this the careless one).
    "check.crcs": True,
}
"""librdkafka settings of the reply listener, on top of the ledger's consumer defaults."""

_WAIT = 0.2  # seconds the listener blocks for a record before it looks at its stop flag

POSITION_WAIT: Final = 5.0
"""Seconds :meth:`KafkaTransport.governance_position` waits for Kafka's answers in all."""


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _ListenerConsumer:
    """The listener's librdkafka consumer, closed only by the thread that polls it.

    librdkafka must not be closed while another thread is inside ``poll``: :meth:`close` from
    elsewhere (a fault, or :meth:`_Listener.close`) marks it, and the polling thread closes it
    and stops with :class:`RuntimeError` — what a consumer that broke under it looks like.
    """

    def __init__(self, consumer: Any, broken: Callable[[BaseException], None]) -> None:
        self._consumer = consumer
        self._broken = broken
        self._closing = threading.Event()
        self._closed = False

    def poll_batch(self, timeout: float) -> list[Any]:
        if self._closing.is_set():
            self._really_close()
            raise RuntimeError("the reply consumer was closed")
        messages: list[Any] = self._consumer.consume(num_messages=1000, timeout=0)
        if not messages:
            first = self._consumer.poll(timeout)
            if first is None:
                return []
            messages = [first, *self._consumer.consume(num_messages=999, timeout=0)]
        return messages

    def close(self) -> None:
        """Closed from outside: the listener is broken from now on (the calls waiting fail at
        once), and its thread closes the consumer on its next turn."""
        if not self._closing.is_set():
            self._closing.set()
            self._broken(RuntimeError("the reply consumer was closed"))

    def _really_close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                self._consumer.close()

    def close_now(self) -> None:
        """Close from the thread that owned it (it has stopped polling)."""
        self._closing.set()
        self._really_close()


class _Listener:
    """One consumer of the reply partitions and the thread that polls it.

    Built assigned and positioned (``resume``: the next offset to read per partition, where a
    previous listener stopped; the end of the others, resolved before any call is made), started
    by :meth:`start`. A poll error outside :meth:`close` ends the thread after handing the error
    to ``died``.
    """

    def __init__(
        self,
        bootstrap: str,
        parts: list[tuple[str, int]],
        *,
        resume: Mapping[tuple[str, int], int],
        dispatch: Callable[[str, bytes | None, bytes], None],
        died: Callable[[_Listener, BaseException], None],
        positions: dict[tuple[str, int], int],
        config: Mapping[str, Any],
        tick: Callable[[], None],
        security: KafkaSecurity | None = None,
    ) -> None:
        from confluent_kafka import TopicPartition

        self._tick = tick
        self._dispatch = dispatch
        self._died = died
        self._positions = positions
        raw = make_rdkafka_consumer(bootstrap, security=security, **{**LISTENER_CONFIG, **config})
        try:
            assignment = []
            for topic, partition in parts:
                where = (topic, partition)
                if where in resume:
                    offset = resume[where]
                else:
                    # The end now, explicitly: a reply written after this point is never missed
                    # (an OFFSET_END assignment would be resolved later, asynchronously).
                    offset = rdkafka_end_offset(raw, TopicPartition(topic, partition))
                positions[where] = offset
                assignment.append(TopicPartition(topic, partition, offset))
            raw.assign(assignment)
        except BaseException:
            raw.close()
            raise
        self._consumer = _ListenerConsumer(raw, self._broken)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=LISTENER_THREAD, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._tick()
                for message in self._consumer.poll_batch(_WAIT):
                    error = message.error()
                    if error is not None:
                        if error.fatal() or error.name() in _LISTENER_FATAL:
                            raise RuntimeError(f"reply consumer: {error.str()}")
                        log.warning("ledger client: reply consumer: %s", error.str())
                        continue
                    topic = message.topic()
                    try:
                        self._dispatch(topic, message.key(), message.value())
                    except Exception:  # one bad record or hook must not silence the client
                        log.exception("ledger client: could not handle a record of %s", topic)
                    self._positions[(topic, message.partition())] = message.offset() + 1
        except Exception as exc:
            self._broken(exc)
        finally:
            self._consumer.close_now()

    def _broken(self, exc: BaseException) -> None:
        if not self._stop.is_set():  # else: closed on purpose by close()
            self._stop.set()
            self._died(self, exc)

    def close(self) -> None:
        self._stop.set()
        self._consumer.close()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        if not self._thread.is_alive():
            self._consumer.close_now()


# Errors after which the assigned reply partitions are gone: a listener cannot serve any more.
_LISTENER_FATAL = frozenset({"UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_PARTITION", "_UNKNOWN_TOPIC"})


def message_key(message: EvaluationRequested | BatchEvaluationRequested | Command) -> bytes:
    """The Kafka key a client's message is written with: a request's resource (else its id), a
    pre-evaluation's id, a command's aggregate (its policy or principal: one partition each,
    in order)."""
    if isinstance(message, EvaluationRequested):
        return (message.resource or message.event_id).encode()
    if isinstance(message, BatchEvaluationRequested):
        return message.event_id.encode()
    return command_aggregate(message).encode()


def refuse_oversized(
    message: EvaluationRequested | BatchEvaluationRequested | Command,
    value: bytes,
    limits: Limits = DEFAULT_LIMITS,
) -> None:
    """:class:`UsageError` when ``message``, encoded as ``value``, does not fit the largest
    record the ledger carries, key and framing counted as Kafka counts them (the core's
    ``record_fits``): said before it is sent (librdkafka would refuse it with
    ``MSG_SIZE_TOO_LARGE``, read as an outage), and the same in the in-memory test doubles."""
    key = message_key(message)
    if not record_fits(key, value, limits.record_bytes):
        # What made it large: a name (a red team: a 900,000-character resource, which is the
        # record's key too, was told to send smaller facts), else the facts and context.
        size, largest, keyed = 0, "", False
        for field in dataclasses.fields(message):
            text = getattr(message, field.name)
            if isinstance(text, str):
                encoded = text.encode("utf-8", "surrogatepass")
                counted = len(encoded) * (2 if encoded == key else 1)
                if counted > size:
                    size, largest, keyed = counted, field.name, encoded == key
        fix = (
            f"its {largest} alone is {size // 2 if keyed else size:,} bytes"
            + (", counted twice (it is the record's key too)" if keyed else "")
            + ": name it shorter (an id, not the content)"
            if size * 2 > len(key) + len(value)  # the most of what is sent
            else "send smaller facts and context (a reference to a document, not the document)"
        )
        raise UsageError(
            f"the {type(message).__name__} is {len(value):,} bytes encoded, over what a ledger "
            f"record of {limits.record_bytes:,} bytes holds with its key and framing: {fix}"
        )


def _delivery_error(
    error: Any, fatal: Any = None, security: KafkaSecurity | None = None
) -> Exception:
    """A librdkafka error as the exception a failed publish fails its call with: the broker's
    ACLs refusing this credential are :class:`KafkaAccessDenied`, naming the user and what to
    do (``fatal``: the producer's fatal error, of which a later publish only says ``_FATAL``);
    anything else :class:`KafkaUnavailable`."""
    from ledger.errors import KafkaAccessDenied, KafkaUnavailable

    cause = fatal if _name(error) == "_FATAL" and fatal is not None else error
    text = cause.str() if hasattr(cause, "str") else str(cause)
    if _name(cause) in _REFUSED:
        who = f"user {security.username!r}" if security and security.username else "this client"
        return KafkaAccessDenied(
            f"Kafka's ACLs do not allow {who} to write the ledger's requests or commands "
            f"({text}): an agent needs the agent role's credential, a governance client the "
            "governance role's (`ledger credentials show ROLE`, or $LEDGER_SASL_USERNAME/"
            "$LEDGER_SASL_PASSWORD)"
        )
    return KafkaUnavailable(f"the ledger client could not publish: {text}")


_REFUSED: Final = frozenset(
    {
        "TOPIC_AUTHORIZATION_FAILED",
        "CLUSTER_AUTHORIZATION_FAILED",
        "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
        "GROUP_AUTHORIZATION_FAILED",
    }
)
"""librdkafka's names of the broker refusing what a credential asked (an ACL)."""


def _name(error: Any) -> str | None:
    name = getattr(error, "name", None)
    return name() if callable(name) else None


@dataclass(slots=True)
class Watch:
    """An asynchronous request watched for its correction (see the module docstring)."""

    sent: float
    """When it was sent (``time.monotonic()``)."""
    sink: Callable[[DecisionCorrected], None]
    asked: EvaluationRequested | None
    """The request as sent (decoded from the record written: what its evaluator reads)."""
    expected: DecisionCorrected | None = None
    """The correction its decision calls for, once the decision has been read."""
    early: list[DecisionCorrected] = field(default_factory=list)
    """Corrections read before the decision (at most :data:`EARLY_MOST`)."""
    unbound: bool = False
    """Its decision could not be decoded (a newer evaluator's schema): its correction is taken
    unchecked against it, as before corrections were bound, rather than lost."""
    copied: bool = False
    """A decision answering another request under its id was read (logged once)."""


Watching = OrderedDict[bytes, Watch]
"""Asynchronous requests whose correction may come, by request id, oldest first."""


def watch(
    watching: Watching,
    key: bytes,
    sink: Callable[[DecisionCorrected], None],
    now: float,
    asked: EvaluationRequested | None = None,
) -> None:
    """Watch request ``key`` for its correction. A correction comes seconds after its request,
    or once an evaluator is back: an agent that sends forever watches at most
    :data:`WATCH_MOST` requests, each for at most :data:`WATCH_FOR` seconds (the oldest go)."""
    while watching and (
        len(watching) >= WATCH_MOST or now - next(iter(watching.values())).sent > WATCH_FOR
    ):
        watching.popitem(last=False)
    watching[key] = Watch(now, sink, asked)


def _default(watched: Watch) -> Determination | None:
    return watched.asked.default if watched.asked is not None else None


def _settles(asked: object, reply: object) -> bool:
    """Whether ``reply`` answers the message ``asked`` (see :func:`answers_request`): a
    decision for another request sent under its id does not. A command's result is taken by id
    (only the command processor writes results)."""
    if isinstance(asked, EvaluationRequested):
        return isinstance(reply, DecisionRecorded) and answers_request(asked, reply)
    if isinstance(asked, BatchEvaluationRequested):
        return isinstance(reply, BatchDecisionRecorded) and answers_batch(asked, reply)
    # A command's answer is a result, never a decision under its id (a client reading both).
    return isinstance(reply, (CommandAccepted, CommandRejected))


def _answers(correction: DecisionCorrected, expected: DecisionCorrected) -> bool:
    """Is ``correction`` the one the request's decision calls for, field for field? The core
    derives every field from the decision (:func:`~ledger.core.evaluate.correction_for`), and
    its ids from the request id alone: a copy sent under the id, decided with other reasons or
    constraints, has a correction under the same ids (a red team), which must not reach this
    request's agent. A correction written before corrections carried the decision's
    constraints (2026-12-04) has none: it is compared without them (its time, the decision's,
    is no copy's)."""
    if correction == expected:
        return True
    return not correction.constraints and correction == dataclasses.replace(
        expected, constraints={}
    )


class Sent(Future[Any]):
    """A sent message's reply to come; ``written`` once Kafka has acknowledged the message (a
    timeout's message tells a request Kafka holds, and will be decided, from one still queued in
    this client, which a close drops). ``asked`` is the message as sent, which a reply must
    answer (as its reader decodes ``wire``, when they differ); ``others`` counts the decisions read under its id that answer another
    request (someone sent a copy under this id: a timeout says so)."""

    written: bool = False
    asked: object = None
    others: int = 0
    wire: bytes | None = None
    """The record sent, decoded as its reader decodes it only when the message as sent does not
    match a reply (lists come back as tuples): a decode per request on the hot path cost the
    round trip ~0.1 ms at 1,000 req/s (allocations on 2 shared cores)."""


def cut_short(rid: bytes, written: bool) -> ClientClosed:
    """The error of a call the client's close cut short while it waited (an agent engineer's
    walkthrough: it named no request, though the request was still decided later)."""
    return ClientClosed(
        f"the ledger client was closed while waiting for the answer to "
        f"{rid.decode(errors='replace')}. {_fate(rid, written)}",
        request_id=rid.decode(errors="replace"),
        sent=written,
    )


def _fate(rid: bytes, written: bool) -> str:
    """What becomes of a request whose call ended without its answer."""
    # A command's id too (a review): where its answer shows is said beside the request's.
    asked = (
        f"`ledger decisions --request {rid.decode(errors='replace')}`; a governance command's "
        "in `ledger policy show` or `ledger grant list`"
    )
    if written:
        return f"Kafka had taken it: it is still decided or applied ({asked}); do not act on it"
    return (
        "Kafka had not acknowledged it yet: a close sends it if Kafka takes it within 5 s, "
        f"else drops it ({asked} tells which)"
    )


class KafkaTransport:
    """Requests, commands and their replies over Kafka (see the module docstring).

    ``bootstrap`` and ``topics`` say where the ledger is; ``codec`` encodes what is published
    and decodes the replies; ``security`` how to authenticate. ``replies`` are the reply topics
    to listen to (default: decisions, command results and corrections): a client whose
    credentials may read only some of them (an agent: no command results) names those.
    Raises :class:`~ledger.errors.KafkaUnavailable` / :class:`~ledger.errors.TopicMissing` when
    the ledger cannot be reached.
    """

    SINK_ON_LISTENER: ClassVar[bool] = True
    """A correction's sink is called on the reply listener's thread: the client runs its
    user's ``on_correction`` callback elsewhere (:class:`ledger.client.LedgerClient`)."""

    def __init__(
        self,
        bootstrap: str,
        topics: TopicNames,
        *,
        codec: Codec | None = None,
        reply_partition: int | None = None,
        listener_config: Mapping[str, Any] | None = None,
        security: KafkaSecurity | None = None,
        replies: tuple[str, ...] | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._topics = topics
        self._codec = codec or default_codec()
        self._listener_config = dict(listener_config or {})
        self._security = security
        self._reply_topics = replies or (
            topics.decisions,
            topics.command_results,
            topics.corrections,
        )
        self._lock = threading.Lock()  # guards the maps below, _listener, _failure, _closed
        self._pending: dict[bytes, Sent] = {}
        self._watching: Watching = OrderedDict()
        self._positions: dict[tuple[str, int], int] = {}
        self._failure: BaseException | None = None
        self._closed = False
        self._restart_lock = threading.Lock()
        self._pid = os.getpid()  # librdkafka's threads do not survive a fork()
        self._fatal: Any = None  # the producer's fatal error, once it has raised one
        self._producer = make_rdkafka_producer(bootstrap, security=security)
        self.reply_partition: int | None = (
            self._choose_reply_partition(reply_partition)
            if topics.decisions in self._reply_topics
            else reply_partition
        )
        """The decisions/corrections partition this transport's requests name and it reads
        (``None`` for a client that reads no decisions: a governance client)."""
        self._listener = self._new_listener()
        self._listener.start()
        self._position_lock = threading.Lock()
        self._position_consumer: Any = None
        self._position_readers = 0  # governance_position calls reading with the consumer
        self._position_idle = threading.Condition(self._position_lock)

    # ------------------------------------------------------------------ the seam

    def send(
        self, message: EvaluationRequested | BatchEvaluationRequested | Command
    ) -> Future[Any]:
        """Publish ``message``; the future completes with its reply, or fails with the cause."""
        message = self._addressed(message)
        topic, key = self._route(message)
        value = self._codec.encode(message)
        refuse_oversized(message, value)
        future = Sent()
        # What its answer must answer: the message as sent, and as its evaluator will read it
        # (lists as tuples, times in UTC), decoded only if a reply does not match as sent.
        future.asked = message
        future.wire = None if isinstance(message, Command) else value
        rid = message.event_id.encode()
        with self._lock:
            self._refuse_if_unavailable()
            waiting = self._pending.get(rid)
            if waiting is not None and not waiting.done():  # the first would never end
                raise UsageError(
                    f"{clipped(message.event_id, 80)} is already waiting for its answer: send a "
                    "message once (one id is decided and answered once)"
                )
            self._pending[rid] = future

        # A failed publish fails the waiting call at once instead of waiting for a timeout.
        def delivered(error: Any, _: Any) -> None:
            if error is None:
                future.written = True
                return
            with self._lock:  # no answer will come: the id may be sent again (a retry)
                if self._pending.get(rid) is future:
                    del self._pending[rid]
            with contextlib.suppress(InvalidStateError):
                future.set_exception(_delivery_error(error, self._fatal, self._security))

        try:
            self._produce(topic, key, value, delivered)
        except BaseException:
            self.forget(message.event_id)
            raise
        return future

    def submit(
        self, request: EvaluationRequested, on_correction: Callable[[DecisionCorrected], None]
    ) -> None:
        """Publish an asynchronous request; ``on_correction`` gets its correction, if any."""
        request = self._addressed(request)
        topic, key = self._route(request)
        value = self._codec.encode(request)
        refuse_oversized(request, value)
        asked = self._codec.decode(value)  # as its evaluator reads it
        with self._lock:
            self._refuse_if_unavailable()
            watch(
                self._watching,
                request.event_id.encode(),
                on_correction,
                time.monotonic(),
                asked if isinstance(asked, EvaluationRequested) else None,
            )
        try:
            self._produce(topic, key, value, self._undelivered(request))
        except BaseException:  # not sent: nothing will correct it
            with self._lock:
                self._watching.pop(request.event_id.encode(), None)
            raise

    def _undelivered(self, request: EvaluationRequested) -> Callable[[Any, Any], None]:
        """A delivery callback that says so, at ERROR, when an asynchronous request never
        reaches Kafka (away for longer than librdkafka keeps it, 5 minutes, or when the client
        is closed: its unsent requests are dropped): the agent acted on its default, and the
        ledger has no record of it, no decision and no correction to come (an agent engineer's
        walkthrough: nothing said so, anywhere)."""
        key = request.event_id.encode()

        def delivered(error: Any, _: Any) -> None:
            if error is None:
                return
            with self._lock:
                self._watching.pop(key, None)  # no correction can come for it
            log.error(
                "ledger client: asynchronous request %s (%s by %s on %s, default %s) was never "
                "delivered to Kafka (%s): the ledger will not decide or record it, nor correct "
                "its default; ask again with a new request id if the action still matters",
                clipped(request.event_id, 80),
                clipped(request.action, 80),
                clipped(request.principal, 80),
                clipped(request.resource, 80),
                request.default.value if request.default is not None else None,
                error,
            )

        return delivered

    def forget(self, message_id: str) -> None:
        """Stop waiting for the reply to ``message_id``."""
        with self._lock:
            self._pending.pop(message_id.encode(), None)

    @property
    def healthy(self) -> bool:
        """True when :meth:`check` would return at once (open, listener running)."""
        return not self._closed and self._failure is None and self._pid == os.getpid()

    def check(self) -> None:
        """Raise :class:`ClientClosed` if closed, or made in another process (before a
        ``fork()``); restart a stopped listener (once per call), raising :class:`ClientClosed`
        with the cause if that fails. May block while restarting."""
        if self.healthy:
            return
        if self._pid != os.getpid():
            # Its producer and listener threads stayed in the parent: a request would be
            # queued here and never sent, and the call would time out blaming the ledger.
            raise ClientClosed(
                "this ledger client was made in another process, before a fork(): its Kafka "
                "threads did not come along; make a LedgerClient in this process after the fork "
                "(for example in a worker's start-up hook)"
            )
        with self._restart_lock:
            with self._lock:
                self._refuse_if_closed()
                cause, old = self._failure, self._listener
            if cause is None:
                return  # another caller restarted it meanwhile
            old.close()
            try:
                listener = self._new_listener()
            except Exception as exc:
                raise ClientClosed(
                    f"the ledger client's reply listener stopped ({_describe(cause)}) and could "
                    f"not be restarted: {_describe(exc)}"
                ) from exc
            with self._lock:
                if self._closed:
                    listener.close()
                    self._refuse_if_closed()
                self._listener, self._failure = listener, None
            listener.start()
            log.warning("ledger client: reply listener restarted after: %s", _describe(cause))

    def governance_position(self) -> dict[str, int]:
        """The offsets of the last policy and grant events written (empty partitions left out),
        read with librdkafka within :data:`POSITION_WAIT` seconds, else
        :class:`KafkaUnavailable` (an agent engineer's walkthrough: kafka-python's reader, with
        the broker gone after a first call, waited 30 s and raised its own error, and filled
        the agent's log with its reconnection lines)."""
        from confluent_kafka import KafkaException, TopicPartition

        topics = (self._topics.policy_events, self._topics.grant_events)
        found: dict[str, int] = {}
        with self._position_lock:
            with self._lock:
                self._refuse_if_closed()
            if self._position_consumer is None:
                self._position_consumer = make_rdkafka_consumer(
                    self._bootstrap, security=self._security
                )
            consumer = self._position_consumer
            self._position_readers += 1
        # Read outside the lock (librdkafka's metadata and offsets calls may run side by side:
        # a review found the third of three callers failing after 15 s), each call within
        # POSITION_WAIT, its metadata reads included; close() waits for the readers.
        give_up = time.monotonic() + POSITION_WAIT
        try:
            for topic in topics:
                partitions = rdkafka_partitions(
                    consumer,
                    topic,
                    bootstrap=self._bootstrap,
                    timeout=max(0.1, give_up - time.monotonic()),
                )
                for partition in partitions:
                    left = give_up - time.monotonic()
                    try:
                        if left <= 0:
                            raise KafkaException("no answer")
                        _, end = consumer.get_watermark_offsets(
                            TopicPartition(topic, partition), timeout=left
                        )
                    except KafkaException as exc:
                        raise KafkaUnavailable(
                            f"the governance position could not be read from Kafka at "
                            f"{self._bootstrap} within {POSITION_WAIT:g} s ({exc}): is Kafka "
                            "running (`ledger ps`)?"
                        ) from exc
                    if end > 0:
                        found[position_key(topic, partition)] = int(end) - 1
        finally:
            with self._position_lock:
                self._position_readers -= 1
                self._position_idle.notify_all()
        return found

    def close(self) -> None:
        """Fail every pending call with :class:`ClientClosed`, flush and close (idempotent)."""
        if self._pid != os.getpid():
            # A child's copy after a fork(): its librdkafka handles' threads stayed in the
            # parent, and flushing or closing them here would wait forever; so would taking its
            # lock, if a parent's thread held it at the fork (a review: a child hung at exit).
            # The parent's client is untouched; the child only lets go of its copy.
            self._closed = True
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending, self._pending = self._pending, {}
        for rid, future in pending.items():
            with contextlib.suppress(InvalidStateError):
                future.set_exception(cut_short(rid, future.written))
        from confluent_kafka import KafkaException

        try:
            if self._producer.flush(5):
                # Kafka has not taken them within 5 s (it is away): they are dropped now, never
                # sent. Left queued, librdkafka would hold close() until each one's
                # message.timeout.ms (5 minutes) ran out.
                self._drop_unsent()
        except KafkaException:
            pass  # a fatal producer (its credential refused): nothing it holds can be sent
        except BaseException:
            # Interrupted while waiting (Ctrl-C, a SIGTERM handler's exit): drop what is unsent
            # all the same, or the process waited 5 minutes on it at exit (a review).
            self._drop_unsent()
            raise
        finally:
            # The listener first: its thread serves the producer's delivery callbacks, and must
            # be gone before the producer is. Then the producer's threads and broker connections
            # go now, not when the object is collected: a closed client kept by its caller must
            # not go on reconnecting to a broker.
            # Each step whatever the one before did (a review: one that raised left the
            # producer connected for the life of the process).
            with contextlib.suppress(Exception):
                self._listener.close()
            with contextlib.suppress(Exception):
                self._producer.close()
            with self._position_lock:  # not while a reader uses it (a review)
                self._position_idle.wait_for(
                    lambda: self._position_readers <= 0, timeout=POSITION_WAIT + 1
                )
                consumer, self._position_consumer = self._position_consumer, None
            if consumer is not None:
                with contextlib.suppress(Exception):
                    consumer.close()

    # ------------------------------------------------------------------ internals

    def _drop_unsent(self) -> None:
        """Drop what Kafka has not taken (each one's delivery callback says so, at ERROR)."""
        from confluent_kafka import KafkaException

        with contextlib.suppress(KafkaException):
            self._producer.purge()
            self._producer.flush(0)

    def _choose_reply_partition(self, wanted: int | None) -> int:
        """One partition both reply topics have: ``wanted``, or one at random (clients spread
        over the partitions, so each reads about 1/N of the decisions)."""
        count = min(
            len(rdkafka_partitions(self._producer, topic, bootstrap=self._bootstrap))
            for topic in (self._topics.decisions, self._topics.corrections)
        )
        if wanted is None:
            return random.randrange(count)
        if not 0 <= wanted < count:
            raise TopicMissing(
                f"reply partition {wanted} does not exist: the decisions and corrections topics "
                f"have {count} partitions"
            )
        return wanted

    def _addressed(self, message: Any) -> Any:
        if (
            isinstance(message, (EvaluationRequested, BatchEvaluationRequested))
            and message.reply_partition is None
        ):
            return replace(message, reply_partition=self.reply_partition)
        return message

    def _produce(self, topic: str, key: bytes, value: bytes, on_delivery: Any) -> None:
        from confluent_kafka import KafkaException

        try:
            try:
                if on_delivery is None:
                    self._producer.produce(topic, value, key)
                else:
                    self._producer.produce(topic, value, key, on_delivery=on_delivery)
            except BufferError:  # the local queue is full: wait for room once, then give up
                self._serve_deliveries(1.0)  # a fatal error it raises is kept (a review)
                try:
                    self._producer.produce(topic, value, key, on_delivery=on_delivery)
                except BufferError:  # an SDK error, not librdkafka's (an agent engineer's
                    # walkthrough: after minutes of Kafka away, every call raised BufferError)
                    raise KafkaUnavailable(
                        "nothing was sent: this client's queue for Kafka is full (Kafka has "
                        "been away or slower than the client sends, and unsent messages are "
                        "kept 5 minutes); retry later, or send less"
                    ) from None
        except KafkaException as exc:  # the retry's, or the poll's, too (a review)
            if self._fatal is None and _name(exc.args[0]) == "_FATAL":
                # The cause is raised once, by a poll: this one, or the listener's (which
                # keeps it a moment later); wait that moment rather than say only "fatal".
                give_up = time.monotonic() + 0.5
                while self._fatal is None and time.monotonic() < give_up:
                    with contextlib.suppress(KafkaException):
                        self._serve_deliveries()
                    time.sleep(0.01)
            raise _delivery_error(exc.args[0], self._fatal, self._security) from exc

    def _route(
        self, message: EvaluationRequested | BatchEvaluationRequested | Command
    ) -> tuple[str, bytes]:
        if isinstance(message, (EvaluationRequested, BatchEvaluationRequested)):
            return self._topics.evaluation_requests, message_key(message)
        return self._topics.commands, message_key(message)

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise ClientClosed("the ledger client is closed")

    def _refuse_if_unavailable(self) -> None:
        self._refuse_if_closed()
        if self._failure is not None:
            raise ClientClosed(
                f"the ledger client's reply listener stopped ({_describe(self._failure)})"
            )

    def _new_listener(self) -> _Listener:
        t = self._topics
        parts: list[tuple[str, int]] = []
        # Every reply topic must still exist (a restart after they were deleted says so).
        for topic in (t.decisions, t.corrections):
            if topic in self._reply_topics:
                rdkafka_partitions(self._producer, topic, bootstrap=self._bootstrap)
                if self.reply_partition is not None:
                    parts.append((topic, self.reply_partition))
        if t.command_results in self._reply_topics:
            results = rdkafka_partitions(
                self._producer, t.command_results, bootstrap=self._bootstrap
            )
            parts += [(t.command_results, p) for p in results]
        return _Listener(
            self._bootstrap,
            parts,
            resume=dict(self._positions),
            dispatch=self._dispatch,
            died=self._died,
            positions=self._positions,
            config=self._listener_config,
            tick=self._serve_deliveries,
            security=self._security,
        )

    def _serve_deliveries(self, timeout: float = 0) -> None:
        """Run the producer's delivery callbacks (a failed publish fails its call). A fatal
        producer error (an ACL refusing this credential the idempotent producer's id, say) is
        raised here once: it is kept, and fails what waits, rather than stopping the listener
        (restarted on every call, it logged the same traceback each time)."""
        from confluent_kafka import KafkaException

        try:
            self._producer.poll(timeout)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if error is None or not error.fatal():
                raise
            self._fatal = self._fatal or error
            log.error("ledger client: it can publish nothing: %s", error.str())
            with self._lock:
                pending, self._pending = self._pending, {}
            for future in pending.values():
                with contextlib.suppress(InvalidStateError):
                    future.set_exception(_delivery_error(error, None, self._security))

    def _died(self, listener: _Listener, exc: BaseException) -> None:
        with self._lock:
            if listener is not self._listener or self._closed:
                return  # a replaced listener, or a client being closed: nothing to report
        log.error("ledger client: the reply listener stopped: %s", _describe(exc), exc_info=exc)
        with self._lock:
            if listener is not self._listener or self._closed:
                return
            self._failure = exc
            pending, self._pending = self._pending, {}
        for rid, future in pending.items():
            error = ClientClosed(
                f"the ledger client's reply listener stopped ({_describe(exc)}) while this call "
                f"waited for its answer; the next call restarts it. {_fate(rid, future.written)}",
                request_id=rid.decode(errors="replace"),
                sent=future.written,
            )
            error.__cause__ = exc
            with contextlib.suppress(InvalidStateError):
                future.set_exception(error)

    def _decided(self, key: bytes, value: bytes, watched: Watch) -> None:
        """The decision of watched request ``key``: the first that answers what was asked
        settles which correction, if any, is delivered."""
        if watched.expected is not None or watched.unbound:
            return  # decided already: a later decision under this id is not this client's
        try:
            event = self._codec.decode(value)
        except CodecError as exc:
            self._unbound(key, watched, exc)
            return
        if not isinstance(event, DecisionRecorded) or watched.asked is None:
            return
        if not answers_request(watched.asked, event):
            # A copy under this id (a review: nothing said so, and the genuine request, taken
            # for a repeat of it, is never decided: its default stands uncorrected).
            if not watched.copied:
                watched.copied = True
                log.warning(
                    "ledger client: a decision for another request under the id %s of an "
                    "asynchronous request was read and ignored: someone sent a request under "
                    "its id, and this one may never be decided, so no correction of its "
                    "default may come (`ledger decisions --request ID`)",
                    clipped(key.decode(errors="replace"), 80),
                )
            return
        expected = correction_for(event)
        with self._lock:
            if self._watching.get(key) is not watched:
                return
            if expected is None:  # the default was right: no correction is coming
                del self._watching[key]
                return
            watched.expected = expected
            watched.asked = None  # bound: its facts need not be held for up to a day
            early = next((c for c in watched.early if _answers(c, expected)), None)
            watched.early = []
            if early is None:
                return
            del self._watching[key]  # one correction per request
        watched.sink(early)

    def _correction(self, key: bytes, value: bytes) -> None:
        with self._lock:
            watched = self._watching.get(key)
        if watched is None:
            return
        try:
            event = self._codec.decode(value)
        except CodecError:
            return
        if not isinstance(event, DecisionCorrected):
            return
        with self._lock:
            if self._watching.get(key) is not watched:
                return
            if watched.unbound:
                if event.default != _default(watched):
                    return
            elif watched.expected is None:  # its decision is not read yet: held until it is
                if len(watched.early) < EARLY_MOST:
                    watched.early.append(event)
                return
            elif not _answers(event, watched.expected):
                return  # not the correction of this client's request
            del self._watching[key]  # one correction per request
        watched.sink(event)

    def _unbound(self, key: bytes, watched: Watch, exc: Exception) -> None:
        """Watched request ``key``'s decision does not decode here: say so, and take its
        correction as corrections were taken before they were bound to the decision (the
        first whose default is the one asked), rather than lose it."""
        log.warning(
            "ledger client: the decision of request %s does not decode (%s): its correction is "
            "taken without checking it against the decision (is this client older than the "
            "evaluators? upgrade it)",
            key.decode(errors="replace"),
            exc,
        )
        with self._lock:
            if self._watching.get(key) is not watched:
                return
            watched.unbound = True
            early = next((c for c in watched.early if c.default == _default(watched)), None)
            watched.early = []
            if early is None:
                return
            del self._watching[key]
        watched.sink(early)

    def _dispatch(self, topic: str, key: bytes | None, value: bytes) -> None:
        if key is None:
            return
        if topic == self._topics.corrections:
            self._correction(key, value)
            return
        with self._lock:
            future = self._pending.get(key)
            watched = self._watching.get(key) if future is None else None
        if watched is not None and topic == self._topics.decisions:
            self._decided(key, value, watched)
            return
        if future is None:
            return
        if future.done():
            self._settled(key, future)
            return
        try:
            outcome: Any = self._codec.decode(value)
        except CodecError as exc:
            outcome = exc  # a newer evaluator's schema: said to the caller, never taken
        else:
            if future.asked is not None and not self._answers_sent(future, outcome):
                self._not_its_answer(key, future)
                return
        self._settled(key, future)
        # The waiter may give up (timeout, cancellation) at any moment: a cancelled future
        # refuses a result, and that is fine.
        with contextlib.suppress(InvalidStateError):
            if isinstance(outcome, CodecError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def _answers_sent(self, future: Sent, reply: object) -> bool:
        """Does ``reply`` answer what ``future`` sent: as sent, or else as its reader decodes
        the record (the same question either way; a copy's answer matches neither)."""
        if _settles(future.asked, reply):
            return True
        if future.wire is None:
            return False
        try:
            return _settles(self._codec.decode(future.wire), reply)
        except CodecError:
            return False

    def _settled(self, key: bytes, future: Sent) -> None:
        """``future`` waits no more for a reply under ``key``."""
        with self._lock:
            if self._pending.get(key) is future:
                del self._pending[key]

    def _not_its_answer(self, key: bytes, future: Sent) -> None:
        """A reply under ``key`` that answers another request: ``future`` keeps waiting (for
        its own answer, else its timeout, which says so); the first one is logged."""
        future.others += 1
        if future.others == 1:
            log.warning(
                "ledger client: a decision for another request under the id %s was read and "
                "ignored: someone sent a request under this client's id (a duplicate, or an "
                "attack: `ledger audit run requests_decided_twice`); the call waits for its own",
                clipped(key.decode(errors="replace"), 80),
            )
