"""The client SDK: ask the decision plane over Kafka, and submit governance commands.

Three integration patterns (DESIGN §8):

- :meth:`LedgerClient.evaluate` — synchronous: publish ``EvaluationRequested`` and wait for its
  ``DecisionRecorded`` (correlated by request id, and taken only if it answers what was asked:
  :func:`ledger.core.answering.answers_request`). A timeout raises
  :class:`~ledger.errors.LedgerTimeout`; it never turns into an allow.
- :meth:`LedgerClient.preevaluate` — one ``BatchEvaluationRequested`` for many actions; the answer
  carries the governance position, and :meth:`LedgerClient.is_stale` tells when a later policy or
  grant change has made it stale.
- :meth:`LedgerClient.submit_async` — proceed on a declared default; corrections arrive through
  :meth:`LedgerClient.corrections` (or the ``on_correction`` callback) when the decision differs.

:class:`AsyncLedgerClient` offers the same for asyncio code.

Build the configuration once, at the program's entry point, the way every ``ledger`` command
does: ``ClientConfig.from_env(actor="agent:refund-bot")`` (``$LEDGER_BOOTSTRAP`` or the running
local ledger, topics under ``$LEDGER_TOPIC_PREFIX``).

**Transports.** A client talks to the ledger through a :class:`Transport`: by default the Kafka
one (:class:`ledger.kafka.transport.KafkaTransport`: a producer, and one listener thread that
reads the reply topics from their end and matches replies by record key before decoding). Pass
``transport=`` to use another: :mod:`ledger.testing` has in-memory ones to unit-test agents
without a broker (``MockTransport`` for canned answers, ``LocalLedger`` for a whole ledger on the
pure core).

**When the client cannot answer** it says so: a call on a closed client raises
:class:`~ledger.errors.ClientClosed` at once; if the Kafka listener stops on an error, every
waiting call fails at once with :class:`~ledger.errors.ClientClosed` carrying the cause, and the
next call restarts the listener (or raises :class:`~ledger.errors.ClientClosed` saying why it
could not). No answer in time is :class:`~ledger.errors.LedgerTimeout`. None of these is ever an
allow.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import functools
import inspect
import logging
import os
import queue
import threading
import time
import warnings
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from datetime import datetime
from numbers import Integral
from pathlib import Path
from typing import Any, Final, Protocol, TypeAlias, TypeVar, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.codec import Codec
from ledger.core.authority import PRINCIPAL_FORM, valid_principal
from ledger.core.evaluate import asker_problem
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
from ledger.core.limits import DEFAULT_LIMITS, id_refusal, name_problem
from ledger.core.text import clipped
from ledger.discovery import resolve_bootstrap, resolve_security
from ledger.errors import ClientClosed, CommandRejectedError, LedgerTimeout, UsageError
from ledger.ids import new_id, utcnow
from ledger.kafka.transport import KafkaTransport
from ledger.keys import KeyStore, load_private_key, sign
from ledger.settings import KafkaSecurity, Role, Settings, TopicNames

__all__ = [
    "LedgerClient",
    "AsyncLedgerClient",
    "ClientConfig",
    "Transport",
    "Outgoing",
    "Reply",
    "CorrectionSink",
]

log = logging.getLogger("ledger.client")
HOOK_WAIT: Final = 5.0
"""Seconds :meth:`AsyncLedgerClient.close` waits for async ``on_correction`` callbacks."""

EXIT_WAIT = 5.0
"""Seconds the process waits, as it exits, for plain ``on_correction`` callbacks still at work
(their thread is a daemon, which the interpreter would stop mid-call: a review found a hook
reversing a refund cut off without a word)."""

KEEP_CORRECTIONS = 10_000
"""Corrections a client keeps for :meth:`LedgerClient.corrections` at most; beyond, the oldest
unread one is dropped (with a warning, once): an agent that only uses ``on_correction`` never
reads them."""
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """How a client talks to the ledger. ``actor`` is recorded on everything it publishes.

    ``bootstrap`` (the Kafka servers, ``"host:port,…"``) is needed by the default, Kafka,
    transport only: a client on an in-memory transport (:mod:`ledger.testing`) needs none.

    ``security`` is how the Kafka transport authenticates (``None``: a plain connection, which
    a secured broker refuses); ``role`` says which ledger topics it uses: ``"agent"`` (the
    default: evaluation requests out, decisions and corrections back) or ``"governance"``
    (commands out, command results back); any other role listens to all three reply topics.

    ``signing_key`` (a PEM file's path, as text or a path, or an ``Ed25519PrivateKey``) is
    ``actor``'s key:
    :meth:`LedgerClient.submit_command` signs every unsigned command with it. The command
    processor rejects unsigned commands (``unsigned_command``); the in-memory
    :class:`ledger.testing.LocalLedger` accepts them.
    """

    bootstrap: str | None = None
    topics: TopicNames = field(default_factory=TopicNames)
    actor: str = "agent:unknown"
    timeout: float = 5.0
    security: KafkaSecurity | None = None
    role: Role = "agent"
    signing_key: str | os.PathLike[str] | Ed25519PrivateKey | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        checked_wait(self.timeout, "ClientConfig.timeout")
        if not valid_principal(self.actor):
            # Recorded on every request and command: an unset variable or a typo ("refund bot")
            # would otherwise sign the audit trail with a name no grant or key can match.
            raise UsageError(
                f"ClientConfig.actor {clipped(repr(self.actor), 80)} is not a principal: use "
                f"{PRINCIPAL_FORM}"
            )
        if name_problem("actor", self.actor) is not None:
            # Every request names it twice (actor, requested_by): the evaluator would answer
            # each request_too_large.
            raise UsageError(
                f"ClientConfig.actor is {len(self.actor):,} characters: at most "
                f"{DEFAULT_LIMITS.request_name_chars:,} (request_name_chars), or the evaluator "
                "answers every request request_too_large"
            )

    @classmethod
    def from_env(
        cls,
        *,
        actor: str,
        env: Mapping[str, str] | None = None,
        bootstrap: str | None = None,
        topics: TopicNames | None = None,
        timeout: float | None = None,
        role: Role = "agent",
    ) -> ClientConfig:
        """The configuration every ``ledger`` command would use, for ``actor``.

        - ``bootstrap``: the argument, else ``$LEDGER_BOOTSTRAP``, else the recorded address of
          the running local broker (``ledger up``); with none of them,
          :class:`~ledger.errors.KafkaUnavailable` says what to do.
        - ``topics``: the argument, else the ledger's topics under ``$LEDGER_TOPIC_PREFIX``.
        - ``timeout``: the argument, else the default (5 s).
        - ``security``: ``$LEDGER_SECURITY_PROTOCOL``/``$LEDGER_SASL_*``/``$LEDGER_SSL_*``, else
          (for the local broker) ``role``'s credential, which ``ledger up`` wrote.
        - ``signing_key``: ``actor``'s key in the key store (``$LEDGER_KEYS``, else
          ``$LEDGER_HOME/keys``), if it has one.

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
            security=resolve_security(settings, role, bootstrap=address),
            role=role,
            signing_key=_key_path(KeyStore(settings.keys), actor),
        )
        return config if timeout is None else replace(config, timeout=timeout)


