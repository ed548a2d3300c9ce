"""The client SDK: ask the decision plane over Kafka, and submit governance commands.

Three integration patterns (DESIGN §8):

- :meth:`LedgerClient.evaluate` — synchronous: publish ``EvaluationRequested`` and wait for its
  ``DecisionRecorded`` (correlated by request id). A timeout raises
  :class:`~ledger.errors.LedgerTimeout`; it never turns into an allow.
- :meth:`LedgerClient.preevaluate` — one ``BatchEvaluationRequested`` for many actions; the answer
  carries the governance position, and :meth:`LedgerClient.is_stale` tells when a later policy or
  grant change has made it stale.
- :meth:`LedgerClient.submit_async` — proceed on a declared default; corrections arrive through
  :meth:`LedgerClient.corrections` (or the ``on_correction`` callback) when the decision differs.

:class:`AsyncLedgerClient` offers the same for asyncio code. Both share one listener thread that
reads replies from the end of the reply topics and matches them by record key before decoding.

Build the configuration once, at the program's entry point, the way every ``ledger`` command
does: ``ClientConfig.from_env(actor="agent:refund-bot")`` (``$LEDGER_BOOTSTRAP`` or the running
local ledger, topics under ``$LEDGER_TOPIC_PREFIX``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from ledger.codec import Codec, default_codec
from ledger.core.events import (
    BatchDecisionRecorded,
    BatchEvaluationRequested,
    BatchItem,
    Command,
    CommandAccepted,
    CommandRejected,
    DecisionCorrected,
    DecisionRecorded,
    Determination,
    EvaluationRequested,
    Mode,
    ProposePolicyVersion,
    Value,
)
from ledger.discovery import resolve_bootstrap
from ledger.errors import CodecError, CommandRejectedError, LedgerTimeout, TopicMissing, UsageError
from ledger.ids import new_id, utcnow
from ledger.kafka.clients import make_consumer, make_producer
from ledger.kafka.reading import position_key, topic_partitions
from ledger.settings import Settings, TopicNames

__all__ = ["LedgerClient", "AsyncLedgerClient", "ClientConfig"]

log = logging.getLogger("ledger.client")
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """How a client talks to the ledger. ``actor`` is recorded on everything it publishes."""

    bootstrap: str
    topics: TopicNames = field(default_factory=TopicNames)
    actor: str = "agent:unknown"
    timeout: float = 5.0

    @classmethod
    def from_env(
        cls,
        *,
        actor: str,
        env: Mapping[str, str] | None = None,
        bootstrap: str | None = None,
        topics: TopicNames | None = None,
        timeout: float | None = None,
    ) -> ClientConfig:
        """The configuration every ``ledger`` command would use, for ``actor``.

        - ``bootstrap``: the argument, else ``$LEDGER_BOOTSTRAP``, else the recorded address of
          the running local broker (``ledger up``); with none of them,
          :class:`~ledger.errors.KafkaUnavailable` says what to do.
        - ``topics``: the argument, else the ledger's topics under ``$LEDGER_TOPIC_PREFIX``.
        - ``timeout``: the argument, else the default (5 s).

        ``env`` defaults to ``os.environ``. Call this once at the entry point and pass the result.
        """
        settings = Settings.from_env(env, bootstrap=bootstrap)
        address = resolve_bootstrap(
            settings, explicit='pass bootstrap="HOST:PORT"', start="ledger up"
        )
        config = cls(
            bootstrap=address,
            topics=settings.topics if topics is None else topics,
            actor=actor,
        )
        return config if timeout is None else replace(config, timeout=timeout)


class _Listener:
    """Reads the reply topics from their current end and completes waiting futures by key."""

    def __init__(self, config: ClientConfig, codec: Codec) -> None:
        self._codec = codec
        self._lock = threading.Lock()
        self._pending: dict[bytes, Future[Any]] = {}
        self._corrections: queue.Queue[DecisionCorrected] = queue.Queue()
        self.on_correction: Callable[[DecisionCorrected], None] | None = None
        self._watching_corrections: set[bytes] = set()
        self._consumer = make_consumer(config.bootstrap, auto_offset_reset="latest")
        topics = (config.topics.decisions, config.topics.command_results, config.topics.corrections)
        parts: list[Any] = []
        try:
            for topic in topics:
                parts += topic_partitions(self._consumer, topic, bootstrap=config.bootstrap)
        except TopicMissing:
            self._consumer.close()
            raise
        self._consumer.assign(parts)
        self._consumer.seek_to_end(*parts)
        for tp in parts:  # resolve positions now, so no reply sent after this point is missed
            self._consumer.position(tp)
        self._corrections_topic = config.topics.corrections
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="ledger-client-listener", daemon=True
        )
        self._thread.start()

    def expect(self, key: str) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            self._pending[key.encode()] = future
        return future

    def forget(self, key: str) -> None:
        with self._lock:
            self._pending.pop(key.encode(), None)

    def watch_corrections(self, request_id: str) -> None:
        with self._lock:
            self._watching_corrections.add(request_id.encode())

    def corrections(self) -> queue.Queue[DecisionCorrected]:
        return self._corrections

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batch = self._consumer.poll(timeout_ms=100)
            except Exception:  # consumer closed under us during shutdown
                if self._stop.is_set():
                    return
                raise
            for tp, records in batch.items():
                for record in records:
                    try:
                        self._dispatch(tp.topic, record.key, record.value)
                    except Exception:  # one bad record or callback must not silence the client
                        log.exception("ledger client: could not handle a record of %s", tp.topic)

    def _dispatch(self, topic: str, key: bytes | None, value: bytes) -> None:
        if key is None:
            return
        if topic == self._corrections_topic:
            with self._lock:
                wanted = key in self._watching_corrections
            if wanted:
                try:
                    event = self._codec.decode(value)
                except CodecError:
                    return
                if isinstance(event, DecisionCorrected):
                    self._corrections.put(event)
                    callback = self.on_correction
                    if callback is not None:
                        try:
                            callback(event)
                        except Exception:  # the user's hook; the listener serves every call
                            log.exception("ledger client: on_correction callback failed")
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

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._consumer.close()


class LedgerClient:
    """Blocking client. Thread-safe; create one per process and share it.

    >>> client = LedgerClient(ClientConfig(bootstrap="127.0.0.1:9092", actor="agent:refund-bot"))
    >>> decision = client.evaluate(action="refund.issue", principal="agent:refund-bot",
    ...                            resource="account:42", facts={"amount": "120.50", ...})
    >>> decision.determination
    <Determination.ALLOW: 'allow'>
    """

    def __init__(self, config: ClientConfig, *, codec: Codec | None = None) -> None:
        self.config = config
        self._codec = codec or default_codec()
        self._listener = _Listener(config, self._codec)
        self._producer = make_producer(config.bootstrap)
        self._position_lock = threading.Lock()
        self._position_consumer: Any = None

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self._producer.flush(timeout=5)
        self._producer.close(timeout=5)
        self._listener.close()
        with self._position_lock:
            if self._position_consumer is not None:
                self._position_consumer.close()
                self._position_consumer = None

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ evaluation

    def request(
        self,
        *,
        action: str,
        principal: str,
        resource: str,
        facts: Mapping[str, Value] | None = None,
        context: Mapping[str, Value] | None = None,
    ) -> EvaluationRequested:
        """Build an evaluation request (a new time-ordered request id, now as its time)."""
        return EvaluationRequested(
            event_id=new_id(),
            occurred_at=utcnow(),
            actor=self.config.actor,
            action=action,
            principal=principal,
            resource=resource,
            facts=dict(facts or {}),
            context=dict(context or {}),
        )

    def send_request(self, request: EvaluationRequested) -> Future[DecisionRecorded]:
        """Publish a request; the future completes with its decision. Non-blocking."""
        future: Future[DecisionRecorded] = self._listener.expect(request.event_id)
        key = (request.resource or request.event_id).encode()
        self._publish(self.config.topics.evaluation_requests, key, request, future)
        return future

    def evaluate(
        self,
        *,
        action: str,
        principal: str,
        resource: str,
        facts: Mapping[str, Value] | None = None,
        context: Mapping[str, Value] | None = None,
        timeout: float | None = None,
    ) -> DecisionRecorded:
        """Synchronous pattern: the decision, or :class:`LedgerTimeout` (never a silent allow)."""
        request = self.request(
            action=action, principal=principal, resource=resource, facts=facts, context=context
        )
        return self._wait(self.send_request(request), request.event_id, timeout, "decision")

    def preevaluate(
        self,
        principal: str,
        items: Iterable[BatchItem | Mapping[str, Any]],
        *,
        context: Mapping[str, Value] | None = None,
        timeout: float | None = None,
    ) -> BatchDecisionRecorded:
        """Pre-evaluation: many actions at once, answered with the governance position."""
        batch_items = tuple(
            item if isinstance(item, BatchItem) else _batch_item(index, item)
            for index, item in enumerate(items)
        )
        request = BatchEvaluationRequested(
            event_id=new_id(),
            occurred_at=utcnow(),
            actor=self.config.actor,
            principal=principal,
            items=batch_items,
            context=dict(context or {}),
        )
        future: Future[BatchDecisionRecorded] = self._listener.expect(request.event_id)
        self._publish(
            self.config.topics.evaluation_requests, request.event_id.encode(), request, future
        )
        return self._wait(future, request.event_id, timeout, "batch decision")

    def submit_async(
        self,
        *,
        action: str,
        principal: str,
        resource: str,
        default: Determination | str,
        facts: Mapping[str, Value] | None = None,
        context: Mapping[str, Value] | None = None,
    ) -> EvaluationRequested:
        """Asynchronous pattern: publish and return at once; the caller proceeds on ``default``.

        Use ``deny`` for safety-critical actions, ``allow`` only for low-risk, reversible ones.
        A :class:`DecisionCorrected` arrives on :meth:`corrections` if the decision differs.
        """
        default = Determination(default)
        if default not in (Determination.ALLOW, Determination.DENY):
            raise UsageError("an async default must be allow or deny")
        request = replace(
            self.request(
                action=action, principal=principal, resource=resource, facts=facts, context=context
            ),
            mode=Mode.ASYNC,
            default=default,
        )
        self._listener.watch_corrections(request.event_id)
        key = (request.resource or request.event_id).encode()
        self._publish(self.config.topics.evaluation_requests, key, request, None)
        return request

    def corrections(self, *, timeout: float | None = None) -> Iterator[DecisionCorrected]:
        """Corrections for this client's async requests, as they arrive (until ``timeout``)."""
        source = self._listener.corrections()
        while True:
            try:
                yield source.get(timeout=timeout)
            except queue.Empty:
                return

    def on_correction(self, callback: Callable[[DecisionCorrected], None] | None) -> None:
        """Call ``callback`` (on the listener thread) for every correction of this client.

        An exception in the callback is logged and does not stop the client.
        """
        self._listener.on_correction = callback

    def take_correction(self) -> DecisionCorrected | None:
        """The next correction if one has already arrived, without waiting."""
        try:
            return self._listener.corrections().get_nowait()
        except queue.Empty:
            return None

    def governance_position(self) -> dict[str, int]:
        """The ledger's current governance position: ``{"topic/partition": last offset}``.

        The offsets of the last policy and grant events written (empty partitions are left out),
        in the form of :attr:`BatchDecisionRecorded.governance_position`, so
        ``is_stale(answer, client.governance_position())`` tells whether a cached pre-evaluation
        predates a governance change.
        """
        topics = (self.config.topics.policy_events, self.config.topics.grant_events)
        with self._position_lock:
            if self._position_consumer is None:
                self._position_consumer = make_consumer(self.config.bootstrap)
            consumer = self._position_consumer
            parts: list[Any] = []
            for topic in topics:
                parts += topic_partitions(consumer, topic, bootstrap=self.config.bootstrap)
            ends = consumer.end_offsets(parts)
        return {position_key(tp.topic, tp.partition): ends[tp] - 1 for tp in parts if ends[tp] > 0}

    @staticmethod
    def is_stale(answer: BatchDecisionRecorded, position: Mapping[str, int]) -> bool:
        """True when ``position`` (the current governance position) has moved past the answer's."""
        return any(offset > answer.governance_position.get(k, -1) for k, offset in position.items())

    # ------------------------------------------------------------------ governance commands

    def submit_command(self, command: Command, *, timeout: float | None = None) -> CommandAccepted:
        """Publish a governance command and wait for its result.

        Raises :class:`CommandRejectedError` (carrying the stable code) when it is rejected.
        A proposal that does not say which policy it is for gets the name from its document,
        parsed here (:class:`~ledger.errors.PolicyError` if it does not validate): the command
        processor authorizes a proposal on that name before it reads the document.
        """
        from ledger.core import command_aggregate

        if isinstance(command, ProposePolicyVersion) and command.policy is None:
            from ledger.core.policy import parse_policy

            command = replace(command, policy=parse_policy(command.document).name)
        future: Future[CommandAccepted | CommandRejected] = self._listener.expect(command.event_id)
        key = command_aggregate(command).encode()
        self._publish(self.config.topics.commands, key, command, future)
        result = self._wait(future, command.event_id, timeout, "command result")
        if isinstance(result, CommandRejected):
            raise CommandRejectedError(f"{result.reason}", code=result.code)
        return result

    # ------------------------------------------------------------------ internals

    def _publish(self, topic: str, key: bytes, event: Any, future: Future[Any] | None) -> None:
        send = self._producer.send(topic, key=key, value=self._codec.encode(event))
        if future is not None:
            # A failed publish fails the waiting call at once instead of waiting for a timeout.
            def fail(exc: BaseException) -> None:
                if not future.done():
                    future.set_exception(exc)

            send.add_errback(fail)

    def abandon(self, request_id: str) -> None:
        """Stop waiting for the answer to ``request_id`` (after giving up on it)."""
        self._listener.forget(request_id)

    def _wait(self, future: Future[T], key: str, timeout: float | None, what: str) -> T:
        limit = self.config.timeout if timeout is None else timeout
        try:
            return future.result(timeout=limit)
        except FutureTimeout:
            self.abandon(key)
            raise _timeout(what, key, limit) from None


