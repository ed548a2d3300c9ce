"""Test your agent without a broker: in-memory transports for the SDK.

As httpx ships ``MockTransport``, the SDK ships two :class:`~ledger.client.Transport` doubles
that work with :class:`~ledger.client.LedgerClient`, :class:`~ledger.client.AsyncLedgerClient`
and :func:`~ledger.enforce.enforce` (sync and async tools) — no Kafka, no processors, no threads:

- :class:`MockTransport` — canned answers. ``handler(message)`` gets each request, batch or
  governance command the client publishes and returns its reply (build one with
  :func:`decision`, :func:`batch_decision`, :func:`accepted`, :func:`rejected`), or just a
  :class:`~ledger.core.events.Determination`; it raises to make the call fail with that error,
  and returns ``None`` to never answer (the call then times out, as with a silent ledger).
- :class:`LocalLedger` — a whole ledger in memory on the pure core: governance commands go
  through :func:`ledger.core.lifecycle.decide` and :func:`ledger.core.state.fold`, requests
  through :func:`ledger.core.evaluate.evaluate` / ``evaluate_batch`` at its (injectable) clock,
  corrections through :func:`ledger.core.evaluate.correction_for`. Load policies and issue
  grants directly (:meth:`LocalLedger.deploy_file`, :meth:`LocalLedger.grant`).

::

    ledger = LocalLedger()
    ledger.deploy_file("examples/policies/refund.yaml")
    ledger.grant("agent:refund-bot", "refund.*", "account:*")
    client = LedgerClient(ClientConfig(actor="agent:refund-bot"), transport=ledger)

Both pass what the client publishes, and what they answer, through the Avro codec, so a
request the real ledger could not carry fails here too. Corrections (and ``on_correction``
hooks) are delivered on the thread that submitted the request, before ``submit_async`` returns.
Closing a client fails the calls still waiting on its transport with ``ClientClosed``, as on
Kafka (on a ``MockTransport`` shared by several clients, theirs too), and otherwise leaves these
transports as they were (one ``LocalLedger`` can serve an admin's client
and an agent's); the closed client itself refuses every call.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, InvalidStateError
from datetime import datetime
from pathlib import Path
from typing import Any, Final, TypeAlias, TypeVar, cast

from ledger.client import CorrectionSink, Outgoing, Reply
from ledger.codec import Codec, default_codec
from ledger.core.answering import answer_record
from ledger.core.chain import ChainHead
from ledger.core.evaluate import correction_for, decision_id, unanswerable
from ledger.core.events import (
    COMMAND_PROCESSOR,
    EVALUATOR,
    ApprovePolicyVersion,
    AssignRole,
    BatchDecisionRecorded,
    BatchEvaluationRequested,
    BatchItemDecision,
    Command,
    CommandAccepted,
    CommandRejected,
    DecisionCorrected,
    DecisionRecorded,
    Determination,
    EvaluationRequested,
    Event,
    GovernanceEvent,
    IssueGrant,
    PromotePolicyVersion,
    ProposePolicyVersion,
    RevokeGrant,
    RollbackPolicy,
    Stage,
    Value,
)
from ledger.core.lifecycle import (
    REJECTION_CODES,
    Rejection,
    command_aggregate,
    command_result,
    decide,
    event_stream,
    named_proposal,
)
from ledger.core.limits import DEFAULT_LIMITS, Limits, id_refusal
from ledger.core.state import EMPTY_STATE, LedgerState, fold, with_position
from ledger.core.text import clipped
from ledger.errors import ClientClosed, CommandRejectedError, UsageError
from ledger.ids import new_id, utcnow
from ledger.kafka.reading import position_key
from ledger.kafka.transport import refuse_oversized
from ledger.settings import TopicNames

__all__ = [
    "MockTransport",
    "Handler",
    "LocalLedger",
    "decision",
    "batch_decision",
    "accepted",
    "rejected",
    "ADMIN",
    "REVIEWER",
]

Handler: TypeAlias = Callable[[Outgoing], Reply | Determination | None]
"""What a :class:`MockTransport` asks: the reply to a message, a determination, or ``None``."""

ADMIN: Final = "human:admin"
"""The bootstrap administrator (as on a real ledger): :class:`LocalLedger`'s default actor."""
REVIEWER: Final = "human:reviewer"
"""A second administrator of :class:`LocalLedger`, who approves what :data:`ADMIN` proposes
(nobody may approve their own proposal)."""