Outgoing: TypeAlias = EvaluationRequested | BatchEvaluationRequested | Command
"""What a client publishes and waits on: a request, a batch, a governance command."""
Reply: TypeAlias = DecisionRecorded | BatchDecisionRecorded | CommandAccepted | CommandRejected
"""The reply to an :data:`Outgoing`: its decision, batch decision, or command result."""
CorrectionSink: TypeAlias = Callable[[DecisionCorrected], None]
"""Where a transport delivers the corrections of an asynchronous request."""


class Transport(Protocol):
    """How a client reaches the ledger: the seam between :class:`LedgerClient` and Kafka.

    Implementations: :class:`ledger.kafka.transport.KafkaTransport` (the default),
    :class:`ledger.testing.MockTransport` and :class:`ledger.testing.LocalLedger`. Where a
    message goes (topic, key) and how it is encoded is the transport's business; the client
    deals in events. Every method may raise :class:`~ledger.errors.ClientClosed` when the
    transport cannot serve.
    """

    def send(self, message: Outgoing) -> Future[Any]:
        """Publish ``message``; the future completes with its :data:`Reply` (a
        :class:`DecisionRecorded` for an :class:`EvaluationRequested`, a
        :class:`BatchDecisionRecorded` for a batch, a command result for a command), or fails
        with the reason there will be none. Never blocks waiting for the reply."""
        ...

    def submit(self, request: EvaluationRequested, on_correction: CorrectionSink) -> None:
        """Publish an asynchronous request (``mode`` async, with a ``default``); if its decision
        differs from the default, hand the :class:`DecisionCorrected` to ``on_correction``."""
        ...

    def forget(self, message_id: str) -> None:
        """The caller gave up on the reply to ``message_id``: drop what waits for it."""
        ...

    @property
    def healthy(self) -> bool:
        """True when :meth:`check` would return at once, without blocking."""
        ...

    def check(self) -> None:
        """Make the transport ready for a call, or raise :class:`~ledger.errors.ClientClosed`
        saying why it is not (closed; a failure it could not recover from). May block while it
        recovers (the Kafka transport restarts a stopped listener here)."""
        ...

    def governance_position(self) -> dict[str, int]:
        """The current governance position: ``{"topic/partition": offset of the last policy or
        grant event}``, in the form of :attr:`BatchDecisionRecorded.governance_position`."""
        ...

    def close(self) -> None:
        """Release what the transport holds; calls still waiting fail. Idempotent."""
        ...


def _checked_principal(principal: str) -> None:
    """Refuse a request's principal no grant can name before it is sent: an unset variable
    (``""``) or a bare name would otherwise be recorded as a policy denial (the CLI refuses it
    the same way)."""
    if not (isinstance(principal, str) and valid_principal(principal)):
        raise UsageError(
            f"principal {clipped(repr(principal), 80)} is not a principal: use {PRINCIPAL_FORM}"
        )


def _checked_names(action: Any, resource: Any, where: str = "") -> None:
    """Refuse an action or resource that is not text, and an empty action, before it is sent:
    the wire format cannot carry one, or would carry ``'None'`` for a missing one (an agent
    engineer's walkthrough: a pre-evaluation item with resource None was allowed on
    resource 'None', where ``evaluate`` raised AttributeError; an empty action was denied as
    holding no grant "for  on acct:1"). An empty resource is a request about no resource."""
    for name, value in (("action", action), ("resource", resource)):
        if not isinstance(value, str):
            raise UsageError(
                f"{where}{name} {clipped(repr(value), 80)} is a {type(value).__name__}, not "
                f"text: pass the {name} as a str"
            )
    if not action.strip():
        raise UsageError(f"{where}action {action!r} is empty: name the action, refund.issue")