def _timeout(what: str, key: str, limit: float) -> LedgerTimeout:
    return LedgerTimeout(
        f"no {what} for {key} within {limit:g} s: is the ledger running "
        "(`ledger up`) and are the evaluator/command processor healthy?"
    )


def _batch_item(index: int, item: Mapping[str, Any]) -> BatchItem:
    try:
        return BatchItem(
            item_id=str(item.get("item_id", index)),
            action=str(item["action"]),
            resource=str(item["resource"]),
            facts=dict(item.get("facts") or {}),
        )
    except KeyError as exc:
        raise UsageError(f"batch item {index} lacks {exc.args[0]!r}") from None


_POLL = 0.01  # seconds between looks at the corrections queue from the event loop


class AsyncLedgerClient:
    """The asyncio face of :class:`LedgerClient`: same patterns, awaitable, non-blocking."""

    def __init__(self, config: ClientConfig, *, codec: Codec | None = None) -> None:
        self._sync = LedgerClient(config, codec=codec)
        self.config = config

    async def evaluate(
        self,
        *,
        action: str,
        principal: str,
        resource: str,
        facts: Mapping[str, Value] | None = None,
        context: Mapping[str, Value] | None = None,
        timeout: float | None = None,
    ) -> DecisionRecorded:
        request = self._sync.request(
            action=action, principal=principal, resource=resource, facts=facts, context=context
        )
        future = self._sync.send_request(request)
        limit = self.config.timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), limit)
        except TimeoutError:
            self._sync.abandon(request.event_id)
            raise _timeout("decision", request.event_id, limit) from None
        except asyncio.CancelledError:
            self._sync.abandon(request.event_id)
            raise

    async def preevaluate(
        self,
        principal: str,
        items: Iterable[BatchItem | Mapping[str, Any]],
        *,
        context: Mapping[str, Value] | None = None,
        timeout: float | None = None,
    ) -> BatchDecisionRecorded:
        return await asyncio.to_thread(
            self._sync.preevaluate, principal, list(items), context=context, timeout=timeout
        )

    async def submit_async(self, **kwargs: Any) -> EvaluationRequested:
        return self._sync.submit_async(**kwargs)

    async def next_correction(self, *, timeout: float | None = None) -> DecisionCorrected | None:
        """The next correction of this client's async requests, or ``None`` after ``timeout``.

        ``timeout=None`` waits for as long as it takes; cancelling the wait is prompt.
        """

        # Polled on the event loop, never taken by a worker thread: a thread blocked on the
        # queue would outlive a cancelled wait and swallow the correction that arrives next.
        give_up = None if timeout is None else time.monotonic() + timeout
        while True:
            correction = self._sync.take_correction()
            if correction is not None:
                return correction
            if give_up is not None and time.monotonic() >= give_up:
                return None
            await asyncio.sleep(_POLL)

    async def corrections(
        self, *, timeout: float | None = None
    ) -> AsyncIterator[DecisionCorrected]:
        """Corrections of this client's async requests as they arrive, until none has come for
        ``timeout`` seconds (``None``: for ever)::

            async for correction in client.corrections(timeout=5):
                ...
        """
        while (correction := await self.next_correction(timeout=timeout)) is not None:
            yield correction

    def on_correction(self, callback: Callable[[DecisionCorrected], None] | None) -> None:
        """Call ``callback`` for every correction of this client, as
        :meth:`LedgerClient.on_correction` does: on the listener thread, not the event loop (to
        touch loop objects, hand over with ``loop.call_soon_threadsafe``). ``None`` removes it.
        """
        self._sync.on_correction(callback)

    async def submit_command(
        self, command: Command, *, timeout: float | None = None
    ) -> CommandAccepted:
        return await asyncio.to_thread(self._sync.submit_command, command, timeout=timeout)

    async def governance_position(self) -> dict[str, int]:
        return await asyncio.to_thread(self._sync.governance_position)

    is_stale = staticmethod(LedgerClient.is_stale)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._sync.close)

    async def __aenter__(self) -> AsyncLedgerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