E = TypeVar("E", bound=Event)


# --------------------------------------------------------------------------- reply builders


def decision(
    request: Outgoing,
    determination: Determination | str,
    *,
    constraints: Mapping[str, Value] | None = None,
    rule: str | None = None,
    reasons: Iterable[str] | str = (),
    reason_code: str | None = None,
    policy: str | None = None,
    policy_version: int | None = None,
    grant_id: str | None = None,
    governance_position: Mapping[str, int] | None = None,
) -> DecisionRecorded:
    """The :class:`DecisionRecorded` answering ``request`` with ``determination``.

    ``constraints`` go with ``allow_with_constraints`` (and only with it, as on a real ledger).
    ``reason_code`` defaults to ``rule_matched`` when a ``rule`` is named. The decision carries
    the request's facts, context, mode and default, so an asynchronous request is corrected
    when the determination differs from its default.

    ``request`` is typed as what a :class:`MockTransport` handler receives, so a handler
    ``lambda request: decision(request, …)`` type-checks; anything but an evaluation request
    (a pre-evaluation, a governance command) is a :class:`~ledger.errors.UsageError`.
    """
    if not isinstance(request, EvaluationRequested):
        raise UsageError(
            f"decision() answers an evaluation request, not a {type(request).__name__}: "
            "answer a pre-evaluation with batch_decision(), or with a Determination"
        )
    try:
        determination = Determination(determination)
    except ValueError:
        raise UsageError(
            f"{determination!r} is not a determination: one of "
            f"{', '.join(d.value for d in Determination)}"
        ) from None
    constraints = dict(constraints or {})
    if (determination is Determination.ALLOW_WITH_CONSTRAINTS) != bool(constraints):
        raise UsageError(
            "constraints go with allow_with_constraints, and allow_with_constraints needs "
            f"constraints (got {determination.value} with {constraints or 'none'})"
        )
    return DecisionRecorded(
        event_id=decision_id(request.event_id),
        occurred_at=request.occurred_at,
        actor=EVALUATOR,
        request_id=request.event_id,
        requested_at=request.occurred_at,
        action=request.action,
        principal=request.principal,
        resource=request.resource,
        determination=determination,
        constraints=constraints,
        reasons=(reasons,) if isinstance(reasons, str) else tuple(reasons),
        reason_code=reason_code or ("rule_matched" if rule else None),
        policy=policy,
        policy_version=policy_version,
        rule=rule,
        grant_id=grant_id,
        facts=request.facts,
        context=request.context,
        mode=request.mode,
        default=request.default,
        evaluator_id="mock",
        governance_position=dict(governance_position or {}),
    )


def batch_decision(
    request: BatchEvaluationRequested,
    determinations: Determination | str | Mapping[str, Determination | str | BatchItemDecision],
    *,
    governance_position: Mapping[str, int] | None = None,
) -> BatchDecisionRecorded:
    """The :class:`BatchDecisionRecorded` answering ``request``: one determination for every
    item, or one per ``item_id`` (a determination, or a whole :class:`BatchItemDecision`)."""
    by_item = determinations if isinstance(determinations, Mapping) else None
    missing = [i.item_id for i in request.items if by_item is not None and i.item_id not in by_item]
    if missing:
        raise UsageError(f"batch_decision: no determination for item(s) {', '.join(missing)}")
    decisions = []
    for item in request.items:
        given = by_item[item.item_id] if by_item is not None else determinations
        if isinstance(given, BatchItemDecision):
            decisions.append(given)
            continue
        assert not isinstance(given, Mapping)
        decisions.append(
            BatchItemDecision(
                item_id=item.item_id,
                action=item.action,
                resource=item.resource,
                determination=Determination(given),
            )
        )
    return BatchDecisionRecorded(
        event_id=decision_id(request.event_id),
        occurred_at=request.occurred_at,
        actor=EVALUATOR,
        request_id=request.event_id,
        principal=request.principal,
        decisions=tuple(decisions),
        governance_position=dict(governance_position or {}),
        evaluator_id="mock",
    )