class LedgerClient:
    """Blocking client. Thread-safe; create one per process and share it.

    >>> client = LedgerClient(ClientConfig.from_env(actor="agent:refund-bot"))  # + credential
    >>> decision = client.evaluate(action="refund.issue", principal="agent:refund-bot",
    ...                            resource="account:42", facts={"amount": Decimal("120.50"), ...})
    >>> decision.determination
    <Determination.ALLOW: 'allow'>

    ``transport`` replaces the default Kafka transport (built from ``config.bootstrap`` and
    ``config.topics``, with ``codec``); the client closes it when it is closed.
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        transport: Transport | None = None,
        codec: Codec | None = None,
    ) -> None:
        self.config = config
        if transport is None:
            if config.bootstrap is None:
                raise UsageError(
                    "ClientConfig has no bootstrap: the Kafka transport needs the ledger's "
                    'servers (ClientConfig.from_env(actor=...) finds them, or pass bootstrap="HOST:'
                    'PORT"); to run without a broker, pass transport= (see ledger.testing)'
                )
            transport = KafkaTransport(
                config.bootstrap,
                config.topics,
                codec=codec,
                security=config.security,
                replies=_replies(config),
                listener_config=_listener_group(config),
            )
            # A client dropped unclosed would leave its transport's thread and connections
            # running for the life of the process (a tool object made per agent run leaked
            # one of each per run): closed when the client is collected, with a warning.
            # At exit too: the process ending dropped the asynchronous requests still unsent
            # (Kafka away) without a word, where close() says so of each (an agent engineer's
            # walkthrough). Closing a copy inherited across a fork() touches nothing.
            hooks: _HookRunner | None = _HookRunner()
            finalizer = weakref.finalize(self, _unclosed, transport, hooks)
            self._finalizer: weakref.finalize[Any, Any] | None = finalizer
        else:
            self._finalizer = None
            # A transport that calls the sink from its reply listener (a Kafka one given here)
            # gets the hooks run off that thread too; an in-memory one runs them inline.
            hooks = _HookRunner() if getattr(transport, "SINK_ON_LISTENER", False) else None
        self._hooks = hooks
        if codec is not None and self._finalizer is None:
            raise UsageError("pass the codec to the transport, not to the client that uses it")
        self._transport: Transport = transport
        self._loaded_key: Ed25519PrivateKey | None = None
        self._corrections: queue.Queue[DecisionCorrected] = queue.Queue()
        self._dropping = False  # warned that unread corrections are dropped
        self._on_correction: CorrectionSink | None = None
        self._closed = False
        self._said_blocking = False  # a blocking call on an event loop's thread, said once
        # What the transport calls with a correction: it keeps it a day per request, so it must
        # not keep the client alive (a client dropped unclosed is closed when collected).
        arrived = weakref.WeakMethod(self._correction_arrived)

        def sink(correction: DecisionCorrected) -> None:
            method = arrived()
            if method is not None:
                method(correction)

        self._correction_sink: CorrectionSink = sink

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the client and its transport; later calls raise :class:`ClientClosed`. An
        ``on_correction`` callback still at work finishes the corrections handed to it."""
        self._closed = True
        if self._finalizer is not None:
            self._finalizer.detach()
        try:
            self._transport.close()
        finally:
            if self._hooks is not None:
                self._hooks.close()

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
        _checked_principal(principal)
        _checked_names(action, resource)
        _text_names("facts", facts)
        _text_names("context", context)
        return EvaluationRequested(
            event_id=new_id(),
            occurred_at=utcnow(),
            actor=self.config.actor,
            requested_by=self.config.actor,
            action=action,
            principal=principal,
            resource=resource,
            facts=dict(facts or {}),
            context=dict(context or {}),
        )

    def send_request(self, request: EvaluationRequested) -> Future[DecisionRecorded]:
        """Publish a request; the future completes with its decision. Non-blocking."""
        self._ready()
        return cast("Future[DecisionRecorded]", self._transport.send(_bounded_id(request)))

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
        if timeout is not None:
            checked_wait(timeout, "timeout")
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
        """Pre-evaluation: many actions at once, answered with the governance position.

        At most ``batch_items`` (500) items per call, sharing one evaluation budget (README,
        input limits): more is a :class:`UsageError` here rather than an answer of errors, as
        is an ``item_id`` two items share (an item without one is given its index)."""
        if timeout is not None:
            checked_wait(timeout, "timeout")
        request = self._batch_request(principal, items, context)
        return self._wait(self._send_batch(request), request.event_id, timeout, "batch decision")

    def _batch_request(
        self,
        principal: str,
        items: Iterable[BatchItem | Mapping[str, Any]],
        context: Mapping[str, Value] | None,
    ) -> BatchEvaluationRequested:
        _checked_principal(principal)
        _text_names("context", context)
        batch_items = tuple(
            _checked_item(index, item) if isinstance(item, BatchItem) else _batch_item(index, item)
            for index, item in enumerate(items)
        )
        if len(batch_items) > DEFAULT_LIMITS.batch_items:
            raise UsageError(
                f"{len(batch_items):,} items in one pre-evaluation: at most "
                f"{DEFAULT_LIMITS.batch_items:,}; split them into several calls"
            )
        seen: set[str] = set()
        for index, item in enumerate(batch_items):
            if item.item_id in seen:  # the answer's items would not say which is which
                raise UsageError(
                    f"batch item {index} has item_id {clipped(repr(item.item_id), 40)}, as an "
                    "earlier item does (an item without one is given its index): give each "
                    "item an id of its own"
                )
            seen.add(item.item_id)
        return BatchEvaluationRequested(
            event_id=new_id(),
            occurred_at=utcnow(),
            actor=self.config.actor,
            principal=principal,
            items=batch_items,
            context=dict(context or {}),
        )

    def _send_batch(self, request: BatchEvaluationRequested) -> Future[BatchDecisionRecorded]:
        self._ready()
        return cast("Future[BatchDecisionRecorded]", self._transport.send(_bounded_id(request)))

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
        try:
            default = Determination(default)
        except ValueError:
            default = Determination.ERROR  # refused just below, as any other bad default
        if default not in (Determination.ALLOW, Determination.DENY):
            raise UsageError("an async default must be allow or deny")
        request = replace(
            self.request(
                action=action, principal=principal, resource=resource, facts=facts, context=context
            ),
            mode=Mode.ASYNC,
            default=default,
        )
        self._ready()
        self._transport.submit(request, self._correction_sink)
        return request

    def corrections(self, *, timeout: float | None = None) -> Iterator[DecisionCorrected]:
        """Corrections for this client's async requests, as they arrive, until none has come
        for ``timeout`` seconds (``None``: for ever). Raises :class:`ClientClosed` when the
        client is closed, or its transport stops and cannot be restarted, meanwhile."""
        while True:
            give_up = None if timeout is None else time.monotonic() + timeout
            while True:
                self._ready()
                left = _CHECK_EVERY if give_up is None else give_up - time.monotonic()
                try:
                    correction = self._corrections.get(timeout=max(0.0, min(left, _CHECK_EVERY)))
                    break
                except queue.Empty:
                    if give_up is not None and time.monotonic() >= give_up:
                        return
            yield correction

    def on_correction(self, callback: CorrectionSink | None) -> None:
        """Call ``callback`` for every correction of this client (on a thread of the client's
        own with the Kafka transport; on the submitting thread for the in-memory ones).
        ``None`` removes it.

        With the Kafka transport the callback runs on a thread of its own, one correction
        after another, never on the thread reading decisions, so a slow one (an HTTP call
        reversing a refund) delays only the corrections after it. An exception in the callback
        (``SystemExit`` too) is logged and does not stop the client. Each correction also goes
        to :meth:`corrections`' queue first: act on it in one place, not both. An ``async``
        callback is refused here: :class:`AsyncLedgerClient` runs one on its event loop.
        """
        if _is_async_callable(callback):
            raise UsageError(
                "on_correction got an async function, which this client would never await: "
                "pass a plain function, or use AsyncLedgerClient.on_correction, which runs it "
                "on the event loop"
            )
        self._on_correction = callback

    def take_correction(self) -> DecisionCorrected | None:
        """The next correction if one has already arrived, without waiting."""
        self._refuse_if_closed()
        try:
            return self._corrections.get_nowait()
        except queue.Empty:
            return None

    def governance_position(self) -> dict[str, int]:
        """The ledger's current governance position: ``{"topic/partition": last offset}``.

        The offsets of the last policy and grant events written (empty partitions are left out),
        in the form of :attr:`BatchDecisionRecorded.governance_position`, so
        ``is_stale(answer, client.governance_position())`` tells whether a cached pre-evaluation
        predates a governance change.
        """
        self._ready()
        return self._transport.governance_position()

    @staticmethod
    def is_stale(
        answer: BatchDecisionRecorded,
        position: Mapping[str, int],
        *,
        now: datetime | None = None,
    ) -> bool:
        """True when ``position`` (the current governance position) has moved past the
        answer's, or when ``now`` (default: the current time) has reached its ``stale_after``,
        when a grant of the principal, or of a role it holds, begins or ends its validity
        window: time changes the answer then, and no governance event says so (a red team: an
        answer allowed under a grant that had since ended read as fresh)."""
        if answer.stale_after is not None and (now or utcnow()) >= answer.stale_after:
            return True
        return any(offset > answer.governance_position.get(k, -1) for k, offset in position.items())

    # ------------------------------------------------------------------ governance commands

    def submit_command(self, command: Command, *, timeout: float | None = None) -> CommandAccepted:
        """Publish a governance command and wait for its result.

        Raises :class:`CommandRejectedError` (carrying the stable code) when it is rejected.
        A proposal that does not say which policy it is for gets the name from its document,
        parsed here (:class:`~ledger.errors.PolicyError` if it does not validate): the command
        processor authorizes a proposal on that name before it reads the document.
        """
        if timeout is not None:
            checked_wait(timeout, "timeout")
        if isinstance(command, ProposePolicyVersion):
            from ledger.core.lifecycle import named_proposal  # the policy parser, only here

            command = named_proposal(command)
        if command.signature is None and self.config.signing_key is not None:
            command = sign(command, self._signing_key())
        self._ready()
        future = cast(
            "Future[CommandAccepted | CommandRejected]", self._transport.send(_bounded_id(command))
        )
        result = self._wait(future, command.event_id, timeout, "command result")
        if isinstance(result, CommandRejected):
            raise CommandRejectedError(f"{result.reason}", code=result.code)
        return result

    # ------------------------------------------------------------------ internals

    def _signing_key(self) -> Ed25519PrivateKey:
        key = self.config.signing_key
        if isinstance(key, Ed25519PrivateKey):
            return key
        if isinstance(key, (str, os.PathLike)):
            if self._loaded_key is None:
                self._loaded_key = load_private_key(Path(key))
            return self._loaded_key
        raise UsageError(
            f"signing_key is a {type(key).__name__}: give a PEM file's path or an Ed25519PrivateKey"
        )

    def abandon(self, request_id: str) -> None:
        """Stop waiting for the answer to ``request_id`` (after giving up on it)."""
        self._transport.forget(request_id)

    def _refuse_if_closed(self, face: str = "LedgerClient") -> None:
        if self._closed:
            raise ClientClosed(
                f"this ledger client is closed: make a new {face} (one per process, shared "
                "by its threads, closed when the process ends)"
            )

    def _ready(self) -> None:
        """Raise :class:`ClientClosed` unless a call can be served now (the transport may
        restart what stopped, once per call)."""
        self._refuse_if_closed()
        self._transport.check()

    def _correction_arrived(self, correction: DecisionCorrected) -> None:
        if self._corrections.qsize() >= KEEP_CORRECTIONS:  # nobody reads them: keep the newest
            with contextlib.suppress(queue.Empty):
                self._corrections.get_nowait()
            if not self._dropping:
                self._dropping = True
                log.warning(
                    "ledger client: %d corrections unread; the oldest are dropped (read them "
                    "with corrections() or next_correction(), or use on_correction)",
                    KEEP_CORRECTIONS,
                )
        self._corrections.put(correction)  # first: a stuck callback holds nothing back here
        callback = self._on_correction
        if callback is None:
            return
        if self._closed:  # a review: one arriving after close() started a thread again
            return
        if self._hooks is not None:
            self._hooks.give(callback, correction)
        else:  # on the caller's own thread: its KeyboardInterrupt, a test's failure, are its
            _call_hook(callback, correction, inline=True)

    def _wait(self, future: Future[T], key: str, timeout: float | None, what: str) -> T:
        limit = self.config.timeout if timeout is None else timeout
        if not self._said_blocking and _on_event_loop():
            # An agent engineer's walkthrough: harmless while the ledger answers in a
            # millisecond, it stalled every task of an async agent for the whole timeout when
            # the evaluator was down.
            self._said_blocking = True
            log.warning(
                "ledger client: a LedgerClient waits for its %s on an event loop's thread, "
                "blocking every task of the loop until the answer, up to its timeout (%g s): in "
                "async code use AsyncLedgerClient, or AsyncLedgerClient.wrapping(client) (said "
                "once per client)",
                what,
                limit,
            )
        try:
            return future.result(timeout=limit)
        except FutureTimeout:
            self.abandon(key)
            raise _timeout(what, key, limit, future, self.config.bootstrap) from None


