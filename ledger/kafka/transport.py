"""The SDK's Kafka transport: requests and commands out, their replies back, by record key.

:class:`KafkaTransport` implements :class:`ledger.client.Transport` over kafka-python: one
producer publishes requests (to the evaluation-requests topic, keyed by resource) and commands
(to the commands topic, keyed by aggregate); one listener thread reads the reply topics
(decisions, command results, corrections) from their end and completes each waiting future by
record key, before decoding anything else.

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
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, InvalidStateError
from typing import Any

from ledger.codec import Codec, default_codec
from ledger.core.events import (
    BatchEvaluationRequested,
    Command,
    DecisionCorrected,
    EvaluationRequested,
)
from ledger.core.lifecycle import command_aggregate
from ledger.errors import ClientClosed, CodecError
from ledger.kafka.clients import make_consumer, make_producer
from ledger.kafka.reading import position_key, topic_partitions
from ledger.settings import KafkaSecurity, TopicNames

__all__ = ["KafkaTransport", "LISTENER_THREAD"]

log = logging.getLogger("ledger.client")

LISTENER_THREAD = "ledger-client-listener"
"""The name of the listener thread (``on_correction`` hooks run on it)."""

_POLL_MS = 100


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Listener:
    """One consumer of the reply topics and the thread that polls it.

    Built assigned and positioned (``resume``: the next offset to read per partition, where a
    previous listener stopped; the end of the others), started by :meth:`start`. A poll error
    outside :meth:`close` ends the thread after handing the error to ``died``.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: tuple[str, ...],
        *,
        resume: Mapping[Any, int],
        dispatch: Callable[[str, bytes | None, bytes], None],
        died: Callable[[_Listener, BaseException], None],
        positions: dict[Any, int],
        security: KafkaSecurity | None = None,
    ) -> None:
        self._dispatch = dispatch
        self._died = died
        self._positions = positions
        self._consumer = make_consumer(bootstrap, security=security, auto_offset_reset="latest")
        try:
            parts: list[Any] = []
            for topic in topics:
                parts += topic_partitions(self._consumer, topic, bootstrap=bootstrap)
            self._consumer.assign(parts)
            fresh = [tp for tp in parts if tp not in resume]
            if fresh:
                self._consumer.seek_to_end(*fresh)
            for tp in parts:
                if tp in resume:
                    self._consumer.seek(tp, resume[tp])
                # Resolve every position now, so no reply sent after this point is missed.
                positions[tp] = self._consumer.position(tp)
        except BaseException:
            self._consumer.close()
            raise
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=LISTENER_THREAD, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self._consumer.poll(timeout_ms=_POLL_MS)
                for tp, records in batch.items():
                    for record in records:
                        try:
                            self._dispatch(tp.topic, record.key, record.value)
                        except Exception:  # one bad record or hook must not silence the client
                            log.exception(
                                "ledger client: could not handle a record of %s", tp.topic
                            )
                    if records:
                        self._positions[tp] = records[-1].offset + 1
        except Exception as exc:
            if not self._stop.is_set():  # else: the consumer was closed under us by close()
                self._died(self, exc)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        with contextlib.suppress(Exception):
            self._consumer.close()