def accepted(command: Command, *, version: int | None = None, message: str = "") -> CommandAccepted:
    """The :class:`CommandAccepted` answering ``command`` (``version``: the one it created)."""
    return CommandAccepted(
        event_id=new_id(),
        occurred_at=command.occurred_at,
        actor=COMMAND_PROCESSOR,
        command_id=command.event_id,
        command_type=type(command).__name__,
        aggregate=command_aggregate(command),
        version=version,
        message=message,
    )


def rejected(command: Command, code: str, reason: str) -> CommandRejected:
    """The :class:`CommandRejected` answering ``command``; ``code`` is one of the ledger's
    (:data:`ledger.core.lifecycle.REJECTION_CODES`), so the test sees what production would."""
    if code not in REJECTION_CODES:
        raise UsageError(f"{code!r} is not a rejection code: one of {', '.join(REJECTION_CODES)}")
    return CommandRejected(
        event_id=new_id(),
        occurred_at=command.occurred_at,
        actor=COMMAND_PROCESSOR,
        command_id=command.event_id,
        command_type=type(command).__name__,
        aggregate=command_aggregate(command),
        code=code,
        reason=reason,
    )


_REPLY_TYPES: Final[dict[type, type | tuple[type, ...]]] = {
    EvaluationRequested: DecisionRecorded,
    BatchEvaluationRequested: BatchDecisionRecorded,
}


def _as_reply(message: Outgoing, answer: Reply | Determination | str) -> Reply:
    """``answer`` as the reply to ``message``, or :class:`UsageError` if it cannot be one."""
    if isinstance(answer, str):  # a Determination, or its value
        if isinstance(message, EvaluationRequested):
            return decision(message, answer)
        if isinstance(message, BatchEvaluationRequested):
            return batch_decision(message, answer)
        raise UsageError(
            f"{type(message).__name__} is a governance command: answer it with accepted(...) "
            "or rejected(...), not a determination"
        )
    expected = _REPLY_TYPES.get(type(message), (CommandAccepted, CommandRejected))
    if not isinstance(answer, expected):
        raise UsageError(
            f"the handler answered {type(message).__name__} with {type(answer).__name__}"
        )
    # A canned or cached reply built for another message would pass for this one's answer (a
    # real ledger's replies find their caller by this id): "allow everything" by accident.
    answers = (
        answer.command_id
        if isinstance(answer, (CommandAccepted, CommandRejected))
        else answer.request_id
    )
    if answers != message.event_id:
        raise UsageError(
            f"the handler answered {type(message).__name__} {message.event_id} with the reply to "
            f"{answers}: build each reply from the message it answers (decision(message, …))"
        )
    return answer


class _Wire:
    """What Kafka would do to an event: encode it and decode it again (and, for what a client
    sends, refuse one over a record's size, as the Kafka transport does)."""

    def __init__(self, codec: Codec | None) -> None:
        self._codec = codec or default_codec()

    def __call__(self, event: E, *, sent: bool = False) -> E:
        return self.as_sent(event)[0] if sent else cast(E, self._codec.decode(self.encoded(event)))

    def as_sent(self, event: E) -> tuple[E, bytes]:
        """What a client sends, as the ledger reads it, and its record's value (one over a
        record's size refused)."""
        encoded = self._codec.encode(event)
        refuse_oversized(cast(Any, event), encoded)
        return cast(E, self._codec.decode(encoded)), encoded

    def encoded(self, event: Any) -> bytes:
        return self._codec.encode(event)


# --------------------------------------------------------------------------- MockTransport