def _on_event_loop() -> bool:
    """Is an asyncio event loop running on this thread?"""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


_LONGEST_WAIT: Final = 86_400.0


def checked_wait(value: Any, what: str) -> float:
    """``value`` as a wait in seconds, or :class:`UsageError` (before anything is sent): a
    number more than 0 and at most a day (``inf`` overflowed the wait after the request had
    gone; ``0`` timed out at once, read as Kafka not taking it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{what} is {clipped(repr(value), 40)}: give a number of seconds")
    if not 0 < value <= _LONGEST_WAIT:
        raise UsageError(f"{what} is {value!r}: give more than 0 and at most 86,400 seconds")
    return float(value)


def _is_async_callable(callback: object) -> bool:
    """Is calling ``callback`` making a coroutine: an ``async def`` function, a partial of
    one, or an object whose ``__call__`` is one (a review: such a handler was taken for a
    plain function, and its coroutine never run)."""
    if inspect.iscoroutinefunction(callback):
        return True
    if inspect.isroutine(callback):
        return False
    return inspect.iscoroutinefunction(inspect.getattr_static(type(callback), "__call__", None))


def _call_hook(
    callback: Callable[[DecisionCorrected], object],
    correction: DecisionCorrected,
    *,
    inline: bool = False,
) -> None:
    """Call an ``on_correction`` callback: what it raises is logged, on the client's thread
    ``SystemExit`` too (a review: one stopped every later correction without a word), on the
    caller's own thread (``inline``) only an ``Exception`` (a review: a test's failure, or
    Ctrl-C, raised in it there was swallowed); a coroutine it returns, which nobody would
    await, is closed and said."""
    try:
        made = callback(correction)
    except Exception:  # the user's code: the corrections after it must still come
        log.exception("ledger client: on_correction callback failed")
        return
    except BaseException:
        if inline:
            raise
        log.exception("ledger client: on_correction callback failed")
        return
    if inspect.iscoroutine(made):  # `lambda c: undo(c)` of an async undo
        made.close()
        log.error(
            "ledger client: the on_correction callback returned a coroutine, which nobody "
            "awaits: correction %s was not acted on by it (pass the async function to "
            "AsyncLedgerClient.on_correction, inside a running event loop)",
            correction.request_id,
        )


class _HookRunner:
    """The thread an ``on_correction`` callback runs on, one correction after another (an
    agent engineer's walkthrough: run on the reply listener, a hook that took 8 s to reverse a
    refund made every call of the client time out, blaming Kafka, and one that asked the
    ledger again waited on itself). Started at the first correction; at most
    :data:`KEEP_CORRECTIONS` wait for the callback, the oldest dropped beyond (with an error:
    the ledger keeps each, ``ledger decisions``)."""

    SLOW: Final = 1_000
    """Corrections waiting for the callback past which a warning says it is slow (once)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Callable[[DecisionCorrected], object], Any] | None] = (
            queue.Queue()
        )
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._warned = False
        self._dropped = 0
        self._busy = 0  # corrections handed over and not yet done with
        self._in_hook = 0  # of them, the one in the callback now (0 or 1)

        self._idle = threading.Condition(self._lock)
        self._closed = False

    def give(self, callback: Callable[[DecisionCorrected], object], correction: Any) -> None:
        with self._lock:
            if self._closed:
                return
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="ledger-corrections", daemon=True
                )
                self._thread.start()
                _AT_WORK.add(self)
            self._busy += 1
        waiting = self._queue.qsize()
        if waiting >= KEEP_CORRECTIONS:
            with contextlib.suppress(queue.Empty):
                self._queue.get_nowait()
                self._done()
            self._dropped += 1
            if self._dropped == 1:
                log.error(
                    "ledger client: %d corrections wait for the on_correction callback, which "
                    "is stuck: the oldest are no longer handed to it (`ledger decisions` has "
                    "each)",
                    KEEP_CORRECTIONS,
                )
        elif waiting >= self.SLOW and not self._warned:
            self._warned = True
            log.warning(
                "ledger client: %d corrections wait for the on_correction callback: it is slow "
                "(hand slow work to a thread or a queue of your own)",
                waiting,
            )
        self._queue.put((callback, correction))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                with self._lock:
                    self._in_hook = 1
                _call_hook(*item)
            finally:
                with self._lock:
                    self._in_hook = 0
                # Not kept while waiting for the next one: the callback may hold its client,
                # which must stay collectable (a review: one dropped unclosed leaked).
                item = None
                self._done()

    def _done(self) -> None:
        with self._idle:
            self._busy -= 1
            if self._busy <= 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every correction handed over has been given to
        the callback (an async client's callback has then scheduled its coroutine)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy <= 0, timeout)

    def pending(self) -> int:
        """Corrections handed over and not yet done with (waiting, or in the callback)."""
        with self._lock:
            return max(self._busy, 0)

    def in_hook(self) -> int:
        """1 while the callback is at work on a correction, else 0."""
        with self._lock:
            return self._in_hook

    def close(self) -> None:
        """Let the thread end after the corrections already handed to it; wait for it a
        moment (never from the thread itself: a callback may close its client), then say how
        many it still had (a daemon: it goes on while the process runs, and the process's
        exit waits for it up to :data:`EXIT_WAIT` seconds)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        self._queue.put(None)
        inside = thread is threading.current_thread()  # the callback closes its client
        if not inside:
            thread.join(timeout=1.0)
        with self._lock:
            running = self._in_hook
            waiting = max(self._busy - running, 0)  # not yet given to the callback
        if thread.is_alive() and (waiting or (running and not inside)):
            # Counted apart (an agent engineer's walkthrough: a callback that closed its own
            # client, its work done, was told of "1 corrections still waiting").
            log.warning(
                "ledger client: closed with %s: it goes on with them while the process runs "
                "(`ledger decisions` has each)",
                _hook_backlog(waiting, 0 if inside else running),
            )


_AT_WORK: weakref.WeakSet[_HookRunner] = weakref.WeakSet()
"""Every callback thread started in this process (its thread keeps a runner alive)."""


def _finish_at_exit() -> None:
    """At the process's exit, give the plain ``on_correction`` callbacks still at work up to
    :data:`EXIT_WAIT` seconds in all, then say how many corrections none acted on."""
    busy = [runner for runner in list(_AT_WORK) if runner.pending()]
    if not busy:
        return
    give_up = time.monotonic() + EXIT_WAIT
    for runner in busy:
        runner.wait_idle(max(give_up - time.monotonic(), 0.0))
    running = sum(runner.in_hook() for runner in busy)
    waiting = sum(runner.pending() for runner in busy) - running
    if waiting > 0 or running:
        log.error(
            "ledger client: the process exits with %s (it was given %g s): `ledger decisions` "
            "has each",
            _hook_backlog(max(waiting, 0), running),
            EXIT_WAIT,
        )


def _hook_backlog(waiting: int, running: int) -> str:
    """``2 corrections waiting for the on_correction callback and 1 in it, unfinished``."""
    said = []
    if waiting:
        said.append(
            f"{waiting} correction{'s' if waiting != 1 else ''} waiting for the on_correction "
            "callback"
        )
    if running:
        where = "in it" if waiting else "in the on_correction callback"
        said.append(f"{running} {where}, unfinished")
    return " and ".join(said)


atexit.register(_finish_at_exit)


def _hook_done(ran: Future[Any], correction: DecisionCorrected) -> None:
    """Log an async ``on_correction`` callback that failed, or was cancelled before it
    finished (its event loop ended, or the client closed: a review found it said nothing)."""
    if ran.cancelled():
        log.error(
            "ledger client: the on_correction callback for correction %s was cancelled before "
            "it finished (its event loop ended, or the client closed): it did not act on it",
            correction.request_id,
        )
        return
    failure = ran.exception()
    if failure is not None:
        log.error("ledger client: on_correction callback failed", exc_info=failure)


def _unclosed(transport: Transport, hooks: _HookRunner | None = None) -> None:
    """What a client collected unclosed does (a ``weakref.finalize``): close its transport,
    then say so (a warning filter that raises must not leave the transport open, nor escape
    the collector)."""
    with contextlib.suppress(Exception):
        transport.close()
    if hooks is not None:
        with contextlib.suppress(Exception):
            hooks.close()
    with contextlib.suppress(Warning):
        warnings.warn(
            "a LedgerClient was never closed: its Kafka connections are closed now; close it "
            "(or use `with`) when the process is done with it",
            ResourceWarning,
            stacklevel=2,
        )


def _close_made(made: asyncio.Future[LedgerClient]) -> None:
    if not made.cancelled() and made.exception() is None:
        made.result().close()


def _listener_group(config: ClientConfig) -> dict[str, str]:
    """The reply listener's consumer group: one the role's ACLs allow (``<prefix><role>.``),
    so a secured broker never refuses it should librdkafka use it (the listener only assigns
    partitions and never commits)."""
    if config.role in ("agent", "governance", "auditor"):
        return {"group.id": config.topics.group(f"{config.role}.sdk-replies")}
    return {}


def _replies(config: ClientConfig) -> tuple[str, ...] | None:
    """The reply topics a client of ``config.role`` listens to (what its credential may read)."""
    if config.role == "agent":
        return (config.topics.decisions, config.topics.corrections)
    if config.role == "governance":
        return (config.topics.command_results,)
    return None


def _key_path(store: KeyStore, actor: str) -> Path | None:
    path = store.private_path(actor)
    return path if path.is_file() else None


_SHORT_TIMEOUT: Final = 0.5
"""Seconds under which a call's timeout may be shorter than Kafka's acknowledgement takes on a
busy machine: its timeout message says so too, rather than blame Kafka alone."""
_CHECK_EVERY = 0.25
"""Seconds between looks at the transport's health while waiting for corrections."""


def _timeout(
    what: str,
    key: str,
    limit: float,
    future: Future[Any] | None = None,
    bootstrap: str | None = None,
) -> LedgerTimeout:
    """The timeout of a call. Sent (Kafka acknowledged it, or the transport cannot tell), it may
    still be answered (and, a command, applied) once the processor is back; the message says so,
    and how to find out. Not yet acknowledged (the future's ``written`` false), it is in no
    topic: Kafka is what to look at, and closing the client drops it. Decisions read under its
    id that answer another request (the future's ``others``: someone sent a copy under this id,
    and an evaluator may have taken this request for a repeat of it) are said first."""
    written = getattr(future, "written", None)
    others = getattr(future, "others", 0)

    def timed_out(message: str) -> LedgerTimeout:
        return LedgerTimeout(message, request_id=key, sent=written, others=others)

    if others:
        some = "a decision" if others == 1 else f"{others:,} decisions"
        were = "was" if others == 1 else "were"
        return timed_out(
            f"no {what} for {key} within {limit:g} s, but {some} for another request under "
            f"its id {were} read and ignored: someone sent another request under this id (a "
            "duplicate, or an attack by a holder of the agent credential), and an evaluator "
            "may have taken this one for a repeat; send it again under a new id, and see "
            f"`ledger decisions --request {key}` and `ledger audit run requests_decided_twice`"
        )
    if written is False:
        # A timeout shorter than an acknowledgement takes under load blamed a healthy Kafka (an
        # agent engineer's walkthrough: 500 calls at once, 20 ms each).
        short = (
            f"; or {limit:g} s is shorter than Kafka takes to acknowledge under this load: give "
            "calls a longer timeout"
            if limit < _SHORT_TIMEOUT
            else ""
        )
        # Where this client sends (an agent engineer's walkthrough: the broker came back on
        # another port, `ledger ps` was green, and nothing said the client still used the old).
        kafka = f"Kafka at {bootstrap}" if bootstrap else "Kafka"
        return timed_out(
            f"no {what} for {key} within {limit:g} s, and {kafka} has not acknowledged the "
            "message: it is in no ledger topic yet (is Kafka reachable there, with this client's "
            f"credentials? `ledger ps`, `ledger broker status`{short}). The client sends it when "
            "Kafka takes it, within 5 minutes, and it is then decided; closing the client first "
            "drops it"
        )
    if what == "command result":
        later = (
            "it was sent and may still be applied when the command processor is back: before "
            f"sending it again, see what became of it (`ledger command status {key} --wait "
            "60`); a command processor of an earlier release dead-letters a command it cannot "
            "read (`ledger ps` shows its `code`)"
        )
    else:
        later = (
            f"it was sent and will still be decided when an evaluator is back (`ledger "
            f"decisions --request {key}`)"
        )
    # A healthy ledger under load misses a short timeout too (an agent engineer's walkthrough:
    # 679 of 2,000 calls at 0.15 s, answered in 68 ms at the median, were told to check it).
    short = (
        f" Or {limit:g} s is shorter than a round trip takes under this load: give calls a "
        "longer timeout (the default is 5 s)."
        if limit < _SHORT_TIMEOUT
        else ""
    )
    return timed_out(
        f"no {what} for {key} within {limit:g} s: is the ledger running (`ledger up`) and are "
        f"the evaluator/command processor healthy? {later}.{short}"
    )


_BATCH_ITEM_KEYS: Final = tuple(f.name for f in dataclasses.fields(BatchItem))


def _text_names(what: str, given: Mapping[Any, Any] | None) -> None:
    """:class:`UsageError` for facts or a context that is not a mapping (an agent engineer's
    walkthrough: a string raised Python's ValueError, a pydantic model a baffling "key is a
    tuple"), or holds a name that is not text (the wire format's refusal dumped its schema)."""
    if given is not None and not isinstance(given, Mapping) and not _keyed(given):
        kind = type(given).__name__
        raise UsageError(
            f"{what} is a {clipped(kind, 40)} ({clipped(repr(given), 40)}): pass a dict of "
            "names to values (from a pydantic model, model.model_dump(); from a dataclass, "
            "dataclasses.asdict(x))"
        )
    odd = next(
        (k for k in (given.keys() if given is not None else ()) if not isinstance(k, str)), None
    )
    if odd is not None:
        raise UsageError(
            f"{what} key {clipped(repr(odd), 40)} is a {type(odd).__name__}: fact and context "
            "names are text"
        )


def _keyed(given: object) -> bool:
    """Is ``given`` a mapping by its methods, as ``dict()`` reads one (``keys`` and item
    lookup), though not registered as a ``Mapping`` (a review: such a class was accepted
    before, and refused by the check for a mapping)?"""
    return callable(getattr(given, "keys", None)) and callable(getattr(given, "__getitem__", None))


def _batch_item(index: int, item: Mapping[str, Any]) -> BatchItem:
    # A key the item cannot have is a mistake, never ignored: a misspelt "contxt" would send no
    # context, and a "principal" would be answered for the call's principal, not that one.
    unknown = [k for k in item if k not in _BATCH_ITEM_KEYS]
    if unknown:
        shown = ", ".join(clipped(repr(k), 40) for k in unknown[:3])
        more = f" and {len(unknown) - 3:,} more" if len(unknown) > 3 else ""
        raise UsageError(
            f"batch item {index} has {shown}{more}: an item takes only "
            f"{', '.join(_BATCH_ITEM_KEYS)} (the principal and context are the call's: "
            "preevaluate(principal, items, context=...))"
        )
    _text_names(f"batch item {index}'s facts", item.get("facts"))
    for key in ("action", "resource"):
        if key not in item:
            raise UsageError(f"batch item {index} lacks {key!r}")
    _checked_names(item["action"], item["resource"], f"batch item {index}'s ")
    item_id = item.get("item_id", index)
    if isinstance(item_id, bool) or not isinstance(item_id, (str, Integral)):  # None: no id
        raise UsageError(
            f"batch item {index}'s item_id {clipped(repr(item_id), 80)} is a "
            f"{type(item_id).__name__}: pass a str or an int, or leave it out (its index)"
        )
    return BatchItem(
        item_id=str(item_id),
        action=item["action"],
        resource=item["resource"],
        facts=dict(item.get("facts") or {}),
    )


def _checked_item(index: int, item: BatchItem) -> BatchItem:
    """A :class:`BatchItem` built by the caller, held to what a mapping item is (a review: one
    with an empty action, or None for its resource or id, went out as it was)."""
    _checked_names(item.action, item.resource, f"batch item {index}'s ")
    _text_names(f"batch item {index}'s facts", item.facts)  # a review: a str escaped here
    if not isinstance(item.item_id, str):
        raise UsageError(
            f"batch item {index}'s item_id {clipped(repr(item.item_id), 80)} is a "
            f"{type(item.item_id).__name__}, not text: a BatchItem's id is a str"
        )
    return item


M = TypeVar("M", EvaluationRequested, BatchEvaluationRequested, Command)


def _bounded_id(message: M) -> M:
    """``message``, refused here when its id is over ``request_id_chars``, or empty or only
    whitespace (:func:`~ledger.core.limits.id_refusal`): the ledger's processors dead-letter
    such a record unanswered (``id_too_long``, ``id_empty``), so sending it would only wait for
    the timeout; and a request whose ``actor`` or ``requested_by`` is over
    ``request_name_chars``, which would be answered ``request_too_large``, or whose
    ``requested_by`` is no principal (``invalid_request``)."""
    kind = type(message).__name__
    refused = id_refusal(message.event_id, "")
    if refused is not None and refused[0] == "id_too_long":
        raise UsageError(
            f"{kind} id of {len(message.event_id):,} characters: at most "
            f"{DEFAULT_LIMITS.request_id_chars}; leave event_id to the client (new_id())"
        )
    if refused is not None:
        asks = isinstance(message, (EvaluationRequested, BatchEvaluationRequested))
        processor = "evaluator" if asks else "command processor"
        said = "an empty id" if not message.event_id else "an id of only whitespace"
        raise UsageError(
            f"{kind} with {said}: the {processor} dead-letters it unanswered "
            "(id_empty); leave event_id to the client (new_id())"
        )
    if isinstance(message, (EvaluationRequested, BatchEvaluationRequested)):
        asker = getattr(message, "requested_by", None)
        long = name_problem("actor", message.actor) or name_problem("requested_by", asker)
        if long is not None:
            raise UsageError(
                f"{kind}: {long}; the evaluator would answer it request_too_large (the SDK "
                "sets both to ClientConfig.actor)"
            )
        malformed = None if asker is None else asker_problem(asker)
        if malformed is not None:
            raise UsageError(
                f"{kind}: {malformed}; the evaluator would answer it invalid_request (the SDK "
                "sets it to ClientConfig.actor)"
            )
    return message


_POLL = 0.01  # seconds between looks at the corrections queue from the event loop


class AsyncLedgerClient:
    """The asyncio face of :class:`LedgerClient`: same patterns, awaitable, non-blocking.

    ``transport`` and ``codec`` as for :class:`LedgerClient`. The constructor connects, as
    :class:`LedgerClient`'s does (half a second, up to seconds when Kafka cannot be reached):
    inside a running event loop, ``await AsyncLedgerClient.connect(config)`` instead, which
    connects in a worker thread.
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        transport: Transport | None = None,
        codec: Codec | None = None,
    ) -> None:
        self._sync = LedgerClient(config, transport=transport, codec=codec)
        self.config = config
        self._owns = True  # its own client: closing this closes it
        self._async_hooks()

    def _async_hooks(self) -> None:
        """The state of the async ``on_correction`` callbacks scheduled on an event loop."""
        self._hooks_lock = threading.Lock()
        self._running_hooks: set[Future[Any]] = set()
        self._hook_turns: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}
        self._hook_tasks: set[asyncio.Task[Any]] = set()

    @classmethod
    async def connect(
        cls,
        config: ClientConfig,
        *,
        transport: Transport | None = None,
        codec: Codec | None = None,
    ) -> AsyncLedgerClient:
        """A client made without blocking the event loop: the connecting (and any error it
        raises, :class:`KafkaUnavailable` among them) happens in a worker thread."""
        made = asyncio.get_running_loop().run_in_executor(
            None, functools.partial(LedgerClient, config, transport=transport, codec=codec)
        )
        try:
            client = await asyncio.shield(made)
        except asyncio.CancelledError:
            # The thread goes on connecting: the client it makes is closed, not leaked.
            made.add_done_callback(_close_made)
            raise
        face = cls.wrapping(client)
        face._owns = True
        return face

    @classmethod
    def wrapping(cls, client: LedgerClient) -> AsyncLedgerClient:
        """The asyncio face of an existing ``client``, sharing its transport (one connection
        for a process's sync and async code). Closing the face leaves ``client`` open: it is
        shared (an agent engineer's walkthrough: ``async with`` a face closed the process's
        client, and every tool guarded by it failed until a restart); close ``client``."""
        face = cls.__new__(cls)
        face._sync, face.config, face._owns = client, client.config, False
        face._async_hooks()
        return face

    async def _ready(self) -> None:
        """:meth:`LedgerClient._ready` without blocking the event loop: a transport that must
        recover first (restart a listener) does so in a worker thread."""
        self._sync._refuse_if_closed(
            "AsyncLedgerClient (`await AsyncLedgerClient.connect(config)`)"
            if self._owns
            else "LedgerClient and its face"
        )
        if not self._sync._transport.healthy:
            await asyncio.to_thread(self._sync._ready)

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
        if timeout is not None:
            checked_wait(timeout, "timeout")
        request = self._sync.request(
            action=action, principal=principal, resource=resource, facts=facts, context=context
        )
        await self._ready()
        future = self._sync.send_request(request)
        return await self._wait(future, request.event_id, timeout, "decision")

    async def preevaluate(
        self,
        principal: str,
        items: Iterable[BatchItem | Mapping[str, Any]],
        *,
        context: Mapping[str, Value] | None = None,
        timeout: float | None = None,
    ) -> BatchDecisionRecorded:
        if timeout is not None:
            checked_wait(timeout, "timeout")
        request = self._sync._batch_request(principal, items, context)
        await self._ready()
        future = self._sync._send_batch(request)
        return await self._wait(future, request.event_id, timeout, "batch decision")

    async def _wait(self, future: Future[T], key: str, timeout: float | None, what: str) -> T:
        """:meth:`LedgerClient._wait` on the event loop: no worker thread waits, so a thousand
        waiting calls cost the loop nothing and each fails at its own ``timeout``."""
        limit = self.config.timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), limit)
        except TimeoutError:
            self._sync.abandon(key)
            raise _timeout(what, key, limit, future, self._sync.config.bootstrap) from None
        except asyncio.CancelledError:
            self._sync.abandon(key)
            raise

    async def submit_async(
        self,
        *,
        action: str,
        principal: str,
        resource: str,
        default: Determination | str,
        facts: Mapping[str, Value] | None = None,
        context: Mapping[str, Value] | None = None,
    ) -> EvaluationRequested:
        """:meth:`LedgerClient.submit_async`, from asyncio code."""
        await self._ready()
        return self._sync.submit_async(
            action=action,
            principal=principal,
            resource=resource,
            default=default,
            facts=facts,
            context=context,
        )

    async def next_correction(self, *, timeout: float | None = None) -> DecisionCorrected | None:
        """The next correction of this client's async requests, or ``None`` after ``timeout``.

        ``timeout=None`` waits for as long as it takes; cancelling the wait is prompt.
        """

        # Polled on the event loop, never taken by a worker thread: a thread blocked on the
        # queue would outlive a cancelled wait and swallow the correction that arrives next.
        give_up = None if timeout is None else time.monotonic() + timeout
        checked = time.monotonic()
        await self._ready()
        while True:
            correction = self._sync.take_correction()
            if correction is not None:
                return correction
            now = time.monotonic()
            if give_up is not None and now >= give_up:
                return None
            if now - checked >= _CHECK_EVERY:  # a stopped transport surfaces, never a hang
                checked = now
                await self._ready()
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

    def on_correction(
        self,
        callback: Callable[[DecisionCorrected], None]
        | Callable[[DecisionCorrected], Awaitable[None]]
        | None,
    ) -> None:
        """Call ``callback`` for every correction of this client, as
        :meth:`LedgerClient.on_correction` does: a plain function on a thread of the client's
        own, one correction after another, not the event loop (to touch loop objects, hand
        over with ``loop.call_soon_threadsafe``). Set inside a running event loop, what the
        callback returns that can be awaited (an ``async def`` callback's coroutine) runs on
        that loop, one correction after another too (an agent engineer's walkthrough: one was
        accepted and never awaited); :meth:`close` waits for them a moment. ``None`` removes
        it. A failure of either kind is logged and does not stop the client."""
        if callback is None:
            self._sync.on_correction(None)
            return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            if _is_async_callable(callback):
                raise UsageError(
                    "an async on_correction callback runs on the event loop it is set from: "
                    "set it inside a running loop (in an async function)"
                )
            self._sync.on_correction(callback)  # type: ignore[arg-type]  # an async callback was refused above; mypy cannot narrow by _is_async_callable
            return
        hook, on = callback, loop

        def on_loop(correction: DecisionCorrected) -> None:
            made = hook(correction)  # a failure here is logged by the caller
            if inspect.isawaitable(made):
                self._schedule(made, correction, on)

        self._sync.on_correction(on_loop)

    def _schedule(
        self, made: Awaitable[Any], correction: DecisionCorrected, loop: asyncio.AbstractEventLoop
    ) -> None:
        """Run ``made`` (an async callback's awaitable) on ``loop``, after those before it."""
        if loop.is_closed():
            if inspect.iscoroutine(made):
                made.close()
            log.error(
                "ledger client: correction %s not handed to the on_correction callback: its "
                "event loop is closed",
                correction.request_id,
            )
            return

        async def in_turn() -> None:
            # One turn per loop, made on it (a review: one client's lock, bound to the first
            # loop, failed every callback set in a second `asyncio.run`).
            turn = self._hook_turns.get(loop)
            if turn is None:
                for ended in [each for each in self._hook_turns if each.is_closed()]:
                    del self._hook_turns[ended]
                turn = self._hook_turns[loop] = asyncio.Lock()
            task = asyncio.current_task()
            if task is not None:
                self._hook_tasks.add(task)
            try:
                async with turn:
                    await made
            finally:
                if task is not None:
                    self._hook_tasks.discard(task)

        ran = asyncio.run_coroutine_threadsafe(in_turn(), loop)
        with self._hooks_lock:
            self._running_hooks.add(ran)

        def done(finished: Future[Any]) -> None:
            with self._hooks_lock:
                self._running_hooks.discard(finished)
            _hook_done(finished, correction)

        ran.add_done_callback(done)

    async def submit_command(
        self, command: Command, *, timeout: float | None = None
    ) -> CommandAccepted:
        return await asyncio.to_thread(self._sync.submit_command, command, timeout=timeout)

    async def governance_position(self) -> dict[str, int]:
        return await asyncio.to_thread(self._sync.governance_position)

    is_stale = staticmethod(LedgerClient.is_stale)

    async def close(self) -> None:
        """Close the client this one made (a :meth:`wrapping` face leaves the client it was
        given open)."""
        await self._finish_hooks()
        if not self._owns:
            return
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._sync.close)

    async def _finish_hooks(self) -> None:
        """Wait up to :data:`HOOK_WAIT` seconds for the async callbacks still running, then
        cancel the rest, said (a review: ``asyncio.run`` ending cancelled them silently, and
        the agent's undo of an allow never ran)."""
        if asyncio.current_task() in self._hook_tasks:
            # Closed by a callback itself (a review: it waited 5 s for itself, and the others
            # wait for its turn): the callbacks after it are not waited for.
            return
        give_up = time.monotonic() + HOOK_WAIT
        hooks = self._sync._hooks
        # The corrections handed over whose coroutines are not yet scheduled:
        if hooks is not None and not await asyncio.to_thread(hooks.wait_idle, HOOK_WAIT):
            log.warning(
                "ledger client: closing waited %g s for the on_correction callback, still at "
                "work on a correction (does it wait for this close?)",
                HOOK_WAIT,
            )
        with self._hooks_lock:
            running = list(self._running_hooks)
        if not running:
            return
        waiting = [asyncio.wrap_future(f) for f in running]
        left = max(0.0, give_up - time.monotonic())
        _, late = await asyncio.wait(waiting, timeout=left)
        if late:
            log.error(
                "ledger client: %d async on_correction callbacks had not finished %g s after "
                "the client was closed: they are cancelled",
                len(late),
                HOOK_WAIT,
            )
            for each in late:
                each.cancel()

    async def __aenter__(self) -> AsyncLedgerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