class KafkaTransport:
    """Requests, commands and their replies over Kafka (see the module docstring).

    ``bootstrap`` and ``topics`` say where the ledger is; ``codec`` encodes what is published
    and decodes the replies; ``security`` how to authenticate. ``replies`` are the reply topics
    to listen to (default: decisions, command results and corrections): a client whose
    credentials may read only some of them (an agent: no command results) names those.
    Raises :class:`~ledger.errors.KafkaUnavailable` / :class:`~ledger.errors.TopicMissing` when
    the ledger cannot be reached.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: TopicNames,
        *,
        codec: Codec | None = None,
        security: KafkaSecurity | None = None,
        replies: tuple[str, ...] | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._topics = topics
        self._codec = codec or default_codec()
        self._security = security
        self._reply_topics = replies or (
            topics.decisions,
            topics.command_results,
            topics.corrections,
        )
        self._lock = threading.Lock()  # guards the maps below, _listener, _failure, _closed
        self._pending: dict[bytes, Future[Any]] = {}
        self._watching: dict[bytes, Callable[[DecisionCorrected], None]] = {}
        self._positions: dict[Any, int] = {}
        self._failure: BaseException | None = None
        self._closed = False
        self._restart_lock = threading.Lock()
        self._listener = self._new_listener()
        try:
            self._producer = make_producer(bootstrap, security=security)
        except BaseException:
            self._listener.close()
            raise
        self._listener.start()
        self._position_lock = threading.Lock()
        self._position_consumer: Any = None

    # ------------------------------------------------------------------ the seam

    def send(
        self, message: EvaluationRequested | BatchEvaluationRequested | Command
    ) -> Future[Any]:
        """Publish ``message``; the future completes with its reply, or fails with the cause."""
        topic, key = self._route(message)
        value = self._codec.encode(message)
        future: Future[Any] = Future()
        rid = message.event_id.encode()
        with self._lock:
            self._refuse_if_unavailable()
            self._pending[rid] = future
        try:
            sent = self._producer.send(topic, key=key, value=value)
        except BaseException:
            self.forget(message.event_id)
            raise

        # A failed publish fails the waiting call at once instead of waiting for a timeout.
        def fail(exc: BaseException) -> None:
            with contextlib.suppress(InvalidStateError):
                future.set_exception(exc)

        sent.add_errback(fail)
        return future

    def submit(
        self, request: EvaluationRequested, on_correction: Callable[[DecisionCorrected], None]
    ) -> None:
        """Publish an asynchronous request; ``on_correction`` gets its correction, if any."""
        topic, key = self._route(request)
        value = self._codec.encode(request)
        with self._lock:
            self._refuse_if_unavailable()
            self._watching[request.event_id.encode()] = on_correction
        self._producer.send(topic, key=key, value=value)

    def forget(self, message_id: str) -> None:
        """Stop waiting for the reply to ``message_id``."""
        with self._lock:
            self._pending.pop(message_id.encode(), None)

    @property
    def healthy(self) -> bool:
        """True when :meth:`check` would return at once (open, listener running)."""
        return not self._closed and self._failure is None

    def check(self) -> None:
        """Raise :class:`ClientClosed` if closed; restart a stopped listener (once per call),
        raising :class:`ClientClosed` with the cause if that fails. May block while restarting."""
        if self.healthy:
            return
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
        """The offsets of the last policy and grant events written (empty partitions left out)."""
        topics = (self._topics.policy_events, self._topics.grant_events)
        with self._position_lock:
            with self._lock:
                self._refuse_if_closed()
            if self._position_consumer is None:
                self._position_consumer = make_consumer(self._bootstrap, security=self._security)
            consumer = self._position_consumer
            parts: list[Any] = []
            for topic in topics:
                parts += topic_partitions(consumer, topic, bootstrap=self._bootstrap)
            ends = consumer.end_offsets(parts)
        return {position_key(tp.topic, tp.partition): ends[tp] - 1 for tp in parts if ends[tp] > 0}

    def close(self) -> None:
        """Fail every pending call with :class:`ClientClosed`, flush and close (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending, self._pending = self._pending, {}
        for future in pending.values():
            with contextlib.suppress(InvalidStateError):
                future.set_exception(ClientClosed("the ledger client was closed while waiting"))
        try:
            self._producer.flush(timeout=5)
            self._producer.close(timeout=5)
        finally:
            self._listener.close()
            with self._position_lock:
                if self._position_consumer is not None:
                    self._position_consumer.close()
                    self._position_consumer = None

    # ------------------------------------------------------------------ internals

    def _route(
        self, message: EvaluationRequested | BatchEvaluationRequested | Command
    ) -> tuple[str, bytes]:
        if isinstance(message, EvaluationRequested):
            key = message.resource or message.event_id
            return self._topics.evaluation_requests, key.encode()
        if isinstance(message, BatchEvaluationRequested):
            return self._topics.evaluation_requests, message.event_id.encode()
        return self._topics.commands, command_aggregate(message).encode()

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
        return _Listener(
            self._bootstrap,
            self._reply_topics,
            resume=dict(self._positions),
            dispatch=self._dispatch,
            died=self._died,
            positions=self._positions,
            security=self._security,
        )

    def _died(self, listener: _Listener, exc: BaseException) -> None:
        log.error("ledger client: the reply listener stopped: %s", _describe(exc), exc_info=exc)
        with self._lock:
            if listener is not self._listener or self._closed:
                return
            self._failure = exc
            pending, self._pending = self._pending, {}
        for future in pending.values():
            error = ClientClosed(
                f"the ledger client's reply listener stopped ({_describe(exc)}) while this call "
                "waited for its answer; the next call restarts it"
            )
            error.__cause__ = exc
            with contextlib.suppress(InvalidStateError):
                future.set_exception(error)

    def _dispatch(self, topic: str, key: bytes | None, value: bytes) -> None:
        if key is None:
            return
        if topic == self._topics.corrections:
            with self._lock:
                sink = self._watching.get(key)
            if sink is None:
                return
            try:
                event = self._codec.decode(value)
            except CodecError:
                return
            if isinstance(event, DecisionCorrected):
                sink(event)
            return
        with self._lock:
            future = self._pending.pop(key, None)
        if future is None or future.done():
            return
        try:
            outcome: Any = self._codec.decode(value)
        except CodecError as exc:
            outcome = exc
        # The waiter may give up (timeout, cancellation) at any moment: a cancelled future
        # refuses a result, and that is fine.
        with contextlib.suppress(InvalidStateError):
            if isinstance(outcome, CodecError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