def _settle(future: Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    """Give ``future`` its answer, unless closing the client already failed it (a review: the
    answer then raised InvalidStateError at the caller)."""
    with contextlib.suppress(InvalidStateError):
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class _Waiting:
    """The calls still waiting for an answer, by message id, as the Kafka transport keeps
    them: a message sent again while its first is waiting is refused (the first would never
    end), and closing fails every waiting call at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: dict[str, Future[Any]] = {}

    def claim(self, message: Outgoing) -> Future[Any]:
        """A future for ``message``'s answer, waiting under its id from now on; refused
        (:class:`~ledger.errors.UsageError`) while an earlier one waits under it. Checked and
        taken at once (a review: two threads sending one id were both let through)."""
        with self._lock:
            waiting = self._futures.get(message.event_id)
            if waiting is not None and not waiting.done():
                raise UsageError(
                    f"{clipped(message.event_id, 80)} is already waiting for its answer: send a "
                    "message once (one id is decided and answered once)"
                )
            future: Future[Any] = Future()
            self._futures[message.event_id] = future
        return future

    def done(self, message_id: str, future: Future[Any]) -> None:
        """``future`` (of ``message_id``) has its answer: it waits no more."""
        with self._lock:
            if self._futures.get(message_id) is future:
                del self._futures[message_id]

    def forget(self, message_id: str) -> None:
        with self._lock:
            self._futures.pop(message_id, None)

    def close(self) -> None:
        with self._lock:
            waiting, self._futures = self._futures, {}
        for message_id, future in waiting.items():
            with contextlib.suppress(InvalidStateError):
                future.set_exception(
                    ClientClosed(
                        "the ledger client was closed while waiting for the answer to "
                        f"{message_id}",
                        request_id=message_id,
                    )
                )


class MockTransport:
    """A transport that answers every message with ``handler(message)`` (see the module
    docstring); no broker, no thread.

    - a :class:`~ledger.core.events.Determination` (or its value) answers a request or batch
      with a plain decision of it; a reply event (:func:`decision`, ...) answers as it is;
    - an exception raised by ``handler`` fails the call with it (``submit_async`` raises it);
    - ``None`` never answers: the call raises :class:`~ledger.errors.LedgerTimeout` after its
      timeout (keep ``ClientConfig.timeout`` small in such tests).

    ``sent`` lists every message published, in order, as the ledger received it;
    ``requests`` only its evaluation requests (typed, for reading their facts).
    ``governance_position`` is what :meth:`LedgerClient.governance_position` answers (assign a
    new mapping to move it).
    """

    def __init__(
        self,
        handler: Handler,
        *,
        governance_position: Mapping[str, int] | None = None,
        codec: Codec | None = None,
    ) -> None:
        self.handler = handler
        self.position: dict[str, int] = dict(governance_position or {})
        self.sent: list[Outgoing] = []
        self._wire = _Wire(codec)
        self._lock = threading.Lock()
        self._waiting = _Waiting()

    @property
    def requests(self) -> list[EvaluationRequested]:
        """The evaluation requests among :attr:`sent`, in order."""
        with self._lock:
            return [m for m in self.sent if isinstance(m, EvaluationRequested)]

    def _publish(self, message: Outgoing) -> None:
        with self._lock:
            self.sent.append(message)

    def send(self, message: Outgoing) -> Future[Any]:
        message = self._wire(message, sent=True)
        future = self._waiting.claim(message)
        self._publish(message)
        waiting = False
        try:
            answer = self.handler(message)
            if answer is None:
                waiting = True  # never answered: it waits until it is abandoned or closed
                return future
            _settle(future, result=self._wire(_as_reply(message, answer)))
        except Exception as exc:  # the handler's way to make the call fail
            _settle(future, error=exc)
        finally:  # a BaseException (pytest.fail) too: the id is not left taken (a review)
            if not waiting:
                self._waiting.done(message.event_id, future)
        return future

    def submit(self, request: EvaluationRequested, on_correction: CorrectionSink) -> None:
        request = self._wire(request, sent=True)
        self._publish(request)
        answer = self.handler(request)
        if answer is None:
            return
        reply = _as_reply(request, answer)
        assert isinstance(reply, DecisionRecorded)
        correction = correction_for(reply)
        if correction is not None:
            on_correction(self._wire(correction))

    def forget(self, message_id: str) -> None:
        self._waiting.forget(message_id)

    @property
    def healthy(self) -> bool:
        return True

    def check(self) -> None:
        return None

    def governance_position(self) -> dict[str, int]:
        return dict(self.position)

    def close(self) -> None:
        """As the Kafka transport does: every call still waiting on this transport (a shared
        one: every client's) fails at once with :class:`~ledger.errors.ClientClosed`, not at
        its timeout."""
        self._waiting.close()


# --------------------------------------------------------------------------- LocalLedger


ANSWERED_KEPT: Final = 1_000_000
"""Request records a :class:`LocalLedger` remembers answered, as an evaluator worker does."""


def _digest(value: bytes) -> bytes:
    """A request record's value as remembered answered (as an evaluator keeps it)."""
    return hashlib.blake2b(value, digest_size=16).digest()


_LATENCY: Final[Mapping[str, int]] = {"latency_us": 0}
"""The decisions' latency: no time is spent on a wire here."""


class LocalLedger:
    """A whole ledger in memory, deciding with the pure core (see the module docstring).

    - ``admins`` may run every governance command without a grant (default :data:`ADMIN` and
      :data:`REVIEWER`, so :meth:`deploy` can propose and approve as two people);
    - ``clock`` is the ledger's time: when commands are applied, grants are in force and
      requests are decided (default: the real UTC clock; pass a function for a fixed time);
    - ``topics`` name the governance streams in governance positions, as on a real ledger;
    - ``limits`` bound what is parsed and evaluated, as the processors' do;
    - ``deferred_corrections``: corrections are held until :meth:`deliver_corrections`, as a
      real ledger's arrive some time after ``submit_async`` returns (default: before it
      returns, which a test of the simple case finds easier).

    ``events`` holds every governance event applied, ``decisions`` every decision and batch
    decision made, ``corrections`` every correction sent, in order.
    """

    def __init__(
        self,
        *,
        admins: Iterable[str] = (ADMIN, REVIEWER),
        clock: Callable[[], datetime] = utcnow,
        topics: TopicNames | None = None,
        limits: Limits = DEFAULT_LIMITS,
        codec: Codec | None = None,
        evaluator_id: str = "local-ledger",
        deferred_corrections: bool = False,
    ) -> None:
        self.admins = frozenset(admins)
        self.deferred_corrections = deferred_corrections
        self._held: list[tuple[DecisionCorrected, CorrectionSink]] = []
        self.clock = clock
        self.limits = limits
        self.evaluator_id = evaluator_id
        self.events: list[GovernanceEvent] = []
        self.decisions: list[DecisionRecorded | BatchDecisionRecorded] = []
        self.corrections: list[DecisionCorrected] = []
        topics = topics or TopicNames()
        self._streams = {
            "policy": position_key(topics.policy_events, 0),
            "grant": position_key(topics.grant_events, 0),
        }
        self._next_offset = {"policy": 0, "grant": 0}
        self._state = EMPTY_STATE
        self._wire = _Wire(codec)
        self._lock = threading.RLock()
        # The requests answered, as sent: the evaluators drop one delivered again (a retry
        # that re-sends a stored request waits forever there, and must here too: a README
        # check found it answered again), not another request under an answered id.
        self._answered: dict[bytes, None] = {}  # the last ANSWERED_KEPT, oldest first
        self._waiting = _Waiting()
        # Its decisions are links of a hash chain, as an evaluator worker's are (their size,
        # and so what fits a record, is the evaluator's; `audit verify` could check them).
        self._chain = ChainHead(f"{evaluator_id}/{new_id()}")  # named as a worker's chain

    @property
    def state(self) -> LedgerState:
        """The governance state now (what the evaluator would hold)."""
        return self._state

    # ------------------------------------------------------------------ the transport

    def send(self, message: Outgoing) -> Future[Any]:
        message, value = self._wire.as_sent(message)
        future = self._waiting.claim(message)
        reply: Reply
        try:
            if not isinstance(message, (EvaluationRequested, BatchEvaluationRequested)):
                reply = self._apply(message)
            else:
                with self._lock:
                    if self._repeats(value):
                        return future  # never answered, as the evaluators drop it
                    if isinstance(message, EvaluationRequested):
                        reply = self._evaluate(message)
                    else:
                        reply = self._evaluate_batch(message)
                    self._remember(value)
        except BaseException:
            self._waiting.done(message.event_id, future)
            raise
        _settle(future, result=self._wire(reply))
        self._waiting.done(message.event_id, future)
        return future

    def submit(self, request: EvaluationRequested, on_correction: CorrectionSink) -> None:
        request, value = self._wire.as_sent(request)
        with self._lock:
            if self._repeats(value):
                return  # dropped, as the evaluators drop it
            made = self._evaluate(request)
            self._remember(value)
        correction = correction_for(made)
        if correction is not None:
            with self._lock:
                self.corrections.append(correction)
                if self.deferred_corrections:
                    self._held.append((correction, on_correction))
                    return
            on_correction(self._wire(correction))

    def deliver_corrections(self) -> int:
        """Hand over the corrections held back (``deferred_corrections``), in order: what a
        real ledger delivers some time after ``submit_async`` returns. Returns how many."""
        with self._lock:
            held, self._held = self._held, []
        for correction, sink in held:
            sink(self._wire(correction))
        return len(held)

    def _repeats(self, value: bytes) -> bool:
        """Was the request whose record is ``value`` answered, as sent? The evaluators drop it
        then, unanswered (a governance command sent again is answered, as the command
        processor answers it: ``already_applied``)."""
        return _digest(value) in self._answered

    def _remember(self, value: bytes) -> None:
        """Remember the request record ``value`` answered: the last :data:`ANSWERED_KEPT`, as
        an evaluator worker keeps the last million (a review: the set only grew)."""
        self._answered[_digest(value)] = None
        if len(self._answered) > ANSWERED_KEPT:
            del self._answered[next(iter(self._answered))]

    def forget(self, message_id: str) -> None:
        self._waiting.forget(message_id)

    @property
    def healthy(self) -> bool:
        return True

    def check(self) -> None:
        return None

    def governance_position(self) -> dict[str, int]:
        return dict(self._state.position)

    def close(self) -> None:
        self._waiting.close()

    # ------------------------------------------------------------------ governance, directly

    def submit_command(self, command: Command) -> CommandAccepted:
        """Apply ``command`` as the command processor would; :class:`CommandRejectedError` (with
        the stable code) when it is refused, :class:`~ledger.errors.UsageError` for an id the
        processor would dead-letter. A proposal without ``policy`` gets its document's."""
        refused = id_refusal(command.event_id, "command", self.limits)
        if refused is not None:
            code, reason = refused
            raise UsageError(
                f"{reason}: the command processor dead-letters such a command unanswered "
                f"({code}); leave event_id to new_id()"
            )
        if isinstance(command, ProposePolicyVersion) and command.policy is None:
            command = named_proposal(command)
        result = self._apply(command)
        if isinstance(result, CommandRejected):
            raise CommandRejectedError(result.reason, code=result.code)
        return result

    def deploy(
        self,
        document: str,
        *,
        stage: Stage | str = Stage.ACTIVE,
        percent: int | None = None,
        author: str = ADMIN,
        approver: str = REVIEWER,
    ) -> int:
        """Propose the policy ``document`` (YAML text) as ``author``, approve it as
        ``approver`` (unless it only goes to shadow) and promote it to ``stage`` (canary:
        with ``percent``). Returns the new version; :class:`~ledger.errors.PolicyError` if the
        document is invalid, :class:`CommandRejectedError` if a step is refused."""
        stage = Stage(stage)
        proposed = self.submit_command(
            named_proposal(ProposePolicyVersion(**self._stamp(author), document=document))
        )
        assert proposed.version is not None
        name, version = proposed.aggregate, proposed.version
        if stage is not Stage.SHADOW:
            self.submit_command(
                ApprovePolicyVersion(**self._stamp(approver), policy=name, version=version)
            )
        if stage is not Stage.DRAFT:
            self.submit_command(
                PromotePolicyVersion(
                    **self._stamp(author),
                    policy=name,
                    version=version,
                    stage=stage,
                    percent=percent,
                )
            )
        return version

    def deploy_file(self, path: str | Path, **options: Any) -> int:
        """:meth:`deploy` the policy file at ``path`` (same options)."""
        return self.deploy(Path(path).read_text(encoding="utf-8"), **options)

    def rollback(
        self,
        policy: str,
        *,
        reason: str,
        to_version: int | None = None,
        from_version: int | None = None,
        by: str = ADMIN,
    ) -> int:
        """Re-activate the previous active version of ``policy`` (or ``to_version``), refused
        unless ``from_version`` (if given) is the active one; returns the version active again."""
        done = self.submit_command(
            RollbackPolicy(
                **self._stamp(by),
                policy=policy,
                reason=reason,
                to_version=to_version,
                from_version=from_version,
            )
        )
        assert done.version is not None
        return done.version

    def grant(
        self,
        principal: str,
        actions: str | Iterable[str],
        resource: str,
        *,
        when: str | None = None,
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
        grant_id: str | None = None,
        by: str = ADMIN,
    ) -> str:
        """Grant ``principal`` (or a ``role:``) ``actions`` (a glob, or a list of them: not
        the CLI's ``'a,b'``, which is refused) on resources matching ``resource``, optionally
        under the CEL condition ``when`` and within a validity window. Returns the grant id."""
        grant_id = grant_id or f"grant-{new_id()}"
        self.submit_command(
            IssueGrant(
                **self._stamp(by),
                grant_id=grant_id,
                principal=principal,
                actions=(actions,) if isinstance(actions, str) else tuple(actions),
                resource=resource,
                condition=when,
                valid_from=valid_from,
                valid_until=valid_until,
            )
        )
        return grant_id

    def revoke_grant(self, grant_id: str, *, by: str = ADMIN) -> None:
        """Revoke the grant ``grant_id``."""
        self.submit_command(RevokeGrant(**self._stamp(by), grant_id=grant_id))

    def assign_role(self, principal: str, role: str, *, by: str = ADMIN) -> None:
        """Make ``principal`` a member of ``role`` (``role:<name>``)."""
        self.submit_command(AssignRole(**self._stamp(by), principal=principal, role=role))

    # ------------------------------------------------------------------ internals

    def _stamp(self, actor: str) -> dict[str, Any]:
        return {"event_id": new_id(), "occurred_at": self.clock(), "actor": actor}

    def _apply(self, command: Command) -> CommandAccepted | CommandRejected:
        with self._lock:
            now = self.clock()
            before = self._state
            outcome = decide(
                before,
                command,
                now=now,
                new_id=new_id,
                admins=self.admins,
                limits=self.limits,
            )
            if not isinstance(outcome, Rejection):
                state = self._state
                for event in outcome:
                    stream = event_stream(event)
                    offset = self._next_offset[stream]
                    self._next_offset[stream] = offset + 1
                    state = with_position(fold(state, event), self._streams[stream], offset)
                self._state = state
                self.events.extend(outcome)
            return command_result(command, outcome, event_id=new_id(), now=now, state=before)

    def _evaluate(self, request: EvaluationRequested) -> DecisionRecorded:
        return cast(DecisionRecorded, self._answer(request))

    def _evaluate_batch(self, request: BatchEvaluationRequested) -> BatchDecisionRecorded:
        return cast(BatchDecisionRecorded, self._answer(request))

    def _answer(
        self, request: EvaluationRequested | BatchEvaluationRequested
    ) -> DecisionRecorded | BatchDecisionRecorded:
        """The evaluator's answer (:func:`~ledger.core.answering.answer_record`: evaluated,
        linked into this ledger's chain, reduced when no record could hold it), or, for a
        request the evaluator dead-letters unanswered, :class:`~ledger.errors.UsageError`."""
        refused = unanswerable(request, self.limits)
        if refused is not None:
            code, reason = refused
            raise UsageError(
                f"{reason}: the evaluator dead-letters such a request unanswered ({code}), and "
                "an agent's call to a real ledger would time out"
            )
        with self._lock:
            answered = answer_record(
                self._state,
                request,
                now=self.clock(),
                evaluator_id=self.evaluator_id,
                chain=self._chain,
                encode=self._wire.encoded,
                max_bytes=self.limits.record_bytes,
                sent=self._wire.encoded(request),
                limits=self.limits,
                latency=lambda: _LATENCY,
            )
            self._chain = answered.head
            self.decisions.append(answered.record)
        return answered.record
